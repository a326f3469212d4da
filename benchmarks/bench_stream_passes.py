"""How steady a rebatched speedup is, and which estimator of it to trust, on a finished study.

    .venv/bin/python benchmarks/bench_stream_passes.py [--results results] [--config config.yaml]
        [--schemes early_exit network_selection] [--passes 36] [--draws 4000]

For each scheme, the reference alone and the runtime of every operating point (as rule
measure_runtime builds them) classify the measured test images rebatched, ``--passes`` times,
the systems' order rotating from pass to pass (:func:`~adaptive_inference.runtime_measure.
stream_pass`). The script prints each system's time per pass (median and spread), the predicted
speedup, the spread of one pass's paired speedup (the reference's time over the point's in the
same pass), and then, over ``--draws`` random subsets of as many passes as measure_runtime makes
(``runtime.repeats`` x ``STREAMS_PER_PASS``), the error of two estimators against the prediction:
the median of the paired speedups (what measure_runtime reports) and the ratio of the two
systems' median times. Standard deviation of measured/predicted, and the share of subsets
outside ±10%. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from adaptive_inference.config import load_config, reference_network
from adaptive_inference.device import apply_compute, pin_malloc_thresholds
from adaptive_inference.layout import Layout
from adaptive_inference.networks import load_network
from adaptive_inference.runtime import slice_inputs
from adaptive_inference.runtime_measure import (
    REFERENCE,
    STREAMS_PER_PASS,
    RuntimeSettings,
    _no_gc,
    _rotations,
    chosen_points,
    network_images,
    predicted_ms,
    runtimes,
    stream_pass,
)
from adaptive_inference.study import read_study

REPO = Path(__file__).resolve().parents[1]


def outside(ratios) -> float:
    """The share of measured/predicted ratios off by more than 10%."""
    return float(np.mean(np.abs(np.subtract(ratios, 1.0)) > 0.1))


def passes_of(config, layout: Layout, scheme: str, settings, passes: int):
    """Per pass and system, ms per example rebatched; and each point's predicted speedup."""
    entry = config["policies"]["schemes"][scheme]
    study = read_study(scheme, entry, config["policies"], reference_network(config), layout=layout)
    setting = config["policies"]["setting"]
    ids = study.ids("test")[: settings.max_examples]
    loaded = {n: load_network(layout.network(n), with_spec=True) for n in entry["networks"]}
    point_ids = [int(p) for p in chosen_points(study, settings)["point_id"].dropna().unique()]
    device = torch.device("cpu")
    systems = runtimes(
        study, {n: m for n, (m, _) in loaded.items()}, point_ids, setting, device, config["compute"]
    )
    x = systems[REFERENCE].inputs(
        network_images(config["data"], {n: s for n, (_, s) in loaded.items()}, ids)
    )
    rows = study.graphs[setting].rows(ids)
    predicted = {}
    for point_id in point_ids:
        ms, ref = predicted_ms(
            study, study.policies[point_id], rows, "batched", settings.batch_size
        )
        predicted[str(point_id)] = ref / ms
    times = []
    with torch.inference_mode(), _no_gc():
        for system in systems.values():
            system.run_stream(slice_inputs(x, 0, settings.batch_size), settings.batch_size)
        for order in _rotations(list(systems), passes):
            ns, _ = stream_pass(systems, x, settings.batch_size, order)
            times.append({name: t / 1e6 / len(ids) for name, t in ns.items()})
    return pd.DataFrame(times), predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--schemes", nargs="*", default=["early_exit", "network_selection"])
    parser.add_argument("--passes", type=int, default=36)
    parser.add_argument("--draws", type=int, default=4000)
    args = parser.parse_args()
    config = load_config(args.config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    torch.set_num_threads(config["timing"]["threads"])
    pinned = pin_malloc_thresholds()
    apply_compute(config["compute"])
    settings = RuntimeSettings.from_config(
        config["runtime"],
        throughput_batch=config["timing"]["batch_sizes"]["throughput"],
        confidence=config["policies"]["operating_points"]["confidence"],
    )
    subset = settings.repeats * STREAMS_PER_PASS
    print(
        f"{torch.get_num_threads()} threads, malloc pinned: {pinned}, batch {settings.batch_size},"
        f" {settings.max_examples} examples, {args.passes} passes; estimators over {args.draws}"
        f" subsets of {subset} passes (runtime.repeats {settings.repeats} x {STREAMS_PER_PASS})"
    )
    rng = np.random.default_rng(0)
    for scheme in args.schemes:
        table, predicted = passes_of(config, Layout(args.results), scheme, settings, args.passes)
        print(f"== {scheme}: ms per example per pass")
        print(table.describe().loc[["50%", "std", "min", "max"]].round(4).to_string())
        for name, speedup in predicted.items():
            paired = (table[REFERENCE] / table[name]).to_numpy()
            errors = {"median of paired": [], "ratio of medians": []}
            for _ in range(args.draws):
                pick = rng.choice(len(table), size=min(subset, len(table)), replace=False)
                ref, own = table[REFERENCE].to_numpy()[pick], table[name].to_numpy()[pick]
                errors["median of paired"].append(np.median(ref / own) / speedup)
                errors["ratio of medians"].append(np.median(ref) / np.median(own) / speedup)
            summary = ", ".join(
                f"{k}: sd {np.std(v):.3f}, outside ±10% {outside(v):.1%}" for k, v in errors.items()
            )
            print(
                f"  point {name}: predicted {speedup:.3f}x, one pass's paired speedup "
                f"{np.median(paired):.3f}x median, sd {paired.std() / np.median(paired):.1%}; "
                f"{summary}"
            )


if __name__ == "__main__":
    main()
