"""Hand-built graphs and small synthetic workflow tables for the policy tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np
import pandas as pd

from adaptive_inference.costs import Costs, alone_key
from adaptive_inference.graph import StageGraph

FEATURES = ["top1_prob", "top2_prob", "margin", "entropy"]


def confidence(correct: np.ndarray, rng: np.random.Generator, noise: float = 0.3) -> np.ndarray:
    """Features that say, with some noise, whether each answer is right: ``(nodes, n, 4)``."""
    score = np.where(correct, 1.0, -1.0) + noise * rng.standard_normal(correct.shape)
    top1 = 0.5 + 0.45 * np.tanh(score)
    top2 = (1 - top1) * 0.6
    entropy = -(top1 * np.log(top1) + top2 * np.log(top2))
    return np.stack([top1, top2, top1 - top2, entropy], axis=2).astype(np.float32)


def with_decision_ms(costs: Costs, per_network: Mapping[str, float]) -> Costs:
    """``costs`` with every decision at the exits of the named networks costing the given ms
    (per example)."""
    calls = {key: dict(sizes) for key, sizes in costs.calls.items()}
    for key, sizes in calls.items():
        if key[0] == "decision" and key[3] in per_network:
            for size in sizes:
                sizes[size] = per_network[key[3]] * size
    return Costs(batch_size=costs.batch_size, calls=calls)


def make_graph(
    correct_top1: np.ndarray,
    *,
    correct_top5: np.ndarray | None = None,
    features: np.ndarray | None = None,
    start_ms: Sequence[float] | None = None,
    single_ms: Sequence[float] | None = None,
    successors: Sequence[Sequence[int]] | None = None,
    decision_ms: float | Sequence[float] = 0.0,
    answer_ms: float = 0.0,
    reference: int = -1,
    path_features: bool = False,
    seed: int = 0,
    name: str = "test",
    kind: str = "network_selection",
) -> StageGraph:
    """A graph whose nodes are separate one-exit networks ``n0, n1, ...`` (an edge costs its
    target alone), priced by :meth:`Costs.additive`.

    Defaults: a chain; costs 1, 2, 4, ... ms; features from :func:`confidence`; the top-1 class
    is 0 where the answer is right (every label is 0), else 1. ``single_ms``: each node alone
    (default: its ``start_ms``). ``decision_ms``: one cost for every node, or one per node.
    """
    correct_top1 = np.asarray(correct_top1, dtype=bool)
    nodes, n = correct_top1.shape
    rng = np.random.default_rng(seed)
    start = np.asarray(start_ms if start_ms is not None else 2.0 ** np.arange(nodes), dtype=float)
    if successors is None:
        successors = [[k + 1] if k + 1 < nodes else [] for k in range(nodes)]
    names = [f"n{k}" for k in range(nodes)]
    if correct_top5 is None:
        correct_top5 = correct_top1 | (rng.random(correct_top1.shape) < 0.5)
    if features is None:
        features = confidence(correct_top1, rng)
    features = np.asarray(features)
    per_node = np.broadcast_to(np.asarray(decision_ms, dtype=float), (nodes,))
    stages = {net: [ms] for net, ms in zip(names, start, strict=True)}
    costs = Costs.additive(stages, answer_ms=answer_ms, max_shape=nodes)
    costs = with_decision_ms(costs, dict(zip(names, per_node, strict=True)))
    if single_ms is not None:
        for net, ms in zip(names, single_ms, strict=True):
            costs.calls[alone_key(net, 0)] = {1: float(ms)}
    predictions = np.where(correct_top1, 0, 1)
    top_i = np.stack([predictions, 1 - predictions], axis=2)
    top_p = features[:, :, :2].astype(np.float32)
    return StageGraph(
        kind=kind,
        name=name,
        names=names,
        networks=names,
        exit_names=["final"] * nodes,
        exits=[0] * nodes,
        successors=[list(s) for s in successors],
        path_features=path_features,
        example_ids=np.arange(n),
        labels=np.zeros(n, dtype=np.int64),
        predictions=predictions,
        correct_top1=correct_top1,
        correct_top5=np.asarray(correct_top5, dtype=bool),
        features=features,
        feature_names=FEATURES,
        top_i=top_i,
        top_p=top_p,
        costs=costs,
        reference=reference,
    )


def default_stage_ms(exits: Mapping[str, int]) -> dict[str, list[float]]:
    """Per-exit stage costs: network ``i`` (in mapping order) costs ``1 + 2 i`` ms per stage."""
    return {net: [1.0 + 2.0 * i] * k for i, (net, k) in enumerate(exits.items())}


def table_costs(
    exits: Mapping[str, int],
    stage_ms: Mapping[str, Sequence[float]] | None = None,
    *,
    head_ms: float = 0.1,
    decision_ms: float = 0.0,
    answer_ms: float = 0.0,
) -> Costs:
    """Additive costs of the networks of ``exits``: ``stage_ms`` per exit (beyond the previous
    one; default :func:`default_stage_ms`), ``head_ms`` for every head."""
    stage_ms = default_stage_ms(exits) if stage_ms is None else stage_ms
    return Costs.additive(
        {net: list(stage_ms[net]) for net in exits},
        {net: [head_ms] * k for net, k in exits.items()},
        decision_ms=decision_ms,
        answer_ms=answer_ms,
        max_shape=8,
    )


def _table(labels: np.ndarray, probs: Sequence[np.ndarray], topk: int) -> pd.DataFrame:
    """A predictions table (extraction's format) of one network, one ``probs`` per exit."""
    n = len(labels)
    num_exits = len(probs)
    names = [f"exit{e}" for e in range(num_exits - 1)] + ["final"]
    rows = []
    for e, p in enumerate(probs):
        order = np.argsort(-p, axis=1, kind="stable")[:, :topk]
        top_p = np.take_along_axis(p, order, axis=1)
        frame = {
            "example_id": np.arange(n, dtype=np.int64),
            "label": labels,
            "exit": np.full(n, e, dtype=np.int16),
            "exit_name": names[e],
            "prediction": order[:, 0],
            "correct_top1": order[:, 0] == labels,
            "correct_top5": (order[:, :5] == labels[:, None]).any(1),
            "max_prob": top_p[:, 0].astype(np.float32),
            "margin": (top_p[:, 0] - top_p[:, 1]).astype(np.float32),
            "entropy": (-(p * np.log(p)).sum(1)).astype(np.float32),
        }
        for j in range(topk):
            frame[f"top{j + 1}_class"] = order[:, j]
        for j in range(topk):
            frame[f"top{j + 1}_prob"] = top_p[:, j].astype(np.float32)
        rows.append(pd.DataFrame(frame))
    table = pd.concat(rows, ignore_index=True)
    table["exit_name"] = pd.Categorical(table["exit_name"], categories=names)
    return table


def _softmax(logits: np.ndarray) -> np.ndarray:
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True)


def synthetic_tables(
    exits: Mapping[str, int],
    *,
    n: int = 1000,
    classes: int = 10,
    topk: int = 5,
    seed: int = 0,
    stage_ms: Mapping[str, Sequence[float]] | None = None,
    head_ms: float = 0.1,
    decision_ms: float = 0.0,
    answer_ms: float = 0.0,
) -> tuple[dict[str, pd.DataFrame], Costs]:
    """Predictions tables in the workflow's format for networks with the given number of exits,
    and their additive :class:`Costs` (:func:`table_costs`). Later networks and exits are more
    accurate (a shared per-example difficulty makes their errors correlated, and confidence
    tracks correctness)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    difficulty = rng.standard_normal(n)
    predictions = {}
    for i, (net, num_exits) in enumerate(exits.items()):
        probs = []
        for e in range(num_exits):
            strength = 1.0 + 0.8 * i + 0.5 * e
            logits = rng.standard_normal((n, classes))
            lift = strength * (1.5 - 0.7 * difficulty) + 0.5 * rng.standard_normal(n)
            logits[np.arange(n), labels] += lift
            probs.append(_softmax(logits))
        predictions[net] = _table(labels, probs, topk)
    costs = table_costs(
        exits, stage_ms, head_ms=head_ms, decision_ms=decision_ms, answer_ms=answer_ms
    )
    return predictions, costs


def family_tables(
    accuracies: Mapping[str, Sequence[float]],
    *,
    n: int = 1000,
    classes: int = 10,
    topk: int = 5,
    seed: int = 0,
    noise: float = 0.5,
) -> dict[str, pd.DataFrame]:
    """Predictions tables whose exits are right with (about) the given top-1 accuracies.

    Exit ``j`` of a network is right where ``q_j - d + noise * e > 0`` (``d`` a per-example
    difficulty shared by every exit, ``e`` the exit's own noise, ``q_j`` set from the target
    accuracy); its predicted class gets a logit lead that grows with that score, so confidence
    tracks correctness the way a real network's does, imperfectly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    difficulty = rng.standard_normal(n)
    spread = np.sqrt(1.0 + noise**2)
    out = {}
    for net, targets in accuracies.items():
        probs = []
        for accuracy in targets:
            score = spread * NormalDist().inv_cdf(accuracy) - difficulty
            score = score + noise * rng.standard_normal(n)
            right = score > 0
            other = (labels + rng.integers(1, classes, n)) % classes
            answer = np.where(right, labels, other)
            logits = rng.standard_normal((n, classes))
            lead = np.log1p(np.exp(1.5 * score + 1.0))
            logits[np.arange(n), answer] = logits.max(1) + lead
            probs.append(_softmax(logits))
        out[net] = _table(labels, probs, topk)
    return out
