"""The costs the policies trade against: :class:`Costs` as data (per component and batch size)
and the joint timing job that measures them (:mod:`adaptive_inference.cost_timing`).

The joint job runs on three tiny untrained networks with a few rounds: what is checked is its
bookkeeping (one row per component and batch size, ratios to the reference taken in the same
round, the table read back as :class:`Costs`), never how fast anything is.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

from adaptive_inference import cost_timing, runtime
from adaptive_inference.cost_timing import (
    ComponentInContext,
    components_in_context,
    context_medians,
    context_ratio,
    measure_costs,
    priced_in,
    random_decision,
    round_orders,
    time_rounds,
    timing_batch_sizes,
)
from adaptive_inference.costs import (
    ANSWER,
    TABLE_COLUMNS,
    Costs,
    alone_key,
    component_name,
    decision_key,
    jump_key,
    key_columns,
    move_key,
    segment_key,
)
from adaptive_inference.decision import NodeDecision, PathMemo
from adaptive_inference.graph import scheme_structure
from adaptive_inference.networks import build_network
from adaptive_inference.segments import build_segment

CPU = torch.device("cpu")
SPECS = {
    "linear": {"arch": "linear"},
    "small_cnn": {"arch": "small_cnn", "widths": [4, 8]},
    "exit_resnet": {"arch": "exit_resnet", "widths": [4, 4, 8], "blocks_per_stage": 1},
}
BATCH_SIZES = [1, 4]
ROUNDS = 3


def tiny_networks() -> dict:
    torch.manual_seed(0)
    return {
        name: build_network(**spec, num_classes=10, in_channels=1, image_size=28).train()
        for name, spec in SPECS.items()
    }


def structures(networks, path_features: bool):
    exits = {name: list(model.exit_names) for name, model in networks.items()}
    return [
        scheme_structure(
            "early_exit", {"exit_resnet": exits["exit_resnet"]}, path_features=path_features
        ),
        scheme_structure("network_selection", exits, path_features=path_features),
        scheme_structure("combined", exits, path_features=path_features),
    ]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread, as the timing jobs run (on a small, shared machine a second thread mostly
    waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def joint():
    """A real joint timing job: the three schemes (with path features, so that decisions read
    dominators), at two batch sizes."""
    networks = tiny_networks()
    schemes = structures(networks, path_features=True)
    table = joint_table(networks, schemes, BATCH_SIZES, rounds=ROUNDS, warmup=1)
    return networks, schemes, table


def joint_table(networks, schemes, batch_sizes, *, rounds: int, warmup: int) -> pd.DataFrame:
    """The joint timing of ``schemes`` on the tiny networks, exit_resnet the reference."""
    return measure_costs(
        networks,
        schemes,
        input_shapes=dict.fromkeys(networks, (1, 28, 28)),
        reference="exit_resnet",
        batch_sizes=batch_sizes,
        rounds=rounds,
        warmup=warmup,
        topk=5,
        device=CPU,
        dtype=torch.float32,
        channels_last=False,
        progress=False,
    )


# -------------------------------------------------------------------------------------------
# Costs as data
# -------------------------------------------------------------------------------------------


def test_call_ms_interpolates_linearly_and_scales_beyond_the_largest_size():
    key = segment_key("net", None, 0)
    costs = Costs(batch_size=16, calls={key: {1: 1.0, 4: 2.5, 16: 4.9}})
    assert [costs.call_ms(key, s) for s in (1, 4, 16)] == [1.0, 2.5, 4.9]  # timed sizes
    assert costs.call_ms(key, 2) == pytest.approx(1.5)  # a third of the way from 1 to 4
    assert costs.call_ms(key, 3) == pytest.approx(2.0)
    assert costs.call_ms(key, 10) == pytest.approx(3.7)  # halfway between 4 and 16
    assert costs.call_ms(key, 32) == pytest.approx(9.8)  # beyond: per example of 16, times 32
    assert costs.call_ms(key, 20) == pytest.approx(4.9 / 16 * 20)
    assert costs.per_example(key) == pytest.approx(4.9 / 16)
    single = Costs(batch_size=8, calls={key: {8: 4.0}})
    assert single.call_ms(key, 8) == 4.0 and single.call_ms(key, 24) == pytest.approx(12.0)


def test_costs_must_hold_the_settings_batch_size_and_name_what_is_missing():
    key = segment_key("net", None, 0)
    with pytest.raises(ValueError, match=r"net:input->exit0 was not timed at batch size 4"):
        Costs(batch_size=4, calls={key: {1: 1.0}})
    costs = Costs(batch_size=1, calls={key: {1: 1.0}})
    with pytest.raises(KeyError, match="re-run rule time_costs"):
        costs.decision_ms(1, 0, "net", 0)
    doubled = costs.scaled(2.0)
    assert doubled.segment_ms("net", None, 0) == 2.0 and costs.segment_ms("net", None, 0) == 1.0


def test_component_names_and_columns():
    assert component_name(segment_key("n", None, 2)) == "n:input->exit2"
    assert component_name(segment_key("n", 0, 2)) == "n:exit0->exit2"
    assert component_name(decision_key(2, 1, "n", 0)) == "decision:n:exit0:steps2:reads1"
    assert component_name(ANSWER) == "answer"
    assert component_name(jump_key("n", 2, "m", 0)) == "n:input->exit2 after m:exit0"
    assert component_name(alone_key("n", 2)) == "n:input->exit2 alone"
    assert key_columns(segment_key("n", None, 2))["source"] == -1
    alone = key_columns(alone_key("n", 2))
    assert (alone["kind"], alone["network"], alone["exit"], alone["source"]) == (
        "alone",
        "n",
        2,
        -1,
    )
    jump = key_columns(jump_key("n", 2, "m", 0))
    assert (jump["network"], jump["exit"], jump["after_network"], jump["after_exit"]) == (
        "n",
        2,
        "m",
        0,
    )
    assert key_columns(decision_key(2, 1, "n", 0)) == {
        "component": "decision:n:exit0:steps2:reads1",
        "kind": "decision",
        "network": "n",
        "source": -1,
        "exit": 0,
        "after_network": "",
        "after_exit": -1,
        "steps": 2,
        "reads": 1,
    }


# -------------------------------------------------------------------------------------------
# The joint timing job
# -------------------------------------------------------------------------------------------


def test_timing_batch_sizes():
    assert timing_batch_sizes(1) == [1]
    assert timing_batch_sizes(8) == [1, 2, 8]
    assert timing_batch_sizes(64) == [1, 4, 16, 64]
    assert timing_batch_sizes(256) == [1, 16, 64, 256]


@pytest.mark.parametrize("steps, reads", [(1, 0), (3, 2)])
def test_random_decision_evaluates_every_step(steps, reads):
    """The decision timed for a node shape computes what the runtime's decision of that shape
    computes, and (intercepts far below zero) every step defers: the costliest case."""
    topk = 5
    decision = random_decision(steps, reads, topk=topk, device=CPU)
    assert decision.reads == tuple(range(reads)) and decision.computes
    features = (topk + 2) + reads * (topk + 2 + 2)
    assert tuple(decision.rule.weight.shape) == (features, steps)
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    memo = PathMemo(6)
    rows = torch.arange(6)
    for d in range(reads):  # what the dominators keep for path features
        memo.put(d, (torch.rand(6, topk + 2), logits.topk(topk).indices, torch.rand(6, topk)), rows)
    positions, top1 = decision.many(logits, memo, rows)
    assert positions.tolist() == [steps] * 6  # the last action, after every step
    assert torch.equal(top1, logits.argmax(1))
    one = PathMemo()
    for d in range(reads):
        one.put(d, tuple(t[0].tolist() for t in memo.values[d]), None)
    assert decision.one(logits[:1], one) == (decision.actions[-1], int(logits[0].argmax()))


class FakeComponent:
    """A component whose context (``prepare``) takes ``context_s`` and whose call records the
    order in which it ran."""

    def __init__(self, key, log, context_s=0.0):
        self.key, self.log, self.context_s = key, log, context_s

    def prepare(self, index=0):
        time.sleep(self.context_s)
        return lambda: self.log.append(self.key)


def test_time_rounds_draws_each_rounds_order_and_times_only_the_call():
    log = []
    keys = [("segment", "a", None, 0), ("segment", "b", None, 0), ("segment", "c", None, 0), ANSWER]
    components = [FakeComponent(k, log, context_s=0.005) for k in keys]
    times = time_rounds(components, keys[0], rounds=12, warmup=1, device=CPU, seed=3)
    # a warm-up round, then twelve timed rounds: each runs every component once, in the order
    # round_orders draws from the seed
    orders = list(round_orders(len(keys), 13, seed=3))
    assert log == [keys[i] for order in orders for i in order]
    assert all(sorted(order) == list(range(len(keys))) for order in orders)
    assert len({tuple(order) for order in orders}) > 3  # not one order, nor a fixed rotation
    assert orders == list(round_orders(len(keys), 13, seed=3))  # the seed fixes them
    assert orders != list(round_orders(len(keys), 13, seed=4))
    # no component always follows the same one
    before = {(order[i - 1], order[i]) for order in orders for i in range(1, len(order))}
    assert all(sum(b == k for _, b in before) > 1 for k in range(len(keys)))
    assert set(times) == set(keys) and all(t.shape == (12,) for t in times.values())
    assert max(t.max() for t in times.values()) < 5.0  # the 5 ms context is not timed
    with pytest.raises(ValueError, match="reference .* was not timed"):
        time_rounds(components, ("segment", "z", None, 0), rounds=1, warmup=0, device=CPU)


def test_a_component_with_two_contexts_is_timed_in_each_in_turn_and_priced_in_the_first():
    """Timed round ``j`` runs context ``j % 2`` (the warm-up rounds run before round 0); the
    ratio is the median of the first context's rounds, not the median of the mixture (which
    would land on whichever context happens to hold the middle round)."""
    ran = []
    key = ("segment", "a", None, 0)
    component = ComponentInContext(
        key,
        lambda: ran.append("first") or (lambda: None),
        lambda: ran.append("second") or (lambda: None),
    )
    times = time_rounds([component], key, rounds=5, warmup=1, device=CPU)
    assert ran == ["second", "first", "second", "first", "second", "first"]
    assert times[key].shape == (5,)
    ratios = np.array([1.0, 10.0, 1.2, 11.0, 0.8, 9.0, 1.0])
    assert context_medians(ratios, 2) == [1.0, 10.0]
    assert context_ratio(ratios, 2) == 1.0
    assert context_ratio(ratios, 1) == np.median(ratios) == 1.2


def test_priced_in_reprices_the_two_context_components_only(joint):
    """The table's own price is the warm context; ``cold`` and ``mean`` move the batch-1
    decisions' costs to that context's median ratio (times the reference's median time) and
    leave every other component's cost as it is."""
    table = joint[2]
    latency = table[table["batch_size"] == 1]
    own = Costs.from_table(latency).calls
    warm = priced_in(latency, "warm").calls
    assert warm.keys() == own.keys()
    assert all(warm[k][1] == pytest.approx(own[k][1], rel=1e-12) for k in own)
    cold, mean = priced_in(latency, "cold").calls, priced_in(latency, "mean").calls
    rows = latency.set_index("component")
    two = 0
    for key, sizes in own.items():
        row = rows.loc[component_name(key)]
        if row["contexts"] == 1:
            assert cold[key] == mean[key] == sizes
            continue
        two += 1
        reference_ms = row["cost_ms"] / row["ratio_median"]
        assert cold[key][1] == pytest.approx(row["ratio_cold"] * reference_ms, rel=1e-12)
        halfway = (row["ratio_warm"] + row["ratio_cold"]) / 2 * reference_ms
        assert mean[key][1] == pytest.approx(halfway, rel=1e-12)
        assert cold[key][1] != sizes[1]
    assert two == (latency["contexts"] == 2).sum() > 0
    with pytest.raises(ValueError, match="warm, cold or mean"):
        priced_in(latency, "hot")


def test_joint_table_holds_every_component_at_every_batch_size(joint):
    networks, schemes, table = joint
    assert list(table.columns) == TABLE_COLUMNS
    components = set().union(*(s.components() for s in schemes))
    assert any(k[0] == "decision" and k[2] > 0 for k in components)  # path features are read
    assert any(k[0] == "segment" and k[2] is not None for k in components)  # continuations
    rows = list(zip(table["component"], table["batch_size"], strict=True))
    assert len(rows) == len(set(rows)) == len(components) * len(BATCH_SIZES)
    assert set(rows) == {(component_name(k), b) for k in components for b in BATCH_SIZES}
    assert (table["rounds"] == ROUNDS).all()
    # a decision at batch 1 is timed in two contexts (warm and after its producer alone)
    two = (table["kind"] == "decision") & (table["batch_size"] == 1)
    assert (table["contexts"] == np.where(two, 2, 1)).all() and two.any()
    # ... its median ratio in each is kept, and the warm one prices it; NaN with one context
    warm, cold = table.loc[two, "ratio_warm"], table.loc[two, "ratio_cold"]
    assert (warm > 0).all() and (cold > 0).all()
    np.testing.assert_array_equal(table.loc[two, "ratio_median"], warm)
    assert table.loc[~two, ["ratio_warm", "ratio_cold"]].isna().all().all()
    assert (table["median_ms"] > 0).all()
    assert (table["q25_ms"] <= table["median_ms"]).all()
    assert (table["median_ms"] <= table["q75_ms"]).all()
    assert all(not model.training for model in networks.values())


def test_ratios_are_to_the_reference_at_the_settings_size_in_the_same_round(joint):
    _, _, table = joint
    reference = table[table["component"] == "exit_resnet:input->exit2 alone"]
    assert len(reference) == len(BATCH_SIZES)
    anchor = reference[reference["batch_size"] == max(BATCH_SIZES)].iloc[0]
    assert (anchor[["ratio_median", "ratio_q25", "ratio_q75"]] == 1.0).all()
    smaller = reference[reference["batch_size"] < max(BATCH_SIZES)]
    assert (smaller["ratio_median"] < 1.0).all()  # a smaller batch of the reference is cheaper
    ref_median = anchor["median_ms"]
    np.testing.assert_allclose(table["cost_ms"], table["ratio_median"] * ref_median, rtol=1e-12)
    np.testing.assert_allclose(
        table["per_example_ms"], table["cost_ms"] / table["batch_size"], rtol=1e-12
    )
    assert anchor["cost_ms"] == anchor["median_ms"]
    assert (table["ratio_q25"] <= table["ratio_median"]).all()
    assert (table["ratio_median"] <= table["ratio_q75"]).all()


def test_every_size_is_timed_in_the_same_rounds_against_the_reference_at_the_largest(
    monkeypatch,
):
    """On a machine that slows down pass after pass, a call of every size keeps its true ratio
    to the reference's full batch: the sizes share rounds and one denominator. (Timed size after
    size, each against the reference at its own size, the smaller sizes came from a faster
    machine than the full batch and their prices did not.)"""
    keys = [alone_key("exit_resnet", 2), segment_key("small_cnn", None, 0), ANSWER]
    base_ms = {keys[0]: 1.0, keys[1]: 0.3, keys[2]: 0.01}
    called = []

    def fake_components(_, __, inputs, ___, **____):
        batch = next(iter(inputs.values())).shape[0]
        return [ComponentInContext(k, lambda k=k: lambda: called.append((batch, k))) for k in keys]

    class DriftingTimer:
        passes = 0

        def __init__(self, device):
            self.pending = []

        def call(self, function):
            function()
            self.pending.append(called[-1])

        def finish_pass(self):
            DriftingTimer.passes += 1
            slower = 1 + 0.5 * DriftingTimer.passes
            times = [base_ms[k] * batch**0.8 * slower for batch, k in self.pending]
            self.pending = []
            return times

    monkeypatch.setattr(cost_timing, "components_in_context", fake_components)
    monkeypatch.setattr(cost_timing, "Timer", DriftingTimer)
    networks = tiny_networks()
    sizes = [1, 16, 64, 256]
    table = joint_table(networks, structures(networks, False), sizes, rounds=6, warmup=2)
    per_round = len(keys) * len(sizes)
    assert len(called) == 8 * per_round
    assert all({b for b, _ in called[r : r + per_round]} == set(sizes) for r in (0, per_round))
    anchor = table[(table["kind"] == "alone") & (table["batch_size"] == 256)]["cost_ms"].iloc[0]
    names = {component_name(k): k for k in keys}
    for row in table.itertuples(index=False):
        true_ratio = base_ms[names[row.component]] * row.batch_size**0.8 / 256**0.8
        assert row.cost_ms / anchor == pytest.approx(true_ratio, rel=1e-12)
        assert row.ratio_q25 == pytest.approx(true_ratio, rel=1e-12)


def test_costs_read_back_from_the_joint_table(joint, tmp_path):
    _, schemes, table = joint
    table.to_parquet(tmp_path / "throughput.parquet")
    costs = Costs.from_table(pd.read_parquet(tmp_path / "throughput.parquet"))
    assert costs.batch_size == max(BATCH_SIZES)
    for row in table.itertuples(index=False):
        (key,) = [k for k in costs.calls if component_name(k) == row.component]
        assert costs.calls[key][row.batch_size] == row.cost_ms
        assert key_columns(key) == {c: getattr(row, c) for c in key_columns(key)}
        if row.batch_size == costs.batch_size:
            assert costs.per_example(key) == pytest.approx(row.per_example_ms)
            assert costs.spread[key] == {"ratio_q25": row.ratio_q25, "ratio_q75": row.ratio_q75}
    assert set(costs.calls) == set().union(*(s.components() for s in schemes))
    for structure in schemes:  # every component of every scheme has a price at both sizes
        for key in structure.components():
            assert costs.per_example(key) > 0
            one, four = costs.calls[key][1], costs.calls[key][4]
            assert costs.call_ms(key, 2) == pytest.approx(one + (four - one) / 3)
    latency = Costs.from_table(table, batch_size=1)
    first = table[table["batch_size"] == 1].iloc[0]
    (key,) = [k for k in latency.calls if component_name(k) == first["component"]]
    assert latency.per_example(key) == first["cost_ms"]


def record_decisions(monkeypatch, ran: list[str]) -> None:
    """Append "decision" to ``ran`` whenever a node decision is computed (one example or many)."""
    one, many = NodeDecision.one, NodeDecision.many

    def recorded_one(self, logits, memo):
        ran.append("decision")
        return one(self, logits, memo)

    def recorded_many(self, logits, memo, rows):
        ran.append("decision")
        return many(self, logits, memo, rows)

    monkeypatch.setattr(NodeDecision, "one", recorded_one)
    monkeypatch.setattr(NodeDecision, "many", recorded_many)


def context_and_call(component, ran: list, index: int = 0) -> tuple[list, list]:
    """What ``ran`` recorded while the component's context of round ``index`` ran, then while
    its timed call ran (the caller holds inference mode)."""
    ran.clear()
    call = component.prepare(index)
    context = list(ran)
    ran.clear()
    call()
    return context, list(ran)


def test_each_component_is_timed_after_what_precedes_it_in_the_runtime(monkeypatch):
    """The context (``prepare``, untimed) runs what the runtime runs before the component: a
    route's first segment after the same segment and a decision (the previous example of a
    stream starting there), a jump after the network it comes from and a decision there, a
    continuation after its own network's earlier stages and a decision; a node alone (the
    reference among them) after itself with no decision (its runtime decides nothing). The timed
    call runs only the component's own network."""
    networks = tiny_networks()
    ran: list[str] = []
    for name, model in networks.items():
        model.eval()
        for stage in model.stages:
            stage.register_forward_hook(lambda *_, name=name: ran.append(name))
    record_decisions(monkeypatch, ran)
    inputs = {name: torch.randn(1, 1, 28, 28) for name in networks}
    reference = alone_key("exit_resnet", 2)
    keys = [
        segment_key("small_cnn", None, 0),
        jump_key("exit_resnet", 2, "small_cnn", 0),
        segment_key("exit_resnet", 0, 2),
        reference,
        alone_key("small_cnn", 0),
        segment_key("exit_resnet", None, 2),
    ]
    components = components_in_context(keys, networks, inputs, reference, topk=5, device=CPU)
    with torch.inference_mode():
        contexts = {c.key: tuple(map(set, context_and_call(c, ran))) for c in components}
    assert contexts[keys[0]] == ({"small_cnn", "decision"}, {"small_cnn"})
    assert contexts[keys[1]] == ({"small_cnn", "decision"}, {"exit_resnet"})
    assert contexts[keys[2]] == ({"exit_resnet", "decision"}, {"exit_resnet"})
    assert contexts[reference] == ({"exit_resnet"}, {"exit_resnet"})
    assert contexts[keys[4]] == ({"small_cnn"}, {"small_cnn"})
    assert contexts[keys[5]] == ({"exit_resnet", "decision"}, {"exit_resnet"})


def test_a_move_times_the_runtimes_gather_and_regroup_of_a_whole_batch(monkeypatch):
    """A move on a continuation gathers every row of the activation its exit left, right after
    the segment that left it; a move into another network gathers that network's input rows.
    Either way the timed call is the runtime's own gather, then a regroup of two parts."""
    networks = tiny_networks()
    ran: list[tuple] = []
    for model in networks.values():
        model.eval()
        model.stages[0].register_forward_hook(lambda *_: ran.append(("producer",)))
    gather, regroup = cost_timing.gather_rows, cost_timing.regroup
    monkeypatch.setattr(
        cost_timing,
        "gather_rows",
        lambda t, which: ran.append(("gather", tuple(t.shape))) or gather(t, which),
    )
    monkeypatch.setattr(
        cost_timing,
        "regroup",
        lambda parts: ran.append(("regroup", *(len(p) for p in parts))) or regroup(parts),
    )
    assert gather is runtime.gather_rows and regroup is runtime.regroup  # the runtime's own
    inputs = {name: torch.randn(6, 1, 28, 28) for name in networks}
    reference = alone_key("exit_resnet", 2)
    keys = [move_key("exit_resnet", 0), move_key("small_cnn", None)]
    components = components_in_context(
        [*keys, reference], networks, inputs, reference, topk=5, device=CPU
    )
    with torch.inference_mode():
        h, _ = build_segment(
            networks["exit_resnet"], segment_key("exit_resnet", None, 0), name="h"
        )(inputs["exit_resnet"])
        contexts = {c.key: context_and_call(c, ran) for c in components[:2]}
    assert contexts[keys[0]] == ([("producer",)], [("gather", tuple(h.shape)), ("regroup", 3, 3)])
    assert contexts[keys[1]] == ([], [("gather", (6, 1, 28, 28)), ("regroup", 3, 3)])


@pytest.mark.parametrize("batch", [1, 4])
def test_a_decision_at_batch_1_is_timed_in_turn_warm_and_after_its_producer_alone(
    monkeypatch, batch
):
    """At batch 1 the runtime runs a node's decision example after example, sometimes right
    after the same decision on the previous example (warm: after its producer, the same decision
    and the producer again), sometimes after other networks' work: the rounds alternate the two
    contexts, warm first. Rebatched, a full batch of other stages runs between two calls of a
    decision: it is timed after its producer alone in every round. Either way the timed call is
    the decision only."""
    networks = tiny_networks()
    ran: list[str] = []
    for model in networks.values():
        model.eval()
        model.stages[0].register_forward_hook(lambda *_: ran.append("producer"))
    record_decisions(monkeypatch, ran)
    inputs = {name: torch.randn(batch, 1, 28, 28) for name in networks}
    reference = alone_key("exit_resnet", 2)
    key = decision_key(2, 0, "small_cnn", 0)
    (component,) = [
        c
        for c in components_in_context(
            [key, reference], networks, inputs, reference, topk=5, device=CPU
        )
        if c.key == key
    ]
    with torch.inference_mode():
        timed = [context_and_call(component, ran, index) for index in range(4)]
    assert all(call == ["decision"] for _, call in timed)
    contexts = [context for context, _ in timed]
    warm, cold = ["producer", "decision", "producer"], ["producer"]
    assert contexts == ([warm, cold, warm, cold] if batch == 1 else [cold] * 4)
