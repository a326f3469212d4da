"""Tests of the policy learner and the baselines on hand-built graphs with known answers."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from policy_data import FEATURES, make_graph, synthetic_tables

from adaptive_inference.baselines import (
    cascade_firsts,
    cascade_route,
    default_thresholds,
    oracle_route,
    single_route,
    uniform_route,
)
from adaptive_inference.costs import Costs, segment_key
from adaptive_inference.graph import STOP, Route, StageGraph, scheme_graph, starts_alone
from adaptive_inference.policies import (
    NodeFeatures,
    TradeoffPolicy,
    constant_policy,
    fit_node_rule,
    standardize,
    threshold_policy,
)
from adaptive_inference.study import load_policies, save_policies
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


def fit(graph: StageGraph, examples=None, lam: float = 0.0, **params) -> TradeoffPolicy:
    return TradeoffPolicy(lam=lam, **params).fit(graph, examples)


def objective(graph: StageGraph, route: Route, lam: float, loss: str = "top1") -> float:
    """Mean 0/1 loss plus lambda times the mean cost of a route, from the route itself."""
    wrong = ~graph.correct(loss)[route.stop, route.rows]
    return float(wrong.mean() + lam * route.cost_ms.mean())


def same_routes(a: Route, b: Route) -> bool:
    return (
        np.array_equal(a.stop, b.stop)
        and np.array_equal(a.visited, b.visited)
        and np.array_equal(a.decided, b.decided)
        and np.array_equal(a.cost_ms, b.cost_ms)
    )


@pytest.fixture(scope="module")
def selection():
    """A network-selection graph built from synthetic workflow tables, and its halves."""
    predictions, costs = synthetic_tables(
        {"a": 1, "b": 1, "c": 1}, n=2000, seed=1, decision_ms=0.05, answer_ms=0.01
    )
    graph = scheme_graph("network_selection", predictions, costs)
    ids = np.arange(2000)
    return graph, ids[::2], ids[1::2]


@pytest.fixture(scope="module")
def combined():
    """A combined graph with path features (1-exit, 1-exit and 3-exit networks)."""
    predictions, costs = synthetic_tables(
        {"a": 1, "b": 1, "c": 3}, n=1200, seed=4, decision_ms=0.05, answer_ms=0.01
    )
    graph = scheme_graph("combined", predictions, costs, path_features=True)
    ids = np.arange(1200)
    return graph, ids[::2], ids[1::2]


# -------------------------------------------------------------------------------------------
# Known answers
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_large_lambda_stops_everything_at_the_first_node_when_every_node_is_right(successors):
    g = make_graph(np.ones((3, 400), dtype=bool), successors=successors)
    for lam in (1.0, lambda_grid(g, 400)[-1]):
        policy = fit(g, None, lam)
        assert policy.start_ == 0
        assert (policy.predict(g) == 0).all()
        assert all(rule.constant_action == STOP for rule in policy.rules_ if rule is not None)


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_highest_default_lambda_stops_everything_at_the_root(successors):
    g = make_graph(random_correct(3, 600, seed=3), successors=successors)
    lam = lambda_grid(g, 300)[-1]
    policy = fit(g, np.arange(300), lam)
    assert (policy.predict(g, np.arange(300, 600)) == 0).all()


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_lambda_zero_reproduces_the_reference_accuracy_exactly(successors):
    correct = random_correct(3, 800, seed=2, dominant_last=True)
    g = make_graph(correct, successors=successors)
    train, test = np.arange(400), np.arange(400, 800)
    for lam in (0.0, lambda_grid(g, train.size)[0]):
        policy = fit(g, train, lam)
        for ids in (train, test):
            stop = policy.predict(g, ids)
            assert g.correct_top1[stop, ids].mean() == correct[-1, ids].mean()
    assert (fit(g, train, 0.0).predict(g, test) == 2).all()
    # a little above zero, the cheapest way to the reference's answers is the reference alone
    low = fit(g, train, lambda_grid(g, train.size)[0])
    assert low.start_ == 2 and low.train_cost_ms_ == pytest.approx(g.reference_ms)


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_nothing_stops_early_when_only_the_terminal_node_is_right(successors):
    correct = np.zeros((3, 300), dtype=bool)
    correct[-1] = True
    g = make_graph(correct, successors=successors)
    span = g.longest_path_ms() - g.start_ms[0]
    for lam in (0.0, 1e-3, 0.5 / span):
        assert (fit(g, None, lam).predict(g) == 2).all()


def test_the_recursion_objective_is_the_simulated_one(selection, combined):
    for graph, train, _ in (selection, combined):
        for lam in (0.0, 0.01, 0.05, 0.2):
            policy = fit(graph, train, lam)
            assert policy.recursion_objective_ == pytest.approx(policy.train_objective_, abs=1e-12)
            for fitted in (policy, fit(graph, train, lam, myopic=True)):
                route = fitted.route(graph, train)
                assert objective(graph, route, lam) == pytest.approx(
                    fitted.train_objective_, abs=1e-12
                )
                assert route.cost_ms.mean() == pytest.approx(fitted.train_cost_ms_, abs=1e-12)
                # every example pays the answer once, at its stop node
                entry = graph.single_ms if starts_alone(route, fitted.start_) else graph.start_ms
                least = entry[fitted.start_] + graph.answer_ms
                assert (route.cost_ms >= least - 1e-12).all()


@pytest.mark.parametrize("successors", [None, SELECTION])
def test_a_route_that_is_one_node_alone_is_priced_and_chosen_as_it_runs(successors):
    """The start choice prices a route that is one node alone (every example stopped there
    without a decision) at ``single_ms``, as the simulation does: where B alone is cheaper than
    A alone, though A is the cheaper start of a route that decides, a large lambda answers with
    B alone."""
    everywhere = make_graph(
        np.ones((3, 400), dtype=bool),
        start_ms=[1.0, 2.0, 4.0],
        single_ms=[1.0, 0.5, 4.0],
        successors=successors,
        answer_ms=0.25,
    )
    policy = fit(everywhere, None, 1.0)
    assert policy.start_ == 1 and (policy.predict(everywhere) == 1).all()
    assert policy.train_cost_ms_ == pytest.approx(0.75)
    assert policy.recursion_objective_ == pytest.approx(policy.train_objective_, abs=1e-12)
    g = make_graph(
        random_correct(3, 600, seed=4),
        start_ms=[1.0, 2.0, 4.0],
        single_ms=[0.4, 1.2, 3.0],
        successors=successors,
        decision_ms=0.1,
        answer_ms=0.25,
    )
    train, alone = np.arange(300), set()
    for lam in (0.0, *lambda_grid(g, train.size, count=8)):
        policy = fit(g, train, lam)
        route = policy.route(g, train)
        assert policy.recursion_objective_ == pytest.approx(policy.train_objective_, abs=1e-12)
        assert objective(g, route, lam) == pytest.approx(policy.train_objective_, abs=1e-12)
        alone.add(starts_alone(route, policy.start_))
        if starts_alone(route, policy.start_):
            assert route.cost_ms == pytest.approx(g.single_ms[policy.start_] + g.answer_ms)
    assert alone == {True, False}  # both kinds of start on the curve


def test_the_myopic_baseline_starts_at_the_root(selection):
    graph, train, _ = selection
    for lam in (0.0, 0.01, 0.2):
        myopic = fit(graph, train, lam, myopic=True)
        assert myopic.start_ == 0
        assert myopic.route(graph, train).visited[:, 0].all()


def test_global_beats_myopic_where_they_differ():
    # node 1 is always wrong, node 2 always right, node 0 right for half of the examples:
    # myopic sees only node 1's loss and stops at 0; the global policy sends the errors on.
    # (node 2 alone costs 4 ms, more than node 0 then on for the errors: the global policy
    # starts at the root)
    n = 400
    rng = np.random.default_rng(0)
    correct = np.zeros((3, n), dtype=bool)
    correct[0] = rng.random(n) < 0.5
    correct[2] = True
    g = make_graph(correct, start_ms=[1.0, 1.0, 4.0])
    lam = 0.01
    myopic = fit(g, None, lam, myopic=True)
    learned = fit(g, None, lam)
    assert (myopic.predict(g) == 0).all()
    assert learned.start_ == 0
    assert learned.train_objective_ < myopic.train_objective_ - 0.3
    assert learned.train_objective_ < lam * g.reference_ms  # better than the reference alone
    stops = learned.predict(g)
    assert (stops[correct[0]] == 0).mean() > 0.95 and (stops[~correct[0]] == 2).mean() > 0.95


def test_global_no_worse_than_myopic_on_synthetic_tables(selection):
    graph, train, _ = selection
    for lam in (0.005, 0.02, 0.05):
        learned = fit(graph, train, lam)
        myopic = fit(graph, train, lam, myopic=True)
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
    g = make_graph(correct, features=features, start_ms=[1.0, 2.0, 4.0], successors=SELECTION)
    policy = fit(g, None, 0.05)
    assert policy.start_ == 0
    rule = policy.rules_[0]
    assert rule.actions.tolist() == [STOP, 1, 2]
    assert rule.learned.tolist() == [True, True]
    route = policy.route(g)
    assert route.stop.tolist() == group.tolist()
    assert not route.visited[group == 2, 1].any()  # the third group skips B
    # costs: start 1; B costs 2 more; the jump to C costs 4
    expected = np.array([1.0, 3.0, 5.0])[group]
    assert route.cost_ms == pytest.approx(expected)


def test_decision_list_steps_train_on_the_examples_sent_on():
    # action costs for 4 examples: the cheapest is stop, successor 1, successor 2, successor 2
    costs = np.array([[0.0, 1.0, 1.0, 1.0], [0.5, 0.1, 0.9, 0.8], [0.6, 0.3, 0.2, 0.1]])
    z = np.array([[2.0], [0.0], [-1.0], [-2.0]])
    feats = NodeFeatures(z=z, mean=np.zeros(1), scale=np.ones(1), names=["x"])
    rule, chosen, estimators = fit_node_rule(
        0,
        [STOP, 1, 2],
        costs,
        feats,
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
    g = make_graph(correct, features=features, start_ms=[1.0, 2.0], decision_ms=0.5)
    policy = fit(g, None, 0.2)
    assert policy.start_ == 0
    assert policy.rules_[0].constant_action == STOP
    route = policy.route(g)
    assert not route.decided.any() and (route.stop == 0).all()
    assert policy.train_cost_ms_ == pytest.approx(1.0)
    assert objective(g, route, 0.2) == pytest.approx(policy.train_objective_, abs=1e-12)


# -------------------------------------------------------------------------------------------
# Decision-cost-aware nodes
# -------------------------------------------------------------------------------------------


def separable_costs(n: int = 200, seed: int = 0) -> tuple[np.ndarray, NodeFeatures]:
    """Two actions whose cheaper one a single feature separates with a wide gap."""
    rng = np.random.default_rng(seed)
    stop_better = rng.random(n) < 0.7
    costs = np.stack([np.where(stop_better, 0.0, 1.0), np.full(n, 0.3)])
    z = np.where(stop_better, 1.0, -1.0)[:, None] + 0.1 * rng.standard_normal((n, 1))
    z = (z - z.mean()) / z.std()
    return costs, NodeFeatures(z=z, mean=np.zeros(1), scale=np.ones(1), names=["x"])


def test_a_node_keeps_its_rule_exactly_while_it_pays_for_its_decision():
    costs, feats = separable_costs()
    n = costs.shape[1]
    make = lambda step: TradeoffPolicy(C=100.0)._estimator(0, step, None)  # noqa: E731
    free, chosen, _ = fit_node_rule(0, [STOP, 1], costs, feats, make)
    assert free.learned.all()
    best = costs.min(axis=0)
    assert np.array_equal(costs[chosen, np.arange(n)], best)  # the rule separates every example
    # the rule saves this much per example over the best constant action (always go: 0.3)
    gap = (costs.sum(axis=1).min() - best.sum()) / n
    assert gap == pytest.approx(0.3 - 0.3 * 0.3, abs=0.05)
    kept, chosen, estimators = fit_node_rule(
        0, [STOP, 1], costs, feats, make, decision_cost=gap * 0.99
    )
    assert kept.constant_action is None and estimators[0] is not None
    assert np.array_equal(costs[chosen, np.arange(n)], best)
    dropped, chosen, estimators = fit_node_rule(
        0, [STOP, 1], costs, feats, make, decision_cost=gap * 1.01
    )
    assert dropped.constant_action == 1 and estimators == [None]  # go on: the cheaper constant
    assert (chosen == 1).all() and not dropped.coef.any()


def test_a_constant_stop_pays_the_answer_a_fitted_rule_s_features_give():
    """A constant stop reads the class from the logits (``answer_cost``); a fitted rule's
    features hold it. Stopping is the cheaper constant here by 0.03 per example over the rule
    (0.30 against 0.27): a decision dearer than that loses to it, unless the answer makes the
    constant stop dearer still."""
    costs, feats = separable_costs()
    costs[1] = 0.9  # going on: dearer than stopping for every example
    n = costs.shape[1]
    make = lambda step: TradeoffPolicy(C=100.0)._estimator(0, step, None)  # noqa: E731
    gap = (costs.sum(axis=1).min() - costs.min(axis=0).sum()) / n
    assert gap == pytest.approx(0.3 * (1.0 - 0.9), abs=0.02)
    dropped, chosen, _ = fit_node_rule(0, [STOP, 1], costs, feats, make, decision_cost=gap + 0.01)
    assert dropped.constant_action == STOP and (chosen == 0).all()
    kept, chosen, estimators = fit_node_rule(
        0, [STOP, 1], costs, feats, make, decision_cost=gap + 0.01, answer_cost=0.02
    )
    assert kept.constant_action is None and estimators[0] is not None
    assert np.array_equal(costs[chosen, np.arange(n)], costs.min(axis=0))


def decision_graph(decision_ms: float) -> tuple[StageGraph, np.ndarray]:
    """Node 0 (1 ms) right for 90% of the examples, its confidence says which; node 1 (2 ms)
    always right."""
    n = 500
    rng = np.random.default_rng(0)
    correct = np.ones((2, n), dtype=bool)
    correct[0] = rng.random(n) < 0.9
    g = make_graph(correct, start_ms=[1.0, 2.0], decision_ms=decision_ms, seed=1)
    return g, correct


def test_a_decision_that_costs_more_than_it_saves_is_not_made():
    # lambda 0.2: stopping everything costs 0.1 + 0.2 * 1 = 0.3; starting at node 1 costs 0.4;
    # the rule (stop the right ones, send the rest on) 0.2 * (1 + 0.1 * 2) = 0.24 plus its
    # decision, 0.2 ms for a 1 ms decision: 0.44 > 0.3
    lam = 0.2
    g, correct = decision_graph(decision_ms=1.0)
    policy = fit(g, None, lam)
    assert policy.start_ == 0
    rule = policy.rules_[0]
    assert rule.constant_action == STOP and not rule.learned.any()
    route = policy.route(g)
    assert not route.decided.any() and (route.stop == 0).all()
    constant = 1 - correct[0].mean() + lam * 1.0
    assert policy.train_objective_ == pytest.approx(constant, abs=1e-12)
    assert policy.recursion_objective_ == pytest.approx(constant, abs=1e-12)
    # the same fit without the decision cost would have decided
    free = fit(decision_graph(decision_ms=0.0)[0], None, lam)
    assert free.rules_[0].constant_action is None


def test_a_decision_that_pays_off_is_kept():
    lam = 0.2
    g, correct = decision_graph(decision_ms=0.1)
    policy = fit(g, None, lam)
    assert policy.start_ == 0
    assert policy.rules_[0].constant_action is None and policy.rules_[0].learned.all()
    route = policy.route(g)
    assert route.decided[:, 0].all()
    assert route.cost_ms.min() == pytest.approx(1.1)  # start, decision
    # about 0.2 * (1 + 0.1 + 0.1 * 2) = 0.26, below every constant choice (0.3 and 0.4)
    assert policy.train_objective_ < 0.28
    assert policy.train_objective_ < 1 - correct[0].mean() + lam * 1.0
    assert policy.train_objective_ < lam * g.reference_ms


# -------------------------------------------------------------------------------------------
# Where a route starts (the virtual start node)
# -------------------------------------------------------------------------------------------


def useless_root_graph(path_features: bool = False) -> StageGraph:
    """Network selection A -> {B, C}, B -> C: A (3 ms) is right for 30% of the examples and its
    confidence says nothing; B (2 ms) is right for 80% and its confidence says which; C (4 ms)
    is always right."""
    n = 600
    rng = np.random.default_rng(0)
    correct = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.8, np.ones(n, dtype=bool)])
    features = np.array(
        [np.full((n, 4), 0.5), *make_graph(correct, seed=2).features[1:]], dtype=np.float32
    )
    return make_graph(
        correct,
        features=features,
        start_ms=[3.0, 2.0, 4.0],
        successors=SELECTION,
        decision_ms=0.05,
        path_features=path_features,
    )


def best_from_root(graph: StageGraph, lam: float) -> float:
    """A lower bound on the objective of every policy that starts at the root: each example
    takes the path from the root that is best *for it* (an oracle), without decisions."""
    loss = graph.loss("top1")
    best = np.full(loss.shape, np.inf)  # best[n, x]: cost-to-go once n is computed
    for node in reversed(range(graph.num_nodes)):
        options = [loss[node]]
        options += [lam * graph.edge_ms[(node, m)] + best[m] for m in graph.successors[node]]
        best[node] = np.min(options, axis=0)
    return float(best[0].mean() + lam * (graph.start_ms[0] + graph.answer_ms))


def test_the_recursion_may_skip_a_useless_root():
    g = useless_root_graph()
    lam = 0.02
    policy = fit(g, None, lam)
    assert policy.start_ == 1
    route = policy.route(g)
    assert not route.visited[:, 0].any() and route.visited[:, 1].all()
    assert route.cost_ms.min() == pytest.approx(2.05)  # B and its decision, no root
    # better than any policy that computes A first, even one that knows every answer
    assert policy.train_objective_ < best_from_root(g, lam)
    assert policy.train_objective_ < fit(g, None, lam, myopic=True).train_objective_
    assert policy.recursion_objective_ == pytest.approx(policy.train_objective_, abs=1e-12)


def test_with_path_features_a_route_starts_at_the_root_or_a_network_alone():
    g = useless_root_graph(path_features=True)
    assert g.start_candidates() == [0, 2]
    for lam in (0.0, 0.02, 0.2):
        policy = fit(g, None, lam)
        assert policy.start_ in (0, 2)
        assert policy.recursion_objective_ == pytest.approx(policy.train_objective_, abs=1e-12)
    assert fit(g, None, 0.02).start_ == 2  # C alone: 0.08, A first cannot beat 0.094


# -------------------------------------------------------------------------------------------
# Shifted, threshold and constant policies of the same class
# -------------------------------------------------------------------------------------------


def test_shifted_policies_trade_loss_for_time(selection):
    graph, train, test = selection
    lam = 0.005
    policy = fit(graph, train, lam)
    rows = graph.rows(train)
    assert policy.start_ == 0 and policy.rules_[0].learned[0]
    same = policy.shifted(graph, 0.0, rows)
    assert same_routes(same.route(graph, test), policy.route(graph, test))
    costs = []
    for shift in (-2.0, -0.5, 0.5, 2.0):
        twin = policy.shifted(graph, shift, rows)
        assert twin.origin_ == "shifted" and twin.shift_ == shift and policy.origin_ == "recursion"
        route = twin.route(graph, train)
        assert twin.train_cost_ms_ == pytest.approx(route.cost_ms.mean())
        assert twin.train_objective_ == pytest.approx(objective(graph, route, lam))
        costs.append(twin.train_cost_ms_)
        # only the learned stop steps moved
        for a, b in zip(policy.rules_, twin.rules_, strict=True):
            if a is not None:
                np.testing.assert_array_equal(a.coef, b.coef)
                assert b.intercept[0] == a.intercept[0] + (shift if a.learned[0] else 0.0)
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    # the original is untouched, and on its own lambda beats its shifts on training data
    assert policy.route(graph, train).cost_ms.mean() == pytest.approx(policy.train_cost_ms_)
    assert (
        policy.train_objective_
        <= min(policy.shifted(graph, s, rows).train_objective_ for s in (-0.5, 0.5)) + 1e-12
    )


@pytest.mark.parametrize("kind", ["early_exit", "network_selection", "combined"])
def test_threshold_policies_are_the_uniform_and_cascade_baselines(kind):
    predictions, costs = synthetic_tables(
        {"a": 1, "b": 1, "c": 3}, n=400, seed=3, decision_ms=0.05, answer_ms=0.01
    )
    if kind == "early_exit":
        predictions = {"c": predictions["c"]}
    graph = scheme_graph(kind, predictions, costs)
    rows = np.arange(0, 400, 2)
    test = np.arange(1, 400, 2)
    features = standardize(graph, rows)
    chain = {n: graph.successors[n][0] for n in graph.default_chain() if not graph.is_terminal(n)}
    thresholds = default_thresholds(graph, rows, count=12)
    for t in thresholds:
        policy = threshold_policy(
            graph, features, start=0, go=chain, threshold=t, rows=rows, origin="uniform"
        )
        for ids in (rows, test):
            assert same_routes(policy.route(graph, ids), uniform_route(graph, t, ids))
    firsts = cascade_firsts(graph)
    assert firsts  # every scheme has one
    for first in firsts:
        for t in thresholds[::3]:
            policy = threshold_policy(
                graph,
                features,
                start=first,
                go={first: graph.reference},
                threshold=t,
                rows=rows,
                origin="cascade",
            )
            assert policy.start_ == first
            assert same_routes(policy.route(graph, test), cascade_route(graph, first, t, test))
    for node in range(graph.num_nodes):
        policy = constant_policy(graph, features, node, rows, lam=0.01)
        route = policy.route(graph, test)
        assert same_routes(route, single_route(graph, node, test))
        assert policy.train_objective_ == pytest.approx(
            objective(graph, policy.route(graph, rows), 0.01), abs=1e-12
        )


# -------------------------------------------------------------------------------------------
# The linear rules, policies as data
# -------------------------------------------------------------------------------------------


def test_linear_weights_reproduce_the_sklearn_decisions(selection):
    graph, train, test = selection
    policy = fit(graph, train, 0.02)
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
        policy = fit(graph, train, 0.03, myopic=myopic)
        again = pickle.loads(pickle.dumps(policy))
        assert same_routes(policy.route(graph, test), again.route(graph, test))
        assert again.get_params() == policy.get_params()


def round_trip_policies(graph: StageGraph, train: np.ndarray) -> list[TradeoffPolicy]:
    rows = graph.rows(train)
    features = standardize(graph, rows)
    learned = fit(graph, train, 0.01)
    chain = {n: graph.successors[n][0] for n in graph.default_chain() if not graph.is_terminal(n)}
    return [
        learned,
        fit(graph, train, 0.0),
        fit(graph, train, 0.05, myopic=True, loss="top5"),
        learned.shifted(graph, -0.7, rows),
        threshold_policy(
            graph, features, start=0, go=chain, threshold=0.6, rows=rows, origin="uniform"
        ),
        threshold_policy(
            graph, features, start=0, go=chain, threshold=np.inf, rows=rows, origin="uniform"
        ),
        constant_policy(graph, features, graph.reference, rows, origin="reference"),
    ]


def test_policies_round_trip_through_plain_data(selection, combined):
    for graph, train, _ in (selection, combined):
        everything = np.arange(graph.num_examples)
        for policy in round_trip_policies(graph, train):
            data = policy.to_dict()
            again = TradeoffPolicy.from_dict(json.loads(json.dumps(data)))
            assert again.get_params() == policy.get_params()
            assert (again.start_, again.origin_, again.shift_) == (
                policy.start_,
                policy.origin_,
                policy.shift_,
            )
            assert again.graph_signature_ == graph.signature()
            assert again.train_objective_ == policy.train_objective_
            a, b = policy.route(graph, everything), again.route(graph, everything)
            assert same_routes(a, b)
            assert np.array_equal(a.paid_ms, b.paid_ms)
            assert again.to_dict() == json.loads(json.dumps(data))


def test_policies_round_trip_through_a_file(selection, tmp_path):
    graph, train, test = selection
    policies = dict(enumerate(round_trip_policies(graph, train)))
    path = tmp_path / "policies.json"
    save_policies(policies, path)
    loaded = load_policies(path)
    assert sorted(loaded) == sorted(policies)
    everything = np.arange(graph.num_examples)
    for i, policy in policies.items():
        assert same_routes(policy.route(graph, everything), loaded[i].route(graph, everything))


def test_a_policy_refuses_another_graph(selection):
    graph, train, _ = selection
    policy = fit(graph, train, 0.03)
    other = make_graph(np.ones((3, 10), dtype=bool))
    with pytest.raises(ValueError, match="differs"):
        policy.predict(other)
    with pytest.raises(RuntimeError, match="not fitted"):
        TradeoffPolicy().predict(graph)
    with pytest.raises(ValueError, match="lam"):
        TradeoffPolicy(lam=-1.0).fit(graph, train)


def test_warm_start_reaches_the_same_policy(selection):
    graph, train, test = selection
    cold = fit(graph, train, 0.03)
    warm = TradeoffPolicy(lam=0.03).fit(graph, train, init=fit(graph, train, 0.02))
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
    g = make_graph(
        correct, correct_top5=top5, successors=successors, decision_ms=0.1, answer_ms=0.05
    )
    train, test = np.arange(500), np.arange(500, 1000)
    for loss in ("top1", "top5"):
        oracle = oracle_route(g, test, loss=loss)
        right = g.correct(loss)[oracle.stop, test]
        assert right.mean() >= g.correct(loss)[:, test].mean(axis=1).max()
        assert right.mean() == g.correct(loss)[:, test].any(axis=0).mean()
        assert not oracle.decided.any()
        lams = (0.0, 0.02, 0.1, 0.3)
        routes = [fit(g, train, lam, loss=loss).route(g, test) for lam in lams]
        routes += [uniform_route(g, t, test) for t in (0.3, 0.6, 0.9)]
        routes += [single_route(g, node, test) for node in range(3)]
        routes += [cascade_route(g, first, 0.6, test) for first in cascade_firsts(g)]
        for route in routes:
            policy_right = g.correct(loss)[route.stop, test]
            assert (oracle.cost_ms[policy_right] <= route.cost_ms[policy_right] + 1e-12).all()
            # at the policy's accuracy, the oracle's cheapest answers cost no more
            k = int(policy_right.sum())
            cheapest = np.sort(oracle.cost_ms[right])[:k].sum()
            assert cheapest <= route.cost_ms[policy_right].sum() + 1e-9
        # nothing right: the cheapest node alone (the root here)
        none = ~g.correct(loss)[:, test].any(axis=0)
        assert none.any()
        assert (oracle.stop[none] == 0).all()
        assert oracle.cost_ms[none] == pytest.approx(g.start_ms[0] + g.answer_ms)


def test_oracle_pays_every_stage_on_its_path():
    correct = np.array([[False, False, True], [True, False, False], [False, True, False]])
    g = make_graph(correct, start_ms=[1.0, 2.0, 4.0], successors=SELECTION, answer_ms=0.5)
    route = oracle_route(g)
    # the cheapest way to a right answer starts where it is (separate networks: no path
    # through another node is cheaper than the node alone)
    assert route.stop.tolist() == [1, 2, 0]
    assert route.cost_ms.tolist() == [2.5, 4.5, 1.5]
    assert route.visited.tolist() == [
        [False, True, False],
        [False, False, True],
        [True, False, False],
    ]


def test_oracle_follows_a_cheaper_path_through_earlier_nodes():
    # an early-exit chain: exit 1 after exit 0 costs 1 + 1.5, exit 1 from the input 3
    predictions, costs = synthetic_tables(
        {"net": 3}, n=50, stage_ms={"net": [1.0, 1.5, 2.0]}, head_ms=0.0
    )
    calls = {**costs.calls, segment_key("net", None, 1): {1: 3.0}}
    g = scheme_graph("early_exit", predictions, Costs(batch_size=1, calls=calls))
    only_exit1 = ~g.correct_top1[0] & g.correct_top1[1]
    assert only_exit1.any()
    route = oracle_route(g)
    assert (route.stop[only_exit1] == 1).all()
    assert route.visited[only_exit1][:, :2].all()
    assert route.cost_ms[only_exit1] == pytest.approx(2.5)
    paid = route.paid_ms[only_exit1][:, :2]
    assert paid == pytest.approx(np.tile([1.0, 1.5], (only_exit1.sum(), 1)))


def test_uniform_follows_the_default_chain():
    correct = np.ones((3, 3), dtype=bool)
    features = np.zeros((3, 3, 4), dtype=np.float32)
    features[:, :, 0] = [[0.9, 0.2, 0.2], [0.9, 0.9, 0.2], [0.1, 0.1, 0.1]]
    g = make_graph(
        correct, features=features, start_ms=[1.0, 2.0, 4.0], successors=SELECTION, decision_ms=0.5
    )
    route = uniform_route(g, 0.5)
    assert route.stop.tolist() == [0, 1, 2]
    assert route.visited[2].tolist() == [True, True, True]  # never skips B
    assert route.cost_ms.tolist() == [1.5, 4.0, 8.0]
    thresholds = default_thresholds(g, np.arange(3), count=5)
    assert thresholds[-1] == np.inf and (uniform_route(g, thresholds[0]).stop == 0).all()
    assert (uniform_route(g, np.inf).stop == 2).all()


def test_default_thresholds_fall_between_float32_values(selection):
    graph, train, _ = selection
    rows = graph.rows(train)
    thresholds = default_thresholds(graph, rows, count=30)
    finite = thresholds[np.isfinite(thresholds)]
    assert len(finite) >= 20 and np.all(np.diff(thresholds) > 0)
    # half a float32 step below a float32 value: no float32 probability equals one, so
    # ">= t" and "> t" agree on every example
    near = finite.astype(np.float32).astype(np.float64)
    gap = np.abs(near - finite)
    assert (gap > 0).all()
    assert (gap <= np.spacing(finite.astype(np.float32)).astype(np.float64)).all()
    probs = graph.max_prob.astype(np.float32).astype(np.float64)
    assert not np.isin(probs, finite).any()
    for t in finite:
        assert np.array_equal(probs >= t, probs > t)
    # from "everything stops at the root" to "nothing stops early"
    assert (uniform_route(graph, thresholds[0], train).stop == 0).all()
    assert (uniform_route(graph, thresholds[-1], train).stop == graph.num_nodes - 1).all()


def test_single_and_cascade_costs():
    correct = np.ones((3, 2), dtype=bool)
    features = np.zeros((3, 2, 4), dtype=np.float32)
    features[0, :, 0] = [0.9, 0.1]
    g = make_graph(
        correct,
        features=features,
        start_ms=[1.0, 2.0, 4.0],
        successors=SELECTION,
        decision_ms=0.5,
        answer_ms=0.25,
    )
    assert single_route(g, 1).cost_ms.tolist() == [2.25, 2.25]
    cheaper_alone = make_graph(correct, start_ms=[1.0, 2.0, 4.0], single_ms=[1.0, 1.5, 4.0])
    assert single_route(cheaper_alone, 1).cost_ms.tolist() == [1.5, 1.5]  # no decision before
    assert cascade_firsts(g) == [0, 1]
    route = cascade_route(g, 0, 0.5)
    assert route.stop.tolist() == [0, 2]
    assert route.cost_ms.tolist() == [1.5, 5.75]  # the first decided: its decision answers
    assert route.decided[:, 0].all()
    assert FEATURES[0] == "top1_prob"


def test_cascades_need_an_edge_to_the_reference():
    g = make_graph(np.ones((3, 2), dtype=bool), start_ms=[1.0, 2.0, 4.0])  # a chain
    assert cascade_firsts(g) == [1]  # node 0 reaches the reference only through node 1
    with pytest.raises(ValueError, match="no edge"):
        cascade_route(g, 0, 0.5)
    # the graph fixes the cascades, not the timing: a first node that costs as much as the
    # reference is a cascade too (two runs of a study have the same baselines)
    h = make_graph(np.ones((3, 2), dtype=bool), start_ms=[1.0, 4.0, 4.0], successors=SELECTION)
    assert cascade_firsts(h) == [0, 1]
