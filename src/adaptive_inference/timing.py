"""Caffe-style per-layer timing of multi-exit networks, and the stage / exit costs derived from it.

The costs of the study's stages come from profiling in the manner of ``caffe time``: the model in
eval mode, a few warm-up passes, then ``iterations`` passes of the *whole* forward, timing every
layer in sequence within each pass. Here a network is FX-traced (:func:`torch.fx.symbolic_trace`)
and run by a :class:`torch.fx.Interpreter` that wraps a timer around the call of every compute node
(``call_module``, ``call_function``, ``call_method``); the arguments are fetched before the timer
starts, so only the layer itself is timed. On CPU the timer is :func:`time.perf_counter_ns`; on
CUDA, a pair of ``torch.cuda.Event(enable_timing=True)`` around each call, read after a
synchronisation at the end of every pass. All times are in milliseconds.

Every timed node is assigned to the backbone stage (``stage_k``) or exit head (``head_k``) of the
:class:`~adaptive_inference.models.MultiExitNetwork` it sits in, from its module qualified name:
the target of a ``call_module`` node, and the ``nn_module_stack`` that ``symbolic_trace`` records
in ``node.meta`` for functional nodes (checked with torch 2.14). Where no node of the graph has that
record (a torch version that does not keep it), a functional node takes the component of its
latest input node. Nodes outside every stage and head (the root's own code) are ``other``.

To check that the sum of the layer times describes the network, :func:`time_forward` times plain
``model(x)`` passes with the same timers, and :func:`profile_network` interleaves the two kinds of
measurement (so that drift of the machine hits both alike) and reports their ratio. What was seen
(torch 2.14, 1 thread, exit_resnet): on CPU the sum of the layer medians is 0.89-0.95 of the
forward median at batch 1 and 0.97-1.03 at batch 256. The gap at batch 1 has three parts: the
plain forward also runs the Python of the root and of every ``nn.Sequential`` (~1.5%, not a
layer), its leaf calls run ~3% slower than in a flat loop, and medians do not add up (right-skewed
per-layer times: the median of the per-pass totals, ``ratio_total``, is 3-5% above the sum of the
medians). On CUDA, a launch-bound network (these models at batch <= 256) is timed as host dispatch
plus the event records (ratio ~1.5); once the GPU is the bottleneck (batch 4096) the ratio is ~1.01.

Public API: :func:`profile_layers`, :func:`time_forward`, :func:`stage_costs`,
:func:`exit_costs`, :func:`network_cost_ms`, :func:`profile_network`,
:func:`profile_study_network` and the :class:`LayerTimer` interpreter.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import fx, nn
from torch.fx.node import _get_qualified_name
from tqdm.auto import tqdm

from adaptive_inference.device import (
    apply_compute,
    compute_options,
    environment,
    memory_format,
    pin_malloc_thresholds,
)
from adaptive_inference.models import MultiExitNetwork

COMPUTE_OPS = ("call_module", "call_function", "call_method")
OTHER = "other"
# Number of forward / layer-profiling chunks that profile_network alternates per batch size.
INTERLEAVE_CHUNKS = 4

_COMPONENT_PATTERN = re.compile(r"^(stages|heads)\.(\d+)(?:\.|$)")
_COMPONENT_PREFIX = {"stages": "stage", "heads": "head"}


# --------------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------------


class Timer:
    """Times calls on one device; ``finish_pass`` returns the pass's times in milliseconds.

    On CUDA the event pairs are kept and reused from pass to pass (every pass ends with a
    synchronisation, so they are free again): ``torch.cuda.Event`` creates its CUDA event on the
    first ``record``, and creating the end event inside the timed region would be counted.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._pending: list[Any] = []
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def _next_events(self) -> tuple[torch.cuda.Event, torch.cuda.Event]:
        if len(self._pending) == len(self._events):
            pair = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for event in pair:
                event.record()  # materialise the CUDA event outside any timed region
            self._events.append(pair)
        return self._events[len(self._pending)]

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function(*args, **kwargs)``, recording the time of the call alone."""
        if self.cuda:
            start, end = self._next_events()
            start.record()
            result = function(*args, **kwargs)
            end.record()
            self._pending.append((start, end))
        else:
            start_ns = time.perf_counter_ns()
            result = function(*args, **kwargs)
            end_ns = time.perf_counter_ns()
            self._pending.append((start_ns, end_ns))
        return result

    def finish_pass(self) -> list[float]:
        """Wait for the device and return the times (ms) recorded since the last pass."""
        if self.cuda:
            torch.cuda.synchronize()
            times = [start.elapsed_time(end) for start, end in self._pending]
        else:
            times = [(end - start) / 1e6 for start, end in self._pending]
        self._pending = []
        return times


# --------------------------------------------------------------------------------------------
# Layer profiling
# --------------------------------------------------------------------------------------------


class LayerTimer(fx.Interpreter):
    """An FX interpreter that times the call of every compute node of the graph.

    ``run_pass`` evaluates the graph once and returns its output, like the traced module would;
    when ``record`` is set, the time of each compute node's call is appended to
    ``samples[node.name]``.
    Leaf modules are resolved once at construction, so a timed ``call_module`` is just the
    module's ``__call__`` (as in a plain forward).
    """

    def __init__(self, module: fx.GraphModule, device: torch.device) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.nodes = [node for node in module.graph.nodes if node.op in COMPUTE_OPS]
        self.samples: dict[str, list[float]] = {node.name: [] for node in self.nodes}
        self._timer = Timer(device)
        self._callables = {node.name: self._node_callable(node) for node in self.nodes}

    def _node_callable(self, node: fx.Node) -> Callable[..., Any]:
        if node.op == "call_module":
            return self.fetch_attr(node.target)
        if node.op == "call_function":
            return node.target
        return lambda receiver, *args, **kwargs: getattr(receiver, node.target)(*args, **kwargs)

    def run(self, *args: Any) -> Any:
        """Evaluate the graph once on ``args``; a lean version of :meth:`fx.Interpreter.run`.

        The base ``run`` builds a tqdm bar per pass and enters a ``set_current_meta`` context
        (plus a debug-log call) around every node. None of that is inside the timed region, but
        it measurably slows the *next* layer call: on the reference 2-core VM the flatten and
        linear of ``linear`` at batch 1 took 7 us and 13 us under it against 2 us and 5.5 us in
        a plain loop (the 33 layers of ``exit_resnet`` at batch 1 gained ~60 us in all). This
        loop keeps the node order, the placeholder / output handling and the freeing of values
        after their last use, and nothing else.
        """
        self.env = {}
        self.args_iter = iter(self.graph.process_inputs(*args))
        for node in self.graph.nodes:
            self.env[node] = self.run_node(node)
            for dead in self.user_to_last_uses.get(node, ()):
                del self.env[dead]
            if node.op == "output":
                return self.graph.process_outputs(self.env.pop(node))
        raise RuntimeError("the traced graph has no output node")

    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op not in COMPUTE_OPS:
            return getattr(self, n.op)(n.target, args, kwargs)
        return self._timer.call(self._callables[n.name], *args, **kwargs)

    def run_pass(self, *inputs: Any, record: bool) -> Any:
        """Run the graph once, keeping the node times if ``record`` is set; return its output."""
        output = self.run(*inputs)
        times = self._timer.finish_pass()
        if record:
            for node, elapsed in zip(self.nodes, times, strict=True):
                self.samples[node.name].append(elapsed)
        return output

    def passes(self, count: int, *inputs: Any, record: bool) -> None:
        """Run the graph ``count`` times (see :meth:`run_pass`)."""
        for _ in range(count):
            self.run_pass(*inputs, record=record)


def trace(model: nn.Module) -> fx.GraphModule:
    """FX-trace ``model`` with :func:`torch.fx.symbolic_trace`, with a clear error if it fails."""
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - re-raised with context
        raise TypeError(
            f"{type(model).__name__} cannot be FX-traced for per-layer timing: {error}"
        ) from error


def _component_of_name(qualified_name: str) -> str | None:
    match = _COMPONENT_PATTERN.match(qualified_name)
    if match is None:
        return None
    return f"{_COMPONENT_PREFIX[match.group(1)]}_{match.group(2)}"


def _component_from_module_stack(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    for value in stack.values():
        qualified_name = value[0] if isinstance(value, tuple) else str(value)
        component = _component_of_name(qualified_name)
        if component is not None:
            return component
    return None


def assign_components(graph: fx.Graph) -> dict[str, str]:
    """Map every compute node's name to ``stage_k``, ``head_k`` or ``other``.

    ``call_module`` nodes use their target; functional nodes use ``node.meta["nn_module_stack"]``.
    ``symbolic_trace`` (torch 2.x) records that stack for every node created inside a submodule
    and omits it for nodes of the root's own ``forward``, which are therefore ``other``. If no node
    of the graph has a stack (a torch version that does not record it), a functional node takes
    the component of its latest input node that has one instead.
    """
    stacks_recorded = any("nn_module_stack" in node.meta for node in graph.nodes)
    components: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in COMPUTE_OPS:
            continue
        if node.op == "call_module":
            component = _component_of_name(str(node.target))
        elif stacks_recorded:
            component = _component_from_module_stack(node)
        else:
            inputs = [components.get(arg.name) for arg in node.all_input_nodes]
            component = next((c for c in reversed(inputs) if c and c != OTHER), None)
        components[node.name] = component or OTHER
    return components


def _node_kind(node: fx.Node, module: fx.GraphModule) -> str:
    if node.op == "call_module":
        return type(module.get_submodule(str(node.target))).__name__
    if node.op == "call_method":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _node_target(node: fx.Node) -> str:
    if node.op == "call_function":
        try:
            return _get_qualified_name(node.target)  # e.g. "operator.add", "torch.relu"
        except (AttributeError, RuntimeError, TypeError):
            return getattr(node.target, "__name__", repr(node.target))
    return str(node.target)


def _summary_stats(samples: Sequence[float] | np.ndarray) -> dict[str, float]:
    values = np.asarray(samples, dtype=float)
    if values.size == 0:
        raise ValueError("no timing samples to summarise")
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return {
        "median_ms": float(median),
        "q25_ms": float(q25),
        "q75_ms": float(q75),
        "iqr_ms": float(q75 - q25),
        "mean_ms": float(values.mean()),
    }


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode (and inference mode) for the block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _check_counts(warmup: int, iterations: int) -> None:
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")


class _ForwardRunner:
    """Runs plain ``model(x)`` passes with the given timer, keeping the times of recorded ones."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, device: torch.device) -> None:
        self.model = model
        self.example_input = example_input
        self.times: list[float] = []
        self._timer = Timer(device)

    def passes(self, count: int, *, record: bool) -> None:
        for _ in range(count):
            self._timer.call(self.model, self.example_input)
            (elapsed,) = self._timer.finish_pass()
            if record:
                self.times.append(elapsed)


class _ComponentRunner:
    """Runs the network stage by stage, timing each stage and each exit head as one call.

    These are the costs a runtime that stops between stages pays (the Python of the stages'
    containers included, which the per-layer table leaves out); ``times[c]`` holds the samples of
    component ``c`` (``stage_k`` / ``head_k``) in the order of the passes.
    """

    def __init__(
        self, model: MultiExitNetwork, example_input: torch.Tensor, device: torch.device
    ) -> None:
        self.model = model
        self.example_input = example_input
        self.order = [c for c, *_ in _execution_order(model)]
        self.times: dict[str, list[float]] = {c: [] for c in self.order}
        self._timer = Timer(device)

    def passes(self, count: int, *, record: bool) -> None:
        model, call = self.model, self._timer.call
        for _ in range(count):
            x = self.example_input
            for index, stage in enumerate(model.stages):
                x = call(stage, x)
                head = model.head_after(index)
                if head is not None:
                    call(model.heads[head], x)
            elapsed = self._timer.finish_pass()
            if record:
                for component, value in zip(self.order, elapsed):
                    self.times[component].append(value)


def _execution_order(model: MultiExitNetwork) -> list[tuple[str, str, int, str]]:
    """(component, kind, index, exit_name) in the order a forward runs them."""
    order = []
    for index in range(len(model.stages)):
        order.append((f"stage_{index}", "stage", index, ""))
        head = model.head_after(index)
        if head is not None:
            order.append((f"head_{head}", "head", head, model.exit_names[head]))
    return order


def _checked_layer_timer(
    model: nn.Module, example_input: torch.Tensor, device: torch.device
) -> LayerTimer:
    """A :class:`LayerTimer` for ``model`` whose first (untimed) pass matched ``model(x)``."""
    timer = LayerTimer(trace(model), device)
    actual = timer.run_pass(example_input, record=False)
    expected = model(example_input)
    try:
        torch.testing.assert_close(actual, expected)
    except AssertionError as error:
        raise RuntimeError(f"the timing interpreter disagrees with model(x): {error}") from error
    return timer


def _layer_frame(timer: LayerTimer) -> pd.DataFrame:
    module = timer.module
    components = assign_components(module.graph)
    rows = []
    for order, node in enumerate(timer.nodes):
        samples = [float(value) for value in timer.samples[node.name]]
        rows.append(
            {
                "layer": node.name,
                "target": _node_target(node),
                "op": node.op,
                "kind": _node_kind(node, module),
                "stage": components[node.name],
                "order": order,
                **_summary_stats(samples),
                "samples_ms": samples,
            }
        )
    return pd.DataFrame(rows)


def profile_layers(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    warmup: int,
    iterations: int,
    device: torch.device,
) -> pd.DataFrame:
    """Time every layer of ``model`` as ``caffe time`` does; one row per compute node.

    The model (already on ``device``) is FX-traced and run ``warmup + iterations`` times in eval
    and inference mode; the times of the last ``iterations`` passes are kept. A first, untimed
    pass is checked against ``model(x)`` (RuntimeError if they differ). Columns: ``layer``
    (FX node name), ``target``, ``op``, ``kind``, ``stage`` (``stage_k`` / ``head_k`` /
    ``other``), ``order``, ``median_ms``, ``q25_ms``, ``q75_ms``, ``iqr_ms``, ``mean_ms`` and
    ``samples_ms`` (the raw per-iteration times).
    """
    _check_counts(warmup, iterations)
    with _eval_mode(model):
        example_input = example_input.to(device)
        timer = _checked_layer_timer(model, example_input, device)
        timer.passes(warmup, example_input, record=False)
        timer.passes(iterations, example_input, record=True)
    return _layer_frame(timer)


def time_forward(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    warmup: int,
    iterations: int,
    device: torch.device,
) -> np.ndarray:
    """Per-iteration times (ms) of a plain ``model(x)`` in eval and inference mode."""
    _check_counts(warmup, iterations)
    with _eval_mode(model):
        runner = _ForwardRunner(model, example_input.to(device), device)
        runner.passes(warmup, record=False)
        runner.passes(iterations, record=True)
    return np.asarray(runner.times, dtype=float)


# --------------------------------------------------------------------------------------------
# Stage, head and exit costs
# --------------------------------------------------------------------------------------------


def _components(model: MultiExitNetwork) -> list[tuple[str, str, int, str]]:
    """(component, kind, index, exit_name) of every stage then every head of ``model``."""
    stages = [(f"stage_{k}", "stage", k, "") for k in range(len(model.stages))]
    heads = [(f"head_{k}", "head", k, model.exit_names[k]) for k in range(len(model.heads))]
    return stages + heads


def stage_costs(
    layers: pd.DataFrame,
    model: MultiExitNetwork,
    measured: Mapping[str, Sequence[float]] | None = None,
) -> pd.DataFrame:
    """Cost of every backbone stage and exit head of *one* profiling run.

    From the layers: ``median_ms`` is the sum of the component's layer medians; ``median_sum_ms``
    / ``iqr_sum_ms`` are the median / IQR over iterations of the component's per-iteration
    total. ``measured`` (the samples of each component timed as one call, see
    :class:`_ComponentRunner`) adds ``measured_ms`` / ``measured_iqr_ms``. ``cost_ms`` is the cost
    the study uses: the measured one where there is one, else the layer sum.
    """
    rows = []
    for component, kind, index, exit_name in _components(model):
        part = layers[layers["stage"] == component]
        if part.empty:
            raise ValueError(f"no timed layer belongs to {component}")
        stats = _summary_stats(_pass_totals(part))
        row = {
            "component": component,
            "kind": kind,
            "index": index,
            "exit_name": exit_name,
            "median_ms": float(part["median_ms"].sum()),
            "median_sum_ms": stats["median_ms"],
            "iqr_sum_ms": stats["iqr_ms"],
            "num_layers": len(part),
        }
        if measured is not None:
            direct = _summary_stats(measured[component])
            row.update(measured_ms=direct["median_ms"], measured_iqr_ms=direct["iqr_ms"])
        row["cost_ms"] = row.get("measured_ms", row["median_ms"])
        rows.append(row)
    return pd.DataFrame(rows)


def _component_cost(components: pd.DataFrame, component: str, column: str) -> float:
    match = components.loc[components["component"] == component, column]
    if len(match) != 1:
        raise ValueError(f"expected one row for {component}, found {len(match)}")
    return float(match.iloc[0])


def exit_costs(components: pd.DataFrame, model: MultiExitNetwork) -> pd.DataFrame:
    """Cumulative cost of reaching each exit: stages ``0..exit_after[k]`` plus head ``k``.

    Intermediate heads before exit ``k`` are not counted (the cost of the exit alone); the early
    exit policy adds the heads it evaluates on the way itself. Costs are ``cost_ms`` of the
    components; ``layer_cumulative_ms`` is the same from the per-layer sums.
    """
    rows = []
    for column, prefix in (("cost_ms", ""), ("median_ms", "layer_")):
        stages = [
            _component_cost(components, f"stage_{k}", column) for k in range(len(model.stages))
        ]
        cumulative = np.cumsum(stages)
        for k, after in enumerate(model.exit_after):
            head_ms = _component_cost(components, f"head_{k}", column)
            if prefix:
                rows[k]["layer_cumulative_ms"] = float(cumulative[after]) + head_ms
                continue
            rows.append(
                {
                    "exit": k,
                    "exit_name": model.exit_names[k],
                    "exit_after": after,
                    "stage_ms": float(cumulative[after]),
                    "head_ms": head_ms,
                    "cumulative_ms": float(cumulative[after]) + head_ms,
                }
            )
    return pd.DataFrame(rows)


def network_cost_ms(components: pd.DataFrame, model: MultiExitNetwork) -> float:
    """Cost of the full network: every stage plus the final head (intermediate heads excluded)."""
    return float(exit_costs(components, model)["cumulative_ms"].iloc[-1])


# --------------------------------------------------------------------------------------------
# Whole-network profiling
# --------------------------------------------------------------------------------------------


def _chunks(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts) if base or i < extra]


def _profile_batch(
    model: MultiExitNetwork,
    example_input: torch.Tensor,
    *,
    warmup: int,
    iterations: int,
    device: torch.device,
    progress: tqdm,
) -> tuple[pd.DataFrame, dict[str, list[float]], np.ndarray]:
    """Layer samples, component samples and forward times of one batch size.

    The three kinds of measurement run in alternating chunks, so drift hits them alike.
    """
    timer = _checked_layer_timer(model, example_input, device)
    runner = _ForwardRunner(model, example_input, device)
    components = _ComponentRunner(model, example_input, device)
    runner.passes(warmup, record=False)
    components.passes(warmup, record=False)
    timer.passes(warmup, example_input, record=False)
    for chunk in _chunks(iterations, INTERLEAVE_CHUNKS):
        runner.passes(chunk, record=True)
        components.passes(chunk, record=True)
        timer.passes(chunk, example_input, record=True)
        progress.update(chunk)
    return _layer_frame(timer), components.times, np.asarray(runner.times, dtype=float)


def _pass_totals(layers: pd.DataFrame) -> np.ndarray:
    """Per-iteration sum of the samples of ``layers`` (all rows hold the same iterations)."""
    samples = [np.asarray(row, dtype=float) for row in layers["samples_ms"]]
    return np.stack(samples).sum(axis=0)


def _summary_row(
    setting: str,
    batch_size: int,
    layers: pd.DataFrame,
    measured: Mapping[str, Sequence[float]],
    forward: np.ndarray,
    network_ms: float,
) -> dict[str, Any]:
    """One summary row; ``ratio`` is the Caffe-style check (sum of layer medians / forward median).

    Medians do not add up (per-layer times are right-skewed, so the sum of the medians falls
    below the median of the per-pass sums), hence the two companion checks: ``ratio_total``
    compares the median of the per-pass layer totals, ``ratio_mean`` the sum of the layer means
    (means do add up) with the mean forward. ``component_ratio`` compares the median of the
    per-pass totals of the stages and heads timed as whole calls (the costs the study uses).
    """
    component_total = _summary_stats(np.sum([measured[c] for c in measured], axis=0))["median_ms"]
    forward_stats = _summary_stats(forward)
    layer_sum = float(layers["median_ms"].sum())
    layer_total = _summary_stats(_pass_totals(layers))["median_ms"]
    layer_mean_sum = float(layers["mean_ms"].sum())
    return {
        "setting": setting,
        "batch_size": batch_size,
        "layer_sum_ms": layer_sum,
        "layer_total_median_ms": layer_total,
        "layer_mean_sum_ms": layer_mean_sum,
        "forward_median_ms": forward_stats["median_ms"],
        "forward_iqr_ms": forward_stats["iqr_ms"],
        "forward_mean_ms": forward_stats["mean_ms"],
        "ratio": layer_sum / forward_stats["median_ms"],
        "ratio_total": layer_total / forward_stats["median_ms"],
        "ratio_mean": layer_mean_sum / forward_stats["mean_ms"],
        "component_total_median_ms": component_total,
        "component_ratio": component_total / forward_stats["median_ms"],
        "network_ms": network_ms,
        "network_per_image_ms": network_ms / batch_size,
        "forward_per_image_ms": forward_stats["median_ms"] / batch_size,
        "iterations": len(forward),
    }


def _with_setting(frame: pd.DataFrame, setting: str, batch_size: int) -> pd.DataFrame:
    return frame.assign(setting=setting, batch_size=batch_size)


def profile_network(
    model: MultiExitNetwork,
    input_shape: Sequence[int],
    *,
    batch_sizes: Mapping[str, int],
    warmup: int,
    iterations: int,
    device: torch.device,
    threads: int,
    dtype: torch.dtype,
    channels_last: bool,
    seed: int = 0,
) -> dict[str, Any]:
    """Profile ``model`` at every batch size; layer, component, exit and summary tables.

    For each ``setting -> batch size`` the per-layer profile and plain forward timings are taken
    in alternating chunks on the same random input. The model is moved to ``device`` and
    ``dtype`` in place. Returns ``layers``, ``components``, ``exits``, ``summary`` (DataFrames
    with ``setting`` and ``batch_size`` columns) and ``environment`` (a dict).
    """
    _check_counts(warmup, iterations)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    if not batch_sizes:
        raise ValueError("at least one batch size is needed")
    if device.type == "cpu":
        torch.set_num_threads(threads)
    pinned = pin_malloc_thresholds()
    fmt = memory_format(channels_last)
    model.to(device=device, dtype=dtype, memory_format=fmt)
    generator = torch.Generator().manual_seed(seed)
    tables: dict[str, list[pd.DataFrame]] = {"layers": [], "components": [], "exits": []}
    summary = []
    with tqdm(total=iterations * len(batch_sizes), desc="profiling", file=sys.stderr) as progress:
        for setting, batch_size in batch_sizes.items():
            progress.set_postfix(setting=setting, batch_size=batch_size)
            example = torch.randn((batch_size, *input_shape), generator=generator, dtype=dtype)
            with _eval_mode(model):
                layers, measured, forward = _profile_batch(
                    model,
                    example.to(device).contiguous(memory_format=fmt),
                    warmup=warmup,
                    iterations=iterations,
                    device=device,
                    progress=progress,
                )
            components = stage_costs(layers, model, measured)
            exits = exit_costs(components, model)
            network_ms = network_cost_ms(components, model)
            for name, frame in (("layers", layers), ("components", components), ("exits", exits)):
                tables[name].append(_with_setting(frame, setting, batch_size))
            summary.append(_summary_row(setting, batch_size, layers, measured, forward, network_ms))
    result: dict[str, Any] = {
        name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()
    }
    result["summary"] = pd.DataFrame(summary)
    result["environment"] = environment(
        device,
        dtype=dtype,
        batch_sizes=batch_sizes,
        malloc_pinned=pinned,
        channels_last=channels_last,
    )
    return result


def profile_study_network(
    model: MultiExitNetwork,
    input_shape: Sequence[int],
    timing: Mapping[str, Any],
    *,
    device: torch.device,
    compute: Mapping[str, Any],
) -> dict[str, Any]:
    """:func:`profile_network` with the study's ``timing`` and ``compute`` config sections.

    The latency setting runs ``timing["warmup"]`` untimed and ``timing["iterations"]`` timed
    passes, the throughput setting ``timing["throughput_warmup"]`` and
    ``timing["throughput_iterations"]`` (its passes are a hundred times longer).
    """
    iterations = {"latency": timing["iterations"], "throughput": timing["throughput_iterations"]}
    warmup = {"latency": timing["warmup"], "throughput": timing["throughput_warmup"]}
    apply_compute(compute)
    parts = [
        profile_network(
            model,
            input_shape,
            batch_sizes={setting: batch_size},
            warmup=warmup[setting],
            iterations=iterations[setting],
            device=device,
            threads=timing["threads"],
            **compute_options(compute),
        )
        for setting, batch_size in timing["batch_sizes"].items()
    ]
    result: dict[str, Any] = {
        name: pd.concat([part[name] for part in parts], ignore_index=True)
        for name in ("layers", "components", "exits", "summary")
    }
    result["environment"] = dict(parts[0]["environment"], batch_sizes=dict(timing["batch_sizes"]))
    return result
