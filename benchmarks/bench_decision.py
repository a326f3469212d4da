"""What a batch-1 decision costs with its features on the host against the same decision with
its features as tensor operations, side by side.

    .venv/bin/python benchmarks/bench_decision.py [--rounds 4000] [--threads 1]

For each node shape (steps, dominators read) and class count (10: the default study; 1000:
ImageNet), times one example's decision two ways, in rounds whose order alternates: the
runtime's own :meth:`~adaptive_inference.decision.NodeDecision.one` (logits read back once,
features in float64 NumPy, :func:`~adaptive_inference.decision.one_example_features`), and the
tensor features of :func:`~adaptive_inference.decision.decision_features` read back for the
same rule (how the runtime decided before). Prints each median in microseconds and their ratio
(tensor / host), and checks that both take the same action. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from adaptive_inference.cost_timing import random_decision
from adaptive_inference.decision import NodeDecision, PathMemo, decision_features

SHAPES = [(1, 0), (2, 0), (1, 1)]  # (steps, dominators read)


def tensor_path(decision: NodeDecision, memo: PathMemo, rows: torch.Tensor):
    """The decision with tensor features (one example as a one-row batch)."""

    def call(logits: torch.Tensor) -> int:
        own, top_i, _ = decision_features(logits, decision.topk)
        columns = [memo.columns(d, top_i[:, 0], rows) for d in decision.reads]
        features = torch.cat([own, *columns], dim=1) if columns else own
        return decision.rule.decide_one(features[0].tolist())

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
    print(f"{'classes':>7} {'steps':>5} {'reads':>5} {'host us':>8} {'tensor us':>9} {'ratio':>6}")
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
                    "host": lambda x, decision=decision, memo=host_memo: decision.one(x, memo),
                    "tensor": tensor_path(decision, tensor_memo, rows),
                }
                actions = {name: call(logits) for name, call in paths.items()}
                if len(set(actions.values())) != 1:
                    raise SystemExit(f"the two paths disagree: {actions}")
                samples = {name: [] for name in paths}
                for r in range(args.warmup + args.rounds):
                    for name in paths if r % 2 else reversed(paths):
                        start = time.perf_counter_ns()
                        paths[name](logits)
                        if r >= args.warmup:
                            samples[name].append(time.perf_counter_ns() - start)
                host, tensor = median_us(samples["host"]), median_us(samples["tensor"])
                print(
                    f"{classes:>7} {steps:>5} {reads:>5} {host:>8.1f} {tensor:>9.1f} "
                    f"{tensor / host:>6.2f}"
                )


if __name__ == "__main__":
    main()
