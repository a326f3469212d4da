# The policies run for real: per scheme, the runtime at the operating points of
# `runtime.loss_levels` and the reference network alone, timed interleaved in one job at batch 1
# and batched, against the speedups the timing tables predict; then the notebook that draws them.
# Like the timing jobs, a measurement takes every core so that nothing runs beside it.


rule measure_runtime:
    input:
        get_eval_files(),
        unpack(get_runtime_inputs),
    output:
        speedups=f"{RESULTS}/runtime/{{scheme}}/speedups.parquet",
        segments=f"{RESULTS}/runtime/{{scheme}}/segments.parquet",
        examples=f"{RESULTS}/runtime/{{scheme}}/examples.parquet",
        summary=f"{RESULTS}/runtime/{{scheme}}/summary.json",
    log:
        f"{LOGS}/measure_runtime/{{scheme}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/measure_runtime/{{scheme}}.tsv"
    conda:
        "../../envs/environment.yaml"
    threads: workflow.cores
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        scheme=lambda wildcards: config["policies"]["schemes"][wildcards.scheme],
        policies={k: config["policies"][k] for k in ("setting", "topk", "path_features")},
        reference=get_reference(),
        runtime=get_runtime_params(),
        timing=config["timing"],
        decision_timing=config["policies"]["decision_timing"],
        data=get_data_params(),
        compute=config.get("compute", {}),
        device=config["device"],
    script:
        "../scripts/measure_runtime.py"


rule notebook_runtime:
    input:
        notebook=get_notebook_template("7_runtime"),
        helpers=FIGURE_HELPERS,
        speedups=get_runtime_results("speedups"),
        segments=get_runtime_results("segments"),
        examples=get_runtime_results("examples"),
    output:
        notebook=f"{RENDERED}/7_runtime.ipynb",
        html=f"{RENDERED}/7_runtime.html",
        figures=get_notebook_figures("7_runtime"),
    log:
        f"{LOGS}/notebooks/7_runtime.log",
    benchmark:
        f"{RESULTS}/benchmarks/notebooks/7_runtime.tsv"
    conda:
        "../../envs/environment.yaml"
    params:
        options=get_figure_options("7_runtime"),
        style=config["figures"]["style"],
    script:
        "../scripts/render_notebook.py"
