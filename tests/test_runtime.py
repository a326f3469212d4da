"""The adaptive runtime: fitted policies run for real give the simulated answers.

A small real study is built once: three networks of the default family trained briefly on
Fashion-MNIST, their predictions extracted on 600 evaluation images, fixed exit costs, and the
learned policies of the three schemes fitted on half of the images. The runtime must then stop
every test example where the simulation stops it and give it the class the extraction recorded
there, at batch 1 and batched.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from adaptive_inference.extraction import extract
from adaptive_inference.graph import STOP
from adaptive_inference.io import write_json, write_parquet
from adaptive_inference.models import build_network
from adaptive_inference.runtime import (
    AdaptiveRuntime,
    DecisionRule,
    load_study,
    operating_points,
    read_study,
    slice_inputs,
)
from adaptive_inference.runtime_measure import Settings, measure_scheme
from adaptive_inference.splits import ids_of, make_splits
from adaptive_inference.sweep import run_sweep, save_policies
from adaptive_inference.training import TrainConfig, save_network, train

NETWORKS = {
    "linear": {"arch": "linear"},
    "small_cnn": {"arch": "small_cnn", "options": {"widths": [4, 8]}},
    "exit_resnet": {
        "arch": "exit_resnet", "options": {"widths": [8, 8, 16], "blocks_per_stage": 1}
    },
}
# Per-example costs (ms) of each stage and head: the policies' routes depend on them, the
# runtime's answers must not.
STAGE_MS = {"linear": [0.01], "small_cnn": [0.1], "exit_resnet": [0.3, 0.2, 0.2]}
SCHEMES = {
    "early_exit": {"graph": "early_exit", "networks": ["exit_resnet"]},
    "network_selection": {"graph": "network_selection", "networks": list(NETWORKS)},
    "combined": {"graph": "combined", "networks": list(NETWORKS)},
}
DECISION = {"latency": 0.02, "throughput": 0.001}


def config(path_features: bool = False) -> dict:
    """The parts of a study's config that the runtime reads."""
    return {
        "networks": NETWORKS,
        "policies": {
            "setting": "latency", "reference": "exit_resnet", "topk": 5,
            "path_features": path_features, "schemes": SCHEMES,
        },
    }


def exit_costs(network: str, model) -> pd.DataFrame:
    stage = np.cumsum(STAGE_MS[network])
    frames = []
    for setting, batch_size, scale in (("latency", 1, 1.0), ("throughput", 64, 0.2)):
        frames.append(pd.DataFrame({
            "exit": np.arange(model.num_exits),
            "exit_name": list(model.exit_names),
            "exit_after": list(model.exit_after),
            "stage_ms": stage[list(model.exit_after)] * scale * batch_size,
            "head_ms": 0.02 * scale * batch_size,
            "setting": setting,
            "batch_size": batch_size,
        }))
    return pd.concat(frames, ignore_index=True)


def write_study(root, networks, small_eval_set, *, path_features: bool) -> None:
    """Everything the workflow writes that the runtime reads, under ``root/results``."""
    results = root / "results"
    images, labels = small_eval_set.tensors
    splits = make_splits(labels.numpy(), {"policy_train": 0.5, "test": 0.5}, seed=0)
    write_parquet(splits, results / "splits" / "eval_splits.parquet")
    write_json(
        {"settings": {s: {"per_example_ms": ms} for s, ms in DECISION.items()}},
        results / "timing" / "policy_decision.json",
    )
    for name, (model, spec) in networks.items():
        save_network(model, spec, results / "networks" / name / "model.pt")
        table = extract(model, small_eval_set, batch_size=128, progress=False).table
        write_parquet(table, results / "predictions" / name / "predictions.parquet")
        write_parquet(exit_costs(name, model), results / "timing" / name / "exits.parquet")
    train_ids, test_ids = ids_of(splits, "policy_train"), ids_of(splits, "test")
    for scheme in SCHEMES:
        graph = load_study_graph(root, scheme, path_features)
        result = run_sweep(
            graph, train_ids, test_ids, losses=["top1"], methods=["learned"], lambda_count=8,
            lambda_refine=0, bootstrap_samples=0,
        )
        save_policies(result, results / "policies" / scheme / "policies.pkl")


def load_study_graph(root, scheme: str, path_features: bool):
    """The scheme's latency graph, before its policies are fitted."""
    results = root / "results"
    nets = SCHEMES[scheme]["networks"]
    study = read_study(
        scheme, SCHEMES[scheme], config(path_features)["policies"], "exit_resnet",
        predictions={n: results / "predictions" / n / "predictions.parquet" for n in nets},
        exits={n: results / "timing" / n / "exits.parquet" for n in nets},
        decision=results / "timing" / "policy_decision.json",
    )
    return study.graphs["latency"]


@pytest.fixture(scope="module")
def networks(small_train_set):
    """The three networks, trained for one epoch (seeded)."""
    out = {}
    for name, entry in NETWORKS.items():
        torch.manual_seed(0)
        spec = {"arch": entry["arch"], "num_classes": 10, "in_channels": 1, "image_size": 28,
                **entry.get("options", {})}
        model = build_network(**spec)
        train(model, small_train_set, TrainConfig(epochs=1, batch_size=64), progress=False)
        out[name] = (model.eval(), spec)
    return out


@pytest.fixture(scope="module")
def study_root(tmp_path_factory, networks, small_eval_set):
    root = tmp_path_factory.mktemp("runtime-study")
    write_study(root, networks, small_eval_set, path_features=False)
    return root


@pytest.fixture(scope="module")
def test_set(study_root, small_eval_set):
    """The test examples' ids and images."""
    ids = ids_of(pd.read_parquet(study_root / "results" / "splits" / "eval_splits.parquet"), "test")
    return ids, small_eval_set.tensors[0][torch.tensor(ids)]


def models(networks) -> dict:
    return {name: model for name, (model, _) in networks.items()}


def learned_policies(study):
    """The fitted policies whose routes use at least one learned (non-constant) rule."""
    return {
        pid: p for pid, p in study.policies.items()
        if any(r is not None and r.constant_action is None for r in p.rules_)
    }


def simulated(graph, policy, ids):
    rows = graph.rows(ids)
    stop = policy.route_rows(graph, rows).stop
    return stop, graph.predictions[stop, rows]


def batch1_answers(runtime, images):
    with torch.inference_mode():
        x = runtime.inputs(images)
        answers = [runtime.run_one(slice_inputs(x, i, i + 1)) for i in range(len(images))]
    return np.array([a for a, _ in answers]), np.array([c for _, c in answers])


# -------------------------------------------------------------------------------------------
# Decisions
# -------------------------------------------------------------------------------------------


def test_decision_as_tensor_operations_equals_the_rule(study_root, test_set):
    ids, _ = test_set
    seen_multi_step = False
    for scheme in SCHEMES:
        study = load_study(study_root / "results", config(), scheme)
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
                one = [torch_rule.decide_one(x[i:i + 1]) for i in range(len(x))]
                np.testing.assert_array_equal(one, expected)
    assert seen_multi_step, "no fitted rule chooses among more than two actions"


def test_decision_rule_on_random_features_with_constant_steps():
    from adaptive_inference.policies import NodeRule

    rng = np.random.default_rng(0)
    rule = NodeRule(
        node=0, actions=np.array([STOP, 1, 2, 3]), feature_names=[f"f{i}" for i in range(7)],
        mean=rng.normal(size=7), scale=rng.uniform(0.5, 2, 7), coef=rng.normal(size=(3, 7)),
        intercept=np.array([0.1, -1.0, 0.3]), learned=np.array([True, False, True]),
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


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_answers_equal_the_simulated_policy(scheme, study_root, networks, test_set):
    """Every learned policy of the sweep: same stop node and class for every test example, one
    at a time and in batches (of a size that leaves a partial last batch)."""
    ids, images = test_set
    study = load_study(study_root / "results", config(), scheme)
    graph = study.graphs["latency"]
    policies = learned_policies(study)
    assert len(policies) >= 2
    stops = set()
    for policy in policies.values():
        runtime = AdaptiveRuntime(graph, policy, models(networks))
        stop, classes = simulated(graph, policy, ids)
        stops |= set(stop.tolist())
        one_stop, one_class = batch1_answers(runtime, images)
        np.testing.assert_array_equal(one_stop, stop)
        np.testing.assert_array_equal(one_class, classes)
        batched = runtime.classify(images, batch_size=64)
        np.testing.assert_array_equal(batched.nodes, stop)
        np.testing.assert_array_equal(batched.classes, classes)
    assert len(stops) >= 2, "the policies stop every example at one node"


def test_batched_answers_keep_the_input_order(study_root, networks, test_set):
    ids, images = test_set
    study = load_study(study_root / "results", config(), "combined")
    graph = study.graphs["latency"]
    policy = next(iter(learned_policies(study).values()))
    runtime = AdaptiveRuntime(graph, policy, models(networks))
    order = np.random.default_rng(1).permutation(len(ids))
    answers = runtime.classify(images[torch.as_tensor(order)], batch_size=len(ids))
    stop, classes = simulated(graph, policy, ids)
    np.testing.assert_array_equal(answers.nodes, stop[order])
    np.testing.assert_array_equal(answers.classes, classes[order])


def test_each_stage_and_head_runs_at_most_once_per_example(study_root, networks, test_set):
    """Going on inside a network continues from the last stage run: the stages run for an
    example are those up to its stop node's exit, once each, and only the heads of the nodes
    on its path run."""
    ids, images = test_set
    study = load_study(study_root / "results", config(), "early_exit")
    graph = study.graphs["latency"]
    model = networks["exit_resnet"][0]
    calls = {"stages": 0, "heads": 0}

    def count(kind):
        return lambda *_: calls.__setitem__(kind, calls[kind] + 1)

    hooks = [m.register_forward_hook(count("stages")) for m in model.stages]
    hooks += [m.register_forward_hook(count("heads")) for m in model.heads]
    try:
        for policy in learned_policies(study).values():
            calls.update(stages=0, heads=0)
            batch1_answers(AdaptiveRuntime(graph, policy, models(networks)), images)
            route = policy.route_rows(graph, graph.rows(ids))
            exit_after = np.asarray(model.exit_after)
            assert calls["stages"] == (exit_after[route.stop] + 1).sum()
            assert calls["heads"] == route.visited.sum()
    finally:
        for hook in hooks:
            hook.remove()


def test_each_network_reads_its_own_inputs(study_root, networks, test_set):
    """Networks that preprocess differently (pre-trained ones: their weights' transforms) get
    one input tensor each, and every segment from the input reads its own network's: here
    exit_resnet (global pooling) reads 32x32 images, the others 28x28 ones."""
    ids, images = test_set
    study = load_study(study_root / "results", config(), "combined")
    graph = study.graphs["latency"]
    policy = next(iter(learned_policies(study).values()))
    runtime = AdaptiveRuntime(graph, policy, models(networks))
    given = {name: images.clone() for name in NETWORKS}
    stop, classes = simulated(graph, policy, ids)
    answers = runtime.classify(given, batch_size=50)
    np.testing.assert_array_equal(answers.nodes, stop)
    np.testing.assert_array_equal(answers.classes, classes)
    given["exit_resnet"] = torch.nn.functional.pad(images, (2, 2, 2, 2))
    sizes = {name: set() for name in NETWORKS}
    hooks = [
        networks[name][0].stages[0].register_forward_pre_hook(
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


def test_reference_alone_answers_with_the_reference(study_root, networks, test_set):
    ids, images = test_set
    graph = load_study(study_root / "results", config(), "combined").graphs["latency"]
    reference = AdaptiveRuntime.reference_alone(graph, models(networks))
    answers = reference.classify(images, batch_size=50)
    assert graph.names[graph.reference] == "exit_resnet/final"
    assert (answers.nodes == graph.reference).all()
    expected = graph.predictions[graph.reference, graph.rows(ids)]
    np.testing.assert_array_equal(answers.classes, expected)
    assert batch1_answers(reference, images[:5])[0].tolist() == [graph.reference] * 5


def test_a_changed_rule_gives_other_answers(study_root, networks, test_set):
    """The comparison can fail: the root's rule moved by a constant answers otherwise."""
    ids, images = test_set
    study = load_study(study_root / "results", config(), "network_selection")
    graph = study.graphs["latency"]
    policy = next(
        p for p in learned_policies(study).values() if p.rules_[0].constant_action is None
    )
    changed = copy.deepcopy(policy)
    changed.rules_[0].intercept = changed.rules_[0].intercept + 2.0
    stop, _ = simulated(graph, policy, ids)
    answers = AdaptiveRuntime(graph, changed, models(networks)).classify(images)
    assert (answers.nodes != stop).sum() > 0
    np.testing.assert_array_equal(answers.nodes, simulated(graph, changed, ids)[0])


def test_policies_with_path_features(tmp_path_factory, networks, small_eval_set):
    """Policies that also read their dominators' features (kept where a rule is constant)."""
    root = tmp_path_factory.mktemp("path-features")
    write_study(root, networks, small_eval_set, path_features=True)
    ids = ids_of(pd.read_parquet(root / "results" / "splits" / "eval_splits.parquet"), "test")
    images = small_eval_set.tensors[0][torch.tensor(ids)]
    read_dominators = False
    for scheme in ("early_exit", "combined"):
        study = load_study(root / "results", config(path_features=True), scheme)
        graph = study.graphs["latency"]
        for policy in learned_policies(study).values():
            runtime = AdaptiveRuntime(graph, policy, models(networks))
            read_dominators |= any(d.reads for d in runtime._decisions)
            stop, classes = simulated(graph, policy, ids)
            np.testing.assert_array_equal(batch1_answers(runtime, images)[0], stop)
            answers = runtime.classify(images, batch_size=40)
            np.testing.assert_array_equal(answers.nodes, stop)
            np.testing.assert_array_equal(answers.classes, classes)
    assert read_dominators


# -------------------------------------------------------------------------------------------
# As a library
# -------------------------------------------------------------------------------------------


def test_runtime_loads_a_fitted_study_from_its_results(study_root, test_set):
    ids, images = test_set
    results = study_root / "results"
    study = load_study(results, config(), "combined")
    chosen = operating_points(study.points, [1.0], metric="top1", method="learned")
    runtime = AdaptiveRuntime.from_results(results, config(), "combined", loss_level=1.0)
    assert runtime.policy.lam == study.policies[int(chosen["point_id"].iloc[0])].lam
    stop, classes = simulated(study.graphs["latency"], runtime.policy, ids)
    answers = [runtime.classify_one(image) for image in images[:20]]
    assert answers == list(zip(stop[:20], classes[:20]))


def test_a_policy_of_another_graph_is_refused(study_root, networks):
    early = load_study(study_root / "results", config(), "early_exit")
    combined = load_study(study_root / "results", config(), "combined")
    with pytest.raises(ValueError, match="signatures differ"):
        policy = next(iter(early.policies.values()))
        AdaptiveRuntime(combined.graphs["latency"], policy, models(networks))


def test_instrumented_runtime_splits_the_time(study_root, networks, test_set):
    ids, images = test_set
    study = load_study(study_root / "results", config(), "combined")
    graph = study.graphs["latency"]
    policy = next(iter(learned_policies(study).values()))
    runtime = AdaptiveRuntime(graph, policy, models(networks))
    twin, clock = runtime.instrumented()
    with torch.inference_mode():
        x = runtime.inputs(images)
        for i in range(len(images)):
            twin.run_one(slice_inputs(x, i, i + 1))
    route = policy.route_rows(graph, graph.rows(ids))
    calls = clock.calls()
    decisions, segments = calls[calls["kind"] == "decision"], calls[calls["kind"] == "segment"]
    assert len(decisions) == route.decided.sum() and len(segments) == route.visited.sum()
    assert (calls["examples"] == 1).all() and (calls["ns"] > 0).all()
    visits = route.visited.sum(axis=0)
    assert decisions["name"].value_counts().to_dict() == {
        graph.names[n]: visits[n] for n in np.flatnonzero(route.decided.any(axis=0))
    }


def test_measurement_of_a_scheme(study_root, networks, test_set):
    ids, images = test_set
    study = load_study(study_root / "results", config(), "network_selection")
    result = measure_scheme(
        study, models(networks), images, ids, loss_levels=[0.5, 2.0, 50.0], metric="top1",
        method="learned", setting="latency",
        settings=Settings(repeats=2, warmup=2, block_size=16, batch_size=64,
                          decision_timing={"warmup": 2, "iterations": 10}),
        timing={"threads": 1, "warmup": 1, "iterations": 5, "throughput_iterations": 1,
                "batch_sizes": {"latency": 1, "throughput": 64}},
        progress=False,
    )
    table = result.speedups
    assert set(table["mode"]) == {"batch1", "batched"}
    assert (table["different"] == 0).all() and (table["same_answer"] == len(ids)).all()
    reference = table[table["label"] == "reference"]
    np.testing.assert_allclose(reference[["predicted_speedup", "measured_speedup"]], 1.0)
    points = table[(table["mode"] == "batch1") & (table["label"] != "reference")]
    # on the whole test split the predicted speedups are the sweep's own
    np.testing.assert_allclose(points["predicted_speedup"], points["sweep_speedup"], rtol=1e-9)
    assert (table["measured_ms"] > 0).all() and (table["runtime_compute_ms"] > 0).all()
    assert (table["retimed_speedup"] > 0).all()
    assert set(result.summary["retimed"]["exits"]) == set(NETWORKS)
    assert len(result.examples) == len(ids) * (len(points) + 1)
    assert (result.examples["batch1_stop"] == result.examples["simulated_stop"]).all()
    # every example is in a segment call of each mode; the reference runs one segment
    segments = result.segments[result.segments["kind"] == "segment"]
    entries = segments.groupby(["mode", "label"])["examples"].max()
    assert (entries == len(ids)).all()
    reference = segments[segments["label"] == "reference"]
    assert set(reference["name"]) == {"exit_resnet"} and (reference["predicted_ms"] > 0).all()


# -------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_config():
    from adaptive_inference.config import load_config

    from conftest import REPO

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


def test_runtime_schemes_default_to_every_scheme(default_config):
    from adaptive_inference.config import figure_notebooks, runtime_schemes

    config = copy.deepcopy(default_config)
    assert runtime_schemes(config) == list(config["policies"]["schemes"])
    assert figure_notebooks(config)[-1] == "7_runtime"
    config["runtime"]["schemes"] = []
    assert runtime_schemes(config) == [] and "7_runtime" not in figure_notebooks(config)
