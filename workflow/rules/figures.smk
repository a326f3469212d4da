# The figures: each notebook of notebooks/ executed by papermill on the results it reads, saved
# as results/notebooks/<name>.ipynb, rendered (code hidden) as results/notebooks/<name>.html, its
# figures as PNG and SVG under results/figures/<name>/; then the index page of results/.
# A notebook's rule takes its template, the tables it reads and its own `figures.<section>`, so a
# figure option re-runs that notebook only; `figures.style` and the plotting module re-run all.


for name in figure_notebooks(config):

    rule:
        name:
            f"notebook_{NOTEBOOK_SECTIONS[name]}"
        input:
            **get_notebook_inputs(name),
            notebook=NOTEBOOK_TEMPLATES / f"{name}.ipynb",
            helpers=FIGURE_HELPERS,
        output:
            notebook=L.notebook(name, "ipynb"),
            html=L.notebook(name, "html"),
            figures=get_notebook_figures(name),
        log:
            L.log("notebooks", name),
        benchmark:
            L.benchmark("notebooks", name)
        # the summary as soon as its tables are there (beside other notebooks, not alone last)
        priority: 2 if name == "6_summary" else 0
        conda:
            ENV
        params:
            options=get_notebook_options(name),
            style=config["figures"]["style"],
        script:
            "../scripts/render_notebook.py"


# The index lists pages and figures by name, so it needs them to exist but not to be newer:
# re-rendering a notebook does not rewrite it.
rule index:
    input:
        ancient([L.notebook(name, "html") for name in figure_notebooks(config)]),
    output:
        L.index,
    log:
        L.log("index"),
    conda:
        ENV
    params:
        pages=get_index_pages(),
        study=config["study"],
    script:
        "../scripts/write_index.py"
