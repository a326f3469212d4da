"""Tests of the policy learner and the baselines on hand-built graphs with known answers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from policy_data import FEATURES, make_graph, synthetic_tables

from adaptive_inference.baselines import (
    UniformPolicy,
    cascade_route,
    default_thresholds,
    oracle_route,
    single_route,
    uniform_route,
)
from adaptive_inference.graph import STOP, network_selection_graph
from adaptive_inference.policies import (
    TradeoffPolicy,
    evaluate,
    fit_node_rule,
    fit_policy,
    objective,
    standardize,
)
from adaptive_inference.sweep import lambda_grid

SELECTION = [[1, 2], [2], []]  # A -> {B, C}, B -> {C}


def random_correct(nodes: int, n: int, seed: int = 0, *, dominant_last: bool = False) -> np.ndarray:
    """Random right/wrong answers, later nodes more often right; with ``dominant_last`` the last
    node is right whenever an earlier one is."""
    rng = np.random.default_rng(seed)
    p = np.linspace(0.5, 0.85, nodes)[:, None]
    correct = rng.random((nodes, n)) < p
    if dominant_last:
        correct[-1] |= correct[:-1].any(axis=0)
    return correct


@pytest.fixture(scope="module")
def selection():
    """A network-selection graph built from synthetic workflow tables, and its halves."""
    predictions, costs = synthetic_tables({"a": 1, "b": 1, "c": 1}, n=2000, seed=1)
    graph = network_selection_graph(predictions, costs, decision_ms=0.05)
    ids = np.arange(2000)
    return graph, ids[::2], ids[1::2]


# -------------------------------------------------------------------------------------------
# Known answers
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_large_lambda_stops_everything_at_the_first_node_when_every_node_is_right(successors):
    g = make_graph(np.ones((3, 400), dtype=bool), successors=successors)
    for lam in (1.0, lambda_grid(g, 400)[-1]):
        policy = fit_policy(g, None, lam)
        assert (policy.predict(g) == 0).all()
        assert all(rule.constant_action == STOP for rule in policy.rules_ if rule is not None)


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_highest_default_lambda_stops_everything_at_the_root(successors):
    g = make_graph(random_correct(3, 600, seed=3), successors=successors)
    lam = lambda_grid(g, 300)[-1]
    policy = fit_policy(g, np.arange(300), lam)
    assert (policy.predict(g, np.arange(300, 600)) == 0).all()


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_lambda_zero_reproduces_the_reference_accuracy_exactly(successors):
    correct = random_correct(3, 800, seed=2, dominant_last=True)
    g = make_graph(correct, successors=successors)
    train, test = np.arange(400), np.arange(400, 800)
    for lam in (0.0, lambda_grid(g, train.size)[0]):
        policy = fit_policy(g, train, lam)
        for ids in (train, test):
            table = evaluate(g, policy, ids)
            assert table["correct_top1"].mean() == correct[-1, ids].mean()
    assert (fit_policy(g, train, 0.0).predict(g, test) == 2).all()


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_nothing_stops_early_when_only_the_terminal_node_is_right(successors):
    correct = np.zeros((3, 300), dtype=bool)
    correct[-1] = True
    g = make_graph(correct, successors=successors)
    span = g.longest_path_ms() - g.entry_ms
    for lam in (0.0, 1e-3, 0.5 / span):
        assert (fit_policy(g, None, lam).predict(g) == 2).all()


def test_the_recursion_objective_is_the_simulated_one(selection):
    graph, train, _ = selection
    for lam in (0.0, 0.01, 0.05, 0.2):
        policy = fit_policy(graph, train, lam)
        assert policy.recursion_objective_ == pytest.approx(policy.train_objective_, abs=1e-12)
        for fitted in (policy, fit_policy(graph, train, lam, myopic=True)):
            route = fitted.route(graph, train)
            assert objective(graph, route, lam) == pytest.approx(fitted.train_objective_, abs=1e-12)
            assert route.cost_ms.mean() == pytest.approx(fitted.train_cost_ms_, abs=1e-12)


def test_global_beats_myopic_where_they_differ():
    # node 1 is always wrong, node 2 always right, node 0 right for half of the examples:
    # myopic sees only node 1's loss and stops at 0; the global policy sends the errors on.
    n = 400
    rng = np.random.default_rng(0)
    correct = np.zeros((3, n), dtype=bool)
    correct[0] = rng.random(n) < 0.5
    correct[2] = True
    g = make_graph(correct, alone_ms=[1.0, 1.0, 1.0])
    lam = 0.01
    myopic = fit_policy(g, None, lam, myopic=True)
    learned = fit_policy(g, None, lam)
    assert (myopic.predict(g) == 0).all()
    assert learned.train_objective_ < myopic.train_objective_ - 0.3
    assert learned.train_objective_ <= myopic.train_objective_
    stops = learned.predict(g)
    assert (stops[correct[0]] == 0).mean() > 0.95 and (stops[~correct[0]] == 2).mean() > 0.95


def test_global_no_worse_than_myopic_on_synthetic_tables(selection):
    graph, train, _ = selection
    for lam in (0.005, 0.02, 0.05):
        learned = fit_policy(graph, train, lam)
        myopic = fit_policy(graph, train, lam, myopic=True)
        assert learned.train_objective_ <= myopic.train_objective_ + 1e-3


def test_three_way_reduction_chooses_the_cheapest_action():
    # groups: A right (stop); A wrong and B right (go to B); only C right (jump A -> C)
    n = 600
    group = np.repeat([0, 1, 2], n // 3)
    correct = np.stack([group == 0, group <= 1, np.ones(n, dtype=bool)])
    rng = np.random.default_rng(0)
    level = np.array([0.9, 0.55, 0.2])[group]
    top1 = level + 0.03 * rng.standard_normal(n)
    own = np.stack([top1, (1 - top1) / 2, top1 - (1 - top1) / 2, 1 - top1], axis=1)
    features = np.repeat(own[None], 3, axis=0).astype(np.float32)
    g = make_graph(correct, features=features, alone_ms=[1.0, 2.0, 4.0], successors=SELECTION)
    policy = fit_policy(g, None, 0.05)
    rule = policy.rules_[0]
    assert rule.actions.tolist() == [STOP, 1, 2]
    assert rule.learned.tolist() == [True, True]
    route = policy.route(g)
    assert route.stop.tolist() == group.tolist()
    assert not route.visited[group == 2, 1].any()  # the third group skips B
    # costs: entry 1; B costs 2 more; the jump to C costs 4
    expected = np.array([1.0, 3.0, 5.0])[group]
    assert route.cost_ms == pytest.approx(expected)


def test_decision_list_steps_train_on_the_examples_sent_on():
    # action costs for 4 examples: the cheapest is stop, successor 1, successor 2, successor 2
    costs = np.array([[0.0, 1.0, 1.0, 1.0], [0.5, 0.1, 0.9, 0.8], [0.6, 0.3, 0.2, 0.1]])
    z = np.array([[2.0], [0.0], [-1.0], [-2.0]])
    from adaptive_inference.policies import NodeFeatures

    feats = NodeFeatures(z=z, mean=np.zeros(1), scale=np.ones(1), names=["x"])
    rule, chosen, estimators = fit_node_rule(
        0, [STOP, 1, 2], costs, feats,
        lambda step: TradeoffPolicy(C=100.0)._estimator(0, step, None),
    )
    assert chosen.tolist() == [0, 1, 2, 2]
    assert rule.decide(z).tolist() == [STOP, 1, 2, 2]
    # step 1 saw only the three examples step 0 deferred
    assert estimators[1] is not None and estimators[1].n_features_in_ == 1


def test_a_rule_choosing_one_action_for_every_example_is_constant():
    # mixed labels, so the steps are fitted, but the features say nothing and the examples
    # where going on is cheaper weigh little: the fitted rule stops everything
    n = 400
    rng = np.random.default_rng(0)
    go_better = rng.random(n) < 0.05
    costs = np.stack([np.where(go_better, 0.51, 0.0), np.where(go_better, 0.5, 1.0)])
    from adaptive_inference.policies import NodeFeatures

    feats = NodeFeatures(
        z=rng.standard_normal((n, 2)), mean=np.zeros(2), scale=np.ones(2), names=["x", "y"]
    )
    rule, chosen, estimators = fit_node_rule(
        0, [STOP, 1], costs, feats, lambda step: TradeoffPolicy()._estimator(0, step, None)
    )
    assert (chosen == 0).all()
    assert rule.constant_action == STOP and not rule.learned.any()
    assert estimators == [None] and not rule.coef.any()
    # in a policy: such a node computes no decision and pays none
    correct = np.ones((2, n), dtype=bool)
    correct[0] = ~go_better
    features = np.repeat(rng.random((1, n, 4)), 2, axis=0).astype(np.float32)
    g = make_graph(correct, features=features, alone_ms=[1.0, 2.0], decision_ms=0.5)
    policy = fit_policy(g, None, 0.2)
    assert policy.rules_[0].constant_action == STOP
    route = policy.route(g)
    assert not route.decided.any() and (route.stop == 0).all()
    assert policy.train_cost_ms_ == pytest.approx(1.0)
    assert objective(g, route, 0.2) == pytest.approx(policy.train_objective_, abs=1e-12)


# -------------------------------------------------------------------------------------------
# The linear rules, pickling
# -------------------------------------------------------------------------------------------


def test_linear_weights_reproduce_the_sklearn_decisions(selection):
    graph, train, test = selection
    policy = fit_policy(graph, train, 0.02)
    checked = 0
    for (node, step), estimator in policy.estimators_.items():
        rule = policy.rules_[node]
        x = graph.node_features(node, graph.rows(test))
        z = (x - rule.mean) / rule.scale
        np.testing.assert_allclose(
            rule.scores(x)[:, step], estimator.decision_function(z), rtol=1e-10, atol=1e-10
        )
        assert np.array_equal(rule.scores(x)[:, step] > 0, estimator.predict(z))
        # the same rule with a few torch ops, as a runtime would apply it
        xt = torch.from_numpy(x)
        mean, scale = torch.from_numpy(rule.mean), torch.from_numpy(rule.scale)
        coef, intercept = torch.from_numpy(rule.coef), torch.from_numpy(rule.intercept)
        scores = ((xt - mean) / scale) @ coef.T + intercept
        assert torch.equal(scores[:, step] > 0, torch.from_numpy(estimator.predict(z)))
        checked += 1
    assert checked >= 2


def test_standardisation_is_the_scaler_of_the_training_features(selection):
    graph, train, _ = selection
    feats = standardize(graph, graph.rows(train))
    z = feats[0].z
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-9)
    assert feats[-1] is None


def test_pickled_policies_predict_the_same(selection):
    graph, train, test = selection
    for myopic in (False, True):
        policy = fit_policy(graph, train, 0.03, myopic=myopic)
        again = pickle.loads(pickle.dumps(policy))
        a, b = policy.route(graph, test), again.route(graph, test)
        assert np.array_equal(a.stop, b.stop) and np.array_equal(a.cost_ms, b.cost_ms)
        assert again.get_params() == policy.get_params()


def test_a_policy_refuses_another_graph(selection):
    graph, train, _ = selection
    policy = fit_policy(graph, train, 0.03)
    other = make_graph(np.ones((3, 10), dtype=bool))
    with pytest.raises(ValueError, match="differs"):
        policy.predict(other)


def test_warm_start_reaches_the_same_policy(selection):
    graph, train, test = selection
    cold = fit_policy(graph, train, 0.03)
    warm = TradeoffPolicy(lam=0.03).fit(graph, train, init=fit_policy(graph, train, 0.02))
    for node, rule in enumerate(cold.rules_):
        if rule is not None:
            np.testing.assert_allclose(rule.coef, warm.rules_[node].coef, atol=1e-4)
    assert (cold.predict(graph, test) == warm.predict(graph, test)).mean() > 0.999


# -------------------------------------------------------------------------------------------
# Baselines
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_oracle_is_an_upper_bound(successors):
    correct = random_correct(3, 1000, seed=5)
    top5 = correct | random_correct(3, 1000, seed=6)
    g = make_graph(correct, correct_top5=top5, successors=successors, decision_ms=0.1)
    train, test = np.arange(500), np.arange(500, 1000)
    for loss in ("top1", "top5"):
        oracle = oracle_route(g, test, loss=loss)
        right = g.correct(loss)[oracle.stop, test]
        assert right.mean() >= g.correct(loss)[:, test].mean(axis=1).max()
        assert right.mean() == g.correct(loss)[:, test].any(axis=0).mean()
        lams = (0.0, 0.02, 0.1, 0.3)
        routes = [fit_policy(g, train, lam, loss=loss).route(g, test) for lam in lams]
        routes += [uniform_route(g, t, test) for t in (0.3, 0.6, 0.9)]
        # routes on the graph (single nodes after the root and cascades that jump where the
        # graph has no edge are not routes of the graph, so the oracle does not bound them)
        for route in routes:
            policy_right = g.correct(loss)[route.stop, test]
            assert (oracle.cost_ms[policy_right] <= route.cost_ms[policy_right] + 1e-12).all()
            # at the policy's accuracy, the oracle's cheapest answers cost no more
            k = int(policy_right.sum())
            cheapest = np.sort(oracle.cost_ms[right])[:k].sum()
            assert cheapest <= route.cost_ms[policy_right].sum() + 1e-9
        # nothing right: stop at the root
        none = ~g.correct(loss)[:, test].any(axis=0)
        assert (oracle.stop[none] == 0).all() and oracle.cost_ms[none] == pytest.approx(g.entry_ms)


def test_oracle_pays_every_stage_on_its_path():
    correct = np.array([[False, False], [True, False], [False, True]])
    g = make_graph(correct, alone_ms=[1.0, 2.0, 4.0], successors=SELECTION)
    route = oracle_route(g)
    assert route.stop.tolist() == [1, 2]
    assert route.cost_ms.tolist() == [3.0, 5.0]  # A then B; A then the jump to C
    assert route.visited.tolist() == [[True, True, False], [True, False, True]]


def test_uniform_follows_the_default_chain():
    correct = np.ones((3, 3), dtype=bool)
    features = np.zeros((3, 3, 4), dtype=np.float32)
    features[:, :, 0] = [[0.9, 0.2, 0.2], [0.9, 0.9, 0.2], [0.1, 0.1, 0.1]]
    g = make_graph(
        correct, features=features, alone_ms=[1.0, 2.0, 4.0], successors=SELECTION, decision_ms=0.5
    )
    route = uniform_route(g, 0.5)
    assert route.stop.tolist() == [0, 1, 2]
    assert route.visited[2].tolist() == [True, True, True]  # never skips B
    assert route.cost_ms.tolist() == [1.5, 4.0, 8.0]
    assert (UniformPolicy(0.5).fit(g).predict(g) == route.stop).all()
    thresholds = default_thresholds(g, np.arange(3), count=5)
    assert thresholds[-1] == np.inf and (uniform_route(g, thresholds[0]).stop == 0).all()
    assert (uniform_route(g, np.inf).stop == 2).all()


def test_single_and_cascade_costs():
    correct = np.ones((3, 2), dtype=bool)
    features = np.zeros((3, 2, 4), dtype=np.float32)
    features[0, :, 0] = [0.9, 0.1]
    g = make_graph(
        correct, features=features, alone_ms=[1.0, 2.0, 4.0], successors=SELECTION, decision_ms=0.5
    )
    assert single_route(g, 1).cost_ms.tolist() == [2.0, 2.0]
    route = cascade_route(g, 0, 0.5)
    assert route.stop.tolist() == [0, 2]
    assert route.cost_ms.tolist() == [1.5, 5.5]
    assert FEATURES[0] == "top1_prob"
