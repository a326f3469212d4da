"""The adaptive runtime: fitted policies run for real give the simulated answers.

A small real study is built once: three networks of the default family trained briefly on
Fashion-MNIST, their predictions extracted on 600 evaluation images, costs that add up
(:meth:`Costs.additive`; a throughput setting timed at several batch sizes), the examples split
into policy_train / policy_validation / test, and the learned policies of the three schemes
fitted by the sweep. The runtime must then stop every test example where the simulation stops
it and give it the class the extraction recorded there, one example at a time and as a
rebatched stream, at batch sizes where examples wait in the queues across input batches; and
the rebatched stream must run every segment on full batches but for one flush call, the calls
the batched prediction counts.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO

from adaptive_inference import figures, runtime_measure
from adaptive_inference.costs import (
    ANSWER,
    TABLE_COLUMNS,
    Costs,
    alone_key,
    decision_key,
    key_columns,
    move_key,
)
from adaptive_inference.costs import segment_key as seg
from adaptive_inference.decision import STOP, DecisionRule, NodeRule
from adaptive_inference.extraction import extract
from adaptive_inference.graph import NetworkTable, Route, scheme_structure, starts_alone
from adaptive_inference.io import write_parquet
from adaptive_inference.layout import Layout
from adaptive_inference.networks import build_network
from adaptive_inference.runtime import AdaptiveRuntime, slice_inputs
from adaptive_inference.runtime_measure import (
    REFERENCE,
    STREAMS_PER_PASS,
    RuntimeSettings,
    Stopwatch,
    edge_counts,
    measure_scheme,
    predicted_batched_ms,
    predicted_moves_ms,
    predicted_ms,
    segment_counts,
)
from adaptive_inference.splits import make_splits
from adaptive_inference.study import Study, load_policies, load_study, read_study, save_policies
from adaptive_inference.sweep import run_sweep
from adaptive_inference.training import TrainConfig, train

NETWORKS = {
    "linear": {"arch": "linear"},
    "small_cnn": {"arch": "small_cnn", "options": {"widths": [4, 8]}},
    "exit_resnet": {
        "arch": "exit_resnet",
        "options": {"widths": [8, 8, 16], "blocks_per_stage": 1},
    },
}
# Per-example costs (ms) of each stage and head: the policies' routes depend on them, the
# runtime's answers must not.
STAGE_MS = {"linear": [0.01], "small_cnn": [0.1], "exit_resnet": [0.3, 0.2, 0.2]}
HEAD_MS = {"linear": [0.0], "small_cnn": [0.0], "exit_resnet": [0.02, 0.02, 0.02]}
SCHEMES = {
    "early_exit": {"graph": "early_exit", "networks": ["exit_resnet"]},
    "network_selection": {"graph": "network_selection", "networks": list(NETWORKS)},
    "combined": {"graph": "combined", "networks": list(NETWORKS)},
}
FRACTIONS = {"policy_train": 0.4, "policy_validation": 0.2, "test": 0.4}
THROUGHPUT_BATCH = 64
OPTIONS = dict(device="cpu", dtype=torch.float32, channels_last=False)
COMPUTE = {
    "dtype": "float32",
    "channels_last": False,
    "cudnn_benchmark": False,
    "cuda_graphs": True,
}
BATCHES = (7, 64)  # 240 test examples: both leave examples waiting across input batches


def config(path_features: bool = False) -> dict:
    """The parts of a study's config that reading a study back uses."""
    return {
        "networks": NETWORKS,
        "policies": {
            "setting": "latency",
            "reference": "exit_resnet",
            "topk": 5,
            "path_features": path_features,
            "schemes": SCHEMES,
        },
    }


def study_costs() -> dict[str, Costs]:
    """Latency costs at batch 1; throughput costs at the throughput batch, also timed at 1 and
    16 examples a call (a call on fewer examples costs more per example)."""
    latency = Costs.additive(STAGE_MS, HEAD_MS, decision_ms=0.02, answer_ms=0.001)
    scaled = {net: [ms * 0.2 for ms in stages] for net, stages in STAGE_MS.items()}
    throughput = Costs.additive(
        scaled,
        HEAD_MS,
        decision_ms=0.001,
        answer_ms=0.0001,
        move_ms=0.0005,
        batch_size=THROUGHPUT_BATCH,
    )
    for sizes in throughput.calls.values():
        per_example = sizes[THROUGHPUT_BATCH] / THROUGHPUT_BATCH
        sizes.update({1: per_example * 4, 16: per_example * 16 * 1.5})
    return {"latency": latency, "throughput": throughput}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a small, shared machine, a second one waits for the first far longer than
    these tiny networks compute."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def networks(small_train_set):
    """The three networks, trained for one pass over the training images (seeded)."""
    out = {}
    for name, entry in NETWORKS.items():
        torch.manual_seed(0)
        spec = {
            "arch": entry["arch"],
            "num_classes": 10,
            "in_channels": 1,
            "image_size": 28,
            **entry.get("options", {}),
        }
        model = build_network(**spec)
        recipe = TrainConfig(
            steps=32,
            batch_size=64,
            max_lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
            seed=0,
            channels_last=False,
        )
        train(model, small_train_set, recipe, progress=False)
        out[name] = (model.eval(), spec)
    return out


@pytest.fixture(scope="module")
def predictions(networks, small_eval_set):
    """Each network's extracted predictions table (as extraction writes it)."""
    return {
        name: extract(
            model, small_eval_set, batch_size=128, channels_last=False, progress=False
        ).table
        for name, (model, _) in networks.items()
    }


@pytest.fixture(scope="module")
def splits(small_eval_set):
    return make_splits(small_eval_set.tensors[1].numpy(), FRACTIONS, seed=0)


def fitted_study(scheme, predictions, splits, *, path_features: bool) -> Study:
    """Scheme ``scheme`` of the study with its learned curve fitted on policy_train (read off on
    policy_validation, measured on test)."""
    entry = SCHEMES[scheme]
    study = Study(
        name=scheme,
        kind=entry["graph"],
        networks=list(entry["networks"]),
        reference="exit_resnet",
        topk=5,
        path_features=path_features,
        tables={n: NetworkTable.read(predictions[n], 5) for n in entry["networks"]},
        costs=study_costs(),
        splits=splits,
    )
    result = run_sweep(
        study.graph("latency"),
        *(study.ids(s) for s in FRACTIONS),
        losses=["top1"],
        methods=["learned"],
        lambda_count=8,
        lambda_refine=0,
        threshold_count=10,
        bootstrap_samples=0,
        loss_levels=(0.5, 1.0, 2.0, 50.0),
        confidence=0.8,
    )
    study.policies, study.points = result.policies, result.points
    return study


@pytest.fixture(scope="module")
def studies(predictions, splits):
    return {s: fitted_study(s, predictions, splits, path_features=False) for s in SCHEMES}


@pytest.fixture(scope="module")
def path_studies(predictions, splits):
    return {
        s: fitted_study(s, predictions, splits, path_features=True)
        for s in ("early_exit", "combined")
    }


@pytest.fixture(scope="module")
def test_set(splits, small_eval_set):
    """The test examples' ids and images."""
    ids = splits.loc[splits["split"] == "test", "example_id"].to_numpy()
    return ids, small_eval_set.tensors[0][torch.tensor(ids)]


def models(networks) -> dict:
    return {name: model for name, (model, _) in networks.items()}


def deciding(policy) -> bool:
    """Whether the policy has a learned (non-constant) rule."""
    return any(r is not None and r.constant_action is None for r in policy.rules_)


def learned_policies(study):
    """The fitted policies whose routes use at least one learned (non-constant) rule."""
    return {pid: p for pid, p in study.policies.items() if deciding(p)}


def simulated(graph, policy, ids):
    rows = graph.rows(ids)
    stop = policy.route_rows(graph, rows).stop
    return stop, graph.predictions[stop, rows]


def batch1_answers(runtime, images):
    with torch.inference_mode():
        x = runtime.inputs(images)
        answers = [runtime.run_one(slice_inputs(x, i, i + 1)) for i in range(len(images))]
    return np.array([a for a, _ in answers]), np.array([c for _, c in answers])


class CountedSegment:
    """A segment that records the size of each call (and stands in for it in the engine)."""

    def __init__(self, segment, log):
        self.segment, self.log = segment, log
        self.from_input, self.network = segment.from_input, segment.network
        self.node, self.key, self.name = segment.node, segment.key, segment.name

    def __call__(self, h):
        self.log.append((self.key, self.node, h.shape[0]))
        return self.segment(h)


class RecordedDecision:
    """A node decision that records the stream rows of each call (and what it reads)."""

    def __init__(self, decision, log):
        self.decision, self.log = decision, log
        self.actions, self.constant = decision.actions, decision.constant
        self.computes, self.reads = decision.computes, decision.reads

    def one(self, logits, memo):
        return self.decision.one(logits, memo)

    def many(self, logits, memo, rows):
        self.log.append((self.decision.node, rows.clone()))
        return self.decision.many(logits, memo, rows)


def recorded_stream(runtime, images, batch_size):
    """Answers of a rebatched run, each segment call ``(key, node, size)`` and each node's
    rows per call."""
    calls, rows = [], []
    twin = runtime.wrapped(
        lambda s: CountedSegment(s, calls), lambda d, _: RecordedDecision(d, rows)
    )
    with torch.inference_mode():
        stop, classes = twin.run_stream(twin.inputs(images), batch_size)
    return stop.numpy(), classes.numpy(), calls, rows


def path_reads(runtime) -> set[int]:
    """The dominators whose kept features the runtime's learned rules read."""
    reads: set[int] = set()

    def look(decision, _):
        if decision.rule is not None:
            reads.update(decision.reads)
        return decision

    runtime.wrapped(lambda s: s, look)
    return reads


def check_rebatched_calls(calls, batch_size, expected_counts):
    """Every segment runs full batches and at most one smaller (flush) call, its last; the
    examples of each segment are those the prediction counts."""
    sizes = defaultdict(list)
    for key, node, size in calls:
        sizes[(key, node)].append(size)
    assert {k: sum(v) for k, v in sizes.items()} == expected_counts
    for segment, made in sizes.items():
        full, rest = divmod(sum(made), batch_size)
        assert made == [batch_size] * full + ([rest] if rest else []), (segment, made)


def spans_input_batches(rows, batch_size) -> bool:
    """Whether some call ran examples of several input batches together."""
    return any(len(torch.unique(r // batch_size)) > 1 for _, r in rows)


# -------------------------------------------------------------------------------------------
# Decisions
# -------------------------------------------------------------------------------------------


def test_decision_as_tensor_operations_equals_the_rule(studies, test_set):
    ids, _ = test_set
    seen_multi_step = False
    for study in studies.values():
        graph = study.graphs["latency"]
        rows = graph.rows(ids)
        for policy in learned_policies(study).values():
            for node, rule in enumerate(policy.rules_):
                if rule is None or rule.constant_action is not None:
                    continue
                seen_multi_step |= len(rule.actions) > 2
                features = graph.node_features(node, rows)
                torch_rule = DecisionRule(rule)
                x = torch.as_tensor(features, dtype=torch.float32)
                positions = torch_rule.decide(x).numpy()
                expected = rule.decide(x.double().numpy())
                np.testing.assert_array_equal(rule.actions[positions], expected)
                one = [torch_rule.decide_one(x[i].tolist()) for i in range(len(x))]
                np.testing.assert_array_equal(one, expected)
    assert seen_multi_step, "no fitted rule chooses among more than two actions"


def test_decision_rule_on_random_features_with_constant_steps():
    rng = np.random.default_rng(0)
    rule = NodeRule(
        node=0,
        actions=np.array([STOP, 1, 2, 3]),
        feature_names=[f"f{i}" for i in range(7)],
        mean=rng.normal(size=7),
        scale=rng.uniform(0.5, 2, 7),
        coef=rng.normal(size=(3, 7)),
        intercept=np.array([0.1, -1.0, 0.3]),
        learned=np.array([True, False, True]),
    )
    rule.coef[1] = 0.0
    features = rng.normal(size=(2000, 7)).astype(np.float32)
    positions = DecisionRule(rule).decide(torch.as_tensor(features)).numpy()
    expected = rule.decide(features.astype(np.float64))
    np.testing.assert_array_equal(rule.actions[positions], expected)
    assert set(expected) == {STOP, 2, 3}  # the constant step never takes its action


# -------------------------------------------------------------------------------------------
# Answers
# -------------------------------------------------------------------------------------------


def check_every_policy(study, networks, ids, images, batch_sizes):
    """Every policy of the study's learned curve: the simulated stop node and class for every
    example at batch 1 and rebatched at each of ``batch_sizes``, full batches but for one flush
    call per segment, the examples of each segment those the prediction counts. Returns the
    stop nodes seen, how many policies decide, whether some call mixed input batches, and the
    decisions' path-feature reads."""
    graph = study.graphs["latency"]
    rows = graph.rows(ids)
    stops, decide, mixed, reads = set(), 0, {b: False for b in batch_sizes}, set()
    for policy in study.policies.values():
        runtime = AdaptiveRuntime(graph, policy, models(networks), **OPTIONS)
        route = policy.route_rows(graph, rows)
        stop, classes = simulated(graph, policy, ids)
        stops |= set(stop.tolist())
        decide += deciding(policy)
        one_stop, one_class = batch1_answers(runtime, images)
        np.testing.assert_array_equal(one_stop, stop)
        np.testing.assert_array_equal(one_class, classes)
        counts = segment_counts(graph, route, policy.start_)
        entry = runtime.segments()[0][2].key  # the node alone where the simulation prices it so
        assert (entry[0] == "alone") is starts_alone(route, policy.start_)
        for batch_size in batch_sizes:
            got_stop, got_class, calls, called = recorded_stream(runtime, images, batch_size)
            np.testing.assert_array_equal(got_stop, stop, err_msg=f"batch {batch_size}")
            np.testing.assert_array_equal(got_class, classes, err_msg=f"batch {batch_size}")
            check_rebatched_calls(calls, batch_size, counts)
            mixed[batch_size] |= spans_input_batches(called, batch_size)
        reads |= path_reads(runtime)
    return stops, decide, mixed, reads


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_answers_equal_the_simulated_policy(scheme, studies, networks, test_set):
    """Every policy of the learned curve, one example at a time and rebatched at 1, 7 and 64
    examples a call (240 examples: partial queues wait across input batches)."""
    ids, images = test_set
    study = studies[scheme]
    stops, decide, mixed, _ = check_every_policy(study, networks, ids, images, (1, *BATCHES))
    assert decide >= 2, "fewer than two policies of the curve decide anything"
    assert len(stops) >= 2, "the policies stop every example at one node"
    assert mixed[7] and mixed[64], "no segment call regrouped examples of several input batches"
    assert not mixed[1]


def test_policies_with_path_features(path_studies, networks, test_set):
    """Policies that also read their dominators' features (kept, where a rule is constant, for
    the nodes after it): the memo holds them across the stream's regrouped calls."""
    ids, images = test_set
    reads = set()
    for study in path_studies.values():
        assert study.graphs["latency"].path_features
        _, decide, mixed, read = check_every_policy(study, networks, ids, images, BATCHES)
        assert decide >= 2 and mixed[7] and mixed[64]
        reads |= read
    assert reads, "no decision reads its dominators' path features"


def test_batched_answers_keep_the_input_order(studies, networks, test_set):
    ids, images = test_set
    study = studies["combined"]
    graph = study.graphs["latency"]
    policy = next(iter(learned_policies(study).values()))
    runtime = AdaptiveRuntime(graph, policy, models(networks), **OPTIONS)
    order = np.random.default_rng(1).permutation(len(ids))
    stop, classes = simulated(graph, policy, ids)
    for batch_size in (7, len(ids)):
        answers = runtime.classify(images[torch.as_tensor(order)], batch_size=batch_size)
        np.testing.assert_array_equal(answers.nodes, stop[order])
        np.testing.assert_array_equal(answers.classes, classes[order])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        runtime.classify(images, batch_size=0)


def test_each_stage_and_head_runs_at_most_once_per_example(studies, networks, test_set):
    """Going on inside a network continues from the last stage run: the stages run for an
    example are those up to its stop node's exit, once each, and only the heads of the nodes
    on its path run; one at a time and rebatched alike."""
    ids, images = test_set
    study = studies["early_exit"]
    graph = study.graphs["latency"]
    model = networks["exit_resnet"][0]
    seen = {"stages": 0, "heads": 0}

    def count(kind):
        return lambda _, args: seen.__setitem__(kind, seen[kind] + args[0].shape[0])

    hooks = [m.register_forward_pre_hook(count("stages")) for m in model.stages]
    hooks += [m.register_forward_pre_hook(count("heads")) for m in model.heads]
    try:
        for policy in learned_policies(study).values():
            route = policy.route_rows(graph, graph.rows(ids))
            exit_after = np.asarray(model.exit_after)
            runtime = AdaptiveRuntime(graph, policy, models(networks), **OPTIONS)
            for batch_size in (1, 7):
                seen.update(stages=0, heads=0)
                if batch_size == 1:
                    batch1_answers(runtime, images)
                else:
                    runtime.classify(images, batch_size=batch_size)
                assert seen["stages"] == (exit_after[route.stop] + 1).sum()
                assert seen["heads"] == route.visited.sum()
    finally:
        for hook in hooks:
            hook.remove()


def test_each_network_reads_its_own_inputs(studies, networks, test_set):
    """Networks that preprocess differently (pre-trained ones: their weights' transforms) get
    one input tensor each, and every segment from the input reads its own network's: here
    exit_resnet (global pooling) reads 32x32 images, the others 28x28 ones."""
    ids, images = test_set
    study = studies["combined"]
    graph = study.graphs["latency"]
    rows = graph.rows(ids)
    policy = next(  # a policy that runs every network on some examples
        p
        for p in learned_policies(study).values()
        if {graph.networks[n] for n in np.flatnonzero(p.route_rows(graph, rows).visited.any(0))}
        == set(NETWORKS)
    )
    runtime = AdaptiveRuntime(graph, policy, models(networks), **OPTIONS)
    given = {name: images.clone() for name in NETWORKS}
    stop, classes = simulated(graph, policy, ids)
    answers = runtime.classify(given, batch_size=50)
    np.testing.assert_array_equal(answers.nodes, stop)
    np.testing.assert_array_equal(answers.classes, classes)
    given["exit_resnet"] = torch.nn.functional.pad(images, (2, 2, 2, 2))
    sizes = {name: set() for name in NETWORKS}
    hooks = [
        networks[name][0]
        .stages[0]
        .register_forward_pre_hook(
            lambda _, args, name=name: sizes[name].add(tuple(args[0].shape[2:]))
        )
        for name in NETWORKS
    ]
    try:
        runtime.classify(given, batch_size=50)
        for i in range(20):
            runtime.classify_one({name: tensor[i] for name, tensor in given.items()})
    finally:
        for hook in hooks:
            hook.remove()
    assert sizes == {"linear": {(28, 28)}, "small_cnn": {(28, 28)}, "exit_resnet": {(32, 32)}}


def test_reference_alone_answers_with_the_reference(studies, networks, test_set):
    ids, images = test_set
    graph = studies["combined"].graphs["latency"]
    reference = AdaptiveRuntime.reference_alone(graph, models(networks), **OPTIONS)
    assert graph.names[graph.reference] == "exit_resnet/final"
    expected = graph.predictions[graph.reference, graph.rows(ids)]
    for batch_size in (1, 64):
        answers = reference.classify(images, batch_size=batch_size)
        assert (answers.nodes == graph.reference).all()
        np.testing.assert_array_equal(answers.classes, expected)
    assert batch1_answers(reference, images[:5])[0].tolist() == [graph.reference] * 5
    assert [s.key for _, _, s in reference.segments()][0] == alone_key("exit_resnet", 2)


def test_a_changed_rule_gives_other_answers(studies, networks, test_set):
    """The comparison can fail: a policy whose first learned rule is moved by a constant
    answers otherwise, and as its own simulation says."""
    ids, images = test_set
    study = studies["network_selection"]
    graph = study.graphs["latency"]
    policy, stop = next(
        (p, stop)
        for p in learned_policies(study).values()
        if p.rules_[p.start_] is not None
        and p.rules_[p.start_].learned[0]
        and 0 < ((stop := simulated(graph, p, ids)[0]) == p.start_).mean() < 1
    )
    changed = copy.deepcopy(policy)
    rule = changed.rules_[policy.start_]
    rule.intercept = rule.intercept + np.eye(len(rule.intercept))[0] * 2.0  # stop more
    answers = AdaptiveRuntime(graph, changed, models(networks), **OPTIONS).classify(images, 7)
    assert (answers.nodes != stop).sum() > 0
    np.testing.assert_array_equal(answers.nodes, simulated(graph, changed, ids)[0])


def test_a_policy_of_another_graph_is_refused(studies, networks):
    policy = next(iter(studies["early_exit"].policies.values()))
    with pytest.raises(ValueError, match="signatures differ"):
        AdaptiveRuntime(studies["combined"].graphs["latency"], policy, models(networks), **OPTIONS)


# -------------------------------------------------------------------------------------------
# Policies as data, a study read back
# -------------------------------------------------------------------------------------------


def test_policies_saved_as_json_give_the_same_answers(studies, networks, test_set, tmp_path):
    ids, images = test_set
    study = studies["combined"]
    graph = study.graphs["latency"]
    save_policies(study.policies, tmp_path / "policies.json")
    json.loads((tmp_path / "policies.json").read_text())  # plain JSON
    loaded = load_policies(tmp_path / "policies.json")
    assert sorted(loaded) == sorted(study.policies)
    for point_id, policy in learned_policies(study).items():
        again = loaded[point_id]
        assert again.to_dict() == json.loads(json.dumps(policy.to_dict()))
        fresh = AdaptiveRuntime(graph, again, models(networks), **OPTIONS)
        kept = AdaptiveRuntime(graph, policy, models(networks), **OPTIONS)
        for batch_size in (1, 7):
            a, b = fresh.classify(images, batch_size), kept.classify(images, batch_size)
            np.testing.assert_array_equal(a.nodes, b.nodes)
            np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_array_equal(
            batch1_answers(fresh, images[:30])[0], simulated(graph, policy, ids[:30])[0]
        )


def costs_table(costs: Costs) -> pd.DataFrame:
    """A joint timing table holding ``costs`` (every ratio 1: the table's own numbers)."""
    rows = []
    for key, sizes in costs.calls.items():
        for batch, ms in sizes.items():
            rows.append(
                {
                    **key_columns(key),
                    "batch_size": batch,
                    "rounds": 1,
                    "contexts": 1,
                    "median_ms": ms,
                    "q25_ms": ms,
                    "q75_ms": ms,
                    "ratio_median": 1.0,
                    "ratio_q25": 1.0,
                    "ratio_q75": 1.0,
                    "ratio_warm": np.nan,
                    "ratio_cold": np.nan,
                    "cost_ms": ms,
                    "per_example_ms": ms / batch,
                }
            )
    return pd.DataFrame(rows)[TABLE_COLUMNS]


def test_a_study_read_back_from_its_results(studies, predictions, splits, tmp_path, test_set):
    """What fit_policies writes under results/, read back through the layout, is the study that
    was fitted: the same graphs, points and policies (from JSON)."""
    ids, _ = test_set
    layout = Layout(str(tmp_path / "results"))
    write_parquet(splits, layout.splits)
    for name, table in predictions.items():
        write_parquet(table, layout.predictions(name))
    for setting, costs in study_costs().items():
        write_parquet(costs_table(costs), layout.costs(setting))
    for scheme, study in studies.items():
        write_parquet(study.points, layout.policies(scheme, "points.parquet"))
        save_policies(study.policies, layout.policies(scheme, "policies.json"))
    for scheme, study in studies.items():
        back = read_study(
            scheme, SCHEMES[scheme], config()["policies"], "exit_resnet", layout=layout
        )
        same = load_study(layout.root, config(), scheme)
        for read in (back, same):
            assert read.graphs["latency"].signature() == study.graphs["latency"].signature()
            assert read.graphs["throughput"].costs.batch_size == THROUGHPUT_BATCH
            pd.testing.assert_frame_equal(read.points, study.points)
            assert sorted(read.policies) == sorted(study.policies)
            graph = read.graphs["latency"]
            for point_id, policy in study.policies.items():
                np.testing.assert_array_equal(
                    read.policies[point_id].route(graph, ids).stop, policy.route(graph, ids).stop
                )
            np.testing.assert_array_equal(read.ids("test"), ids)


def test_no_pickle_is_read():
    """Policies and studies are data: loading a shared results/ folder runs no code from it."""
    for name in ("study.py", "runtime.py", "sweep.py", "policies.py", "runtime_measure.py"):
        source = (REPO / "src" / "adaptive_inference" / name).read_text()
        for word in ("pickle", "joblib", "torch.load", "dill"):
            assert word not in source, f"{name} mentions {word}"


# -------------------------------------------------------------------------------------------
# What the rebatched mode costs
# -------------------------------------------------------------------------------------------


def hand_costs() -> Costs:
    """One network ``n`` of three exits, every component timed at 1 and 4 examples a call."""
    calls = {
        seg("n", None, 0): {1: 1.0, 4: 2.5},
        seg("n", 0, 1): {1: 0.5, 4: 1.1},
        seg("n", 1, 2): {1: 0.8, 4: 2.0},
        decision_key(1, 0, "n", 0): {1: 0.1, 4: 0.4},
        decision_key(1, 0, "n", 1): {1: 0.2, 4: 0.5},
        move_key("n", 0): {1: 0.02, 4: 0.05},
        move_key("n", 1): {1: 0.04, 4: 0.1},
        ANSWER: {1: 0.03, 4: 0.06},
    }
    return Costs(batch_size=4, calls=calls)


def hand_route() -> Route:
    """Ten examples: all start at exit 0 and decide there; 6 go on to exit 1, where 3 stop and
    3 go on to exit 2 (its rule computed for them); 4 stop at exit 0."""
    visited = np.zeros((10, 3), dtype=bool)
    visited[:, 0] = True
    visited[4:, 1] = True
    visited[7:, 2] = True
    decided = visited.copy()
    decided[:, 2] = False  # terminal
    stop = np.array([0] * 4 + [1] * 3 + [2] * 3)
    return Route(
        rows=np.arange(10), stop=stop, visited=visited, decided=decided, paid_ms=np.zeros((10, 3))
    )


def test_predicted_batched_time_by_hand():
    """At 4 examples a call: exit 0's segment runs 10 examples (2 full calls and a flush of 2),
    exit 1's 6 (1 + a flush of 2), exit 2's 3 (a flush of 3); after each call the node's
    decision (exits 0 and 1; its features hold the class of the examples that stop there) or
    else the answer (exit 2) run on its examples, and the examples that go on are moved, an
    equal share after each of the node's calls (6 after exit 0's three calls, 3 after exit 1's
    two). A flush of k examples is priced between the timed 1 and 4 examples a call."""
    structure = scheme_structure("early_exit", {"n": ["e0", "e1", "final"]})
    route = hand_route()
    assert segment_counts(structure, route, 0) == {
        (seg("n", None, 0), 0): 10,
        (seg("n", 0, 1), 1): 6,
        (seg("n", 1, 2), 2): 3,
    }

    def between(at1, at4, k):  # linear between the timed sizes
        return at1 + (at4 - at1) * (k - 1) / 3

    exit0 = 2 * (2.5 + 0.4) + between(1.0, 2.5, 2) + between(0.1, 0.4, 2)
    exit1 = 1 * (1.1 + 0.5) + between(0.5, 1.1, 2) + between(0.2, 0.5, 2)
    exit2 = between(0.8, 2.0, 3) + between(0.03, 0.06, 3)
    moves = 3 * between(0.02, 0.05, 2) + 2 * between(0.04, 0.1, 1.5)
    assert edge_counts(structure, route) == {(0, 1): 6, (1, 2): 3}
    total = predicted_batched_ms(structure, route, 0, hand_costs(), 4)
    assert total == pytest.approx(exit0 + exit1 + exit2 + moves, rel=1e-12)
    assert total == pytest.approx(11.75 + 0.19, abs=1e-12)
    # at one example a call every call is full: the batch-1 costs times the examples, and each
    # example that goes on is moved on its own
    at_one = 10 * (1.0 + 0.1) + 6 * (0.5 + 0.2) + 3 * (0.8 + 0.03)
    at_one += 6 * 0.02 + 3 * 0.04
    assert predicted_batched_ms(structure, route, 0, hand_costs(), 1) == pytest.approx(at_one)
    # costs timed before moves were priced name what is missing and how to time it
    old = hand_costs()
    del old.calls[move_key("n", 0)]
    with pytest.raises(KeyError, match=r"no cost for move:n:exit0.*--forcerun time_costs"):
        predicted_batched_ms(structure, route, 0, old, 4)


def test_predicted_batched_time_counts_the_calls_the_runtime_makes(studies, networks, test_set):
    """Priced by segments alone, the prediction of every policy equals the sum of the costs
    (at their sizes) of the segment calls the rebatched runtime really made."""
    ids, images = test_set
    costs = study_costs()["throughput"]
    for key, sizes in costs.calls.items():
        if key[0] not in ("segment", "alone"):
            costs.calls[key] = dict.fromkeys(sizes, 0.0)
    for study in studies.values():
        graph = study.graphs["latency"]
        rows = graph.rows(ids)
        for policy in list(study.policies.values())[::2]:
            runtime = AdaptiveRuntime(graph, policy, models(networks), **OPTIONS)
            *_, calls, _ = recorded_stream(runtime, images, THROUGHPUT_BATCH)
            made = sum(costs.call_ms(key, size) for key, _, size in calls)
            route = policy.route_rows(graph, rows)
            predicted = predicted_batched_ms(graph, route, policy.start_, costs, THROUGHPUT_BATCH)
            assert predicted == pytest.approx(made, rel=1e-12)


# -------------------------------------------------------------------------------------------
# Instrumentation and the measurement
# -------------------------------------------------------------------------------------------


def test_instrumented_runtime_splits_the_time(studies, networks, test_set):
    ids, images = test_set
    study = studies["combined"]
    graph = study.graphs["latency"]
    policy = next(iter(learned_policies(study).values()))
    runtime = AdaptiveRuntime(graph, policy, models(networks), **OPTIONS)
    route = policy.route_rows(graph, graph.rows(ids))
    visits = route.visited.sum(axis=0)
    # one example at a time
    clock = Stopwatch(runtime.device)
    twin = runtime.wrapped(clock.segment, clock.decision)
    with torch.inference_mode():
        x = runtime.inputs(images)
        for i in range(len(images)):
            twin.run_one(slice_inputs(x, i, i + 1))
    calls = clock.calls()
    decisions, segments = calls[calls["kind"] == "decision"], calls[calls["kind"] == "segment"]
    assert len(decisions) == route.decided.sum() and len(segments) == route.visited.sum()
    assert (calls["examples"] == 1).all() and (calls["ns"] > 0).all()
    assert decisions["name"].value_counts().to_dict() == {
        graph.names[n]: visits[n] for n in np.flatnonzero(route.decided.any(axis=0))
    }
    # rebatched: every example of a node in one of its calls, calls of at most 16
    clock = Stopwatch(runtime.device)
    twin = runtime.wrapped(clock.segment, clock.decision)
    with torch.inference_mode():
        twin.run_stream(runtime.inputs(images), 16)
    calls = clock.calls()
    segments = calls[calls["kind"] == "segment"]
    assert segments["examples"].sum() == route.visited.sum() and segments["examples"].max() == 16
    decided = calls[calls["kind"] == "decision"].groupby("name")["examples"].sum().to_dict()
    assert decided == {graph.names[n]: visits[n] for n in np.flatnonzero(route.decided.any(axis=0))}


def test_batched_speedup_is_the_median_of_paired_passes(studies, networks, test_set, monkeypatch):
    """Rebatched, a point's speedup is the median over the passes of the reference's time over
    its own in the same pass, not the ratio of two medians taken at different moments: here the
    machine's speed swings from pass to pass and the paired ratios are 2, 2, 2, 3, 1, ..."""
    ids, images = test_set
    scale = [1.0, 5.0, 9.0, 2.0, 7.0, 3.0, 4.0, 6.0]  # ms per pass of every point
    paired = [2.0, 2.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0]  # the reference's over the point's
    real, passes = runtime_measure.stream_pass, []

    def scripted(systems, x, batch_size, order):
        times, answers = real(systems, x, batch_size, order)
        k = len(passes) % len(scale)
        passes.append(k)
        ms = {n: scale[k] * (paired[k] if n == REFERENCE else 1.0) for n in times}
        return {n: int(v * 1e6) for n, v in ms.items()}, answers

    monkeypatch.setattr(runtime_measure, "stream_pass", scripted)
    settings = RuntimeSettings(
        method="learned",
        metric="top1",
        loss_levels=(2.0,),
        confidence=0.8,
        max_examples=None,
        repeats=2,
        warmup=2,
        block_size=16,
        batch_size=THROUGHPUT_BATCH,
    )
    table = measure_scheme(
        studies["network_selection"],
        models(networks),
        images,
        ids,
        settings=settings,
        setting="latency",
        device="cpu",
        compute=COMPUTE,
        progress=False,
    ).speedups
    assert len(passes) == settings.repeats * STREAMS_PER_PASS == len(scale)
    batched = table[(table["mode"] == "batched") & (table["label"] != "reference")]
    assert len(batched) >= 1
    np.testing.assert_allclose(batched["measured_speedup"], np.median(paired))  # 2.0
    np.testing.assert_allclose(batched["measured_speedup_min"], 1.0)
    np.testing.assert_allclose(batched["measured_speedup_max"], 3.0)
    ratio_of_medians = np.median(np.multiply(scale, paired)) / np.median(scale)  # 10 / 4.5
    assert abs(ratio_of_medians - 2.0) > 0.2
    np.testing.assert_allclose(batched["ratio"], 2.0 / batched["predicted_speedup"])


def test_measurement_of_a_scheme(studies, networks, test_set):
    ids, images = test_set
    study = studies["network_selection"]
    settings = RuntimeSettings(
        method="learned",
        metric="top1",
        loss_levels=(0.5, 2.0, 50.0),
        confidence=0.8,
        max_examples=None,
        repeats=2,
        warmup=2,
        block_size=16,
        batch_size=THROUGHPUT_BATCH,
    )
    result = measure_scheme(
        study,
        models(networks),
        images,
        ids,
        settings=settings,
        setting="latency",
        device="cpu",
        compute=COMPUTE,
        progress=False,
    )
    table = result.speedups
    assert not [c for c in table.columns if "retimed" in c]
    assert set(table["mode"]) == {"batch1", "batched"}
    assert (table["different"] == 0).all() and (table["same_answer"] == len(ids)).all()
    reference = table[table["label"] == "reference"]
    np.testing.assert_allclose(reference[["predicted_speedup", "measured_speedup"]], 1.0)
    points = table[(table["mode"] == "batch1") & (table["label"] != "reference")]
    assert len(points) >= 1 and set(points["point_id"]) <= set(study.policies)
    # on the whole test split the batch-1 predictions are the sweep's own
    np.testing.assert_allclose(points["predicted_speedup"], points["sweep_speedup"], rtol=1e-9)
    graphs, costs = study.graphs, study.costs["throughput"]
    rows = graphs["throughput"].rows(ids)
    for row in table[table["mode"] == "batched"].itertuples():
        assert row.batch_size == THROUGHPUT_BATCH
        if row.label == "reference":
            continue
        policy = study.policies[int(row.point_id)]
        route = policy.route_rows(graphs["throughput"], rows)
        expected = predicted_batched_ms(
            graphs["throughput"], route, policy.start_, costs, THROUGHPUT_BATCH
        )
        assert row.predicted_ms == pytest.approx(expected / len(ids), rel=1e-12)
        moves = predicted_moves_ms(
            graphs["throughput"], route, policy.start_, costs, THROUGHPUT_BATCH
        )
        assert row.predicted_move_ms == pytest.approx(moves / len(ids), rel=1e-12)
        # a point moves examples on exactly where some go on from a node to another
        assert (row.predicted_move_ms > 0) == bool(edge_counts(graphs["throughput"], route))
        assert row.predicted_move_ms < row.predicted_ms
    resting = table[(table["mode"] == "batch1") | (table["label"] == "reference")]
    assert (resting["predicted_move_ms"] == 0).all()  # nothing moves at batch 1 or alone
    # the prediction of every row, again from the study (what bench_runtime sets beside a
    # re-timed one), and from costs twice as dear: twice the time, the same speedup
    dearer = replace(study, costs={s: c.scaled(2.0) for s, c in study.costs.items()})
    for row in table.itertuples():
        policy = None if row.label == "reference" else study.policies[int(row.point_id)]
        again = predicted_ms(study, policy, rows, row.mode, THROUGHPUT_BATCH)
        assert again == pytest.approx((row.predicted_ms, row.predicted_ref_ms), rel=1e-12)
        doubled = predicted_ms(dearer, policy, rows, row.mode, THROUGHPUT_BATCH)
        assert doubled == pytest.approx((2 * row.predicted_ms, 2 * row.predicted_ref_ms))
    assert (table["measured_ms"] > 0).all() and (table["runtime_compute_ms"] > 0).all()
    assert len(result.examples) == len(ids) * (len(points) + 1)
    for mode in ("batch1", "batched"):
        assert (result.examples[f"{mode}_stop"] == result.examples["simulated_stop"]).all()
        assert (result.examples[f"{mode}_class"] == result.examples["simulated_class"]).all()
    # every example is in a segment call of each mode; the reference runs one segment
    segments = result.segments[result.segments["kind"] == "segment"]
    entries = segments.groupby(["mode", "label"])["examples"].max()
    assert (entries == len(ids)).all()
    reference = segments[segments["label"] == "reference"]
    # the reference's segment is the network alone, priced as the joint job timed it alone
    assert set(reference["name"]) == {"exit_resnet alone"}
    latency = study.graphs["latency"]
    alone_ms = reference.set_index("mode")["predicted_ms"]["batch1"]
    assert alone_ms == pytest.approx(latency.single_ms[latency.reference], rel=1e-12)
    assert set(result.summary["point_ids"]) == set(points["point_id"].astype(int))
    assert result.summary["cuda_graphs"].startswith("not captured")  # on the CPU: eager
    # the runtime notebook's tables read this one
    parts = figures.runtime_time_parts(table)
    assert len(parts) == len(table) * 2 * len(figures.TIME_PARTS)


# -------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_config():
    from adaptive_inference.config import load_config

    return load_config(REPO / "config.yaml", REPO / "workflow" / "schemas" / "config.schema.yaml")


@pytest.mark.parametrize(
    "runtime, message",
    [
        ({"schemes": ["combined", "cascades"]}, r"runtime.schemes names \['cascades'\]"),
        ({"method": "myopic"}, r"runtime.method is 'myopic'"),
        ({"metric": "top5"}, r"runtime.metric is 'top5'"),
    ],
)
def test_runtime_config_names_fitted_policies(default_config, runtime, message):
    from adaptive_inference.config import ConfigError, check_config

    config = copy.deepcopy(default_config)
    config["policies"].update(methods=["learned", "uniform"], losses=["top1"])
    config["runtime"].update(runtime)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_runtime_settings_from_the_config(default_config):
    settings = RuntimeSettings.from_config(
        default_config["runtime"], throughput_batch=128, confidence=0.9
    )
    assert settings.batch_size == 128 and settings.confidence == 0.9  # batch_size null
    assert settings.loss_levels == tuple(default_config["runtime"]["loss_levels"])
    given = {**default_config["runtime"], "batch_size": 32}
    assert RuntimeSettings.from_config(given, throughput_batch=128, confidence=0.9).batch_size == 32


def test_runtime_schemes_default_to_every_scheme(default_config):
    from adaptive_inference.config import figure_notebooks, runtime_schemes

    config = copy.deepcopy(default_config)
    assert runtime_schemes(config) == list(config["policies"]["schemes"])
    assert figure_notebooks(config)[-1] == "7_runtime"
    config["runtime"]["schemes"] = []
    assert runtime_schemes(config) == [] and "7_runtime" not in figure_notebooks(config)
