"""Running the study's notebooks: papermill with checked parameters, outputs free of machine
noise, HTML renderings with the code hidden, and the index page of ``results/``.

The templates in ``notebooks/`` declare their parameters in a first cell tagged ``parameters``.
:func:`run_notebook` refuses a parameter the template does not declare (papermill itself only
warns) and, by default, a declared one that is not given. The executed notebook keeps the
parameters papermill injects, but not its timings, and names the template by its path in the
repository, so it holds no absolute path and no clock reading.
"""

from __future__ import annotations

import html
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive_inference.io import atomic_path

if TYPE_CHECKING:  # nbformat takes ~0.8 s to import; the Snakefile imports this module
    import nbformat

# name -> (title, what it shows); the order is the reading order.
NOTEBOOKS: dict[str, tuple[str, str]] = {
    "1_networks": (
        "Networks: accuracy and cost",
        "Accuracy (top-1, top-5) against time of every network and exit, and the per-layer "
        "timing breakdown of each network.",
    ),
    "2_early_exit": (
        "Early exit",
        "Speedup against accuracy loss of early exit inside one network (learned, myopic, "
        "uniform, oracle), and the accuracy gained at each exit.",
    ),
    "3_network_selection": (
        "Network selection and the combined system",
        "Speedup against accuracy loss of the learned DAG policy against fixed cascades, "
        "uniform, the oracle and the single networks; the schemes compared.",
    ),
    "4_exit_proportions": (
        "Exit proportions",
        "At chosen operating points, where examples stop and where the time goes.",
    ),
    "5_oracle": (
        "Oracle comparison",
        "How much of the oracle's speedup each method reaches at each accuracy loss.",
    ),
    "6_summary": (
        "Summary",
        "The headline speedups of the study (operating points chosen on validation, reported "
        "on test), the paper's claims beside them, the comparison over resplits, the setup.",
    ),
    "7_runtime": (
        "The policies run for real",
        "Measured against predicted speedup of the adaptive runtime at each operating point, "
        "at batch 1 and rebatched, and where the time goes.",
    ),
}


def figure_names(name: str, options: Mapping[str, Any]) -> list[str]:
    """The figures (file stems) notebook ``name`` saves with these options (its rule's
    outputs: each as PNG and SVG)."""
    fixed = {
        "1_networks": ["accuracy_vs_cost", "layer_timing", "time_by_kind"],
        "2_early_exit": ["speedup_vs_loss", "exit_gain"],
        "5_oracle": ["oracle_share"],
        "6_summary": ["headline", "robustness"],
        "7_runtime": ["measured_vs_predicted", "time_breakdown"],
    }
    if name in fixed:
        return fixed[name]
    if name == "3_network_selection":
        return [f"speedup_vs_loss_{s}" for s in options["schemes"]] + ["schemes_compared"]
    if name == "4_exit_proportions":
        return [f"proportions_{s}" for s in options["schemes"]]
    raise ValueError(f"unknown notebook {name!r}; known: {list(NOTEBOOKS)}")


def clear_stale_figures(figure_dir: Path | str, keep: Sequence[Path | str]) -> list[Path]:
    """Remove the files of ``figure_dir`` that are not in ``keep`` (figures of an earlier
    config); return them."""
    figure_dir = Path(figure_dir)
    keep = {Path(k).resolve() for k in keep}
    stale = [p for p in figure_dir.glob("*") if p.is_file() and p.resolve() not in keep]
    for path in stale:
        path.unlink()
    return stale


def check_figures(figure_dir: Path | str, expected: Sequence[Path | str]) -> None:
    """Raise ``RuntimeError`` when the notebook saved a figure its rule does not declare or
    left a declared one unwritten (the rule and the notebook must name the same figures)."""
    figure_dir = Path(figure_dir)
    expected_set = {Path(e).resolve() for e in expected}
    written = {p.resolve() for p in figure_dir.glob("*") if p.is_file()}
    undeclared = sorted(p.name for p in written - expected_set)
    missing = sorted(p.name for p in expected_set - written)
    if undeclared or missing:
        raise RuntimeError(
            f"figures of {figure_dir}: saved but not declared by the rule {undeclared}, "
            f"declared but not saved {missing} (see notebooks.figure_names)"
        )


_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{#- No scripts from the network: the pages hold no maths, widgets or diagrams. -#}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<style type="text/css">
  main { max-width: 1150px; margin: 0 auto; padding: 0 1em 2em; }
  .study-nav { font-family: sans-serif; font-size: 0.9em; margin: 1em 0; }
  .jp-RenderedImage img { max-width: 100%; height: auto; }
</style>
{% endblock extra_css %}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
{%- set alt = output | get_metadata('alt', 'image/png') -%}
{%- set width = output | get_metadata('width', 'image/png') -%}
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ (alt or 'figure') | escape_html }}"{% if width %} width="{{ width | int }}"{% endif %}>
</div>
{%- endblock data_png %}
{%- block body_header -%}
{{ super() }}
<nav class="study-nav"><a href="../index.html">&larr; index of the study</a></nav>
{%- endblock body_header -%}
"""


def skip_iri_format_parser() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` (installed for Jupyter), which builds a
    parser when imported: 1.2 s of every Snakemake start and every notebook job.

    jsonschema (imported by Snakemake's config validation and by nbformat) imports it for its
    "iri" format checks only; neither the config schema nor the notebook format uses that format,
    and jsonschema skips a format whose checker cannot be imported. Call before the first
    import of jsonschema.
    """
    sys.modules.setdefault("rfc3987_syntax", None)


def declared_parameters(template: Path | str) -> list[str]:
    """The names the template's ``parameters`` cell declares (papermill's reading of it)."""
    skip_iri_format_parser()
    import papermill

    return list(papermill.inspect_notebook(str(template)))


def check_parameters(
    template: Path | str, parameters: Mapping[str, Any], *, require_all: bool = True
) -> None:
    """Raise ``ValueError`` for a parameter the template does not declare (and, with
    ``require_all``, for a declared parameter that is not given)."""
    declared = declared_parameters(template)
    if not declared:
        raise ValueError(f"{template} has no cell tagged `parameters`")
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {unknown} for {Path(template).name}: its "
            f"parameters cell declares {declared}"
        )
    missing = [name for name in declared if name not in parameters]
    if require_all and missing:
        raise ValueError(f"parameter(s) {missing} of {Path(template).name} not given")


def run_notebook(
    template: Path | str,
    output: Path | str,
    parameters: Mapping[str, Any],
    *,
    source: str | None = None,
    require_all: bool = True,
    kernel_name: str = "python3",
    timeout: int | None = 1200,
) -> nbformat.NotebookNode:
    """Execute ``template`` with ``parameters`` into ``output`` (papermill), clean it, return it.

    The kernel runs in ``output``'s folder, so relative paths among the parameters are relative
    to the executed notebook (as when it is opened in JupyterLab). ``source`` is how the executed
    notebook names its template (default: the template's file name). The output is written
    only when the whole notebook ran.
    """
    skip_iri_format_parser()
    import nbformat
    import papermill

    check_parameters(template, parameters, require_all=require_all)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".papermill-", dir=output.parent) as scratch:
        executed = Path(scratch) / output.name
        notebook = papermill.execute_notebook(
            str(template),
            str(executed),
            parameters=dict(parameters),
            cwd=str(output.parent),
            kernel_name=kernel_name,
            progress_bar=False,
            request_save_on_cell_execute=False,
            execution_timeout=timeout,
        )
    clean_notebook(notebook, source=source or Path(template).name, output_name=output.name)
    with atomic_path(output) as tmp:
        nbformat.write(notebook, str(tmp))
    return notebook


def clean_notebook(
    notebook: nbformat.NotebookNode, *, source: str, output_name: str
) -> nbformat.NotebookNode:
    """Drop what changes from run to run or machine to machine: papermill's and the kernel's
    timings and the paths it ran from (``source`` and ``output_name`` replace them); give the
    injected parameters cell a fixed id."""
    meta = notebook.metadata.get("papermill", {})
    for key in ("start_time", "end_time", "duration"):
        meta.pop(key, None)
    meta["input_path"] = source
    meta["output_path"] = output_name
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for key in ("start_time", "end_time", "duration"):
            cell.metadata.get("papermill", {}).pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"
    return notebook


def render_html(notebook: Path | str, html_path: Path | str, *, title: str) -> None:
    """Render an executed notebook to a standalone HTML page with the code hidden.

    The page loads nothing from the network (no MathJax, require.js or Mermaid) and links back
    to ``../index.html``.
    """
    skip_iri_format_parser()
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"study_page.html.j2": _OFFLINE_TEMPLATE})],
        template_name="lab",
        template_file="study_page.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    node = nbformat.read(str(notebook), as_version=4)
    node.metadata["title"] = title
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": title}})
    with atomic_path(html_path) as tmp:
        tmp.write_text(body, encoding="utf-8")


def job_parameters(
    inputs: Mapping[str, Any],
    options: Mapping[str, Any],
    *,
    relative_to: Path | str,
    skip: Sequence[str] = (),
) -> dict[str, Any]:
    """A notebook's parameters from a job: every named input (a path, or a list of paths),
    made relative to ``relative_to`` (the executed notebook's folder), then the options."""
    parameters: dict[str, Any] = {}
    for name, value in inputs.items():
        if name in skip:
            continue
        if isinstance(value, (str, Path)):
            parameters[name] = relative_path(value, relative_to)
        else:
            parameters[name] = [relative_path(v, relative_to) for v in value]
    clash = sorted(set(parameters) & set(options))
    if clash:
        raise ValueError(f"notebook parameter(s) {clash} given both as inputs and as options")
    parameters.update(options)
    return parameters


def relative_path(path: Path | str, start: Path | str) -> str:
    """``path`` relative to ``start`` with forward slashes (both relative to the current folder
    or both absolute)."""
    return Path(os.path.relpath(path, start)).as_posix()


def write_index(
    path: Path | str,
    pages: Sequence[Mapping[str, Any]],
    *,
    study: str,
) -> None:
    """The study's index page: every rendered notebook and its figures, linked relative to
    ``path``'s folder.

    ``pages``: in reading order, ``{"name", "html", "notebook", "figures"}`` with paths relative
    to the index; ``figures`` lists each figure's PNG (its SVG lies beside it).
    """
    items = []
    for page in pages:
        title, blurb = NOTEBOOKS.get(page["name"], (page["name"], ""))
        figures = []
        for png in page["figures"]:
            svg = str(Path(png).with_suffix(".svg").as_posix())
            name = Path(png).stem.replace("_", " ")
            figures.append(
                f'<figure><a href="{html.escape(png)}"><img src="{html.escape(png)}" '
                f'alt="{html.escape(name)}" loading="lazy"></a>'
                f'<figcaption>{html.escape(name)}: <a href="{html.escape(png)}">PNG</a> · '
                f'<a href="{html.escape(svg)}">SVG</a></figcaption></figure>'
            )
        items.append(
            f'<section><h2><a href="{html.escape(page["html"])}">{html.escape(title)}</a></h2>'
            f"<p>{html.escape(blurb)} "
            f'<span class="files">(<a href="{html.escape(page["html"])}">page</a> · '
            f'<a href="{html.escape(page["notebook"])}">executed notebook</a>)</span></p>'
            f'<div class="gallery">{"".join(figures)}</div></section>'
        )
    text = _INDEX.format(study=html.escape(study), sections="\n".join(items))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


_INDEX = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Adaptive inference study: {study}</title>
<style>
  body {{ font-family: sans-serif; max-width: 1150px; margin: 0 auto; padding: 1em 1.5em 3em;
         color: #222; line-height: 1.45; }}
  h1 {{ margin-bottom: 0.2em; }}
  section {{ border-top: 1px solid #ddd; margin-top: 1.5em; }}
  .gallery {{ display: flex; flex-wrap: wrap; gap: 1em; }}
  figure {{ margin: 0; width: 340px; }}
  figure img {{ width: 340px; height: 220px; object-fit: contain; border: 1px solid #eee;
               background: white; }}
  figcaption {{ font-size: 0.85em; color: #555; }}
  .files {{ font-size: 0.9em; color: #555; }}
</style>
</head>
<body>
<h1>Adaptive inference study: {study}</h1>
<p>A reproduction of Bolukbasi et al., <em>Adaptive Neural Networks for Efficient Inference</em>
(ICML 2017). Each page below is a notebook the workflow executed on this study's results and
rendered with its code hidden; the executed notebooks open in JupyterLab
(<code>jupyter lab results/notebooks/</code>). Snakemake's report, where it has been made
(<code>snakemake --report results/report.html</code>): <a href="report.html">report.html</a>.</p>
{sections}
</body>
</html>
"""
