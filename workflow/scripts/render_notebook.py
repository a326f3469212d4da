"""Execute one notebook template with papermill and render it to HTML (rules notebook_*).

The notebook's parameters: every named input but the template and the plotting module (paths
relative to the executed notebook's folder, where its kernel runs), the rule's options, its
style and the folder of its figures.
"""

from pathlib import Path

from adaptive_inference.joblog import job_log
from adaptive_inference.notebooks import (
    NOTEBOOKS,
    check_figures,
    clear_stale_figures,
    job_parameters,
    relative_path,
    render_html,
    run_notebook,
)

with job_log(snakemake.log[0]) as log:
    inputs, out, p = snakemake.input, snakemake.output, snakemake.params
    name = Path(out.notebook).stem
    folder = Path(out.notebook).parent
    figure_dir = Path(out.figures[0]).parent
    parameters = job_parameters(
        dict(inputs.items()),
        {**p.options, "style": dict(p.style), "figure_dir": relative_path(figure_dir, folder)},
        relative_to=folder,
        skip=("notebook", "helpers"),
    )
    removed = clear_stale_figures(figure_dir, out.figures)
    log.info("notebook %s, parameters %s; removed stale figures %s", name, parameters, removed)
    source = f"notebooks/{Path(inputs.notebook).name}"  # named without the machine's path
    run_notebook(inputs.notebook, out.notebook, parameters, source=source)
    check_figures(figure_dir, out.figures)
    render_html(out.notebook, out.html, title=NOTEBOOKS[name][0])
    log.info("wrote %s, %s and %d figure files", out.notebook, out.html, len(out.figures))
