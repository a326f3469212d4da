# Training the default family, or the exit heads of a pre-trained network on its frozen features
# (cached: a re-run trains nothing unless the network's config changed).


rule train_network:
    input:
        unpack(get_training_inputs),
    output:
        model=L.network("{network}"),
        curve=L.network("{network}", "training_curve.csv"),
    log:
        L.log("train_network", "{network}"),
    benchmark:
        L.benchmark("train_network", "{network}")
    conda:
        ENV
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
        L.network("{network}", "training_curve.csv"),
    output:
        L.network("{network}", "training_curve.png"),
    log:
        L.log("plot_training_curve", "{network}"),
    conda:
        ENV
    script:
        "../scripts/plot_training_curve.py"
