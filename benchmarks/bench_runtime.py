"""Measured against predicted speedup of a finished study, every scheme, loss budget and mode.

    .venv/bin/python benchmarks/bench_runtime.py [--results results] [--config config.yaml]
        [--device cpu|cuda] [--max-examples 2000] [--repeats 3] [--retime] [--passes 3]
        [--schemes ...] [--out FILE.json]

Loads the study's networks, predictions, joint costs and fitted policies from ``results/`` (the
operating points chosen on validation, as rule measure_runtime measures them) and runs
:func:`~adaptive_inference.runtime_measure.measure_scheme` for each scheme, in one process: the
runtime at batch 1 and rebatched, interleaved with the reference alone. Prints, per scheme,
budget and mode, the predicted speedup, the measured one and their ratio, and in rebatched mode
the adaptive throughput beside the reference's. Needs no Snakemake.

On another device than the study's (``--device cuda`` on a GPU), the costs the predictions use
must be the device's: ``--retime`` runs the joint timing job's code there first
(:func:`~adaptive_inference.cost_timing.measure_costs`, same rounds as the config) and predicts
with those costs (the policies stay the ones fitted on the study's costs), the study's own
prediction and ratio beside (``study_predicted_speedup``, ``study_ratio``).

On the study's machine, ``--retime --passes N`` tells the cost model's error from the machine's
state: each pass times the costs, then measures every scheme, and prints the reference's time in
both; predictions from costs timed seconds before the measurement, in whatever state the machine
is in, set beside the study's (docs/runtime.md). With ``--retime``, every batch-1 point also gets
the ratio it would have were the decisions priced in another of the contexts the joint timing
times them in (:mod:`adaptive_inference.cost_timing`): ``ratio_if_cold`` (after their producer
alone) and ``ratio_if_mean`` (the mean of the two), beside ``ratio`` (priced warm, as the study
prices them), all on the same measurements.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from adaptive_inference.config import load_config, reference_network
from adaptive_inference.cost_timing import measure_costs, priced_in, timing_batch_sizes
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
from adaptive_inference.runtime_measure import (
    RuntimeSettings,
    measure_scheme,
    network_images,
    predicted_ms,
)
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
STUDY_COLUMNS = ["study_predicted_speedup", "study_ratio"]
DECISION_CONTEXTS = ("cold", "mean")
"""The other prices of a batch-1 decision the retimed passes set beside the study's (warm)."""


def retimed_tables(config, layout: Layout, device: torch.device) -> dict[str, pd.DataFrame]:
    """Every setting's joint timing table, timed now on ``device`` by the joint timing job's
    code."""
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
    tables = {}
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
        tables[setting] = table
    return tables


def measure(
    config, layout: Layout, scheme: str, settings, device: torch.device, tables
) -> pd.DataFrame:
    """One scheme measured against the prediction of its study's costs, or of the joint timing
    ``tables`` (timed now) with the study's own prediction beside (``study_*`` columns) and, at
    batch 1, the ratio with the decisions priced in their other contexts (``ratio_if_*``)."""
    entry = config["policies"]["schemes"][scheme]
    study = read_study(scheme, entry, config["policies"], reference_network(config), layout=layout)
    ids = study.ids("test")[: settings.max_examples]
    loaded = {n: load_network(layout.network(n), with_spec=True) for n in entry["networks"]}
    costs = None if tables is None else {s: Costs.from_table(t) for s, t in tables.items()}
    table = measure_scheme(
        study if costs is None else replace(study, costs=costs),
        {n: m for n, (m, _) in loaded.items()},
        network_images(config["data"], {n: s for n, (_, s) in loaded.items()}, ids),
        ids,
        settings=settings,
        setting=config["policies"]["setting"],
        device=device,
        compute=config["compute"],
        progress=False,
    ).speedups
    if costs is not None:
        rows = study.graphs[config["policies"]["setting"]].rows(ids)
        policies = [
            None if pd.isna(r.point_id) else study.policies[int(r.point_id)]
            for r in table.itertuples()
        ]
        predicted = [
            predicted_ms(study, policy, rows, mode, settings.batch_size)
            for policy, mode in zip(policies, table["mode"])
        ]
        table["study_predicted_speedup"] = [ref / ms for ms, ref in predicted]
        table["study_ratio"] = table["measured_speedup"] / table["study_predicted_speedup"]
        for context in DECISION_CONTEXTS:
            latency = priced_in(tables["latency"], context)
            repriced = replace(study, costs={**costs, "latency": latency})
            ratios = []
            for policy, mode, measured in zip(policies, table["mode"], table["measured_speedup"]):
                if mode != "batch1":  # the decisions' contexts are a batch-1 matter
                    ratios.append(float("nan"))
                    continue
                ms, ref = predicted_ms(repriced, policy, rows, mode, 1)
                ratios.append(measured * ms / ref)
            table[f"ratio_if_{context}"] = ratios
    return table


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
    parser.add_argument(
        "--passes",
        type=int,
        default=1,
        help="repeat (the re-timing and) the measurement of every scheme this many times",
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
    report: dict = {"environment": env, "settings": vars(args), "passes": []}
    pd.set_option("display.width", 200)
    for number in range(args.passes):
        tables = retimed_tables(config, layout, device) if args.retime else None
        schemes = {}
        for scheme in args.schemes or list(config["policies"]["schemes"]):
            table = measure(config, layout, scheme, settings, device, tables)
            print(
                f"== pass {number + 1}/{args.passes}, {scheme}: reference "
                + ", ".join(
                    f"{r.mode} {r.predicted_ref_ms:.3f} ms in the costs, "
                    f"{r.measured_ref_ms:.3f} ms measured"
                    for r in table[table["label"] == "reference"].itertuples()
                )
            )
            columns = COLUMNS
            if tables is not None:
                extra = [f"ratio_if_{c}" for c in DECISION_CONTEXTS]
                columns = COLUMNS[:2] + STUDY_COLUMNS + COLUMNS[2:5] + extra + COLUMNS[5:]
            print(table[columns].round(3).to_string(index=False))
            schemes[scheme] = json.loads(table.to_json(orient="records"))
        report["passes"].append(schemes)
    if args.out:
        write_json(report, args.out)


if __name__ == "__main__":
    main()
