# Per-example predictions at every exit of every network over the evaluation set: one job per
# network, or, with `extraction.shards` > 1, one job per shard merged afterwards (same tables).


if config["extraction"]["shards"] == 1:

    rule extract_predictions:
        input:
            get_eval_files(),
            model=f"{RESULTS}/networks/{{network}}/model.pt",
        output:
            probs=f"{RESULTS}/predictions/{{network}}/probs.npy",
            table=f"{RESULTS}/predictions/{{network}}/predictions.parquet",
            manifest=f"{RESULTS}/predictions/{{network}}/manifest.json",
        log:
            f"{LOGS}/extract_predictions/{{network}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/extract_predictions/{{network}}.tsv"
        conda:
            "../../envs/environment.yaml"
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

else:

    rule extract_shard:
        input:
            get_eval_files(),
            model=f"{RESULTS}/networks/{{network}}/model.pt",
        output:
            probs=f"{RESULTS}/predictions/{{network}}/shards/{{shard}}.npy",
            table=f"{RESULTS}/predictions/{{network}}/shards/{{shard}}.parquet",
            manifest=f"{RESULTS}/predictions/{{network}}/shards/{{shard}}.json",
        log:
            f"{LOGS}/extract_predictions/{{network}}/{{shard}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/extract_predictions/{{network}}/{{shard}}.tsv"
        conda:
            "../../envs/environment.yaml"
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

    rule extract_predictions:
        input:
            shards=get_extraction_shards,
        output:
            probs=f"{RESULTS}/predictions/{{network}}/probs.npy",
            table=f"{RESULTS}/predictions/{{network}}/predictions.parquet",
            manifest=f"{RESULTS}/predictions/{{network}}/manifest.json",
        log:
            f"{LOGS}/extract_predictions/{{network}}.log",
        conda:
            "../../envs/environment.yaml"
        script:
            "../scripts/merge_predictions.py"
