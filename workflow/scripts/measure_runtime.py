"""Run one scheme's policies for real at its operating points, interleaved with the reference
network alone: measured against predicted speedup, batch 1 and rebatched (rule measure_runtime)."""

import torch

from adaptive_inference.device import (
    compute_options,
    environment,
    pin_malloc_thresholds,
    resolve_device,
)
from adaptive_inference.io import write_json, write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.networks import load_network
from adaptive_inference.runtime_measure import RuntimeSettings, measure_scheme, network_images
from adaptive_inference.study import study_from_files

with job_log(snakemake.log[0]) as log:
    p, inputs, out = snakemake.params, snakemake.input, snakemake.output
    scheme, networks = snakemake.wildcards.scheme, p.scheme["networks"]
    torch.set_num_threads(p.threads)
    pinned = pin_malloc_thresholds()
    device = resolve_device(p.device)
    study = study_from_files(
        scheme,
        p.scheme,
        p.policies,
        p.reference,
        predictions={n: inputs[f"predictions_{n}"] for n in networks},
        costs={s: inputs[f"costs_{s}"] for s in ("latency", "throughput")},
        splits=inputs.splits,
        points=inputs.points,
        policies=inputs.policies,
    )
    settings = RuntimeSettings.from_config(
        p.runtime,
        throughput_batch=p.throughput_batch,
        confidence=p.policies["operating_points"]["confidence"],
    )
    ids = study.ids("test")[: settings.max_examples]
    loaded = {n: load_network(inputs[f"model_{n}"], with_spec=True) for n in networks}
    log.info(
        "scheme %s on %s, %d threads, %d test examples",
        scheme,
        device,
        torch.get_num_threads(),
        len(ids),
    )
    result = measure_scheme(
        study,
        {n: model for n, (model, _) in loaded.items()},
        network_images(p.data, {n: spec for n, (_, spec) in loaded.items()}, ids),
        ids,
        settings=settings,
        setting=p.policies["setting"],
        device=device,
        compute=p.compute,
    )
    columns = [
        "mode",
        "label",
        "predicted_speedup",
        "measured_speedup",
        "ratio",
        "throughput",
        "reference_throughput",
        "different",
    ]
    log.info("measured against predicted:\n%s", result.speedups[columns].to_string())
    write_parquet(result.speedups, out.speedups)
    write_parquet(result.segments, out.segments)
    write_parquet(result.examples, out.examples)
    env = environment(
        device,
        batch_sizes={"latency": 1, "throughput": settings.batch_size},
        malloc_pinned=pinned,
        **compute_options(p.compute),
    )
    write_json({**result.summary, "environment": env}, out.summary)
