"""Tests of the Caffe-style layer timing (adaptive_inference.timing); small iteration counts."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from adaptive_inference import device, models, timing
from adaptive_inference.family import ARCHITECTURES
from adaptive_inference.networks import build_network

CPU = torch.device("cpu")
FLOAT32 = dict(dtype=torch.float32, channels_last=False)
COMPUTE = {"dtype": "float32", "channels_last": False, "cudnn_benchmark": False}
FAST = dict(warmup=1, iterations=3, device=CPU)


def build(arch: str) -> models.MultiExitNetwork:
    torch.manual_seed(0)
    return build_network(arch, num_classes=10, in_channels=1, image_size=28)


def example(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(1))


class FunctionalStage(nn.Module):
    """A stage made of functional and method calls (no leaf modules), with in-place ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x), inplace=True)
        y = y + x
        return y.relu_()


class FunctionalHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


class RootOpNetwork(models.MultiExitNetwork):
    """A network with one operation in the root's own forward (belongs to no stage)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return super().forward(x * 2.0)


def functional_network(cls: type[models.MultiExitNetwork] = models.MultiExitNetwork):
    torch.manual_seed(0)
    stages = [FunctionalStage(), nn.Sequential(nn.MaxPool2d(2), nn.ReLU(inplace=True))]
    return cls(stages, [FunctionalHead(), FunctionalHead()], [0, 1], ["early", "final"])


def compute_nodes(model: nn.Module) -> list[str]:
    graph = fx.symbolic_trace(model).graph
    return [node.name for node in graph.nodes if node.op in timing.COMPUTE_OPS]


@pytest.fixture(scope="module")
def resnet_layers() -> pd.DataFrame:
    return timing.profile_layers(build("exit_resnet"), example(), **FAST)


@pytest.fixture(scope="module")
def resnet_profile() -> dict:
    return timing.profile_network(
        build("exit_resnet"),
        (1, 28, 28),
        batch_sizes={"latency": 1, "throughput": 4},
        warmup=1,
        iterations=3,
        device=CPU,
        threads=1,
        **FLOAT32,
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_compute_node_is_timed_and_assigned(arch):
    model = build(arch)
    layers = timing.profile_layers(model, example(), **FAST)
    assert list(layers["layer"]) == compute_nodes(model)
    assert list(layers["order"]) == list(range(len(layers)))
    expected = {f"stage_{k}" for k in range(len(model.stages))}
    expected |= {f"head_{k}" for k in range(len(model.heads))}
    assert set(layers["stage"]) == expected  # every stage and head, and no "other"


def test_layer_rows_describe_the_nodes(resnet_layers):
    first = resnet_layers.iloc[0]
    assert (first["target"], first["op"], first["kind"]) == ("stages.0.0", "call_module", "Conv2d")
    assert (resnet_layers[["median_ms", "q25_ms", "q75_ms", "mean_ms"]] > 0).all().all()
    assert (resnet_layers["q25_ms"] <= resnet_layers["median_ms"]).all()
    assert (resnet_layers["median_ms"] <= resnet_layers["q75_ms"]).all()
    assert np.allclose(resnet_layers["iqr_ms"], resnet_layers["q75_ms"] - resnet_layers["q25_ms"])


def test_functional_nodes_follow_their_module_stack():
    model = functional_network(RootOpNetwork)
    layers = timing.profile_layers(model, example(), **FAST).set_index("layer")
    assert list(layers.index) == compute_nodes(model)
    assert layers.loc["mul", "stage"] == timing.OTHER  # the root's own x * 2.0
    assert set(layers.loc[["relu", "add", "relu_"], "stage"]) == {"stage_0"}
    assert list(layers.loc[["mean", "mean_1"], "stage"]) == ["head_0", "head_1"]
    assert tuple(layers.loc["relu_", ["op", "kind"]]) == ("call_method", "relu_")
    assert tuple(layers.loc["relu", ["target", "kind"]]) == ("torch.nn.functional.relu", "relu")
    assert tuple(layers.loc["add", ["op", "target"]]) == ("call_function", "_operator.add")


def test_fallback_assignment_without_module_stack():
    graph = fx.symbolic_trace(functional_network()).graph
    for node in graph.nodes:
        node.meta.pop("nn_module_stack", None)
    components = timing.assign_components(graph)
    assert components["relu"] == components["add"] == components["relu_"] == "stage_0"
    assert components["mean"] == "stage_0"  # inherits from its input: documented limitation
    assert components["heads_0_linear"] == "head_0"


@pytest.mark.parametrize("arch", ["small_cnn", "exit_resnet"])
def test_in_place_model_matches_plain_forward(arch):
    """The timing interpreter computes what ``model(x)`` computes, in-place operations and all
    (a pass of the interpreter is the forward it times)."""
    model = functional_network() if arch == "small_cnn" else build(arch)
    x = example()
    timing.profile_layers(model, x, **FAST)  # profiles without error
    with torch.inference_mode():
        got = timing.LayerTimer(timing.trace(model.eval()), CPU).run_pass(x, record=False)
        want = model(x)
    assert len(got) == len(want) == model.num_exits
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


def test_interpreter_disagreement_is_an_error(monkeypatch):
    monkeypatch.setattr(timing.LayerTimer, "run_pass", lambda self, *a, record: (torch.zeros(1),))
    with pytest.raises(RuntimeError, match="disagrees"):
        timing.profile_layers(build("linear"), example(), **FAST)


def test_raw_samples_count_equals_iterations():
    counts = dict(warmup=2, iterations=5, device=CPU)
    layers = timing.profile_layers(build("small_cnn"), example(), **counts)
    assert all(len(samples) == 5 for samples in layers["samples_ms"])
    for samples, median in zip(layers["samples_ms"], layers["median_ms"], strict=True):
        assert median == pytest.approx(float(np.median(samples)))
    forward = timing.time_forward(build("small_cnn"), example(), **counts)
    assert forward.shape == (5,) and (forward > 0).all()


def test_stage_costs_sum_to_layer_sum(resnet_layers):
    model = build("exit_resnet")
    components = timing.stage_costs(resnet_layers, model)
    names = ["stage_0", "stage_1", "stage_2", "head_0", "head_1", "head_2"]
    assert list(components["component"]) == names
    assert list(components["exit_name"]) == ["", "", "", *model.exit_names]
    assert components["median_ms"].sum() == pytest.approx(resnet_layers["median_ms"].sum())
    assert components["num_layers"].sum() == len(resnet_layers)
    stage_1 = resnet_layers.loc[resnet_layers["stage"] == "stage_1", "samples_ms"].to_list()
    per_iteration = np.sum(np.stack(stage_1), axis=0)
    assert per_iteration.shape == (FAST["iterations"],)
    row = components.set_index("component").loc["stage_1"]
    assert row["median_sum_ms"] == pytest.approx(np.median(per_iteration))
    q25, q75 = np.percentile(per_iteration, [25, 75])
    assert row["iqr_sum_ms"] == pytest.approx(q75 - q25)


def test_exit_costs_are_cumulative_and_increasing(resnet_layers):
    model = build("exit_resnet")
    components = timing.stage_costs(resnet_layers, model).set_index("component")
    exits = timing.exit_costs(components.reset_index(), model)
    assert list(exits["exit_name"]) == list(model.exit_names)
    assert np.all(np.diff(exits["stage_ms"]) > 0)
    assert np.all(np.diff(exits["cumulative_ms"]) > 0)
    assert np.allclose(exits["cumulative_ms"], exits["stage_ms"] + exits["head_ms"])
    second = components.loc[["stage_0", "stage_1", "head_1"], "median_ms"].sum()
    assert exits.loc[1, "cumulative_ms"] == pytest.approx(second)


def test_network_cost_excludes_intermediate_heads(resnet_layers):
    model = build("exit_resnet")
    components = timing.stage_costs(resnet_layers, model)
    stages = components.loc[components["kind"] == "stage", "median_ms"].sum()
    final_head = components.loc[components["component"] == "head_2", "median_ms"].item()
    network = timing.network_cost_ms(components, model)
    assert network == pytest.approx(stages + final_head)
    assert network < components["median_ms"].sum()


def test_profile_network_summary(resnet_profile):
    summary = resnet_profile["summary"]
    assert list(summary["batch_size"]) == [1, 4]
    assert list(summary["setting"]) == ["latency", "throughput"]
    for column in ("ratio", "ratio_total", "ratio_mean", "component_ratio"):
        assert all(math.isfinite(v) and v > 0 for v in summary[column])
    assert (summary["iterations"] == 3).all()
    for name in ("layers", "components", "exits"):
        frame = resnet_profile[name]
        assert set(frame["batch_size"]) == {1, 4}
        assert set(frame["setting"]) == {"latency", "throughput"}
    sums = resnet_profile["layers"].groupby("batch_size")["median_ms"].sum()
    assert np.allclose(summary.set_index("batch_size")["layer_sum_ms"], sums)
    final = resnet_profile["exits"].groupby("batch_size")["cumulative_ms"].last()
    assert np.allclose(summary.set_index("batch_size")["network_ms"], final)
    per_image = summary["network_ms"] / summary["batch_size"]
    assert np.allclose(summary["network_per_image_ms"], per_image)


def test_components_are_timed_as_whole_calls(resnet_profile):
    components = resnet_profile["components"]
    assert (components["measured_ms"] > 0).all() and (components["measured_iqr_ms"] >= 0).all()
    assert (components["cost_ms"] == components["measured_ms"]).all()
    exits = resnet_profile["exits"]
    assert (exits["layer_cumulative_ms"] > 0).all()
    latency = components[components["setting"] == "latency"].set_index("component")["cost_ms"]
    first_exit = exits[(exits["setting"] == "latency") & (exits["exit"] == 0)].iloc[0]
    assert first_exit["cumulative_ms"] == pytest.approx(latency["stage_0"] + latency["head_0"])


def test_study_config_sets_iterations_per_setting():
    timing_cfg = {
        "threads": 1,
        "warmup": 0,
        "iterations": 3,
        "throughput_iterations": 2,
        "throughput_warmup": 0,
        "batch_sizes": {"latency": 1, "throughput": 4},
    }
    result = timing.profile_study_network(
        build("small_cnn"), (1, 28, 28), timing_cfg, device=CPU, compute=COMPUTE
    )
    assert list(result["summary"]["iterations"]) == [3, 2]
    assert result["environment"]["batch_sizes"] == {"latency": 1, "throughput": 4}
    assert set(result["layers"]["setting"]) == {"latency", "throughput"}


def test_environment_is_reproducible(resnet_profile):
    env = resnet_profile["environment"]
    assert env["threads"] == torch.get_num_threads() == 1
    assert env["cuda_version"] is None and env["cudnn_version"] is None
    assert env["dtype"] == "float32" and env["batch_sizes"] == {"latency": 1, "throughput": 4}
    assert env["torch_version"] == torch.__version__ and env["device_name"]
    assert env["channels_last"] is False
    again = device.environment(
        CPU,
        dtype=torch.float32,
        batch_sizes=env["batch_sizes"],
        malloc_pinned=env["malloc_pinned"],
        channels_last=False,
    )
    assert again == env


def test_timer_times_each_call_of_a_pass():
    timer = timing.Timer(CPU)
    assert timer.call(lambda a, b=0: a + b, 2, b=3) == 5
    timer.call(time.sleep, 0.002)
    first = timer.finish_pass()
    assert len(first) == 2 and first[1] >= 2.0 and 0 <= first[0] < first[1]
    assert timer.finish_pass() == []  # a pass holds only its own calls
    timer.call(abs, -1)
    assert len(timer.finish_pass()) == 1


def test_profile_network_runs_and_records_the_compute_options():
    """The network is timed as the study runs it: moved to the dtype and memory format asked
    for, and both recorded."""
    model = build("small_cnn")
    result = timing.profile_network(
        model,
        (1, 28, 28),
        batch_sizes={"latency": 2},
        warmup=0,
        iterations=2,
        device=CPU,
        threads=1,
        dtype=torch.bfloat16,
        channels_last=True,
    )
    env = result["environment"]
    assert env["dtype"] == "bfloat16" and env["channels_last"] is True
    assert next(model.parameters()).dtype == torch.bfloat16
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert (result["layers"]["median_ms"] > 0).all() and len(result["summary"]) == 1


def test_results_round_trip_through_parquet(resnet_profile, tmp_path):
    for name in ("layers", "components", "exits", "summary"):
        path = tmp_path / f"{name}.parquet"
        resnet_profile[name].to_parquet(path)
        back = pd.read_parquet(path)
        if name == "layers":
            samples = [list(row) for row in back.pop("samples_ms")]
            assert samples == resnet_profile[name]["samples_ms"].to_list()
            pd.testing.assert_frame_equal(back, resnet_profile[name].drop(columns="samples_ms"))
        else:
            pd.testing.assert_frame_equal(back, resnet_profile[name])


def test_pin_malloc_thresholds_reports_a_bool():
    applied = device.pin_malloc_thresholds()
    assert isinstance(applied, bool)
    if device.sys.platform.startswith("linux") and device.ctypes.util.find_library("c"):
        assert applied


@pytest.mark.parametrize("bad", [dict(iterations=0), dict(warmup=-1)])
def test_bad_counts_are_rejected(bad):
    with pytest.raises(ValueError):
        timing.profile_layers(build("linear"), example(), **{**FAST, **bad})


def test_untraceable_model_is_a_clear_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(TypeError, match="cannot be FX-traced"):
        timing.profile_layers(Branchy(), example(), **FAST)
