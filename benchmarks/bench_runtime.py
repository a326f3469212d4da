"""Measured against predicted speedup of a finished study, every scheme, loss budget and mode.

    .venv/bin/python benchmarks/bench_runtime.py [--results results] [--config config.yaml]
        [--device cpu|cuda] [--max-examples 2000] [--repeats 3] [--retime] [--out FILE.json]

Loads the study's networks, predictions, joint costs and fitted policies from ``results/`` (the
operating points chosen on validation, as rule measure_runtime measures them) and runs
:func:`~adaptive_inference.runtime_measure.measure_scheme` for each scheme, in one process: the
runtime at batch 1 and rebatched, interleaved with the reference alone. Prints, per scheme,
budget and mode, the predicted speedup, the measured one and their ratio, and in rebatched mode
the adaptive throughput beside the reference's. Needs no Snakemake.

On another device than the study's (``--device cuda`` on a GPU), the costs the predictions use
must be the device's: ``--retime`` runs the joint timing job's code there first
(:func:`~adaptive_inference.cost_timing.measure_costs`, same rounds as the config) and predicts
with those costs (the policies stay the ones fitted on the study's costs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from adaptive_inference.config import load_config, reference_network
from adaptive_inference.cost_timing import measure_costs, timing_batch_sizes
from adaptive_inference.costs import Costs
from adaptive_inference.device import (
    apply_compute,
    compute_options,
    environment,
    pin_malloc_thresholds,
)
from adaptive_inference.graph import scheme_structure
from adaptive_inference.io import write_json
from adaptive_inference.layout import Layout
from adaptive_inference.networks import load_network
from adaptive_inference.runtime_measure import RuntimeSettings, measure_scheme, network_images
from adaptive_inference.study import read_study

REPO = Path(__file__).resolve().parents[1]
COLUMNS = [
    "mode",
    "label",
    "predicted_speedup",
    "measured_speedup",
    "ratio",
    "throughput",
    "reference_throughput",
    "different",
]


def retimed_costs(config, layout: Layout, device: torch.device) -> dict[str, Costs]:
    """Every setting's costs timed now on ``device`` by the joint timing job's code."""
    loaded = {n: load_network(layout.network(n), with_spec=True) for n in config["networks"]}
    networks = {n: model for n, (model, _) in loaded.items()}
    shapes = {
        n: (s["in_channels"], s["image_size"], s["image_size"]) for n, (_, s) in loaded.items()
    }
    structures = [
        scheme_structure(
            e["graph"],
            {n: list(networks[n].exit_names) for n in e["networks"]},
            path_features=config["policies"]["path_features"],
        )
        for e in config["policies"]["schemes"].values()
    ]
    timing = config["timing"]
    costs = {}
    for setting, batch in timing["batch_sizes"].items():
        latency = setting == "latency"
        table = measure_costs(
            networks,
            structures,
            input_shapes=shapes,
            reference=reference_network(config),
            batch_sizes=[1] if latency else timing_batch_sizes(batch),
            rounds=timing["rounds"] if latency else timing["throughput_rounds"],
            warmup=timing["warmup_rounds"],
            topk=config["policies"]["topk"],
            device=device,
            progress=False,
            **compute_options(config["compute"]),
        )
        costs[setting] = Costs.from_table(table)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="the study's results folder")
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="the study's config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-examples", type=int, help="default: the config's runtime section")
    parser.add_argument("--repeats", type=int, help="default: the config's runtime section")
    parser.add_argument(
        "--retime",
        action="store_true",
        help="time the costs again on --device and predict with them",
    )
    parser.add_argument("--schemes", nargs="*", help="default: every scheme of the config")
    parser.add_argument("--out", help="write every number to this JSON file")
    args = parser.parse_args()
    config = load_config(args.config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    layout = Layout(args.results)
    device = torch.device(args.device)
    torch.set_num_threads(config["timing"]["threads"])
    pinned = pin_malloc_thresholds()
    apply_compute(config["compute"])
    runtime = dict(config["runtime"])
    runtime.update(
        {
            k: v
            for k, v in (("max_examples", args.max_examples), ("repeats", args.repeats))
            if v is not None
        }
    )
    settings = RuntimeSettings.from_config(
        runtime,
        throughput_batch=config["timing"]["batch_sizes"]["throughput"],
        confidence=config["policies"]["operating_points"]["confidence"],
    )
    env = environment(
        device,
        batch_sizes={"latency": 1, "throughput": settings.batch_size},
        malloc_pinned=pinned,
        **compute_options(config["compute"]),
    )
    print(
        f"device: {env['device_name']} ({env['device_type']}), {env['threads']} threads, "
        f"torch {env['torch_version']}; batch 1 and rebatched at {settings.batch_size}; "
        f"{settings.repeats} interleaved passes"
    )
    costs = retimed_costs(config, layout, device) if args.retime else None
    report: dict = {"environment": env, "settings": vars(args), "schemes": {}}
    pd.set_option("display.width", 200)
    for scheme in args.schemes or list(config["policies"]["schemes"]):
        entry = config["policies"]["schemes"][scheme]
        study = read_study(
            scheme, entry, config["policies"], reference_network(config), layout=layout
        )
        if costs is not None:
            study.costs = costs
        ids = study.ids("test")[: settings.max_examples]
        loaded = {n: load_network(layout.network(n), with_spec=True) for n in entry["networks"]}
        start = time.perf_counter()
        result = measure_scheme(
            study,
            {n: m for n, (m, _) in loaded.items()},
            network_images(config["data"], {n: s for n, (_, s) in loaded.items()}, ids),
            ids,
            settings=settings,
            setting=config["policies"]["setting"],
            device=device,
            compute=config["compute"],
            progress=False,
        )
        print(f"== {scheme}: {len(ids)} test examples, {time.perf_counter() - start:.0f} s")
        print(result.speedups[COLUMNS].round(3).to_string(index=False))
        report["schemes"][scheme] = json.loads(result.speedups.to_json(orient="records"))
    if args.out:
        write_json(report, args.out)


if __name__ == "__main__":
    main()
