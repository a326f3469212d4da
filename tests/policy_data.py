"""Hand-built graphs and small synthetic workflow tables for the policy tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from adaptive_inference.graph import StageGraph

FEATURES = ["top1_prob", "top2_prob", "margin", "entropy"]


def confidence(correct: np.ndarray, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """Features that say, with some noise, whether each answer is right: ``(nodes, n, 4)``."""
    score = np.where(correct, 1.0, -1.0) + noise * rng.standard_normal(correct.shape)
    top1 = 0.5 + 0.45 * np.tanh(score)
    top2 = (1 - top1) * 0.6
    entropy = -(top1 * np.log(top1) + top2 * np.log(top2))
    return np.stack([top1, top2, top1 - top2, entropy], axis=2).astype(np.float32)


def make_graph(
    correct_top1: np.ndarray,
    *,
    correct_top5: np.ndarray | None = None,
    features: np.ndarray | None = None,
    alone_ms: Sequence[float] | None = None,
    successors: Sequence[Sequence[int]] | None = None,
    decision_ms: float = 0.0,
    reference: int = -1,
    path_features: bool = False,
    seed: int = 0,
    scheme: str = "test",
) -> StageGraph:
    """A graph whose nodes are separate networks (an edge costs its target alone).

    Defaults: a chain; costs 1, 2, 4, ... ms; features from :func:`confidence`.
    """
    correct_top1 = np.asarray(correct_top1, dtype=bool)
    nodes, n = correct_top1.shape
    rng = np.random.default_rng(seed)
    alone = np.asarray(alone_ms if alone_ms is not None else 2.0 ** np.arange(nodes), dtype=float)
    if successors is None:
        successors = [[k + 1] if k + 1 < nodes else [] for k in range(nodes)]
    names = [f"n{k}" for k in range(nodes)]
    if correct_top5 is None:
        correct_top5 = correct_top1 | (rng.random(correct_top1.shape) < 0.5)
    return StageGraph(
        scheme=scheme,
        names=names,
        networks=names,
        exit_names=["final"] * nodes,
        stage_ms=alone,
        head_ms=np.zeros(nodes),
        successors=[list(s) for s in successors],
        edge_ms={(a, b): alone[b] for a, s in enumerate(successors) for b in s},
        decision_ms=decision_ms,
        example_ids=np.arange(n),
        labels=np.zeros(n, dtype=np.int64),
        predictions=np.where(correct_top1, 0, 1),
        correct_top1=correct_top1,
        correct_top5=np.asarray(correct_top5, dtype=bool),
        features=features if features is not None else confidence(correct_top1, rng),
        feature_names=FEATURES,
        path_features=path_features,
        reference=reference,
    )


def synthetic_tables(
    exits: dict[str, int],
    *,
    n: int = 1000,
    classes: int = 10,
    topk: int = 5,
    seed: int = 0,
    costs: dict[str, Sequence[float]] | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Predictions and exit-cost tables in the workflow's formats, for networks with the given
    number of exits; later networks and exits are more accurate (a shared per-example
    difficulty makes their errors correlated, and confidence tracks correctness)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    difficulty = rng.standard_normal(n)
    predictions, exit_costs = {}, {}
    for i, (net, num_exits) in enumerate(exits.items()):
        rows = []
        for e in range(num_exits):
            strength = 1.0 + 0.8 * i + 0.5 * e
            logits = rng.standard_normal((n, classes))
            lift = strength * (1.5 - 0.7 * difficulty) + 0.5 * rng.standard_normal(n)
            logits[np.arange(n), labels] += lift
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            order = np.argsort(-probs, axis=1)[:, :topk]
            top_p = np.take_along_axis(probs, order, axis=1)
            frame = {
                "example_id": np.arange(n, dtype=np.int64),
                "label": labels,
                "exit": np.full(n, e, dtype=np.int16),
                "exit_name": f"exit{e}" if e + 1 < num_exits else "final",
                "prediction": order[:, 0],
                "correct_top1": order[:, 0] == labels,
                "correct_top5": (order == labels[:, None]).any(1),
                "max_prob": top_p[:, 0].astype(np.float32),
                "margin": (top_p[:, 0] - top_p[:, 1]).astype(np.float32),
                "entropy": (-(probs * np.log(probs)).sum(1)).astype(np.float32),
            }
            for j in range(topk):
                frame[f"top{j + 1}_class"] = order[:, j]
            for j in range(topk):
                frame[f"top{j + 1}_prob"] = top_p[:, j].astype(np.float32)
            rows.append(pd.DataFrame(frame))
        table = pd.concat(rows, ignore_index=True)
        names = [f"exit{e}" for e in range(num_exits - 1)] + ["final"]
        table["exit_name"] = pd.Categorical(table["exit_name"], categories=names)
        predictions[net] = table
        stage = np.cumsum(costs[net]) if costs else np.cumsum(np.full(num_exits, 1.0 + 2.0 * i))
        head = np.full(num_exits, 0.1)
        frames = []
        for setting, scale in (("latency", 1.0), ("throughput", 0.1)):
            frames.append(
                pd.DataFrame(
                    {
                        "exit": np.arange(num_exits),
                        "exit_name": [f"exit{e}" for e in range(num_exits - 1)] + ["final"],
                        "exit_after": np.arange(num_exits),
                        "stage_ms": stage * scale,
                        "head_ms": head * scale,
                        "cumulative_ms": (stage + head) * scale,
                        "setting": setting,
                        "batch_size": 1 if setting == "latency" else 256,
                    }
                )
            )
        exit_costs[net] = pd.concat(frames, ignore_index=True)
    return predictions, exit_costs
