"""The notebook templates and their runner: parameters checked, outputs free of machine noise.

The templates are executed for real, by papermill through the workflow, in test_workflow.py
(on the tiny study); here everything that needs no kernel.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import nbformat
import pytest
from conftest import REPO

from adaptive_inference import notebooks as nbs

TEMPLATES = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_every_template_is_listed_and_every_listed_one_exists():
    assert [t.stem for t in TEMPLATES] == list(nbs.NOTEBOOKS)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.stem)
def test_templates_are_commit_ready(template):
    notebook = nbformat.read(template, as_version=4)
    nbformat.validate(notebook)
    first = notebook.cells[0]
    assert first.cell_type == "code" and first.metadata.get("tags") == ["parameters"]
    assert notebook.cells[1].cell_type == "markdown" and notebook.cells[1].source.startswith("# ")
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"outputs in {template.name}"
            )
    assert "papermill" not in notebook.metadata
    assert nbs.declared_parameters(template)[-2:] == ["style", "figure_dir"]


SAVED = re.compile(r"fig\.show\(f, figure_dir, (f?\"[^\"]+\")")


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.stem)
def test_templates_save_the_figures_their_rules_declare(template):
    """Every figure the rule declares is saved, and nothing else: a fixed name, or one made
    per scheme (an f-string). A name may be saved on both branches of one cell (a figure that
    says "no data" in its place), never by two cells."""
    cells = [c.source for c in nbformat.read(template, as_version=4).cells if c.cell_type == "code"]
    per_cell = [set(SAVED.findall(source)) for source in cells]
    saved = [name for names in per_cell for name in names]
    assert len(saved) == len(set(saved)), f"a figure saved by two cells of {template.name}"
    options = {"schemes": ["a", "b"]}
    expected = nbs.figure_names(template.stem, options)
    fixed = {s.strip('"') for s in saved if not s.startswith("f")}
    patterns = [s[2:-1].split("{")[0] for s in saved if s.startswith("f")]
    for name in expected:
        assert name in fixed or any(name.startswith(p) and p for p in patterns), name
    assert fixed <= set(expected), f"{template.name} saves figures its rule does not declare"
    for pattern in patterns:
        assert any(name.startswith(pattern) for name in expected), pattern


def test_figure_names_of_every_notebook():
    options = {"schemes": ["early_exit", "combined"]}
    assert nbs.figure_names("6_summary", options) == ["headline", "robustness"]
    assert nbs.figure_names("3_network_selection", options) == [
        "speedup_vs_loss_early_exit",
        "speedup_vs_loss_combined",
        "schemes_compared",
    ]
    assert nbs.figure_names("4_exit_proportions", options) == [
        "proportions_early_exit",
        "proportions_combined",
    ]
    assert nbs.figure_names("7_runtime", options) == ["measured_vs_predicted", "time_breakdown"]
    with pytest.raises(ValueError, match="unknown notebook '8_more'"):
        nbs.figure_names("8_more", options)


def test_summary_notebook_reads_the_robustness_tables_and_draws_the_verdict():
    template = REPO / "notebooks" / "6_summary.ipynb"
    assert "robustness" in nbs.declared_parameters(template)
    source = "\n".join(c.source for c in nbformat.read(template, as_version=4).cells)
    for call in (
        "fig.verdict(",
        "fig.plot_robustness(",
        "fig.robustness_table(",
        "learned_minus_baselines(",
        "fig.chosen(",
    ):
        assert call in source, call


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.stem)
def test_templates_call_what_the_figures_module_has(template):
    """Every ``fig.<name>`` a template uses exists (a renamed or removed helper fails here, not
    in a workflow run), and a template that chooses operating points declares the confidence of
    the choice."""
    from adaptive_inference import figures

    source = "\n".join(
        c.source for c in nbformat.read(template, as_version=4).cells if c.cell_type == "code"
    )
    used = set(re.findall(r"\bfig\.(\w+)", source))
    assert used and not [name for name in used if not hasattr(figures, name)]
    if "confidence=confidence" in source:
        assert "confidence" in nbs.declared_parameters(template)


def test_unknown_parameter_is_an_error_before_any_kernel_starts(tmp_path):
    template = REPO / "notebooks" / "2_early_exit.ipynb"
    parameters = {name: None for name in nbs.declared_parameters(template)}
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) \['max_los'\]"):
        nbs.run_notebook(template, tmp_path / "out.ipynb", {**parameters, "max_los": 2.0})
    del parameters["max_loss"]
    with pytest.raises(ValueError, match="max_loss"):
        nbs.run_notebook(template, tmp_path / "out.ipynb", parameters)
    assert not (tmp_path / "out.ipynb").exists()


def test_job_parameters_are_relative_to_the_executed_notebook():
    inputs = {
        "notebook": "/abs/t.ipynb",
        "points": "results/policies/a/points.parquet",
        "nodes": ["results/policies/a/nodes.parquet", "results/policies/b/nodes.parquet"],
    }
    parameters = nbs.job_parameters(
        inputs, {"max_loss": 2.0}, relative_to="results/notebooks", skip=("notebook",)
    )
    assert parameters == {
        "points": "../policies/a/points.parquet",
        "nodes": ["../policies/a/nodes.parquet", "../policies/b/nodes.parquet"],
        "max_loss": 2.0,
    }
    with pytest.raises(ValueError, match="points"):
        nbs.job_parameters(
            inputs, {"points": 1}, relative_to="results/notebooks", skip=("notebook",)
        )


def executed_notebook() -> nbformat.NotebookNode:
    """A notebook as papermill leaves it: timings, paths, a random id on the injected cell."""
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 64).decode()
    cells = [
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_markdown_cell("# Title\n\nSome text."),
        nbformat.v4.new_code_cell(
            "secret_code_line()",
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    data={"image/png": png},
                    metadata={"image/png": {"alt": "a figure", "width": 640}},
                )
            ],
        ),
    ]
    for cell in cells:
        cell.metadata["papermill"] = {
            "start_time": "2026-01-01T00:00:00",
            "duration": 1.0,
            "end_time": "2026-01-01T00:00:01",
            "status": "completed",
        }
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["papermill"] = {
        "input_path": "/home/someone/repo/notebooks/t.ipynb",
        "output_path": "/tmp/x/t.ipynb",
        "start_time": "2026-01-01T00:00:00",
        "end_time": "2026-01-01T00:00:05",
        "duration": 5.0,
        "parameters": {"x": 2},
    }
    return notebook


def test_clean_notebook_drops_timings_and_paths():
    notebook = nbs.clean_notebook(
        executed_notebook(), source="notebooks/t.ipynb", output_name="t.ipynb"
    )
    text = json.dumps(notebook)
    assert "2026-01-01" not in text and "/home/someone" not in text and "/tmp/x" not in text
    assert notebook.metadata["papermill"]["parameters"] == {"x": 2}
    assert notebook.cells[1]["id"] == "injected-parameters"
    assert notebook.cells[0].metadata["papermill"] == {"status": "completed"}


def test_html_hides_the_code_and_loads_nothing_from_the_network(tmp_path):
    nbformat.write(executed_notebook(), tmp_path / "t.ipynb")
    nbs.render_html(tmp_path / "t.ipynb", tmp_path / "t.html", title="A page")
    page = (tmp_path / "t.html").read_text()
    assert "<title>A page</title>" in page and "Some text." in page
    assert "secret_code_line" not in page
    image = re.search(r"<img[^>]*>", page).group(0)  # shown at the width the figure asked
    assert 'alt="a figure"' in image and 'width="640"' in image
    assert "data:image/png;base64," in image
    assert not re.findall(r"<script[^>]*\bsrc=", page)
    assert 'href="../index.html"' in page


def test_figures_of_a_rule_must_match_what_the_notebook_saved(tmp_path):
    (tmp_path / "old.png").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    assert nbs.clear_stale_figures(tmp_path, [tmp_path / "a.png", tmp_path / "a.svg"]) == [
        tmp_path / "old.png"
    ]
    with pytest.raises(RuntimeError, match=r"declared but not saved \['a.svg'\]"):
        nbs.check_figures(tmp_path, [tmp_path / "a.png", tmp_path / "a.svg"])
    (tmp_path / "a.svg").write_text("<svg/>")
    nbs.check_figures(tmp_path, [tmp_path / "a.png", tmp_path / "a.svg"])
    (tmp_path / "b.png").write_bytes(b"x")
    with pytest.raises(RuntimeError, match=r"not declared by the rule \['b.png'\]"):
        nbs.check_figures(tmp_path, [tmp_path / "a.png", tmp_path / "a.svg"])


def test_index_links_every_page_and_figure_relatively(tmp_path):
    pages = [
        {
            "name": "2_early_exit",
            "html": "notebooks/2_early_exit.html",
            "notebook": "notebooks/2_early_exit.ipynb",
            "figures": ["figures/2_early_exit/speedup_vs_loss.png"],
        }
    ]
    nbs.write_index(tmp_path / "index.html", pages, study="demo")
    page = (tmp_path / "index.html").read_text()
    links = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert {
        "notebooks/2_early_exit.html",
        "notebooks/2_early_exit.ipynb",
        "figures/2_early_exit/speedup_vs_loss.png",
        "figures/2_early_exit/speedup_vs_loss.svg",
    } <= set(links)
    assert all(not link.startswith("/") for link in links)
    assert "Early exit" in page and "demo" in page


def test_notebook_jobs_skip_the_iri_parser():
    """nbformat's jsonschema is kept from importing rfc3987_syntax (1.2 s of every notebook
    job), and a template is still read and validated."""
    code = (
        "import sys\n"
        "from adaptive_inference.notebooks import declared_parameters\n"
        "declared_parameters('notebooks/5_oracle.ipynb')\n"
        "import nbformat\n"
        "nbformat.validate(nbformat.read('notebooks/5_oracle.ipynb', as_version=4))\n"
        "print('jsonschema' in sys.modules, sys.modules['rfc3987_syntax'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.split() == ["True", "None"]
