# The evaluation data: Fashion-MNIST unpacked for torchvision, and the splits of the evaluation set.


rule prepare_data:
    output:
        get_dataset_files(),
    log:
        f"{LOGS}/prepare_data.log",
    params:
        root=config["data"]["root"],
        source=config["data"]["source"],
        download=config["data"]["download"],
    script:
        "../scripts/prepare_data.py"


rule make_splits:
    input:
        get_dataset_files(),
    output:
        f"{RESULTS}/splits/eval_splits.parquet",
    log:
        f"{LOGS}/make_splits.log",
    params:
        data=get_data_params(),
        splits=config["splits"],
    script:
        "../scripts/make_splits.py"
