# Timing. Per network, the Caffe-style per-layer tables (the breakdown of where a network's time
# goes). Per setting (latency, throughput), the joint job that times every component of the
# study side by side and in context: the costs the policies trade against. Each job takes every
# core so that nothing runs beside it, and times with `timing.threads` threads.


rule time_network:
    input:
        model=L.network("{network}"),
    output:
        layers=L.timing("{network}", "layers.parquet"),
        components=L.timing("{network}", "components.parquet"),
        exits=L.timing("{network}", "exits.parquet"),
        summary=L.timing("{network}", "summary.json"),
    log:
        L.log("time_network", "{network}"),
    benchmark:
        L.benchmark("time_network", "{network}")
    # before the notebooks that wait for the runtime: run last, these tables left the runtime's
    # notebook and the networks' to run one after the other, alone
    priority: 1
    conda:
        ENV
    threads: workflow.cores
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        timing=get_layer_timing_params(),
        compute=config["compute"],
        device=config["device"],
    script:
        "../scripts/time_network.py"


rule time_costs:
    input:
        **get_models(),
    output:
        costs=L.costs("{setting}"),
        summary=L.costs("{setting}", "json"),
    log:
        L.log("time_costs", "{setting}"),
    benchmark:
        L.benchmark("time_costs", "{setting}")
    priority: 1  # on the path to the runtime measurement (measure_runtime)
    conda:
        ENV
    threads: workflow.cores
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        costs=get_cost_params,
        compute=config["compute"],
        device=config["device"],
    script:
        "../scripts/time_costs.py"
