# The policies run for real: per scheme, the runtime at the operating points chosen on
# validation and the reference network alone, timed interleaved in one job at batch 1 and
# rebatched, against the speedups the joint costs predict. Like the timing jobs, a measurement
# takes every core so that nothing runs beside it, and runs as soon as its policies are fitted
# (priority): the closer to the timing of the costs, the likelier the machine is in the same state.


rule measure_runtime:
    input:
        get_eval_files(),
        unpack(get_runtime_inputs),
    output:
        speedups=L.runtime("{scheme}", "speedups.parquet"),
        segments=L.runtime("{scheme}", "segments.parquet"),
        examples=L.runtime("{scheme}", "examples.parquet"),
        summary=L.runtime("{scheme}", "summary.json"),
    log:
        L.log("measure_runtime", "{scheme}"),
    benchmark:
        L.benchmark("measure_runtime", "{scheme}")
    priority: 1
    conda:
        ENV
    threads: workflow.cores
    resources:
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        scheme=lambda wildcards: config["policies"]["schemes"][wildcards.scheme],
        policies={
            k: config["policies"][k]
            for k in ("setting", "topk", "path_features", "operating_points")
        },
        reference=reference_network(config),
        runtime=config["runtime"],
        throughput_batch=config["timing"]["batch_sizes"]["throughput"],
        threads=config["timing"]["threads"],
        data=get_data_params(),
        compute=config["compute"],
        device=config["device"],
    script:
        "../scripts/measure_runtime.py"
