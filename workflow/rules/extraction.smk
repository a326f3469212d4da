# Per-example predictions at every exit of every network over the evaluation set: one job per
# network, or, with `extraction.shards` > 1, one job per shard merged afterwards (same tables).
SHARDED = config["extraction"]["shards"] > 1


rule extract_predictions:
    input:
        get_eval_files(),
        model=L.network("{network}"),
    output:
        probs=(
            L.shard("{network}", "{shard}", "npy")
            if SHARDED
            else L.predictions("{network}", "probs.npy")
        ),
        table=(
            L.shard("{network}", "{shard}", "parquet")
            if SHARDED
            else L.predictions("{network}")
        ),
        manifest=(
            L.shard("{network}", "{shard}", "json")
            if SHARDED
            else L.predictions("{network}", "manifest.json")
        ),
    log:
        L.log("extract_predictions", "{network}/{shard}" if SHARDED else "{network}"),
    benchmark:
        L.benchmark(
            "extract_predictions", "{network}/{shard}" if SHARDED else "{network}"
        )
    priority: 1  # on the path to the runtime measurement (measure_runtime)
    conda:
        ENV
    threads: workflow.cores
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        extraction=config["extraction"],
        compute=config["compute"],
        data=get_data_params(),
        device=config["device"],
    script:
        "../scripts/extract_predictions.py"


if SHARDED:

    rule merge_predictions:
        input:
            shards=get_extraction_shards,
        output:
            probs=L.predictions("{network}", "probs.npy"),
            table=L.predictions("{network}"),
            manifest=L.predictions("{network}", "manifest.json"),
        log:
            L.log("merge_predictions", "{network}"),
        conda:
            ENV
        script:
            "../scripts/merge_predictions.py"
