# Per-example predictions at every exit of every network over the evaluation set.


rule extract_predictions:
    input:
        get_dataset_files(),
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
        data=get_data_params(),
        device=config["device"],
    script:
        "../scripts/extract_predictions.py"
