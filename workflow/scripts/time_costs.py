"""Time every component of the study side by side and in context, at one setting's batch sizes
(rule time_costs): the costs the policies trade against."""

import torch

from adaptive_inference.cost_timing import measure_costs, timing_batch_sizes
from adaptive_inference.cuda_graphs import capture_reason
from adaptive_inference.device import (
    apply_compute,
    compute_options,
    environment,
    pin_malloc_thresholds,
    resolve_device,
)
from adaptive_inference.graph import scheme_structure
from adaptive_inference.io import write_json, write_parquet
from adaptive_inference.joblog import job_log
from adaptive_inference.networks import load_network

with job_log(snakemake.log[0]) as log:
    p, setting = snakemake.params, snakemake.wildcards.setting
    device = resolve_device(p.device)
    torch.set_num_threads(p.costs["threads"])
    pinned = pin_malloc_thresholds()
    apply_compute(p.compute)
    loaded = {
        key.removeprefix("model_"): load_network(path, with_spec=True)
        for key, path in snakemake.input.items()
    }
    networks = {name: model for name, (model, _) in loaded.items()}
    shapes = {
        name: (spec["in_channels"], spec["image_size"], spec["image_size"])
        for name, (_, spec) in loaded.items()
    }
    structures = [
        scheme_structure(
            entry["graph"],
            {n: list(networks[n].exit_names) for n in entry["networks"]},
            path_features=p.costs["path_features"],
        )
        for entry in p.costs["schemes"].values()
    ]
    sizes = [1] if setting == "latency" else timing_batch_sizes(p.costs["batch_size"])
    log.info(
        "timing %s at batch sizes %s, %d rounds, on %s with %d threads",
        setting,
        sizes,
        p.costs["rounds"],
        device,
        torch.get_num_threads(),
    )
    table = measure_costs(
        networks,
        structures,
        input_shapes=shapes,
        reference=p.costs["reference"],
        batch_sizes=sizes,
        rounds=p.costs["rounds"],
        warmup=p.costs["warmup"],
        topk=p.costs["topk"],
        device=device,
        **compute_options(p.compute),
        capture=capture_reason(device, p.compute["cuda_graphs"]) is None,
    )
    log.info(
        "costs:\n%s",
        table.drop(columns=["kind", "network", "source", "exit", "steps", "reads"]).to_string(),
    )
    main = table[(table["batch_size"] == max(sizes)) & (table["kind"] == "alone")]
    full = {
        n: main.loc[
            (main["network"] == n) & (main["exit"] == networks[n].num_exits - 1), "per_example_ms"
        ].iloc[0]
        for n in networks
    }
    order = list(networks)
    if [full[n] for n in order] != sorted(full[n] for n in order):
        log.warning(
            "the networks are not listed cheapest first (%s): the graphs take the config's order",
            full,
        )
    write_parquet(table, snakemake.output.costs)
    env = environment(
        device, batch_sizes={setting: sizes}, malloc_pinned=pinned, **compute_options(p.compute)
    )
    write_json(
        {
            "setting": setting,
            "batch_sizes": sizes,
            "rounds": p.costs["rounds"],
            "warmup_rounds": p.costs["warmup"],
            "full_network_ms": full,
            "environment": env,
        },
        snakemake.output.summary,
    )
