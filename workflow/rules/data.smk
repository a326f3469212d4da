# The evaluation data: Fashion-MNIST unpacked for torchvision, and the splits of the evaluation set.


rule prepare_data:
    output:
        get_dataset_files(),
    log:
        f"{LOGS}/prepare_data.log",
    conda:
        "../../envs/environment.yaml"
    params:
        # data.source and data.download say where the files come from, not what they hold:
        # the script reads them from the config, so changing them re-runs nothing.
        root=lambda wildcards, output: Path(output[0]).parents[2],
    script:
        "../scripts/prepare_data.py"


rule make_splits:
    input:
        get_dataset_files(),
    output:
        f"{RESULTS}/splits/eval_splits.parquet",
    log:
        f"{LOGS}/make_splits.log",
    conda:
        "../../envs/environment.yaml"
    params:
        data=get_data_params(),
        splits=config["splits"],
    script:
        "../scripts/make_splits.py"
