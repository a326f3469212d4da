# The evaluation data: Fashion-MNIST unpacked for torchvision, or the index of ImageNet's images;
# then the splits of the evaluation set.


if config["data"]["dataset"] == "imagenet":

    rule prepare_data:
        # Lists the images (class folders, or the flat folder and its ground truth) and decodes
        # each one, so an unreadable image stops the run here, naming its path, or is skipped
        # and counted (data.imagenet.corrupt_images).
        output:
            index=f"{config['data']['root']}/imagenet/{{which}}_index.parquet",
            summary=f"{config['data']['root']}/imagenet/{{which}}_summary.json",
        log:
            L.log("prepare_data", "{which}"),
        conda:
            ENV
        threads: workflow.cores
        params:
            imagenet=config["data"]["imagenet"],
            num_classes=PRETRAINED_NUM_CLASSES,
        script:
            "../scripts/index_imagenet.py"

else:

    rule prepare_data:
        output:
            get_dataset_files(),
        log:
            L.log("prepare_data"),
        conda:
            ENV
        params:
            # data.source and data.download say where the files come from, not what they hold:
            # the script reads them from the config, so changing them re-runs nothing.
            root=lambda wildcards, output: Path(output[0]).parents[2],
        script:
            "../scripts/prepare_data.py"


rule make_splits:
    input:
        get_eval_files(),
    output:
        L.splits,
    log:
        L.log("make_splits"),
    conda:
        ENV
    params:
        data=get_data_params(),
        splits=config["splits"],
    script:
        "../scripts/make_splits.py"
