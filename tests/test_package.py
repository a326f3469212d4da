"""The package's shape: no import circle, every module named in the package docstring, no pickle
read from results/."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import adaptive_inference

PACKAGE = Path(adaptive_inference.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def imports_of(module: str, *, top_level_only: bool) -> set[str]:
    """The package's modules that ``module`` imports (at the top level, or anywhere)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            name = node.module.removeprefix("adaptive_inference.")
            if node.module.startswith("adaptive_inference.") and name in MODULES:
                found.add(name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name.removeprefix("adaptive_inference.")
                if alias.name.startswith("adaptive_inference.") and name in MODULES:
                    found.add(name)
    return found - {module}


def test_no_import_circle():
    """Imports anywhere in a module (inside functions too) form no cycle."""
    graph = {m: imports_of(m, top_level_only=False) for m in MODULES}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in graph[module]:
            if state.get(other) == 1:
                pytest.fail(f"import circle: {' -> '.join([*path, module, other])}")
            if other not in state:
                visit(other, [*path, module])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [])


DEFERRED = {
    # torchvision's models take seconds to import and the config is checked while Snakemake
    # parses the workflow (a dry run included): only a paper-setup study imports them
    ("config", "pretrained"),
    # the runtime names the policy class in annotations only: scikit-learn (1.2 s) stays out of
    # the timing job that imports the runtime (rule time_costs)
    ("runtime", "policies"),
}


def test_package_imports_are_at_the_top():
    """No module imports another of the package inside a function (none dodges a circle), but
    the deferred imports listed above, each with its reason."""
    for module in MODULES:
        inside = imports_of(module, top_level_only=False) - imports_of(module, top_level_only=True)
        assert {(module, other) for other in inside} <= DEFERRED, module


def test_every_module_is_named_in_the_package_docstring():
    doc = adaptive_inference.__doc__
    missing = [m for m in MODULES if f"``{m}``" not in doc]
    assert not missing, f"modules not described in adaptive_inference/__init__.py: {missing}"


def test_no_pickle_reads_results():
    """Fitted policies are data (JSON); nothing in the package unpickles."""
    for module in MODULES:
        text = (PACKAGE / f"{module}.py").read_text()
        assert "import pickle" not in text and "pickle.load" not in text, module


def test_default_study_jobs_do_not_import_torchvision(fashion_root):
    """Importing torchvision costs each job over a second (its ops import torch._dynamo): the
    modules the default study's jobs import, and reading its prepared data, leave it out."""
    code = (
        "import sys, adaptive_inference.data as data\n"
        "import adaptive_inference.networks, adaptive_inference.pretrained\n"
        "import adaptive_inference.runtime_measure, adaptive_inference.timing\n"
        f"data.fashion_mnist({str(fashion_root)!r}, train=False)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
