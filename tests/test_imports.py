"""The one-thread jobs do not import PyTorch.

Importing PyTorch costs about 2 s of CPU (4 s cold); the jobs that fit, sweep and draw work on
tables and never compute a tensor, and they run many times in a study (three fits, three
robustness jobs, a training curve per network). Each rule script's own imports are executed in
a fresh interpreter, so a module that starts importing PyTorch at the top fails here.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"
TABLE_JOBS = ["fit_policies", "robustness", "plot_training_curve", "render_notebook"]


def script_imports(name: str) -> str:
    """The top-level import statements of a rule's script, as source."""
    source = (SCRIPTS / f"{name}.py").read_text()
    tree = ast.parse(source)
    nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert nodes, f"{name}.py imports nothing"
    return "\n".join(ast.get_source_segment(source, n) for n in nodes)


def modules_after(code: str) -> set[str]:
    check = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("job", TABLE_JOBS)
def test_a_table_job_does_not_import_torch(job):
    loaded = modules_after(script_imports(job))
    assert "adaptive_inference" in loaded  # the script's imports did run
    assert "torch" not in loaded, f"{job}.py's imports load PyTorch"


def test_the_check_sees_a_job_that_imports_torch():
    loaded = modules_after(script_imports("measure_runtime"))
    assert "torch" in loaded
