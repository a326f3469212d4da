"""Time of the whole policy sweep on ImageNet-sized tables (a script, not a test).

Generates the workflow's tables for a paper-like family on 50,000 examples x 1,000 classes:
``alexnet`` and ``googlenet`` (one exit each) and ``resnet50`` (exits after its first three
stages, then the final one); costs are made up in the proportions of the paper's networks
(:meth:`~adaptive_inference.costs.Costs.additive`). It then builds the early-exit graph
(ResNet50's exits) and the network-selection graph, and runs
:func:`~adaptive_inference.sweep.run_sweep` on each with the default methods (the learned curve:
the recursion at every lambda, its intercept shifts and the baselines of its class; myopic at
every lambda; top-1 and top-5; uniform, cascades, oracles, single nodes), the bootstrap and the
operating points chosen on validation with intervals that include the choice: fitted on 35% of
the examples, chosen on 15%, measured on 50% (the default study's proportions). It prints the
time of each part. Target: building the graphs plus both sweeps under 60 s on 2 cores.

    .venv/bin/python benchmarks/bench_policies.py [--lambdas 40] [--refine 20] [--bootstrap 1000]
        [--combined] [--no-warm-start] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import pandas as pd
import torch

from adaptive_inference.costs import Costs
from adaptive_inference.graph import scheme_graph
from adaptive_inference.sweep import run_sweep

SHIFTS = (-1.0, -0.5, 0.5, 1.0)  # the schema's default intercept shifts
# network -> (per-exit boost of the label's logit, per-stage cost ms, per-head cost ms)
FAMILY = {
    "alexnet": ([3.2], [1.0], [0.05]),
    "googlenet": ([4.2], [3.0], [0.05]),
    "resnet50": ([2.2, 3.0, 3.9, 4.7], [1.2, 1.6, 2.4, 1.6], [0.06, 0.05, 0.05, 0.05]),
}


def generate_tables(
    n: int, classes: int, topk: int = 5, seed: int = 0, chunk: int = 5000
) -> dict[str, pd.DataFrame]:
    """Predictions tables (extraction's format)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    difficulty = torch.randn(n, generator=gen)
    predictions = {}
    for net, (boosts, _, _) in FAMILY.items():
        names = [f"exit{e}" for e in range(len(boosts) - 1)] + ["final"]
        frames = []
        for e, boost in enumerate(boosts):
            top_p, top_i, entropy = [], [], []
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                logits = torch.randn(stop - start, classes, generator=gen)
                noise = torch.randn(stop - start, generator=gen)
                lift = boost * (1.3 - 0.6 * difficulty[start:stop]) + 0.8 * noise
                logits[torch.arange(stop - start), labels[start:stop]] += lift
                probs = logits.softmax(1)
                p, i = probs.topk(topk, dim=1)
                top_p.append(p)
                top_i.append(i)
                entropy.append(-(probs * probs.clamp_min(1e-12).log()).sum(1))
            p, i, h = torch.cat(top_p).numpy(), torch.cat(top_i).numpy(), torch.cat(entropy).numpy()
            lab = labels.numpy()
            frame = {
                "example_id": np.arange(n, dtype=np.int64),
                "label": lab,
                "exit": np.full(n, e, dtype=np.int16),
                "exit_name": np.full(n, names[e], dtype=object),
                "prediction": i[:, 0].astype(np.int32),
                "correct_top1": i[:, 0] == lab,
                "correct_top5": (i[:, :5] == lab[:, None]).any(1),
                "max_prob": p[:, 0],
                "margin": p[:, 0] - p[:, 1],
                "entropy": h.astype(np.float32),
            }
            for j in range(topk):
                frame[f"top{j + 1}_class"] = i[:, j].astype(np.int32)
            for j in range(topk):
                frame[f"top{j + 1}_prob"] = p[:, j]
            frames.append(pd.DataFrame(frame))
        table = pd.concat(frames, ignore_index=True)
        table["exit_name"] = pd.Categorical(table["exit_name"], categories=names)
        predictions[net] = table
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--lambdas", type=int, default=40)
    parser.add_argument("--refine", type=int, default=20, help="refinement lambdas per curve")
    parser.add_argument("--thresholds", type=int, default=50)
    parser.add_argument("--no-warm-start", action="store_true")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--losses", nargs="+", default=["top1", "top5"])
    parser.add_argument("--decision-ms", type=float, default=0.05)
    parser.add_argument("--combined", action="store_true", help="also sweep the combined graph")
    parser.add_argument("--profile", action="store_true", help="print the top functions by time")
    args = parser.parse_args()

    print(f"threads: torch {torch.get_num_threads()}")
    start = time.perf_counter()
    predictions = generate_tables(args.examples, args.classes)
    costs = Costs.additive(
        {net: stages for net, (_, stages, _) in FAMILY.items()},
        {net: heads for net, (_, _, heads) in FAMILY.items()},
        decision_ms=args.decision_ms,
    )
    seconds = time.perf_counter() - start
    print(f"generate tables ({args.examples} x {args.classes} classes): {seconds:.1f} s")
    for net, table in predictions.items():
        acc = table.groupby("exit", observed=True)[["correct_top1", "correct_top5"]].mean().round(3)
        print(f"  {net}: top1 {acc['correct_top1'].tolist()} top5 {acc['correct_top5'].tolist()}")

    order = np.random.default_rng(0).permutation(args.examples)
    cut = [int(0.35 * args.examples), int(0.5 * args.examples)]
    train, validation, test = (np.sort(part) for part in np.split(order, cut))
    options = dict(
        losses=args.losses,
        lambda_count=args.lambdas,
        lambda_refine=args.refine,
        threshold_count=args.thresholds,
        bootstrap_samples=args.bootstrap,
        warm_start=not args.no_warm_start,
        shifts=SHIFTS,
    )

    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    timings = {}
    t0 = time.perf_counter()
    graphs = {
        "early_exit": scheme_graph("early_exit", {"resnet50": predictions["resnet50"]}, costs),
        "network_selection": scheme_graph("network_selection", predictions, costs),
    }
    if args.combined:
        graphs["combined"] = scheme_graph("combined", predictions, costs)
    timings["build graphs"] = time.perf_counter() - t0
    results = {}
    for scheme, graph in graphs.items():
        t = time.perf_counter()
        results[scheme] = run_sweep(graph, train, validation, test, **options)
        timings[f"sweep {scheme}"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    if profiler:
        profiler.disable()

    for scheme, result in results.items():
        points = result.points
        counts = points.groupby("method").size().to_dict()
        print(f"{scheme}: {len(points)} points {counts}, {len(result.policies)} fitted policies")
        table = result.headline
        table = table[
            (table["metric"] == "top1")
            & table["train_loss"].isin(["top1", ""])
            & table["method"].isin(["learned", "myopic", "uniform", "cascade", "oracle"])
        ]
        columns = [
            "method",
            "choice",
            "max_loss",
            "speedup",
            "speedup_lo",
            "speedup_hi",
            "top1_loss",
        ]
        print(table[columns].round(3).to_string(index=False))
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.1f} s")
    grid = (
        f"{args.lambdas}+{args.refine} lambdas (learned with {len(SHIFTS)} shifts) x "
        f"{len(args.losses)} losses x 2 methods"
    )
    print(f"TOTAL (graphs + sweeps, {grid}, bootstrap {args.bootstrap}): {total:.1f} s")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
