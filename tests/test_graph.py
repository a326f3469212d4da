"""Tests of the DAG of stages (adaptive_inference.graph): builders, costs, features, routing."""

from __future__ import annotations

import numpy as np
import pytest
from policy_data import make_graph, synthetic_tables

from adaptive_inference.graph import (
    STOP,
    combined_graph,
    early_exit_graph,
    network_selection_graph,
    route_table,
    walk,
)

EXITS = {"big": 3, "tiny": 1, "mid": 1}  # deliberately not in cost order


@pytest.fixture(scope="module")
def tables():
    costs = {"tiny": [1.0], "mid": [3.0], "big": [2.0, 2.0, 4.0]}
    return synthetic_tables(EXITS, n=300, costs=costs)


def test_early_exit_graph_is_a_chain_with_backbone_plus_head_edges(tables):
    predictions, costs = tables
    g = early_exit_graph(predictions["big"], costs["big"], network="big", decision_ms=0.05)
    assert g.names == ["big/exit0", "big/exit1", "big/final"]
    assert g.successors == [[1], [2], []]
    # stage_ms cumulative 2, 4, 8 and heads 0.1 each
    assert g.entry_ms == pytest.approx(2.1)
    assert g.edge_ms == {(0, 1): pytest.approx(2.1), (1, 2): pytest.approx(4.1)}
    assert g.alone_ms.tolist() == pytest.approx([2.1, 4.1, 8.1])
    assert g.names[g.reference] == "big/final"
    assert g.decision_ms.tolist() == [0.05, 0.05, 0.0]
    probs = [f"top{j}_prob" for j in range(1, 6)]
    assert g.feature_names == [*probs, "margin", "entropy"]
    table = predictions["big"]
    final = table[table["exit"] == 2]
    assert np.array_equal(g.correct_top1[2], final["correct_top1"].to_numpy())
    np.testing.assert_allclose(g.max_prob[2], final["max_prob"].to_numpy())


def test_throughput_setting_reads_the_other_costs(tables):
    predictions, costs = tables
    g = early_exit_graph(predictions["big"], costs["big"], network="big", setting="throughput")
    assert g.entry_ms == pytest.approx(0.21 / 256)  # batch time per example


def test_shuffled_rows_give_the_same_graph(tables):
    predictions, costs = tables
    shuffled = predictions["big"].sample(frac=1.0, random_state=0)
    a = early_exit_graph(predictions["big"], costs["big"], network="big")
    b = early_exit_graph(shuffled, costs["big"], network="big")
    assert np.array_equal(a.features, b.features)
    assert np.array_equal(a.correct_top5, b.correct_top5)


def test_network_selection_orders_by_cost_and_jumps_pay_the_whole_network(tables):
    predictions, costs = tables
    g = network_selection_graph(predictions, costs)
    assert g.names == ["tiny", "mid", "big"]
    assert g.successors == [[1, 2], [2], []]
    assert g.entry_ms == pytest.approx(1.1)
    assert g.edge_ms[(0, 1)] == pytest.approx(3.1)
    assert g.edge_ms[(0, 2)] == pytest.approx(8.1)  # A -> R pays R alone
    assert g.edge_ms[(1, 2)] == pytest.approx(8.1)
    accuracy = g.correct_top1.mean(axis=1)
    assert g.reference == int(np.argmax(accuracy))
    assert network_selection_graph(predictions, costs, reference="mid").reference == 1


def test_combined_graph_edges(tables):
    predictions, costs = tables
    g = combined_graph(predictions, costs)
    assert g.names == ["tiny/final", "mid/final", "big/exit0", "big/exit1", "big/final"]
    # next exit of the same network, else into each later network at its first or final exit
    assert g.successors == [[1, 2, 4], [2, 4], [3], [4], []]
    assert g.edge_ms[(0, 2)] == pytest.approx(2.1)  # into big at its first exit
    assert g.edge_ms[(1, 4)] == pytest.approx(8.1)  # big as a whole: no earlier head paid
    assert g.edge_ms[(2, 3)] == pytest.approx(2.1)  # inside big: backbone + next head
    assert g.default_chain() == [0, 1, 2, 3, 4]
    # the network-selection graph is a subgraph: the same jumps at the same costs
    ns = network_selection_graph(predictions, costs)
    node = {name: g.names.index(f"{name}/final") for name in ns.names}
    for (a, b), ms in ns.edge_ms.items():
        assert g.edge_ms[(node[ns.names[a]], node[ns.names[b]])] == pytest.approx(ms)
    assert g.names[g.reference] == "big/final" or g.exit_names[g.reference] == "final"


def test_path_features_are_those_of_the_dominators(tables):
    predictions, costs = tables
    g = combined_graph(predictions, costs, path_features=True)
    # tiny is on every path; big's exits follow each other, but big/final may be jumped to
    assert [g.dominators(n) for n in range(5)] == [(0,), (0, 1), (0, 2), (0, 2, 3), (0, 4)]
    assert g.feature_nodes(3) == (3, 0, 2)
    assert g.feature_nodes(4) == (4, 0)
    assert g.node_features(3).shape == (300, 3 * len(g.feature_names))
    assert g.node_feature_names(3)[0] == "big/exit1:top1_prob"
    ns = network_selection_graph(predictions, costs, path_features=True)
    assert [ns.feature_nodes(n) for n in range(3)] == [(0,), (1, 0), (2, 0)]
    chain = early_exit_graph(predictions["big"], costs["big"], network="big", path_features=True)
    assert chain.feature_nodes(2) == (2, 0, 1)
    assert combined_graph(predictions, costs).feature_nodes(3) == (3,)


def test_walk_pays_every_stage_on_the_path_and_the_decisions():
    correct = np.ones((3, 4), dtype=bool)
    g = make_graph(correct, alone_ms=[1.0, 2.0, 4.0], successors=[[1, 2], [2], []], decision_ms=0.5)
    plan = {0: np.array([STOP, 1, 2, 1]), 1: np.array([0, STOP, 0, 2])}

    def decide(node, here):
        return plan[node][here], node == 0  # node 1 as a constant-cost rule: no decision paid

    route = walk(g, np.arange(4), decide)
    assert route.stop.tolist() == [0, 1, 2, 2]
    assert route.visited[3].tolist() == [True, True, True]
    assert route.visited[2].tolist() == [True, False, True]
    assert route.decided[3].tolist() == [True, False, False]
    # entry 1 + decision 0.5; 0->1 costs 2; jump 0->2 costs 4; 1->2 costs 4
    assert route.cost_ms.tolist() == pytest.approx([1.5, 3.5, 5.5, 7.5])
    assert route.stop_fraction().tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert route.time_fraction().sum() == pytest.approx(1.0)
    table = route_table(g, route)
    assert table["path"].tolist() == ["n0", "n0>n1", "n0>n2", "n0>n1>n2"]


def test_rows_from_ids_and_masks():
    g = make_graph(np.ones((2, 5), dtype=bool))
    assert g.rows([3, 1]).tolist() == [3, 1]
    assert g.rows(np.array([True, False, True, False, False])).tolist() == [0, 2]
    with pytest.raises(KeyError):
        g.rows([7])


def test_invalid_graphs_are_refused():
    with pytest.raises(ValueError, match="topological"):
        make_graph(np.ones((2, 3), dtype=bool), successors=[[], [0]])
    with pytest.raises(ValueError, match="reachable"):
        make_graph(np.ones((3, 3), dtype=bool), successors=[[2], [2], []])
