"""The one decision rule: features and linear steps, as NumPy and as tensors, and its cost."""

import dataclasses

import numpy as np
import pytest
import torch

from adaptive_inference import decision as dec
from adaptive_inference.cost_timing import measure_costs, random_decision
from adaptive_inference.costs import Costs, component_name
from adaptive_inference.decision import (
    STOP,
    DecisionRule,
    NodeDecision,
    NodeRule,
    PathMemo,
    confidence_features,
    decision_features,
    one_example_features,
    path_columns,
)
from adaptive_inference.graph import scheme_structure
from adaptive_inference.networks import build_network


def random_rule(steps: int, features: int, seed: int = 0) -> NodeRule:
    rng = np.random.default_rng(seed)
    return NodeRule(
        node=0,
        actions=np.arange(-1, steps),
        feature_names=[f"f{i}" for i in range(features)],
        mean=rng.random(features),
        scale=rng.random(features) + 0.5,
        coef=rng.standard_normal((steps, features)),
        intercept=rng.standard_normal(steps) * 0.3,
        learned=np.ones(steps, dtype=bool),
    )


def test_decision_features_match_the_extracted_ones():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    own, top_i, top_p = decision_features(logits, topk=5)
    extracted = confidence_features(logits.softmax(1), topk=5)
    torch.testing.assert_close(own[:, :5], extracted["top_p"])
    torch.testing.assert_close(own[:, 5], extracted["margin"])
    torch.testing.assert_close(own[:, 6], extracted["entropy"])
    assert torch.equal(top_i, extracted["top_i"]) and torch.equal(top_p, extracted["top_p"])


@pytest.mark.parametrize(
    "classes, topk, scale, dtype",
    [
        (10, 5, 1.0, torch.float32),
        (10, 5, 40.0, torch.float32),  # saturated: most probabilities underflow
        (3, 5, 1.0, torch.float32),  # fewer classes than top-k
        (1000, 5, 3.0, torch.float32),
        (10, 1, 1.0, torch.float32),  # the margin of one probability is that probability
        (10, 5, 2.0, torch.bfloat16),
        (64, 5, 3.0, torch.float32),  # the most classes read as a Python list
        (65, 5, 3.0, torch.float32),  # the fewest read as NumPy
        (1000, 1, 3.0, torch.float32),
    ],
)
def test_one_example_s_host_features_are_the_tensor_features(classes, topk, scale, dtype):
    """The batch-1 decision's features (host, float64) are the tables' and the batches'
    (tensors, float32) up to float32 rounding, and name the same top-k classes."""
    logits = (
        torch.randn(20, classes, generator=torch.Generator().manual_seed(classes)) * scale
    ).to(dtype)
    own, top_i, top_p = decision_features(logits, topk)
    for row in range(len(logits)):
        one_own, one_top_i, one_top_p = one_example_features(logits[row : row + 1], topk)
        np.testing.assert_allclose(one_own, own[row].double().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(one_top_p, top_p[row].double().numpy(), rtol=1e-5, atol=1e-7)
        assert len(one_own) == min(topk, classes) + 2
        if dtype == torch.float32 and scale < 10:  # no ties among the top-k (bfloat16 has)
            assert one_top_i == top_i[row].tolist()


@pytest.mark.parametrize("classes", [10, 1000])
def test_one_example_s_first_class_is_its_argmax_and_ties_go_to_the_lower_index(classes):
    """The top-1 a batch-1 decision answers with is the class the logits' argmax reads, which
    the reference and the extracted tables answer with; exact ties go to the lower index."""
    logits = torch.randn(30, classes, generator=torch.Generator().manual_seed(classes))
    logits[20:, 7] = logits[20:, 3] = logits[20:].max(1).values + 0.5  # a tie at the top
    for row in range(len(logits)):
        _, top_i, _ = one_example_features(logits[row : row + 1], 5)
        assert top_i[0] == int(logits[row].argmax())
        if row >= 20:
            assert top_i[:2] == [3, 7]


def test_a_batch_1_decision_with_path_features_takes_the_batch_s_actions():
    """The host path (one example, :meth:`PathMemo.columns_one`) and the tensor path (rows,
    :meth:`PathMemo.columns`) read the same path features and take the same actions."""
    gen = torch.Generator().manual_seed(5)
    earlier, here = torch.randn(200, 10, generator=gen), torch.randn(200, 10, generator=gen)
    earlier[:80] = here[:80] * 2  # many agreements
    keeper = NodeDecision(0, [STOP], rule=None, constant=STOP, topk=5, keep=True)
    rows = torch.arange(200)
    memo = PathMemo(200)
    keeper.many(earlier, memo, rows)
    own, top_i, _ = decision_features(here, 5)
    x = torch.cat([own, memo.columns(0, top_i[:, 0], rows)], dim=1).double().numpy()
    rule = dataclasses.replace(random_rule(2, 7 + 9, seed=4), mean=x.mean(0), scale=x.std(0) + 1e-3)
    decision = NodeDecision(
        1, rule.actions.tolist(), rule=DecisionRule(rule), constant=None, topk=5, reads=(0,)
    )
    positions, batch_top1 = decision.many(here, memo, rows)
    batch = np.asarray(decision.actions)[positions.numpy()]
    assert torch.equal(batch_top1, here.argmax(1))  # the class a stop answers with
    one = []
    for i in range(200):
        memo_one = PathMemo()
        assert keeper.one(earlier[i : i + 1], memo_one) == (STOP, None)  # no rule: no class
        top1 = int(here[i].argmax())
        np.testing.assert_allclose(
            memo_one.columns_one(0, top1),
            memo.columns(0, torch.tensor([top1]), rows[i : i + 1])[0].double().numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
        action, one_top1 = decision.one(here[i : i + 1], memo_one)
        assert one_top1 == top1
        one.append(action)
    assert one == batch.tolist()
    assert len(set(one)) > 1  # the rule really decides


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_tensor_rule_takes_the_numpy_rule_s_actions(steps):
    rule = random_rule(steps, 7, seed=steps)
    x = np.random.default_rng(9).random((500, 7))
    expected = rule.decide(x)
    tensor = DecisionRule(rule)
    positions = tensor.decide(torch.as_tensor(x))
    assert np.array_equal(np.asarray(tensor.actions)[positions.numpy()], expected)
    one = [tensor.decide_one(row.tolist()) for row in x[:100]]
    assert one == expected[:100].tolist()
    assert len(set(expected.tolist())) > 1  # the rule really decides


def test_a_rule_round_trips_through_its_data():
    rule = random_rule(3, 5)
    again = NodeRule.from_dict(rule.to_dict())
    x = np.random.default_rng(1).random((200, 5))
    assert np.array_equal(rule.decide(x), again.decide(x))
    assert again.to_dict() == rule.to_dict()


def test_a_constant_rule_computes_nothing():
    rule = NodeRule.constant(2, [STOP, 3, 4], 3, ["a", "b"], np.zeros(2), np.ones(2))
    assert rule.constant_action == 3
    assert (rule.decide(np.random.default_rng(0).random((10, 2))) == 3).all()
    decision = NodeDecision.of_rule(rule, 2, topk=5, keep=False, reads=(), device="cpu")
    assert decision.computes is False and decision.one(torch.randn(1, 10), None) == (3, None)
    assert decision.many(torch.randn(4, 10), None, torch.arange(4)) == (None, None)


def test_path_features_are_the_same_as_numpy_and_as_tensors():
    gen = torch.Generator().manual_seed(3)
    earlier, here = torch.randn(300, 10, generator=gen), torch.randn(300, 10, generator=gen)
    earlier[:100] = here[:100] * 3  # many agreements
    memo = PathMemo(300)
    rows = torch.arange(300)
    keeper = NodeDecision(0, [STOP], rule=None, constant=STOP, topk=5, keep=True)
    keeper.many(earlier, memo, rows)
    own_here, top_i_here, _ = decision_features(here, 5)
    tensor = memo.columns(0, top_i_here[:, 0], rows)
    own_e, top_i_e, top_p_e = decision_features(earlier, 5)
    expected = path_columns(top_i_here[:, 0].numpy(), top_i_e.numpy(), top_p_e.numpy())
    np.testing.assert_allclose(tensor[:, :7].numpy(), own_e.numpy())
    np.testing.assert_allclose(tensor[:, 7:].numpy(), expected, rtol=1e-6, atol=1e-7)
    assert 0 < expected[:, 0].mean() < 1 and (expected[:, 1] >= 0).all()


def test_the_decision_timed_is_the_one_the_runtime_runs(monkeypatch):
    """The joint timing job and the runtime both call NodeDecision: one implementation."""
    calls = []
    original = NodeDecision.one

    def recording(self, logits, memo):
        calls.append(type(self))
        return original(self, logits, memo)

    monkeypatch.setattr(dec.NodeDecision, "one", recording)
    decision = random_decision(2, 0, topk=5, device=torch.device("cpu"))
    assert isinstance(decision, NodeDecision) and isinstance(decision.rule, DecisionRule)
    network = build_network(
        "exit_resnet",
        num_classes=10,
        in_channels=1,
        image_size=28,
        widths=[4, 4, 4],
        blocks_per_stage=1,
    )
    structure = scheme_structure("early_exit", {"net": list(network.exit_names)})
    measure_costs(
        {"net": network},
        [structure],
        input_shapes={"net": (1, 28, 28)},
        reference="net",
        batch_sizes=[1],
        rounds=3,
        warmup=0,
        topk=5,
        device=torch.device("cpu"),
        dtype=torch.float32,
        channels_last=False,
        progress=False,
    )
    assert calls and all(kind is NodeDecision for kind in calls)


def test_every_decision_shape_is_timed_and_each_node_charged_its_own():
    """A node's decision is priced by the component of its own shape (its steps: actions but
    one), timed in the joint job; nodes with more actions read other components. (Whether more
    steps cost more is the machine's to say: the steps are one matrix product, and at batch 1
    the difference is within the timing's noise, so it is not asserted; test_costs checks that
    the timed decision evaluates every step.)"""
    network = build_network("linear", num_classes=10, in_channels=1, image_size=28)
    names = [f"n{i}" for i in range(17)]
    structure = scheme_structure("network_selection", {n: ["final"] for n in names})
    table = measure_costs(
        dict.fromkeys(names, network),
        [structure],
        input_shapes=dict.fromkeys(names, (1, 28, 28)),
        reference="n16",
        batch_sizes=[1],
        rounds=5,
        warmup=1,
        topk=5,
        device=torch.device("cpu"),
        dtype=torch.float32,
        channels_last=False,
        progress=False,
    )
    decisions = table[table["kind"] == "decision"]
    assert sorted(decisions["steps"]) == list(range(1, 17))
    costs = Costs.from_table(table)
    for node in range(structure.num_nodes - 1):  # the last node answers: no decision
        steps, _ = structure.decision_shape(node)
        assert steps == len(structure.successors[node]) == 16 - node
        row = decisions[decisions["component"] == component_name(structure.decision(node))]
        assert len(row) == 1 and int(row["steps"].iloc[0]) == steps
        assert costs.per_example(structure.decision(node)) == float(row["cost_ms"].iloc[0]) > 0
