# Caffe-style per-layer timing of every network. The job takes every core so that nothing runs
# beside it, and times with `timing.threads` threads.


rule time_network:
    input:
        model=f"{RESULTS}/networks/{{network}}/model.pt",
    output:
        layers=f"{RESULTS}/timing/{{network}}/layers.parquet",
        components=f"{RESULTS}/timing/{{network}}/components.parquet",
        exits=f"{RESULTS}/timing/{{network}}/exits.parquet",
        summary=f"{RESULTS}/timing/{{network}}/summary.json",
    log:
        f"{LOGS}/time_network/{{network}}.log",
    conda:
        "../../envs/environment.yaml"
    threads: workflow.cores
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        timing=config["timing"],
        compute=config["compute"],
        device=config["device"],
    script:
        "../scripts/time_network.py"
