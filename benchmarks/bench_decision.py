"""What a batch-1 decision costs with its features on the host against the same decision with
its features as tensor operations, side by side; and, with few classes, the host features as
Python floats against NumPy.

    .venv/bin/python benchmarks/bench_decision.py [--rounds 4000] [--threads 1]

For each node shape (steps, dominators read) and class count (10: the default study; 1000:
ImageNet), times one example's decision three ways, in rounds whose order rotates: the
runtime's own :meth:`~adaptive_inference.decision.NodeDecision.one` (logits read back once,
features in float64 on the host, :func:`~adaptive_inference.decision.one_example_features`:
Python floats up to :data:`~adaptive_inference.decision.FEW_CLASSES` classes, NumPy above), the
host features in NumPy at every class count (:func:`~adaptive_inference.decision.
many_class_features`), and the tensor features of :func:`~adaptive_inference.decision.
decision_features` read back for the same rule (how the runtime decided before). Prints each
median in microseconds and the ratios to the runtime's, and checks that all three take the same
action. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptive_inference.cost_timing import random_decision
from adaptive_inference.decision import (
    NodeDecision,
    PathMemo,
    decision_features,
    many_class_features,
)

SHAPES = [(1, 0), (2, 0), (1, 1)]  # (steps, dominators read)


def tensor_path(decision: NodeDecision, memo: PathMemo, rows: torch.Tensor):
    """The decision with tensor features (one example as a one-row batch)."""

    def call(logits: torch.Tensor) -> int:
        own, top_i, _ = decision_features(logits, decision.topk)
        columns = [memo.columns(d, top_i[:, 0], rows) for d in decision.reads]
        features = torch.cat([own, *columns], dim=1) if columns else own
        return decision.rule.decide_one(features[0].tolist())

    return call


def numpy_path(decision: NodeDecision, memo: PathMemo):
    """The decision with its host features in NumPy (the runtime's path above FEW_CLASSES)."""

    def call(logits: torch.Tensor) -> int:
        own, top_i, _ = many_class_features(logits, decision.topk)
        for d in decision.reads:
            own = own + memo.columns_one(d, top_i[0])
        return decision.rule.decide_one(own)

    return call


def median_us(samples: list[int]) -> float:
    return float(np.median(samples)) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--topk", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"batch-1 decision, {args.rounds} rounds, {args.threads} thread(s), top-{args.topk}")
    print(
        f"{'classes':>7} {'steps':>5} {'reads':>5} {'runtime us':>10} {'numpy us':>8} "
        f"{'tensor us':>9} {'numpy/rt':>8} {'tensor/rt':>9}"
    )
    with torch.inference_mode():
        for classes in (10, 1000):
            logits = torch.randn(1, classes, generator=generator)
            for steps, reads in SHAPES:
                decision = random_decision(steps, reads, topk=args.topk, device=torch.device("cpu"))
                host_memo, tensor_memo, rows = PathMemo(), PathMemo(1), torch.arange(1)
                for d in range(reads):
                    keeper = NodeDecision(
                        d, [-1], rule=None, constant=-1, topk=args.topk, keep=True
                    )
                    keeper.one(logits, host_memo)
                    keeper.many(logits, tensor_memo, rows)
                paths = {
                    "runtime": lambda x, decision=decision, memo=host_memo: decision.one(x, memo),
                    "numpy": numpy_path(decision, host_memo),
                    "tensor": tensor_path(decision, tensor_memo, rows),
                }
                actions = {name: call(logits) for name, call in paths.items()}
                actions["runtime"] = actions["runtime"][0]  # (action, class)
                if len(set(actions.values())) != 1:
                    raise SystemExit(f"the paths disagree: {actions}")
                samples = {name: [] for name in paths}
                names = list(paths)
                for r in range(args.warmup + args.rounds):
                    shift = r % len(names)  # the order rotates from round to round
                    for name in names[shift:] + names[:shift]:
                        start = time.perf_counter_ns()
                        paths[name](logits)
                        if r >= args.warmup:
                            samples[name].append(time.perf_counter_ns() - start)
                us = {name: median_us(samples[name]) for name in paths}
                print(
                    f"{classes:>7} {steps:>5} {reads:>5} {us['runtime']:>10.1f} "
                    f"{us['numpy']:>8.1f} {us['tensor']:>9.1f} "
                    f"{us['numpy'] / us['runtime']:>8.2f} {us['tensor'] / us['runtime']:>9.2f}"
                )


if __name__ == "__main__":
    main()
