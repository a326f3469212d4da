"""Tests of the budget sweeps (adaptive_inference.sweep): tables, endpoints, saved policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from policy_data import make_graph, synthetic_tables

from adaptive_inference.graph import early_exit_graph, network_selection_graph
from adaptive_inference.sweep import (
    METHODS,
    fit_curve,
    lambda_grid,
    load_policies,
    run_sweep,
    speedup_at_loss,
    sweep_options,
)

N = 1200
OPTIONS = dict(lambda_count=8, lambda_refine=4, threshold_count=10, bootstrap_samples=200)


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables({"a": 1, "b": 1, "c": 3}, n=N, seed=2)


@pytest.fixture(scope="module")
def split():
    ids = np.arange(N)
    return ids[ids % 2 == 0], ids[ids % 2 == 1]


@pytest.fixture(scope="module")
def selection_sweep(tables, split):
    predictions, costs = tables
    graph = network_selection_graph(predictions, costs, decision_ms=0.05)
    return graph, run_sweep(graph, *split, **OPTIONS)


def test_points_table(selection_sweep):
    graph, result = selection_sweep
    points = result.points
    for column in (
        "scheme", "point_id", "method", "variant", "train_loss", "budget_name", "budget",
        "cost_ms", "cost_ms_std", "speedup", "speedup_lo", "speedup_hi", "top1_acc", "top5_acc",
        "top1_loss", "top1_loss_lo", "top1_loss_hi", "top5_loss", "top5_loss_lo", "top5_loss_hi",
        "train_objective", "reference", "reference_ms", "reference_top1", "reference_top5",
        "n_test",
    ):
        assert column in points.columns, column
    assert set(points["method"]) == set(METHODS)
    assert points["point_id"].is_unique
    counts = points.groupby(["method", "train_loss"]).size()
    assert counts[("learned", "top1")] >= 8 and counts[("myopic", "top5")] >= 8
    single = points[points["method"] == "single"]
    reference = single[single["variant"] == graph.names[graph.reference]].iloc[0]
    assert reference["speedup"] == pytest.approx(1.0)
    assert reference["top1_loss"] == pytest.approx(0.0)
    assert reference["top5_loss"] == pytest.approx(0.0)
    assert reference["speedup_lo"] == pytest.approx(1.0)
    assert reference["top1_loss_hi"] == pytest.approx(0.0)
    for name in ("speedup", "top1_loss", "top5_loss"):
        assert (points[f"{name}_lo"] <= points[name] + 1e-6).all()
        assert (points[name] <= points[f"{name}_hi"] + 1e-6).all()
    assert (points["top1_loss"] == points["reference_top1"] - points["top1_acc"]).all()


def test_node_tables_are_proportions(selection_sweep):
    graph, result = selection_sweep
    nodes = result.nodes
    assert len(nodes) == len(result.points) * graph.num_nodes
    sums = nodes.groupby("point_id")[["stop_fraction", "time_fraction"]].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)


def test_curve_endpoints(selection_sweep):
    graph, result = selection_sweep
    points, nodes = result.points, result.nodes
    learned = points[(points["method"] == "learned") & (points["train_loss"] == "top1")]
    highest = learned.loc[learned["budget"].idxmax(), "point_id"]
    root = nodes[(nodes["point_id"] == highest) & (nodes["node_index"] == 0)]
    assert root["stop_fraction"].item() == 1.0
    assert learned["cost_ms"].iloc[0] > learned["cost_ms"].iloc[-1]
    lowest = learned.iloc[0]
    assert lowest["top1_loss"] < learned["top1_loss"].max()
    oracle = points[(points["method"] == "oracle") & (points["variant"] == "top1")].iloc[0]
    singles = points[points["method"] == "single"]
    assert oracle["top1_acc"] >= singles["top1_acc"].max()


def test_lambda_grid_endpoints():
    correct = np.ones((3, 10), dtype=bool)
    g = make_graph(correct, alone_ms=[1.0, 2.0, 4.0])  # edges 2 and 4 ms, span 6 ms
    grid = lambda_grid(g, 100, count=5)
    assert grid[0] == pytest.approx(1 / (100 * 6.0)) and grid[-1] == pytest.approx(1 / 2.0)
    assert np.all(np.diff(np.log(grid)) == pytest.approx(np.log(grid[1] / grid[0])))


def test_saved_policies_replay_the_table(selection_sweep, split, tmp_path):
    graph, result = selection_sweep
    from adaptive_inference.sweep import save_policies

    path = tmp_path / "policies.pkl"
    save_policies(result, path)
    points, policies = load_policies(path)
    assert set(policies) == set(points["point_id"])
    assert set(points["method"]) == {"learned", "myopic"}
    _, test = split
    for _, row in points.iterrows():
        route = policies[row["point_id"]].route(graph, test)
        assert route.cost_ms.mean() == pytest.approx(row["cost_ms"], rel=1e-12)
        stop = route.stop
        top1 = 100 * graph.correct_top1[stop, test].mean()
        top5 = 100 * graph.correct_top5[stop, test].mean()
        assert top1 == pytest.approx(row["top1_acc"], rel=1e-12)
        assert top5 == pytest.approx(row["top5_acc"], rel=1e-12)
        nodes = result.nodes[result.nodes["point_id"] == row["point_id"]]
        stops = nodes["stop_fraction"].to_numpy()
        np.testing.assert_allclose(np.bincount(stop, minlength=graph.num_nodes) / len(test), stops)


def test_early_exit_sweep_and_refinement(tables, split):
    predictions, costs = tables
    graph = early_exit_graph(predictions["c"], costs["c"], network="c", decision_ms=0.05)
    result = run_sweep(graph, *split, losses=["top1"], methods=["learned", "uniform", "single"],
                       lambda_count=6, lambda_refine=0, threshold_count=5, bootstrap_samples=0)
    points = result.points
    assert points["speedup_lo"].isna().all()
    assert (points["scheme"] == "early_exit").all()
    learned = points[points["method"] == "learned"]
    assert len(learned) == 6
    grid = lambda_grid(graph, len(split[0]), count=6)
    curve = fit_curve(graph, split[0], grid, refine=5, loss="top1")
    lams = [p.lam for p in curve]
    assert len(curve) <= 11 and lams == sorted(lams)
    assert set(grid) <= set(lams)


def test_refinement_does_not_spend_its_budget_on_a_jump():
    # node 0 right for half of the examples, node 1 always; features that say nothing: the
    # policy jumps from "all go on" to "all stop" at lambda = 0.5 / 2 ms, which no lambda resolves
    n = 400
    correct = np.ones((2, n), dtype=bool)
    correct[0, ::2] = False
    features = np.full((2, n, 4), 0.5, dtype=np.float32)
    graph = make_graph(correct, features=features, alone_ms=[1.0, 2.0])
    grid = np.geomspace(0.01, 10.0, 10)
    curve = fit_curve(graph, None, grid, refine=30, loss="top1")
    lams = np.array([p.lam for p in curve])
    loss = np.array([p.train_loss_ for p in curve])
    assert loss.min() == 0.0 and loss.max() == 0.5  # both sides of the jump are on the curve
    assert np.all(lams[1:] / lams[:-1] > 1.005)  # never split closer than 1% in lambda
    assert len(curve) < len(grid) + 15
    jump = np.flatnonzero(np.diff(loss))
    assert len(jump) == 1 and lams[jump[0]] < 0.25 < lams[jump[0] + 1]


def test_train_and_test_must_not_overlap(selection_sweep):
    graph, _ = selection_sweep
    with pytest.raises(ValueError, match="overlap"):
        run_sweep(graph, np.arange(10), np.arange(5, 20), methods=["single"], bootstrap_samples=0)


def test_speedup_at_loss_reads_the_best_point():
    points = pd.DataFrame(
        {
            "scheme": "s", "method": ["m"] * 4 + ["oracle"] * 2, "train_loss": "",
            "variant": ["", "", "", "", "top1", "top5"], "point_id": range(6),
            "budget_name": "", "budget": np.nan, "cost_ms": 1.0,
            "speedup": [1.0, 1.5, 2.0, 3.0, 4.0, 9.0], "speedup_lo": 0.0, "speedup_hi": 9.0,
            "top1_loss": [0.0, 0.4, 0.9, 3.0, -5.0, -5.0], "top1_loss_lo": 0.0, "top1_loss_hi": 9.0,
        }
    )
    table = speedup_at_loss(points, (0.5, 1.0, 2.0, -1.0))
    m = table[table["method"] == "m"].set_index("max_loss")["speedup"]
    assert m[0.5] == 1.5 and m[1.0] == 2.0 and m[2.0] == 2.0 and np.isnan(m[-1.0])
    oracle = table[table["method"] == "oracle"]
    assert (oracle["speedup"] == 4.0).all()  # the top-5 oracle is not read at top-1


def test_sweep_options_from_a_config_section():
    options = sweep_options(
        {"losses": ["top5"], "C": 0.5, "lambdas": {"count": 30, "min": 1e-4, "refine": 0},
         "thresholds": {"count": 20}, "bootstrap": {"samples": 50, "seed": 3, "level": 0.9}}
    )
    assert options == {
        "losses": ["top5"], "C": 0.5, "lambda_count": 30, "lambda_min": 1e-4, "lambda_max": None,
        "lambda_refine": 0, "threshold_count": 20, "bootstrap_samples": 50, "bootstrap_seed": 3,
        "level": 0.9,
    }
