# Training the default family (cached: a re-run trains nothing unless the network's config changed).


rule train_network:
    input:
        get_dataset_files(),
    output:
        model=f"{RESULTS}/networks/{{network}}/model.pt",
        curve=f"{RESULTS}/networks/{{network}}/training_curve.csv",
        plot=f"{RESULTS}/networks/{{network}}/training_curve.png",
    log:
        f"{LOGS}/train_network/{{network}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_network/{{network}}.tsv"
    conda:
        "../../envs/environment.yaml"
    threads: workflow.cores
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        network=get_network_params,
        data=get_data_params(),
        device=config["device"],
    script:
        "../scripts/train_network.py"
