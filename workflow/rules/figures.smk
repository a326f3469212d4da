# The figures: each notebook of notebooks/ executed by papermill on the results it reads, saved
# as results/notebooks/<name>.ipynb, rendered (code hidden) as results/notebooks/<name>.html, its
# figures as PNG and SVG under results/figures/<name>/; then the index page of results/.
# A notebook's rule takes its template, the tables it reads and its own `figures.<section>`, so a
# figure option re-runs that notebook only; `figures.style` and the plotting module re-run all.


rule notebook_networks:
    input:
        notebook=get_notebook_template("1_networks"),
        helpers=FIGURE_HELPERS,
        predictions=expand(f"{RESULTS}/predictions/{{network}}/predictions.parquet", network=NETWORKS),
        exits=expand(f"{RESULTS}/timing/{{network}}/exits.parquet", network=NETWORKS),
        layers=expand(f"{RESULTS}/timing/{{network}}/layers.parquet", network=NETWORKS),
        splits=f"{RESULTS}/splits/eval_splits.parquet",
    output:
        notebook=f"{RENDERED}/1_networks.ipynb",
        html=f"{RENDERED}/1_networks.html",
        figures=get_notebook_figures("1_networks"),
    log:
        f"{LOGS}/notebooks/1_networks.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebooks/1_networks.tsv"
    conda:
        "../../envs/environment.yaml"
    params:
        options={**get_figure_options("1_networks"), "networks": NETWORKS},
        style=config["figures"]["style"],
    script:
        "../scripts/render_notebook.py"


rule notebook_early_exit:
    input:
        notebook=get_notebook_template("2_early_exit"),
        helpers=FIGURE_HELPERS,
        points=f"{RESULTS}/policies/{get_figure_options('2_early_exit')['scheme']}/points.parquet",
    output:
        notebook=f"{RENDERED}/2_early_exit.ipynb",
        html=f"{RENDERED}/2_early_exit.html",
        figures=get_notebook_figures("2_early_exit"),
    log:
        f"{LOGS}/notebooks/2_early_exit.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebooks/2_early_exit.tsv"
    conda:
        "../../envs/environment.yaml"
    params:
        options=get_figure_options("2_early_exit"),
        style=config["figures"]["style"],
    script:
        "../scripts/render_notebook.py"


rule notebook_network_selection:
    input:
        notebook=get_notebook_template("3_network_selection"),
        helpers=FIGURE_HELPERS,
        points=get_policy_results(
            "points",
            get_figure_options("3_network_selection")["schemes"]
            + get_figure_options("3_network_selection")["compare_schemes"],
        ),
    output:
        notebook=f"{RENDERED}/3_network_selection.ipynb",
        html=f"{RENDERED}/3_network_selection.html",
        figures=get_notebook_figures("3_network_selection"),
    log:
        f"{LOGS}/notebooks/3_network_selection.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebooks/3_network_selection.tsv"
    conda:
        "../../envs/environment.yaml"
    params:
        options=get_figure_options("3_network_selection"),
        style=config["figures"]["style"],
    script:
        "../scripts/render_notebook.py"


rule notebook_exit_proportions:
    input:
        notebook=get_notebook_template("4_exit_proportions"),
        helpers=FIGURE_HELPERS,
        points=get_policy_results("points", get_figure_options("4_exit_proportions")["schemes"]),
        nodes=get_policy_results("nodes", get_figure_options("4_exit_proportions")["schemes"]),
    output:
        notebook=f"{RENDERED}/4_exit_proportions.ipynb",
        html=f"{RENDERED}/4_exit_proportions.html",
        figures=get_notebook_figures("4_exit_proportions"),
    log:
        f"{LOGS}/notebooks/4_exit_proportions.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebooks/4_exit_proportions.tsv"
    conda:
        "../../envs/environment.yaml"
    params:
        options=get_figure_options("4_exit_proportions"),
        style=config["figures"]["style"],
    script:
        "../scripts/render_notebook.py"


rule notebook_oracle:
    input:
        notebook=get_notebook_template("5_oracle"),
        helpers=FIGURE_HELPERS,
        points=get_policy_results("points", get_figure_options("5_oracle")["schemes"]),
    output:
        notebook=f"{RENDERED}/5_oracle.ipynb",
        html=f"{RENDERED}/5_oracle.html",
        figures=get_notebook_figures("5_oracle"),
    log:
        f"{LOGS}/notebooks/5_oracle.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebooks/5_oracle.tsv"
    conda:
        "../../envs/environment.yaml"
    params:
        options=get_figure_options("5_oracle"),
        style=config["figures"]["style"],
    script:
        "../scripts/render_notebook.py"


rule notebook_summary:
    input:
        notebook=get_notebook_template("6_summary"),
        helpers=FIGURE_HELPERS,
        headline=get_policy_results("headline", SCHEMES),
        manifests=expand(f"{RESULTS}/predictions/{{network}}/manifest.json", network=NETWORKS),
        timing=expand(f"{RESULTS}/timing/{{network}}/summary.json", network=NETWORKS),
        decision=f"{RESULTS}/timing/policy_decision.json",
        splits=f"{RESULTS}/splits/eval_splits.parquet",
    output:
        notebook=f"{RENDERED}/6_summary.ipynb",
        html=f"{RENDERED}/6_summary.html",
        figures=get_notebook_figures("6_summary"),
    log:
        f"{LOGS}/notebooks/6_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebooks/6_summary.tsv"
    conda:
        "../../envs/environment.yaml"
    params:
        options={
            **get_figure_options("6_summary"),
            "study": config["study"],
            "networks": NETWORKS,
            "setting": config["policies"]["setting"],
            "pages": [n for n in figure_notebooks(config) if n != "6_summary"],
        },
        style=config["figures"]["style"],
    script:
        "../scripts/render_notebook.py"


# The index lists pages and figures by name, so it needs them to exist but not to be newer:
# re-rendering a notebook does not rewrite it.
rule index:
    input:
        ancient([f"{RENDERED}/{name}.html" for name in figure_notebooks(config)]),
    output:
        f"{RESULTS}/index.html",
    log:
        f"{LOGS}/index.log",
    conda:
        "../../envs/environment.yaml"
    params:
        pages=get_index_pages(),
        study=config["study"],
    script:
        "../scripts/write_index.py"
