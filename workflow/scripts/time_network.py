"""Caffe-style per-layer timing of one network at the latency and throughput batch sizes (rule
time_network): the breakdown of where its time goes."""

from adaptive_inference.device import resolve_device
from adaptive_inference.io import write_json, write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.networks import load_network
from adaptive_inference.timing import profile_study_network

with job_log(snakemake.log[0]) as log:
    p, out = snakemake.params, snakemake.output
    model, spec = load_network(snakemake.input.model, with_spec=True)
    input_shape = (spec["in_channels"], spec["image_size"], spec["image_size"])
    result = profile_study_network(
        model, input_shape, p.timing, device=resolve_device(p.device), compute=p.compute
    )
    log.info("timing summary:\n%s", result["summary"].to_string())
    log.info("exit costs:\n%s", result["exits"].to_string())
    write_parquet(result["layers"], out.layers)
    write_parquet(result["components"], out.components)
    write_parquet(result["exits"], out.exits)
    write_json(
        {
            "network": snakemake.wildcards.network,
            "environment": result["environment"],
            "timing": dict(p.timing),
            "summary": result["summary"].to_dict(orient="records"),
        },
        out.summary,
    )
