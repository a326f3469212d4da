# Training the default family, or the exit heads of a pre-trained network on its frozen features
# (cached: a re-run trains nothing unless the network's config changed).


rule train_network:
    input:
        unpack(get_training_inputs),
    output:
        model=f"{RESULTS}/networks/{{network}}/model.pt",
        curve=f"{RESULTS}/networks/{{network}}/training_curve.csv",
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
        loader=get_feature_loader_params,
        device=config["device"],
    script:
        "../scripts/train_network.py"


rule plot_training_curve:
    input:
        f"{RESULTS}/networks/{{network}}/training_curve.csv",
    output:
        f"{RESULTS}/networks/{{network}}/training_curve.png",
    log:
        f"{LOGS}/plot_training_curve/{{network}}.log",
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/plot_training_curve.py"
