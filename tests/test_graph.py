"""Tests of the DAG of stages (adaptive_inference.graph): builders, the additive costs that
price the test graphs, features, routing. (Costs as data: test_costs.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from policy_data import make_graph, synthetic_tables, table_costs, with_decision_ms

from adaptive_inference.costs import ANSWER, Costs, decision_key, segment_key
from adaptive_inference.decision import PATH_EXTRA
from adaptive_inference.graph import (
    STOP,
    NetworkTable,
    route_table,
    scheme_graph,
    scheme_structure,
    starts_alone,
    walk,
)

EXITS = {"tiny": 1, "mid": 1, "big": 3}
STAGES = {"tiny": [1.0], "mid": [3.0], "big": [2.0, 2.0, 4.0]}  # heads 0.1 each


@pytest.fixture(scope="module")
def tables():
    predictions, costs = synthetic_tables(EXITS, n=300, stage_ms=STAGES, answer_ms=0.01)
    return predictions, costs


# -------------------------------------------------------------------------------------------
# Costs
# -------------------------------------------------------------------------------------------


def test_additive_costs_add_stages_and_heads():
    costs = Costs.additive(
        {"net": [1.0, 2.0, 4.0]},
        {"net": [0.1, 0.2, 0.3]},
        decision_ms=0.05,
        answer_ms=0.01,
        batch_size=4,
    )
    assert costs.segment_ms("net", None, 0) == pytest.approx(1.1)
    assert costs.segment_ms("net", None, 2) == pytest.approx(7.3)  # 1 + 2 + 4 + head 2
    assert costs.segment_ms("net", 0, 2) == pytest.approx(6.3)  # stages 1 and 2, head 2
    assert costs.segment_ms("net", 1, 2) == pytest.approx(4.3)
    assert costs.decision_ms(1, 0, "net", 1) == pytest.approx(0.05)
    assert costs.answer_ms == pytest.approx(0.01)
    # per example at the setting's batch size: a call on the batch costs 4 times more
    assert costs.calls[segment_key("net", None, 0)][4] == pytest.approx(4.4)
    with pytest.raises(KeyError, match="time_costs"):
        costs.per_example(segment_key("other", None, 0))
    assert costs.scaled(2.0).segment_ms("net", 0, 2) == pytest.approx(12.6)


# -------------------------------------------------------------------------------------------
# Structure
# -------------------------------------------------------------------------------------------


def test_scheme_structures():
    exits = {"tiny": ["final"], "mid": ["final"], "big": ["exit0", "exit1", "final"]}
    chain = scheme_structure("early_exit", {"big": exits["big"]})
    assert chain.names == ["big/exit0", "big/exit1", "big/final"]
    assert chain.successors == [[1], [2], []] and chain.exits == [0, 1, 2]
    selection = scheme_structure("network_selection", exits)
    assert selection.names == ["tiny", "mid", "big"]
    assert selection.successors == [[1, 2], [2], []]
    assert selection.exits == [0, 0, 2] and selection.exit_names == ["final"] * 3
    combined = scheme_structure("combined", exits)
    assert combined.names == ["tiny/final", "mid/final", "big/exit0", "big/exit1", "big/final"]
    # next exit of the same network, else into each later network at its first or final exit
    assert combined.successors == [[1, 2, 4], [2, 4], [3], [4], []]
    assert combined.default_chain() == [0, 1, 2, 3, 4]
    assert combined.default_chain(2) == [2, 3, 4]
    with pytest.raises(ValueError, match="one network"):
        scheme_structure("early_exit", exits)
    with pytest.raises(ValueError, match="unknown graph"):
        scheme_structure("cascade", exits)


def test_start_candidates_and_decision_shapes():
    exits = {"tiny": ["final"], "mid": ["final"], "big": ["exit0", "exit1", "final"]}
    plain = scheme_structure("combined", exits)
    assert plain.start_candidates() == [0, 1, 2, 3, 4]
    assert plain.decision_shape(0) == (3, 0) and plain.decision_shape(3) == (1, 0)
    # with path features a start past the root would miss its dominators' features: only the
    # root and the single networks alone (terminal nodes)
    paths = scheme_structure("combined", exits, path_features=True)
    assert paths.start_candidates() == [0, 4]
    assert paths.decision_shape(3) == (1, 2)  # reads tiny and big/exit0
    assert paths.decision(3) == decision_key(1, 2, "big", 1)


def test_components_cover_every_route(tables):
    predictions, costs = tables
    graph = scheme_graph("combined", predictions, costs)
    keys = graph.components()
    assert ANSWER in keys
    for b in range(graph.num_nodes):
        assert graph.segment(None, b) in keys
        for a in graph.predecessors(b):
            assert graph.segment(a, b) in keys
        if not graph.is_terminal(b):
            assert graph.decision(b) in keys
    # the timed components are what the graph is priced by
    missing = Costs(
        batch_size=1, calls={k: v for k, v in costs.calls.items() if k != graph.segment(2, 3)}
    )
    with pytest.raises(KeyError, match="big:exit0->exit1"):
        scheme_graph("combined", predictions, missing)


# -------------------------------------------------------------------------------------------
# Graphs from the workflow's tables
# -------------------------------------------------------------------------------------------


def test_early_exit_graph_is_a_chain_with_backbone_plus_head_edges(tables):
    predictions, costs = tables
    costs = with_decision_ms(costs, {"big": 0.05})
    g = scheme_graph("early_exit", {"big": predictions["big"]}, costs, name="ee")
    assert (g.kind, g.name) == ("early_exit", "ee")
    assert g.names == ["big/exit0", "big/exit1", "big/final"]
    assert g.successors == [[1], [2], []]
    # stages 2, 2, 4 and heads 0.1 each
    assert g.start_ms.tolist() == pytest.approx([2.1, 4.1, 8.1])
    assert g.edge_ms == {(0, 1): pytest.approx(2.1), (1, 2): pytest.approx(4.1)}
    assert g.names[g.reference] == "big/final"
    assert g.decision_ms.tolist() == pytest.approx([0.05, 0.05, 0.0])
    assert g.answer_ms == pytest.approx(0.01)
    assert g.reference_ms == pytest.approx(8.11)
    assert g.transition_ms(0, 2) == pytest.approx(6.1)
    probs = [f"top{j}_prob" for j in range(1, 6)]
    assert g.feature_names == [*probs, "margin", "entropy"]
    table = predictions["big"]
    final = table[table["exit"] == 2]
    assert np.array_equal(g.correct_top1[2], final["correct_top1"].to_numpy())
    np.testing.assert_allclose(g.max_prob[2], final["max_prob"].to_numpy())
    np.testing.assert_array_equal(g.top_i[2, :, 0], final["prediction"].to_numpy())
    assert scheme_graph("early_exit", {"big": predictions["big"]}, costs).name == "early_exit"


def test_other_costs_reprice_the_same_graph(tables):
    predictions, costs = tables
    g = scheme_graph("network_selection", predictions, costs)
    # a throughput setting: calls timed on 256 examples at a tenth of the per-example cost
    calls = {k: {**v, 256: v[1] * 256 * 0.1} for k, v in costs.calls.items()}
    throughput = Costs(batch_size=256, calls=calls)
    h = g.with_costs(throughput)
    assert h.start_ms.tolist() == pytest.approx((0.1 * g.start_ms).tolist())
    assert h.reference_ms == pytest.approx(0.1 * g.reference_ms)
    assert h.edge_ms[(0, 2)] == pytest.approx(0.1 * g.edge_ms[(0, 2)])
    assert np.array_equal(h.correct_top1, g.correct_top1) and h.reference == g.reference
    assert h.signature() == g.signature()


def test_shuffled_rows_give_the_same_graph(tables):
    predictions, costs = tables
    shuffled = predictions["big"].sample(frac=1.0, random_state=0)
    a = scheme_graph("early_exit", {"big": predictions["big"]}, costs)
    b = scheme_graph("early_exit", {"big": shuffled}, costs)
    assert np.array_equal(a.features, b.features)
    assert np.array_equal(a.correct_top5, b.correct_top5)
    assert np.array_equal(a.top_i, b.top_i)
    c = scheme_graph("early_exit", {"big": NetworkTable.read(shuffled)}, costs)
    assert np.array_equal(a.features, c.features)


def test_network_selection_keeps_the_mapping_order_and_jumps_pay_the_whole_network(tables):
    predictions, costs = tables
    g = scheme_graph("network_selection", predictions, costs)
    assert g.names == ["tiny", "mid", "big"]
    assert g.successors == [[1, 2], [2], []]
    assert g.start_ms.tolist() == pytest.approx([1.1, 3.1, 8.1])
    assert g.edge_ms[(0, 1)] == pytest.approx(3.1)
    assert g.edge_ms[(0, 2)] == pytest.approx(8.1)  # A -> R pays R alone
    assert g.edge_ms[(1, 2)] == pytest.approx(8.1)
    accuracy = g.correct_top1.mean(axis=1)
    assert g.reference == int(np.argmax(accuracy))
    assert scheme_graph("network_selection", predictions, costs, reference="mid").reference == 1
    # no sorting by cost: the networks come in the mapping's order
    backwards = {net: predictions[net] for net in ("big", "mid", "tiny")}
    h = scheme_graph("network_selection", backwards, costs)
    assert h.names == ["big", "mid", "tiny"]
    assert h.start_ms.tolist() == pytest.approx([8.1, 3.1, 1.1])
    assert h.names[h.reference] == g.names[g.reference]
    with pytest.raises(ValueError, match="not a node or network"):
        scheme_graph("network_selection", predictions, costs, reference="huge")


def test_combined_graph_edges(tables):
    predictions, costs = tables
    g = scheme_graph("combined", predictions, costs)
    assert g.names == ["tiny/final", "mid/final", "big/exit0", "big/exit1", "big/final"]
    assert g.successors == [[1, 2, 4], [2, 4], [3], [4], []]
    assert g.edge_ms[(0, 2)] == pytest.approx(2.1)  # into big at its first exit
    assert g.edge_ms[(1, 4)] == pytest.approx(8.1)  # big as a whole: no earlier head paid
    assert g.edge_ms[(2, 3)] == pytest.approx(2.1)  # inside big: backbone + next head
    assert g.edge_ms[(3, 4)] == pytest.approx(4.1)
    # the network-selection graph is a subgraph: the same jumps at the same costs
    ns = scheme_graph("network_selection", predictions, costs)
    node = {name: g.names.index(f"{name}/final") for name in ns.names}
    for (a, b), ms in ns.edge_ms.items():
        assert g.edge_ms[(node[ns.names[a]], node[ns.names[b]])] == pytest.approx(ms)
    assert g.names[g.reference] == f"{ns.names[ns.reference]}/final"
    assert g.reference_ms == pytest.approx(ns.reference_ms)


def test_each_node_pays_its_own_decision(tables):
    predictions, costs = tables
    costs = with_decision_ms(costs, {"tiny": 0.01, "mid": 0.02, "big": 0.03})
    g = scheme_graph("combined", predictions, costs)
    assert g.decision_ms.tolist() == pytest.approx([0.01, 0.02, 0.03, 0.03, 0.0])
    # a decision's cost depends on its shape: more steps cost more
    calls = {k: dict(v) for k, v in costs.calls.items()}
    for key in calls:
        if key[0] == "decision":
            calls[key] = {1: 0.01 * key[1] + 0.001 * key[2]}
    shaped = g.with_costs(Costs(batch_size=1, calls=calls))
    assert shaped.decision_ms.tolist() == pytest.approx([0.03, 0.02, 0.01, 0.01, 0.0])


def test_shortest_and_longest_paths(tables):
    predictions, costs = tables
    costs = with_decision_ms(costs, {"tiny": 0.5})
    g = scheme_graph("combined", predictions, costs)
    dist, prev = g.shortest_path_ms()
    # additive costs: a head more on the way, so every node is reached cheapest alone
    assert dist.tolist() == pytest.approx([1.1, 3.1, 2.1, 4.1, 8.1])
    assert prev.tolist() == [-1] * 5
    # timed in context, big up to exit1 from the input costs more than exit0 then exit1
    slow = Costs(batch_size=1, calls={**costs.calls, segment_key("big", None, 1): {1: 5.0}})
    dist, prev = g.with_costs(slow).shortest_path_ms()
    assert dist.tolist() == pytest.approx([1.1, 3.1, 2.1, 4.2, 8.1])
    assert prev.tolist() == [-1, -1, -1, 2, -1]
    # the costliest path: tiny (+0.5 decision), mid, big's three exits
    assert g.longest_path_ms() == pytest.approx(1.1 + 0.5 + 3.1 + 2.1 + 2.1 + 4.1)
    assert g.longest_path_ms(start=2) == pytest.approx(2.1 + 2.1 + 4.1)


def test_path_features_are_those_of_the_dominators(tables):
    predictions, costs = tables
    g = scheme_graph("combined", predictions, costs, path_features=True)
    # tiny is on every path; big's exits follow each other, but big/final may be jumped to
    assert [g.dominators(n) for n in range(5)] == [(0,), (0, 1), (0, 2), (0, 2, 3), (0, 4)]
    assert g.feature_nodes(3) == (3, 0, 2)
    assert g.feature_nodes(4) == (4, 0)
    own = len(g.feature_names)
    assert g.node_features(3).shape == (300, own + 2 * (own + len(PATH_EXTRA)))
    names = g.node_feature_names(3)
    assert names[0] == "big/exit1:top1_prob"
    assert names[own : 2 * own + 2] == [
        *(f"tiny/final:{f}" for f in g.feature_names),
        "tiny/final:agrees",
        "tiny/final:p_top1",
    ]
    ns = scheme_graph("network_selection", predictions, costs, path_features=True)
    assert [ns.feature_nodes(n) for n in range(3)] == [(0,), (1, 0), (2, 0)]
    chain = scheme_graph("early_exit", {"big": predictions["big"]}, costs, path_features=True)
    assert chain.feature_nodes(2) == (2, 0, 1)
    assert scheme_graph("combined", predictions, costs).feature_nodes(3) == (3,)


def test_path_columns_read_agreement_and_the_probability_of_the_current_class(tables):
    predictions, costs = tables
    g = scheme_graph("network_selection", predictions, costs, path_features=True)
    x = g.node_features(2)
    own = len(g.feature_names)
    np.testing.assert_array_equal(x[:, :own], g.features[2])
    np.testing.assert_array_equal(x[:, own : 2 * own], g.features[0])
    agrees, p_top1 = x[:, 2 * own], x[:, 2 * own + 1]
    tiny, big = predictions["tiny"], predictions["big"]
    tiny_top = tiny[[f"top{j}_class" for j in range(1, 6)]].to_numpy()
    tiny_p = tiny[[f"top{j}_prob" for j in range(1, 6)]].to_numpy()
    answer = big.loc[big["exit"] == 2, "prediction"].to_numpy()
    np.testing.assert_array_equal(agrees, tiny["prediction"].to_numpy() == answer)
    expected = np.where(tiny_top == answer[:, None], tiny_p, 0.0).sum(axis=1)
    np.testing.assert_allclose(p_top1, expected, rtol=1e-6)
    assert 0 < agrees.mean() < 1 and (p_top1[agrees == 1] == x[agrees == 1, 0 + own]).all()
    assert ((p_top1 > 0) & (agrees == 0)).any()  # the current class further down tiny's top-k
    rows = np.array([5, 17, 3])
    np.testing.assert_array_equal(g.node_features(2, rows), x[rows])


# -------------------------------------------------------------------------------------------
# Routing
# -------------------------------------------------------------------------------------------


def test_walk_pays_every_stage_on_the_path_the_decisions_and_the_answer():
    correct = np.ones((3, 4), dtype=bool)
    g = make_graph(
        correct,
        start_ms=[1.0, 2.0, 4.0],
        successors=[[1, 2], [2], []],
        decision_ms=0.5,
        answer_ms=0.25,
    )
    plan = {0: np.array([STOP, 1, 2, 1]), 1: np.array([0, STOP, 0, 2])}

    def decide(node, here):
        return plan[node][here], node == 0  # node 1 as a constant rule: no decision paid

    route = walk(g, np.arange(4), decide)
    assert route.stop.tolist() == [0, 1, 2, 2]
    assert route.visited[3].tolist() == [True, True, True]
    assert route.visited[2].tolist() == [True, False, True]
    assert route.decided[3].tolist() == [True, False, False]
    # start 1 + decision 0.5; 0->1 costs 2; jump 0->2 costs 4; 1->2 costs 4; answer 0.25, but
    # not where the stop node decided (example 0: its decision's features hold the class)
    assert route.cost_ms.tolist() == pytest.approx([1.5, 3.75, 5.75, 7.75])
    assert route.paid_ms[0].tolist() == pytest.approx([1.5, 0.0, 0.0])
    assert route.paid_ms[3].tolist() == pytest.approx([1.5, 2.0, 4.25])
    assert route.stop_fraction().tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert route.time_fraction().sum() == pytest.approx(1.0)
    table = route_table(g, route)
    assert table["path"].tolist() == ["n0", "n0>n1", "n0>n2", "n0>n1>n2"]
    assert table["decisions"].tolist() == [1, 1, 1, 1]
    assert table["cost_ms"].tolist() == pytest.approx(route.cost_ms.tolist())
    assert g.reference_ms == pytest.approx(4.25)


def test_walk_from_another_start():
    g = make_graph(
        np.ones((3, 3), dtype=bool), start_ms=[1.0, 2.0, 4.0], decision_ms=0.5, answer_ms=0.25
    )
    seen = []

    def decide(node, here):
        seen.append(node)
        return np.array([STOP, 2, 2])[here], True

    route = walk(g, np.arange(3), decide, start=1)
    assert seen == [1]  # node 0 is never reached
    assert route.stop.tolist() == [1, 2, 2]
    assert not route.visited[:, 0].any()
    assert route.cost_ms.tolist() == pytest.approx([2.5, 6.75, 6.75])  # 1 decided: no answer
    # the reference alone is a route that starts at it
    alone = walk(g, np.arange(3), decide, start=2)
    assert alone.cost_ms.tolist() == pytest.approx([g.reference_ms] * 3)


def test_a_node_alone_is_priced_as_it_runs_alone():
    """A route that is one node alone (every example stops at its start, nothing decided there:
    a terminal node, a constant "stop") pays ``single_ms``, the node timed after its own answer;
    a route that decides at its start, or goes on from it, pays ``start_ms``."""
    g = make_graph(
        np.ones((3, 4), dtype=bool),
        start_ms=[1.0, 2.0, 4.0],
        single_ms=[0.6, 1.5, 3.0],
        successors=[[1, 2], [2], []],
        decision_ms=0.5,
        answer_ms=0.25,
    )
    assert g.single_ms.tolist() == [0.6, 1.5, 3.0] and g.start_ms.tolist() == [1.0, 2.0, 4.0]
    assert g.reference_ms == pytest.approx(3.25)
    rows = np.arange(4)

    def constant(action, made=False):
        return lambda node, here: (np.full(len(here), action), made)

    cases = {  # (start, decide): cost of every example, alone
        (2, constant(STOP)): (3.25, True),  # the reference: terminal
        (0, constant(STOP)): (0.85, True),  # a constant "stop": a single network
        (0, constant(STOP, made=True)): (1.5, False),  # it decided (no answer): a route's start
        (1, constant(2)): (6.25, False),  # it goes on: a route's start
    }
    for (start, decide), (cost, alone) in cases.items():
        route = walk(g, rows, decide, start=start)
        assert starts_alone(route, start) is alone
        assert route.cost_ms.tolist() == pytest.approx([cost] * 4)
    plan = {0: np.array([STOP, 1, STOP, 2]), 1: np.full(4, 2)}
    mixed = walk(g, rows, lambda node, here: (plan[node][here], False))
    assert not starts_alone(mixed, 0)  # constant per node, yet not every example stops there
    assert mixed.paid_ms[:, 0].tolist() == pytest.approx([1.25, 1.0, 1.25, 1.0])


def test_walk_refuses_an_action_that_is_no_edge():
    g = make_graph(np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="STOP or a successor"):
        walk(g, np.arange(2), lambda node, here: (np.full(len(here), 2), True))


def test_rows_from_ids_and_masks():
    g = make_graph(np.ones((2, 5), dtype=bool))
    assert g.rows([3, 1]).tolist() == [3, 1]
    assert g.rows(np.array([True, False, True, False, False])).tolist() == [0, 2]
    assert g.rows().tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(KeyError):
        g.rows([7])


def test_invalid_graphs_are_refused():
    with pytest.raises(ValueError, match="topological"):
        make_graph(np.ones((2, 3), dtype=bool), successors=[[], [0]])
    with pytest.raises(ValueError, match="reachable"):
        make_graph(np.ones((3, 3), dtype=bool), successors=[[2], [2], []])
    with pytest.raises(ValueError, match="twice"):
        make_graph(np.ones((3, 3), dtype=bool), successors=[[1, 1], [2], []])
    costs = table_costs({"a": 1})
    g = make_graph(np.ones((2, 3), dtype=bool))
    fields = {f: getattr(g, f) for f in g.__dataclass_fields__ if not f.startswith("_")}
    with pytest.raises(ValueError, match="top-k"):
        type(g)(**{**fields, "path_features": True, "top_i": None})
    with pytest.raises(ValueError, match="strictly increasing"):
        type(g)(**{**fields, "example_ids": np.array([0, 2, 1])})
    with pytest.raises(KeyError):  # priced by costs of other networks
        g.with_costs(costs)
