"""Run one scheme's policies for real at its operating points, interleaved with the reference
network alone: measured against predicted speedup, batch 1 and batched (rule measure_runtime)."""

import torch

from adaptive_inference.extraction import resolve_device
from adaptive_inference.io import write_json, write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.runtime import compute_options
from adaptive_inference.runtime_measure import measure_configured
from adaptive_inference.timing import environment, pin_malloc_thresholds

with job_log(snakemake.log[0]) as log:
    inputs, out, config = snakemake.input, snakemake.output, dict(snakemake.params.items())
    scheme, networks = snakemake.wildcards.scheme, config["scheme"]["networks"]
    torch.set_num_threads(config["timing"]["threads"])
    pinned = pin_malloc_thresholds()
    device = resolve_device(config["device"])
    log.info("scheme %s on %s, %d threads", scheme, device, torch.get_num_threads())
    result = measure_configured(
        scheme,
        config,
        predictions={n: inputs[f"predictions_{n}"] for n in networks},
        exits={n: inputs[f"exits_{n}"] for n in networks},
        models={n: inputs[f"model_{n}"] for n in networks},
        decision=inputs.decision,
        policies=inputs.policies,
        splits=inputs.splits,
        device=device,
    )
    columns = ["mode", "label", "predicted_speedup", "retimed_speedup", "measured_speedup", "ratio",
               "retimed_ratio", "different"]
    log.info("measured against predicted:\n%s", result.speedups[columns].to_string())
    write_parquet(result.speedups, out.speedups)
    write_parquet(result.segments, out.segments)
    write_parquet(result.examples, out.examples)
    env = environment(
        device, dtype=compute_options(config["compute"])["dtype"],
        batch_sizes={"latency": 1, "throughput": config["runtime"]["batch_size"]},
        malloc_pinned=pinned,
    )
    write_json({**result.summary, "environment": env}, out.summary)
