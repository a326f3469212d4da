"""Tests of the resplits (adaptive_inference.splits.resplit, adaptive_inference.robustness):
head_train stays, the policy splits are dealt again in the same proportions, stratified; the
sweep and read-off repeated per resplit; learned minus each baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from policy_data import synthetic_tables

from adaptive_inference.graph import scheme_graph
from adaptive_inference.readoff import BASELINES, choose, learned_minus_baselines
from adaptive_inference.robustness import resplit_sweeps
from adaptive_inference.splits import POLICY_SPLITS, ids_of, make_splits, resplit
from adaptive_inference.sweep import run_sweep

FRACTIONS = {"head_train": 0.2, "policy_train": 0.35, "policy_validation": 0.15, "test": 0.3}


def labels(n: int = 2000, classes: int = 10, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = np.linspace(1, 3, classes)  # classes of unequal sizes
    return rng.choice(classes, size=n, p=weights / weights.sum())


def test_resplit_keeps_head_train_and_the_proportions():
    y = labels()
    splits = make_splits(y, FRACTIONS, seed=0)
    counts = splits["split"].value_counts()
    per_class = pd.crosstab(splits["label"], splits["split"])
    seen = []
    for seed in (1, 2, 3):
        dealt = resplit(splits, FRACTIONS, seed)
        assert dealt["example_id"].tolist() == splits["example_id"].tolist()
        assert dealt["label"].tolist() == splits["label"].tolist()
        # head_train (the exit heads were trained on it) stays as it was
        head = splits["split"] == "head_train"
        assert (dealt["split"] == "head_train").equals(head)
        # the other examples are dealt again, in the same proportions
        new_counts = dealt["split"].value_counts()
        for name in POLICY_SPLITS:
            assert abs(new_counts[name] - counts[name]) <= 1, name
        # stratified: every class in (about) the same proportions in every split
        crossed = pd.crosstab(dealt["label"], dealt["split"])
        for name in POLICY_SPLITS:
            assert (np.abs(crossed[name] - per_class[name]) <= 2).all(), name
        moved = (dealt["split"] != splits["split"]).mean()
        assert 0.2 < moved < 0.8
        seen.append(dealt["split"].tolist())
        # a resplit is a function of its seed
        assert resplit(splits, FRACTIONS, seed)["split"].tolist() == seen[-1]
    assert seen[0] != seen[1] != seen[2]


def test_resplit_takes_the_proportions_of_the_policy_splits_only():
    y = labels(1000)
    splits = make_splits(y, FRACTIONS, seed=0)
    pool = (splits["split"] != "head_train").sum()
    other = {"head_train": 0.5, "policy_train": 0.1, "policy_validation": 0.1, "test": 0.3}
    dealt = resplit(splits, other, seed=4)
    assert (dealt["split"] == "head_train").sum() == (splits["split"] == "head_train").sum()
    counts = dealt["split"].value_counts()
    assert abs(counts["policy_train"] - pool * 0.2) <= 1
    assert abs(counts["policy_validation"] - pool * 0.2) <= 1
    assert abs(counts["test"] - pool * 0.6) <= 1


@pytest.fixture(scope="module")
def study():
    n = 900
    predictions, costs = synthetic_tables(
        {"a": 1, "b": 1, "c": 1}, n=n, seed=7, decision_ms=0.05, answer_ms=0.01
    )
    graph = scheme_graph("network_selection", predictions, costs, name="ns")
    splits = make_splits(graph.labels, FRACTIONS, seed=0)
    options = dict(
        losses=["top1"],
        methods=["learned", "myopic", "uniform", "cascade", "oracle", "single"],
        lambda_count=5,
        lambda_refine=0,
        threshold_count=6,
        loss_levels=[0.5, 1.0, 2.0],
        confidence=0.8,
        shifts=(-1.0, 1.0),
    )
    table = resplit_sweeps(
        graph, splits, FRACTIONS, resplits=2, seed=10, options=options, progress=False
    )
    return graph, splits, options, table


def test_resplit_sweeps_read_every_method_off_each_resplit(study):
    graph, splits, options, table = study
    assert list(table.columns) == [
        "scheme",
        "resplit",
        "seed",
        "method",
        "train_loss",
        "metric",
        "max_loss",
        "origin",
        "speedup",
        "loss",
        "within_budget",
    ]
    # one row per resplit, method (the learned policy and the baselines it is held to),
    # metric and budget
    assert set(table["method"]) == {"learned", *BASELINES}
    assert len(table) == 2 * 4 * 1 * 3
    assert not table.duplicated(["resplit", "method", "train_loss", "metric", "max_loss"]).any()
    assert (table["scheme"] == "ns").all()
    assert table["seed"].tolist() == [10 + r for r in table["resplit"]]
    done = table.dropna(subset=["loss"])
    assert (done["within_budget"] == (done["loss"] <= done["max_loss"])).all()
    # the first resplit is the sweep and read-off on that resplit's parts
    dealt = resplit(splits, FRACTIONS, 10)
    parts = [ids_of(dealt, name) for name in POLICY_SPLITS]
    assert not np.isin(ids_of(splits, "head_train"), np.concatenate(parts)).any()
    result = run_sweep(
        graph, *parts, **{**options, "methods": ["learned", *BASELINES], "bootstrap_samples": 0}
    )
    chosen = choose(result.points, [0.5, 1.0, 2.0], metric="top1", confidence=0.8)
    first = table[table["resplit"] == 0].set_index(["method", "max_loss"])
    for row in chosen.itertuples():
        mine = first.loc[(row.method, row.max_loss)]
        assert mine["speedup"] == pytest.approx(row.speedup, nan_ok=True)
        assert mine["loss"] == pytest.approx(row.top1_loss, nan_ok=True)
    # the resplits differ
    second = table[table["resplit"] == 1].set_index(["method", "max_loss"])
    assert not np.allclose(first["speedup"], second.loc[first.index, "speedup"])


def test_learned_minus_baselines_from_resplits(study):
    _, _, _, table = study
    diff = learned_minus_baselines(table)
    assert len(diff) == 2 * 1 * 3  # per resplit, metric and budget
    assert not diff.duplicated(["scheme", "resplit", "metric", "max_loss"]).any()
    speed = table.set_index(["resplit", "max_loss", "method"])["speedup"].fillna(1.0)
    for row in diff.itertuples():
        learned = speed[(row.resplit, row.max_loss, "learned")]
        others = {m: speed[(row.resplit, row.max_loss, m)] for m in BASELINES}
        for m, value in others.items():
            assert getattr(row, f"minus_{m}") == pytest.approx(learned - value)
        assert row.minus_best == pytest.approx(learned - max(others.values()))


def test_learned_minus_baselines_signs_on_a_constructed_table():
    rows = []
    for r in (0, 1):
        for level, learned in ((1.0, 2.0), (2.0, 3.0)):
            rows += [
                dict(method="learned", train_loss="top1", metric="top1", speedup=learned),
                dict(method="learned", train_loss="top5", metric="top1", speedup=9.0),  # not it
                dict(method="myopic", train_loss="top1", metric="top1", speedup=np.nan),
                dict(method="uniform", train_loss="", metric="top1", speedup=1.5),
                dict(method="cascade", train_loss="", metric="top1", speedup=2.5),
            ]
            for row in rows[-5:]:
                row.update(
                    scheme="s",
                    resplit=r,
                    seed=r,
                    max_loss=level,
                    origin="",
                    loss=0.0,
                    within_budget=True,
                )
    diff = learned_minus_baselines(pd.DataFrame(rows)).set_index(["resplit", "max_loss"])
    assert len(diff) == 4 and set(diff["metric"]) == {"top1"}
    for r in (0, 1):
        low, high = diff.loc[(r, 1.0)], diff.loc[(r, 2.0)]
        # a method without a point counts at speedup 1 (the reference alone)
        assert low["minus_myopic"] == pytest.approx(1.0) and high["minus_myopic"] == 2.0
        assert low["minus_uniform"] == pytest.approx(0.5) and low["minus_uniform"] > 0
        assert low["minus_cascade"] == pytest.approx(-0.5) and low["minus_cascade"] < 0
        assert low["minus_best"] == pytest.approx(-0.5)  # cascade is the best baseline
        assert high["minus_best"] == pytest.approx(0.5)  # learned beats every baseline
