"""Tests of the budget sweeps (adaptive_inference.sweep): the learned curve, tables, endpoints,
headline, saved policies."""

from __future__ import annotations

import numpy as np
import pytest
from policy_data import family_tables, make_graph, synthetic_tables

from adaptive_inference.baselines import (
    cascade_firsts,
    cascade_route,
    default_thresholds,
    single_route,
    uniform_route,
)
from adaptive_inference.costs import Costs
from adaptive_inference.graph import scheme_graph
from adaptive_inference.policies import TradeoffPolicy, standardize
from adaptive_inference.readoff import choose
from adaptive_inference.study import load_policies, save_policies
from adaptive_inference.sweep import (
    EXACT_SUMS,
    METHODS,
    _bootstrap_columns,
    _resampled_means,
    class_baselines,
    fit_curve,
    lambda_grid,
    learned_curve,
    pareto_front,
    run_sweep,
    sweep_options,
)

N = 1200
EXITS = {"a": 1, "b": 1, "c": 3}
OPTIONS = dict(
    lambda_count=8, lambda_refine=4, threshold_count=10, bootstrap_samples=200, shifts=(-1.0, 1.0)
)
KINDS = ("early_exit", "network_selection", "combined")


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables(EXITS, n=N, seed=2, decision_ms=0.05, answer_ms=0.01)


def build(kind, predictions, costs, **kw):
    if kind == "early_exit":
        predictions = {"c": predictions["c"]}
    return scheme_graph(kind, predictions, costs, **kw)


@pytest.fixture(scope="module")
def split():
    ids = np.arange(N)
    return ids[ids % 3 == 0], ids[ids % 3 == 1], ids[ids % 3 == 2]


@pytest.fixture(scope="module")
def selection_sweep(tables, split):
    predictions, costs = tables
    graph = scheme_graph("network_selection", predictions, costs)
    return graph, run_sweep(graph, *split, losses=("top1", "top5"), **OPTIONS)


def route_objective(graph, policy, rows, lam):
    route = policy.route_rows(graph, rows)
    wrong = ~graph.correct(policy.loss)[route.stop, rows]
    return float(wrong.mean() + lam * route.cost_ms.mean())


# -------------------------------------------------------------------------------------------
# The learned curve
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("C", [1.0, 1e-4])
@pytest.mark.parametrize("kind", KINDS)
def test_learned_curve_beats_the_class_baselines_at_every_lambda(tables, split, kind, C):
    # (C = 1e-4: rules so regularised that the recursion alone loses to the thresholds)
    predictions, costs = tables
    graph = build(kind, predictions, costs)
    train = split[0]
    rows = graph.rows(train)
    features = standardize(graph, rows)
    thresholds = default_thresholds(graph, rows, 12)
    lambdas = lambda_grid(graph, rows.size, count=8)
    curve = learned_curve(
        graph,
        train,
        lambdas,
        features=features,
        thresholds=thresholds,
        shifts=(-1.0, 1.0),
        refine=3,
        C=C,
    )
    firsts = cascade_firsts(graph)
    assert firsts
    baselines = [uniform_route(graph, t, train) for t in thresholds]
    baselines += [cascade_route(graph, f, t, train) for f in firsts for t in thresholds]
    baselines += [single_route(graph, node, train) for node in range(graph.num_nodes)]
    loss = np.array([(~graph.correct_top1[r.stop, rows]).mean() for r in baselines])
    cost = np.array([r.cost_ms.mean() for r in baselines])
    recomputed = {id(p): route_objective(graph, p, rows, 0.0) for p in curve}  # loss alone
    curve_cost = {id(p): p.route_rows(graph, rows).cost_ms.mean() for p in curve}
    for policy in curve:
        assert policy.train_loss_ == pytest.approx(recomputed[id(policy)], abs=1e-12)
        assert policy.train_cost_ms_ == pytest.approx(curve_cost[id(policy)], abs=1e-12)
    for lam in (0.0, *lambdas):
        best = min(recomputed[id(p)] + lam * curve_cost[id(p)] for p in curve)
        assert best <= (loss + lam * cost).min() + 1e-12, lam
        # and at the recursion's own lambda, no worse than the recursion's policy
        if lam > 0:
            fitted = TradeoffPolicy(lam=lam, C=C).fit(graph, train, features=features)
            assert best <= fitted.train_objective_ + 1e-12


def test_learned_curve_is_a_front_of_training_points_with_the_reference(tables, split):
    predictions, costs = tables
    graph = scheme_graph("combined", predictions, costs)
    train = split[0]
    rows = graph.rows(train)
    features = standardize(graph, rows)
    thresholds = default_thresholds(graph, rows, 8)
    lambdas = lambda_grid(graph, rows.size, count=6)
    curve = learned_curve(
        graph,
        train,
        lambdas,
        features=features,
        thresholds=thresholds,
        shifts=(-0.5, 0.5),
        refine=0,
    )
    cost = np.array([p.train_cost_ms_ for p in curve])
    loss = np.array([p.train_loss_ for p in curve])
    assert np.all(np.diff(cost) >= 0)  # cheapest first
    assert len({id(p) for p in curve}) == len(curve)  # every policy once
    # the training front of all candidates, then every baseline of the class whether on it or
    # not (the validation split chooses among at least what each baseline chooses among)
    baselines = {"uniform", "cascade", "single", "reference"}
    on_front = {id(p) for p in pareto_front(curve)}
    off_front = [p for p in curve if id(p) not in on_front]
    assert off_front and all(p.origin_ in baselines for p in off_front)
    assert any(p.origin_ == "reference" for p in off_front)  # a policy beats it on training
    origins = {p.origin_ for p in curve}
    assert "reference" in origins and "recursion" in origins
    assert origins <= {"recursion", "shifted"} | baselines
    in_class = sum(p.origin_ in baselines for p in curve)
    assert in_class == len(class_baselines(graph, features, rows, thresholds, loss=curve[0].loss))
    reference = [p for p in curve if p.origin_ == "reference"]
    assert len(reference) == 1 and reference[0].lam == 0.0
    assert reference[0].start_ == graph.reference
    assert reference[0].train_cost_ms_ == pytest.approx(graph.reference_ms)
    # each point's lambda is one of the grid at which it has the least training objective of
    # the curve, or (off the lower hull) comes nearest to it
    grid = np.array([0.0, *lambdas])
    objective = loss[:, None] + grid[None, :] * cost[:, None]
    regret = objective - objective.min(axis=0)
    winners = 0
    for i, policy in enumerate(curve):
        assert policy.train_objective_ == pytest.approx(loss[i] + policy.lam * cost[i])
        if policy.origin_ == "reference":
            continue
        assert policy.lam in grid
        at = int(np.flatnonzero(grid == policy.lam)[0])
        assert regret[i, at] == pytest.approx(regret[i].min(), abs=1e-12)
        winners += regret[i, at] <= 1e-12
    assert 3 <= winners < len(curve) - 1  # the shifts fill in points off the hull
    # on the front: the best at lambda 0 only (the reference is off it here)
    assert sum(p.lam == 0.0 for p in curve if id(p) in on_front) == 1


def test_pareto_front_keeps_the_undominated_points_cheapest_first():
    def point(loss, cost):
        p = TradeoffPolicy()
        p.train_loss_, p.train_cost_ms_ = loss, cost
        return p

    points = [
        point(0.1, 2.0),
        point(0.3, 1.0),
        point(0.2, 3.0),
        point(0.05, 5.0),
        point(0.3, 1.5),
        point(0.3, 1.0),
        point(0.1, 4.0),
        point(0.35, 1.2),
        point(0.0, 6.0),
        point(0.0, 7.0),
        point(0.0, 6.0),
    ]
    front = pareto_front(points)
    # dropped: a point at most as costly has a lower training loss; ties in training loss are
    # kept (validation chooses between them), equal points once
    assert [(p.train_loss_, p.train_cost_ms_) for p in front] == [
        (0.3, 1.0),
        (0.3, 1.5),
        (0.1, 2.0),
        (0.1, 4.0),
        (0.05, 5.0),
        (0.0, 6.0),
        (0.0, 7.0),
    ]
    assert front[0] is points[1] and front[5] is points[8]  # of equal points, the first listed
    assert pareto_front([]) == []


def test_class_baselines_are_the_reference_singles_uniform_and_cascades(tables, split):
    predictions, costs = tables
    graph = scheme_graph("network_selection", predictions, costs)
    rows = graph.rows(split[0])
    features = standardize(graph, rows)
    thresholds = default_thresholds(graph, rows, 5)
    out = class_baselines(graph, features, rows, thresholds, loss="top1")
    origins = [p.origin_ for p in out]
    firsts = cascade_firsts(graph)
    assert origins[0] == "reference" and out[0].start_ == graph.reference
    assert origins.count("single") == graph.num_nodes - 1
    assert origins.count("uniform") == len(thresholds)
    assert origins.count("cascade") == len(firsts) * len(thresholds)
    # with path features a cascade may only start where a route may
    paths = scheme_graph("combined", predictions, costs, path_features=True)
    prow = paths.rows(split[0])
    pout = class_baselines(paths, standardize(paths, prow), prow, thresholds, loss="top1")
    starts = {p.start_ for p in pout if p.origin_ == "cascade"}
    assert starts <= set(paths.start_candidates())


# -------------------------------------------------------------------------------------------
# Sweep tables
# -------------------------------------------------------------------------------------------


def test_points_table(selection_sweep, split):
    graph, result = selection_sweep
    points = result.points
    for column in (
        "scheme",
        "point_id",
        "method",
        "variant",
        "origin",
        "shift",
        "train_loss",
        "budget_name",
        "budget",
        "start",
        "cost_ms",
        "cost_ms_std",
        "speedup",
        "speedup_lo",
        "speedup_hi",
        "top1_acc",
        "top5_acc",
        "top1_loss",
        "top1_loss_lo",
        "top1_loss_hi",
        "top5_loss",
        "top5_loss_lo",
        "top5_loss_hi",
        "train_objective",
        "val_cost_ms",
        "val_speedup",
        "val_top1_loss",
        "val_top1_loss_se",
        "val_top5_loss",
        "val_top5_loss_se",
        "reference",
        "reference_ms",
        "reference_top1",
        "reference_top5",
        "n_test",
        "n_validation",
    ):
        assert column in points.columns, column
    assert set(points["method"]) == set(METHODS)
    assert points["point_id"].is_unique
    assert (points["n_test"] == len(split[2])).all()
    assert (points["n_validation"] == len(split[1])).all()
    counts = points.groupby(["method", "train_loss"]).size()
    assert counts[("learned", "top1")] >= 3 and counts[("myopic", "top5")] >= 8
    single = points[points["method"] == "single"]
    reference = single[single["variant"] == graph.names[graph.reference]].iloc[0]
    assert reference["speedup"] == pytest.approx(1.0)
    assert reference["top1_loss"] == pytest.approx(0.0)
    assert reference["top5_loss"] == pytest.approx(0.0)
    assert reference["speedup_lo"] == pytest.approx(1.0)
    assert reference["top1_loss_hi"] == pytest.approx(0.0)
    assert reference["val_top1_loss"] == 0.0 and reference["val_top1_loss_se"] == 0.0
    assert (points["reference_ms"] == graph.reference_ms).all()
    for name in ("speedup", "top1_loss", "top5_loss"):
        assert (points[f"{name}_lo"] <= points[name] + 1e-6).all()
        assert (points[name] <= points[f"{name}_hi"] + 1e-6).all()
    assert (points["top1_loss"] == points["reference_top1"] - points["top1_acc"]).all()
    np.testing.assert_allclose(points["speedup"], graph.reference_ms / points["cost_ms"])
    np.testing.assert_allclose(points["val_speedup"], graph.reference_ms / points["val_cost_ms"])
    # the validation columns are measured on the validation examples
    validation = split[1]
    uniform = points[points["method"] == "uniform"].iloc[3]
    route = uniform_route(graph, uniform["budget"], validation)
    assert uniform["val_cost_ms"] == pytest.approx(route.cost_ms.mean())
    ref_right = graph.correct_top1[graph.reference, validation]
    diff = ref_right.astype(float) - graph.correct_top1[route.stop, validation]
    assert uniform["val_top1_loss"] == pytest.approx(100 * diff.mean())
    assert uniform["val_top1_loss_se"] == pytest.approx(
        100 * diff.std(ddof=1) / np.sqrt(len(validation)), rel=1e-5
    )


def test_bootstrap_sums_losses_exactly():
    """The bootstrap's loss means are exact sums of integers, divided once: the same predictions
    give the same loss bounds bit for bit, whatever order BLAS adds in (a SLURM job's bounds
    differed from a local run's in the last digit while the losses were centred floats)."""
    rng = np.random.default_rng(0)
    n, n_costs = 3001, 5
    costs = 1.0 + rng.gamma(2.0, 0.3, (n, n_costs))
    losses = rng.integers(-1, 2, (n, 7))  # reference right minus point right
    values, centre = _bootstrap_columns(costs, losses.astype(np.float32))
    draws = rng.integers(0, n, (64, n))
    means = _resampled_means(values, centre, draws)
    counts = np.stack([np.bincount(row, minlength=n) for row in draws])  # int64: exact
    exact_sums = counts @ losses
    np.testing.assert_array_equal(
        means[:, n_costs:], (exact_sums.astype(np.float32) / np.float32(n)).astype(np.float64)
    )
    np.testing.assert_allclose(means[:, :n_costs], counts @ costs / n, rtol=1e-6)
    with pytest.raises(ValueError, match="exactly in float32"):
        _bootstrap_columns(np.zeros((EXACT_SUMS, 1)), np.zeros((EXACT_SUMS, 1), np.int8))


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
    # cheapest first: the cheapest stops everything at the cheapest node alone
    cheapest = learned.iloc[0]
    assert cheapest["cost_ms"] == pytest.approx(graph.single_ms.min() + graph.answer_ms)
    stops = nodes[nodes["point_id"] == cheapest["point_id"]]
    assert stops["stop_fraction"].max() == 1.0
    assert learned["cost_ms"].iloc[0] < learned["cost_ms"].iloc[-1]
    oracle = points[(points["method"] == "oracle") & (points["variant"] == "top1")].iloc[0]
    singles = points[points["method"] == "single"]
    assert oracle["top1_acc"] >= singles["top1_acc"].max()
    myopic = points[(points["method"] == "myopic") & (points["train_loss"] == "top1")]
    assert (myopic["start"] == 0).all()
    highest = myopic.loc[myopic["budget"].idxmax(), "point_id"]
    root = nodes[(nodes["point_id"] == highest) & (nodes["node_index"] == 0)]
    assert root["stop_fraction"].item() == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_lambda_zero_keeps_the_reference_on_every_scheme(tables, split, kind):
    predictions, costs = tables
    graph = build(kind, predictions, costs)
    result = run_sweep(
        graph,
        *split,
        losses=("top1", "top5"),
        methods=["learned"],
        lambda_count=5,
        lambda_refine=0,
        threshold_count=6,
        bootstrap_samples=0,
        shifts=(-1.0, 1.0),
    )
    points = result.points
    for loss in ("top1", "top5"):
        learned = points[points["train_loss"] == loss]
        reference = learned[learned["origin"] == "reference"]
        assert len(reference) == 1
        row = reference.iloc[0]
        assert row["budget"] == 0.0 and row["start"] == graph.reference
        assert row["speedup"] == pytest.approx(1.0) and row["val_speedup"] == pytest.approx(1.0)
        assert row["top1_loss"] == 0.0 and row["top5_loss"] == 0.0
        assert row["val_top1_loss"] == 0.0 and row["val_top5_loss"] == 0.0
        # so a budget of no loss at all can always be read off
        chosen = choose(points, [0.0], metric=loss)
        chosen = chosen[chosen["train_loss"] == loss].iloc[0]
        assert not np.isnan(chosen["point_id"]) and chosen["speedup"] >= 1.0


def test_lambda_grid_endpoints():
    correct = np.ones((3, 10), dtype=bool)
    g = make_graph(correct, start_ms=[1.0, 2.0, 4.0])  # edges 2 and 4 ms, span 6 ms
    grid = lambda_grid(g, 100, count=5)
    assert grid[0] == pytest.approx(1 / (100 * 6.0)) and grid[-1] == pytest.approx(1 / 2.0)
    assert np.all(np.diff(np.log(grid)) == pytest.approx(np.log(grid[1] / grid[0])))
    assert lambda_grid(g, 100, count=3, low=0.1, high=0.4).tolist() == pytest.approx(
        [0.1, 0.2, 0.4]
    )
    with pytest.raises(ValueError, match="two nodes"):
        lambda_grid(make_graph(np.ones((1, 10), dtype=bool)), 100)


def test_saved_policies_replay_the_table(selection_sweep, split, tmp_path):
    graph, result = selection_sweep
    path = tmp_path / "policies.json"
    save_policies(result.policies, path)
    policies = load_policies(path)
    points = result.points.set_index("point_id")
    assert set(policies) == set(result.policies)
    assert set(points.loc[list(policies), "method"]) == {"learned", "myopic"}
    fitted = points[points["method"].isin(["learned", "myopic"])]
    assert set(fitted.index) == set(policies)
    test = split[2]
    for point_id, policy in policies.items():
        row = points.loc[point_id]
        assert policy.origin_ == (row["origin"] or "recursion")
        assert policy.start_ == row["start"]
        route = policy.route(graph, test)
        assert route.cost_ms.mean() == pytest.approx(row["cost_ms"], rel=1e-12)
        stop = route.stop
        top1 = 100 * graph.correct_top1[stop, test].mean()
        top5 = 100 * graph.correct_top5[stop, test].mean()
        assert top1 == pytest.approx(row["top1_acc"], rel=1e-12)
        assert top5 == pytest.approx(row["top5_acc"], rel=1e-12)
        nodes = result.nodes[result.nodes["point_id"] == point_id]
        stops = nodes["stop_fraction"].to_numpy()
        np.testing.assert_allclose(np.bincount(stop, minlength=graph.num_nodes) / len(test), stops)
        original = result.policies[point_id].route(graph, np.arange(N))
        again = policy.route(graph, np.arange(N))
        assert np.array_equal(original.stop, again.stop)
        assert np.array_equal(original.visited, again.visited)
        assert np.array_equal(original.cost_ms, again.cost_ms)


def test_early_exit_sweep_and_refinement(tables, split):
    predictions, costs = tables
    graph = build("early_exit", predictions, costs)
    result = run_sweep(
        graph,
        *split,
        losses=["top1"],
        methods=["learned", "uniform", "single"],
        lambda_count=6,
        lambda_refine=0,
        threshold_count=5,
        bootstrap_samples=0,
    )
    points = result.points
    assert points["speedup_lo"].isna().all()
    assert (points["scheme"] == "early_exit").all()
    assert set(points["method"]) == {"learned", "uniform", "single"}
    assert len(points[points["method"] == "uniform"]) == 5
    grid = lambda_grid(graph, len(split[0]), count=6)
    curve = fit_curve(graph, split[0], grid, refine=5, loss="top1")
    lams = [p.lam for p in curve]
    assert len(curve) <= 11 and lams == sorted(lams)
    assert set(grid) <= set(lams)
    assert all(p.origin_ == "recursion" for p in curve)


def test_refinement_does_not_spend_its_budget_on_a_jump():
    # node 0 (1 ms) right for half of the examples, node 1 (2 ms) always; features that say
    # nothing: the policy jumps from "start at node 1" to "stop everything at node 0" at
    # lambda = 0.5 (0.5 + lambda * 1 = lambda * 2), which no lambda resolves
    n = 400
    correct = np.ones((2, n), dtype=bool)
    correct[0, ::2] = False
    features = np.full((2, n, 4), 0.5, dtype=np.float32)
    graph = make_graph(correct, features=features, start_ms=[1.0, 2.0])
    grid = np.geomspace(0.01, 10.0, 10)
    curve = fit_curve(graph, None, grid, refine=30, loss="top1")
    lams = np.array([p.lam for p in curve])
    loss = np.array([p.train_loss_ for p in curve])
    assert loss.min() == 0.0 and loss.max() == 0.5  # both sides of the jump are on the curve
    assert np.all(lams[1:] / lams[:-1] > 1.005)  # never split closer than 1% in lambda
    assert len(curve) < len(grid) + 15
    jump = np.flatnonzero(np.diff(loss))
    assert len(jump) == 1 and lams[jump[0]] < 0.5 < lams[jump[0] + 1]
    assert {p.start_ for p in curve} == {0, 1}


def test_parts_must_not_overlap(selection_sweep):
    graph, _ = selection_sweep
    with pytest.raises(ValueError, match="overlap"):
        run_sweep(
            graph,
            np.arange(10),
            np.arange(5, 20),
            np.arange(20, 30),
            methods=["single"],
            bootstrap_samples=0,
        )
    with pytest.raises(ValueError, match="validation and test"):
        run_sweep(
            graph,
            np.arange(10),
            np.arange(10, 20),
            np.arange(15, 30),
            methods=["single"],
            bootstrap_samples=0,
        )
    with pytest.raises(ValueError, match="unknown methods"):
        run_sweep(
            graph,
            np.arange(10),
            np.arange(10, 20),
            np.arange(20, 30),
            methods=["magic"],
            bootstrap_samples=0,
        )


# -------------------------------------------------------------------------------------------
# Headline
# -------------------------------------------------------------------------------------------


def test_headline_chooses_on_validation_with_intervals_that_include_the_choice(selection_sweep):
    graph, result = selection_sweep
    headline, points = result.headline, result.points.set_index("point_id")
    assert set(headline["choice"]) == {"validation", "test envelope"}
    assert set(headline["metric"]) == {"top1", "top5"}
    assert set(headline["max_loss"]) == {0.5, 1.0, 2.0}
    chosen = headline[(headline["choice"] == "validation") & headline["point_id"].notna()]
    assert len(chosen) > 0
    for metric in ("top1", "top5"):
        expected = choose(result.points, (0.5, 1.0, 2.0), metric=metric, confidence=0.8)
        mine = chosen[chosen["metric"] == metric]
        merged = mine.merge(
            expected, on=["method", "train_loss", "max_loss"], suffixes=("", "_choose")
        )
        assert len(merged) == len(mine)
        np.testing.assert_array_equal(merged["point_id"], merged["point_id_choose"])
    ratios = []
    for row in chosen.itertuples():
        point = points.loc[int(row.point_id)]
        assert row.speedup == point["speedup"]
        assert row.speedup_lo <= row.speedup + 1e-6 and row.speedup <= row.speedup_hi + 1e-6, row
        loss = getattr(row, f"{row.metric}_loss")
        assert getattr(row, f"{row.metric}_loss_lo") <= loss + 1e-9
        assert loss <= getattr(row, f"{row.metric}_loss_hi") + 1e-9
        fixed = point["speedup_hi"] - point["speedup_lo"]
        if fixed > 1e-6:  # (the reference alone has no interval of its own)
            ratios.append((row.speedup_hi - row.speedup_lo) / fixed)
    # the choice varies over resamples: the interval that includes it is wider than the fixed
    # point's, for most rows
    assert len(ratios) >= 10
    assert max(ratios) > 1.0 and np.median(ratios) >= 1.0
    within = headline["within_budget"].dropna()
    realised = np.where(headline["metric"] == "top1", headline["top1_loss"], headline["top5_loss"])
    expected = realised <= headline["max_loss"]
    assert (within == expected[within.index]).all()
    envelope = headline[headline["choice"] == "test envelope"].dropna(subset=["point_id"])
    assert (envelope["within_budget"] == 1).all()


# -------------------------------------------------------------------------------------------
# A small generated study
# -------------------------------------------------------------------------------------------

FAMILY = {"linear": [0.968], "small_cnn": [0.986], "exit_resnet": [0.975, 0.99, 0.994]}
FAMILY_COSTS = dict(
    stage_ms={"linear": [0.05], "small_cnn": [0.3], "exit_resnet": [0.4, 0.4, 0.4]},
    head_ms={"linear": [0.02], "small_cnn": [0.02], "exit_resnet": [0.02] * 3},
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_reaches_the_budgets_uniform_reaches_in_a_small_study(seed):
    # 300 policy-training, 150 validation and 400 test examples; networks right for about
    # 96.8%, 98.6% and 99.4% of them
    n = 850
    predictions = family_tables(FAMILY, n=n, seed=seed)
    costs = Costs.additive(
        FAMILY_COSTS["stage_ms"],
        FAMILY_COSTS["head_ms"],
        decision_ms=0.01,
        answer_ms=0.005,
        max_shape=8,
    )
    order = np.random.default_rng(seed).permutation(n)
    train, validation, test = (np.sort(part) for part in np.split(order, [300, 450]))
    levels = (0.5, 1.0, 2.0)
    for kind in KINDS:
        nets = {"exit_resnet": predictions["exit_resnet"]} if kind == "early_exit" else predictions
        graph = scheme_graph(kind, nets, costs)
        result = run_sweep(
            graph,
            train,
            validation,
            test,
            methods=["learned", "uniform"],
            lambda_count=12,
            lambda_refine=6,
            threshold_count=20,
            bootstrap_samples=0,
            shifts=(-1.0, -0.5, 0.5, 1.0),
        )
        chosen = choose(result.points, levels, metric="top1").set_index(["method", "max_loss"])
        for level in levels:
            uniform, learned = chosen.loc[("uniform", level)], chosen.loc[("learned", level)]
            if not uniform["speedup"] > 1.0:
                continue
            # a point that is faster than the reference, within the budget on validation
            assert learned["val_ucb"] <= level, (kind, level)
            assert learned["origin"] != "reference" and learned["speedup"] > 1.0, (
                kind,
                level,
                learned["val_speedup"],
                uniform["val_speedup"],
            )


def test_sweep_options_from_a_config_section():
    options = sweep_options(
        {
            "losses": ["top5"],
            "methods": ["learned", "uniform"],
            "C": 0.5,
            "lambdas": {"count": 30, "min": 1e-4, "max": None, "refine": 0, "shifts": [-1, 0.5]},
            "thresholds": {"count": 20},
            "bootstrap": {"samples": 50, "seed": 3, "level": 0.9},
            "loss_levels": [1.0, 2.0],
            "operating_points": {"confidence": 0.9},
        }
    )
    assert options == {
        "losses": ["top5"],
        "methods": ["learned", "uniform"],
        "C": 0.5,
        "lambda_count": 30,
        "lambda_min": 1e-4,
        "lambda_max": None,
        "lambda_refine": 0,
        "shifts": [-1.0, 0.5],
        "threshold_count": 20,
        "bootstrap_samples": 50,
        "bootstrap_seed": 3,
        "level": 0.9,
        "loss_levels": [1.0, 2.0],
        "confidence": 0.9,
    }
