"""Measured against predicted speedup: the runtime timed beside the reference network alone.

For one scheme of a fitted study (:class:`~adaptive_inference.runtime.Study`) and a few operating
points (a policy's best point within each loss level, :func:`~adaptive_inference.runtime.
operating_points`), :func:`measure_scheme` runs every policy with
:class:`~adaptive_inference.runtime.AdaptiveRuntime` and the reference network alone through the
same engine, in one process, on one device and thread count, on the same test images:

* **batch 1** (latency): the examples in blocks; in each block every system classifies every
  example, one call each, timed with :func:`time.perf_counter_ns`, the systems' order rotating
  from block to block; an example's latency is its median over the ``repeats`` passes, a
  system's latency the mean over the examples (speedups compare means, as the sweep does);
* **batched** (throughput): the test images ``batch_size`` at a time, every system on each batch
  in rotating order; a batch's time is its median over the passes.

Python's garbage collector is off while timing.

**Predicted** is the point's simulated route on the same examples priced by the study's timing
tables (``latency`` costs for batch 1, ``throughput`` costs per example for batched, each with
its decision cost): the sweep's numbers. CPU timings drift between jobs (STUDY.md), so each pass
is followed by a **re-timing** of the scheme's networks and of the decision with the timing
rules' own code and settings (``runtime.retiming``'s counts): the same routes priced by these costs,
medians over the passes, predict the speedup *now*; the gap between the two predictions is the
drift, the gap between the re-timed prediction and the measurement is the runtime's.

**Where the time goes**: an instrumented pass of each system
(:meth:`~adaptive_inference.runtime.AdaptiveRuntime.instrumented`) times every segment call
(the stages and head an edge runs) and every decision (features, rule, reading the action
back); the rest is the runtime's own Python (choosing the next segment, the final ``argmax``;
in batched mode also splitting and gathering the batches). Per segment, the time in the
runtime is set beside the edge's cost in the tables and re-timed: a stage run between other
networks' stages and decisions may cost more than in the timing loop, which runs it alone.

The answers of both modes are compared with the simulated ones (stop node and class per
example); where they differ, ``min_margin`` is the smallest distance of a decision score to its
boundary along the simulated paths of those examples.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from adaptive_inference.decision import time_decision
from adaptive_inference.graph import StageGraph
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.policies import TradeoffPolicy
from adaptive_inference.runtime import (
    AdaptiveRuntime,
    Study,
    compute_options,
    operating_points,
    read_study,
    slice_inputs,
)
from adaptive_inference.timing import profile_study_network

REFERENCE = "reference"
MODES = {"batch1": "latency", "batched": "throughput"}
"""Each measured mode and the timing setting whose costs predict it."""


@dataclass(frozen=True)
class Settings:
    """How the measurement runs (the config's ``runtime`` section, resolved).

    ``retiming`` overrides the timing section's counts (``warmup``, ``iterations``,
    ``throughput_iterations``) for the re-timing after each pass; ``decision_timing`` holds
    the decision's (``warmup``, ``iterations``)."""

    repeats: int = 3
    warmup: int = 20
    block_size: int = 50
    batch_size: int = 256
    retiming: Mapping[str, int] = field(default_factory=dict)
    decision_timing: Mapping[str, int] = field(
        default_factory=lambda: {"warmup": 50, "iterations": 500}
    )


@dataclass
class Measurement:
    """The tables :func:`measure_scheme` returns (``results/runtime/<scheme>/``): one row per
    mode and operating point (``speedups``), per mode, point and segment or decision node
    (``segments``), per point and example at batch 1 (``examples``), and a ``summary``."""

    speedups: pd.DataFrame
    segments: pd.DataFrame
    examples: pd.DataFrame
    summary: dict[str, Any]


# -------------------------------------------------------------------------------------------
# Timed passes
# -------------------------------------------------------------------------------------------


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _rotations(names: Sequence[str], count: int) -> Iterator[list[str]]:
    """``count`` orders of ``names``, each rotated by one more than the last."""
    for index in range(count):
        shift = index % len(names)
        yield list(names[shift:]) + list(names[:shift])


def latency_pass(
    systems: Mapping[str, AdaptiveRuntime], xs: Sequence[Mapping[str, torch.Tensor]],
    block_size: int,
    progress: tqdm | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """One batch-1 pass over examples ``xs`` (their :meth:`~adaptive_inference.runtime.
    AdaptiveRuntime.inputs`): per-example latency (ns) and answers (stop node, class) of every
    system, blocks of ``block_size`` examples, the systems' order rotating per block."""
    n = len(xs)
    times = {name: np.empty(n, dtype=np.int64) for name in systems}
    stops = {name: np.empty(n, dtype=np.int64) for name in systems}
    classes = {name: np.empty(n, dtype=np.int64) for name in systems}
    blocks = range(0, n, block_size)
    clock = time.perf_counter_ns
    for start, order in zip(blocks, _rotations(list(systems), len(blocks))):
        for name in order:
            run, out, stop, cls = systems[name].run_one, times[name], stops[name], classes[name]
            for i in range(start, min(start + block_size, n)):
                begin = clock()
                stop[i], cls[i] = run(xs[i])
                out[i] = clock() - begin
        if progress is not None:
            progress.update(min(block_size, n - start))
    return times, {name: (stops[name], classes[name]) for name in systems}


def throughput_pass(
    systems: Mapping[str, AdaptiveRuntime], batches: Sequence[Mapping[str, torch.Tensor]],
    progress: tqdm | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """One batched pass: per-batch time (ns, answers read back to the host included) and the
    answers of every system, the systems' order rotating per batch."""
    times = {name: np.empty(len(batches), dtype=np.int64) for name in systems}
    answers: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in systems}
    clock = time.perf_counter_ns
    for index, order in enumerate(_rotations(list(systems), len(batches))):
        for name in order:
            begin = clock()
            stop, cls = (t.cpu() for t in systems[name].run_batch(batches[index]))
            times[name][index] = clock() - begin
            answers[name].append((stop.numpy(), cls.numpy()))
        if progress is not None:
            progress.update(len(answers[name][-1][0]))
    joined = {
        name: (np.concatenate([s for s, _ in parts]), np.concatenate([c for _, c in parts]))
        for name, parts in answers.items()
    }
    return times, joined


def instrumented_pass(
    system: AdaptiveRuntime, inputs: Sequence[Mapping[str, torch.Tensor]], *, batched: bool
) -> tuple[float, pd.DataFrame]:
    """One instrumented pass over ``inputs`` (examples, or batches when ``batched``): its
    total time (ns) and every timed call (:meth:`~adaptive_inference.runtime.Stopwatch.calls`)."""
    twin, clock = system.instrumented()
    begin = time.perf_counter_ns()
    for x in inputs:
        if batched:
            twin.run_batch(x)[0].cpu()
        else:
            twin.run_one(x)
    return time.perf_counter_ns() - begin, clock.calls()


# -------------------------------------------------------------------------------------------
# Re-timing
# -------------------------------------------------------------------------------------------


def retime(
    networks: Mapping[str, MultiExitNetwork],
    input_shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    *,
    timing: Mapping[str, Any],
    decision_timing: Mapping[str, int],
    topk: int,
    device: torch.device,
    compute: Mapping[str, Any],
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]:
    """Exit costs of ``networks`` (on inputs of ``input_shapes``, ``(C, H, W)`` per network)
    and the decision's cost, timed now by the timing rules' code
    (:func:`~adaptive_inference.timing.profile_study_network`,
    :func:`~adaptive_inference.decision.time_decision`) with the sections given."""
    exits = {
        name: profile_study_network(
            model, input_shapes[name], timing, device=device, compute=compute
        )["exits"]
        for name, model in networks.items()
    }
    decision = {
        setting: time_decision(
            num_classes=num_classes, topk=topk, batch_size=batch_size, device=device,
            warmup=decision_timing["warmup"], iterations=decision_timing["iterations"],
        )
        for setting, batch_size in timing["batch_sizes"].items()
    }
    return exits, decision


def _median_costs(
    runs: Sequence[tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]],
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]:
    """The median over re-timings of every stage, head and decision cost (the other fields,
    such as spreads, are the first re-timing's)."""
    exits = {}
    for name, first in runs[0][0].items():
        frames = [run[0][name] for run in runs]
        exits[name] = first.assign(**{
            column: np.median([f[column].to_numpy() for f in frames], axis=0)
            for column in ("stage_ms", "head_ms", "cumulative_ms")
        })
    decision = {}
    for setting, first in runs[0][1].items():
        decision[setting] = dict(first, **{
            key: float(np.median([run[1][setting][key] for run in runs]))
            for key in ("median_ms", "per_example_ms")
        })
    return exits, decision


# -------------------------------------------------------------------------------------------
# The measurement
# -------------------------------------------------------------------------------------------


@dataclass
class _Passes:
    """What the timed passes recorded: per pass, every system's times (ns, per example or per
    batch) and answers, and the costs re-timed after it."""

    latency: list[tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]]
    throughput: list[tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]]
    retimed: list[tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]]

    def times(self, mode: str, name: str) -> list[np.ndarray]:
        """System ``name``'s times in every pass of ``mode`` (batch1, batched)."""
        return [times[name] for times, _ in (self.latency if mode == "batch1" else self.throughput)]

    def answers(self, mode: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every system's answers in the first pass of ``mode``."""
        return (self.latency if mode == "batch1" else self.throughput)[0][1]


def measure_scheme(
    study: Study,
    networks: Mapping[str, MultiExitNetwork],
    images: torch.Tensor,
    example_ids: np.ndarray,
    *,
    loss_levels: Sequence[float],
    metric: str,
    method: str,
    setting: str,
    settings: Settings,
    timing: Mapping[str, Any],
    device: torch.device | str = "cpu",
    compute: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> Measurement:
    """Measure the operating points of one scheme against its reference (module doc).

    Args:
        study: the scheme's tables, costs, policies and points.
        networks: the scheme's networks by name.
        images: the images of ``example_ids``, in the same order: one tensor for every
            network, or one per network (:meth:`~adaptive_inference.runtime.AdaptiveRuntime.
            inputs`).
        example_ids: test examples (ids of the graph).
        loss_levels, metric, method: which points (:func:`~adaptive_inference.runtime.
            operating_points`).
        setting: the timing setting the policies were trained against (their graph).
        settings: repeats, warm-up, block size, batch size, re-timing counts.
        timing: the study's timing section (threads, batch sizes: those of the tables).
        compute: the config's ``compute`` section (dtype, memory format: as extraction and
            timing ran the networks).
    """
    device, compute = torch.device(device), dict(compute or {})
    graph = study.graphs[setting]
    chosen = operating_points(study.points, loss_levels, metric=metric, method=method)
    point_ids = [int(p) for p in chosen["point_id"].dropna().unique()]
    systems = _systems(study, point_ids, networks, graph, device=device, **compute_options(compute))
    x = systems[REFERENCE].inputs(images)
    n = len(example_ids)
    xs = [slice_inputs(x, i, i + 1) for i in range(n)]
    size = settings.batch_size
    batches = [slice_inputs(x, i, i + size) for i in range(0, n, size)]
    scheme_networks = systems[REFERENCE].networks
    with torch.inference_mode(), _no_gc():
        reference = graph.networks[graph.reference]
        num_classes = int(scheme_networks[reference](x[reference][:1])[-1].shape[1])

        def costs_now():
            return retime(
                scheme_networks, {net: x[net].shape[1:] for net in scheme_networks}, num_classes,
                timing={**timing, **settings.retiming}, decision_timing=settings.decision_timing,
                topk=study.topk, device=device, compute=compute,
            )

        passes = _timed_passes(systems, xs, batches, settings, costs_now, progress)
        instrumented = {
            name: {
                "batch1": instrumented_pass(system, xs, batched=False),
                "batched": instrumented_pass(system, batches, batched=True),
            }
            for name, system in systems.items()
        }
    exits_now, decision_now = _median_costs(passes.retimed)
    costs = {
        mode: {
            "predicted": study.graphs[cost_setting],
            "retimed": study.graph(cost_setting, exits=exits_now, decision=decision_now),
        }
        for mode, cost_setting in MODES.items()
    }
    speedups, segments, examples = _tables(
        study, graph, chosen, systems, costs, passes, instrumented, example_ids, metric=metric,
        batch_size=settings.batch_size,
    )
    summary = {
        "scheme": study.name, "setting": setting, "metric": metric, "method": method,
        "loss_levels": list(loss_levels), "examples": n, "settings": asdict(settings),
        "device": str(device), "threads": torch.get_num_threads(), "compute": compute,
        "point_ids": point_ids,
        "retimed": {
            "exits": {n: f[["setting", "exit_name", "stage_ms", "head_ms"]].to_dict("records")
                      for n, f in exits_now.items()},
            "decision": decision_now,
        },
    }
    return Measurement(speedups, segments, examples, summary)


def _timed_passes(
    systems: Mapping[str, AdaptiveRuntime],
    xs: Sequence[Mapping[str, torch.Tensor]],
    batches: Sequence[Mapping[str, torch.Tensor]],
    settings: Settings,
    costs_now: Callable[[], tuple[dict[str, pd.DataFrame], dict[str, dict[str, Any]]]],
    progress: bool,
) -> _Passes:
    """Warm every system up (each segment once, then a few examples and a batch), then
    ``repeats`` times: a batch-1 pass, a batched pass and a re-timing (``costs_now()``)."""
    for name, system in systems.items():
        system.warm_up(xs[0])
        latency_pass({name: system}, xs[:settings.warmup], settings.block_size)
        throughput_pass({name: system}, batches[:1])
    passes = _Passes([], [], [])
    with tqdm(total=settings.repeats * 2 * len(xs), desc="runtime", mininterval=5.0,
              disable=not progress) as bar:
        for _ in range(settings.repeats):
            passes.latency.append(latency_pass(systems, xs, settings.block_size, bar))
            passes.throughput.append(throughput_pass(systems, batches, bar))
            passes.retimed.append(costs_now())
    return passes


def _tables(
    study: Study,
    graph: StageGraph,
    chosen: pd.DataFrame,
    systems: Mapping[str, AdaptiveRuntime],
    costs: Mapping[str, Mapping[str, StageGraph]],
    passes: _Passes,
    instrumented: Mapping[str, Mapping[str, tuple[float, pd.DataFrame]]],
    example_ids: np.ndarray,
    *,
    metric: str,
    batch_size: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The ``speedups``, ``segments`` and ``examples`` tables (see :class:`Measurement`);
    ``graph`` is the policies' (the answers and examples do not depend on its costs)."""
    n = len(example_ids)
    speedups, segments, examples = [], [], []
    for label, row in _labels(chosen):
        name = REFERENCE if row is None else str(int(row["point_id"]))
        policy = None if row is None else study.policies[int(row["point_id"])]
        for mode in MODES:
            total_ns, calls = instrumented[name][mode]
            times = {system: passes.times(mode, system) for system in (REFERENCE, name)}
            speedups.append({
                "scheme": study.name, "mode": mode, "label": label, **_point(row, metric),
                "examples": n, "batch_size": 1 if mode == "batch1" else batch_size,
                **_predicted(costs[mode], policy, example_ids),
                **_measured(times, name, n),
                **_breakdown(total_ns, calls, n),
                **_agreement(graph, policy, example_ids, passes.answers(mode)[name]),
            })
            segments.append(_segments(systems[name], costs[mode], calls).assign(
                scheme=study.name, mode=mode, label=label))
        answers = {mode: passes.answers(mode) for mode in MODES}
        examples.append(
            _examples(graph, policy, example_ids, answers, name, passes.times("batch1", name))
            .assign(scheme=study.name, label=label)
        )
    keys = ["scheme", "mode", "label"]
    segments = pd.concat(segments, ignore_index=True)
    examples = pd.concat(examples, ignore_index=True)
    return (
        _ratios(pd.DataFrame(speedups)),
        segments[keys + [c for c in segments.columns if c not in keys]],
        examples[["scheme", "label"] + [c for c in examples.columns if c not in keys]],
    )


def measure_configured(
    scheme: str,
    config: Mapping[str, Any],
    *,
    predictions: Mapping[str, Path | str],
    exits: Mapping[str, Path | str],
    models: Mapping[str, Path | str],
    decision: Path | str,
    policies: Path | str,
    splits: Path | str,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Measurement:
    """:func:`measure_scheme` as rule measure_runtime runs it, from the files the workflow wrote
    and the rule's config: ``scheme`` (its entry), ``policies`` (setting, topk,
    path_features), ``reference``, ``runtime`` (batch size resolved), ``timing``,
    ``decision_timing``, ``data`` and ``compute``. The summary records that config, so that
    the measurement can be made again elsewhere from the results alone
    (``benchmarks/bench_runtime.py``, with :func:`~adaptive_inference.runtime.study_files`)."""
    from adaptive_inference.splits import ids_of
    from adaptive_inference.training import load_network

    runtime, entry = config["runtime"], config["scheme"]
    study = read_study(
        scheme, entry, config["policies"], config["reference"], predictions=predictions,
        exits=exits, decision=decision, policies=policies,
    )
    ids = ids_of(pd.read_parquet(splits), "test")[: runtime["max_examples"]]
    loaded = {n: load_network(models[n], with_spec=True) for n in entry["networks"]}
    result = measure_scheme(
        study,
        {n: model for n, (model, _) in loaded.items()},
        network_images(config["data"], {n: spec for n, (_, spec) in loaded.items()}, ids),
        ids,
        loss_levels=runtime["loss_levels"],
        metric=runtime["metric"],
        method=runtime["method"],
        setting=config["policies"]["setting"],
        settings=Settings(
            repeats=runtime["repeats"], warmup=runtime["warmup"], block_size=runtime["block_size"],
            batch_size=runtime["batch_size"], retiming=runtime["retiming"],
            decision_timing=config["decision_timing"],
        ),
        timing=config["timing"],
        device=device,
        compute=config["compute"],
        progress=progress,
    )
    result.summary["config"] = dict(config)
    return result


def _systems(
    study: Study, point_ids: Sequence[int], networks: Mapping[str, MultiExitNetwork],
    graph: StageGraph, **options: Any,
) -> dict[str, AdaptiveRuntime]:
    """The reference alone and the runtime of every point, by name (``options``: device,
    dtype, channels_last)."""
    systems = {REFERENCE: AdaptiveRuntime.reference_alone(graph, networks, **options)}
    for point_id in point_ids:
        policy = study.policies[point_id]
        systems[str(point_id)] = AdaptiveRuntime(graph, policy, networks, **options)
    return systems


def _labels(chosen: pd.DataFrame) -> list[tuple[str, pd.Series | None]]:
    """The rows of the tables: the reference alone, then each loss level that has a point."""
    labels: list[tuple[str, pd.Series | None]] = [(REFERENCE, None)]
    for _, row in chosen.iterrows():
        if pd.notna(row["point_id"]):
            labels.append((f"≤ {row['max_loss']:g} pts", row))
    return labels


def _point(row: pd.Series | None, metric: str) -> dict[str, Any]:
    """The operating point as the sweep read it (on the whole test split)."""
    if row is None:
        return {"max_loss": np.nan, "point_id": np.nan, "budget": np.nan, f"{metric}_loss": 0.0,
                "sweep_speedup": 1.0}
    return {"max_loss": row["max_loss"], "point_id": int(row["point_id"]), "budget": row["budget"],
            f"{metric}_loss": row[f"{metric}_loss"], "sweep_speedup": row["speedup"]}


def _route(
    graph: StageGraph, policy: TradeoffPolicy | None, example_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulated stop node, cost (ms) and cost of the decisions (ms) of every example (the
    reference alone: its node, ``alone_ms``, none)."""
    rows = graph.rows(example_ids)
    if policy is None:
        ref = graph.reference
        return np.full(len(rows), ref), np.full(len(rows), graph.alone_ms[ref]), np.zeros(len(rows))
    route = policy.route_rows(graph, rows)
    return route.stop, route.cost_ms, route.decided @ graph.decision_ms


def _predicted(
    costs: Mapping[str, StageGraph], policy: TradeoffPolicy | None, example_ids: np.ndarray
) -> dict[str, float]:
    """Mean cost per example and of the decisions, and of the reference alone, with the
    tables' costs (``predicted_``) and the re-timed ones (``retimed_``)."""
    out = {}
    for kind, graph in costs.items():
        _, cost, decisions = _route(graph, policy, example_ids)
        out[f"{kind}_ms"] = float(cost.mean())
        out[f"{kind}_decision_ms"] = float(decisions.mean())
        out[f"{kind}_ref_ms"] = float(graph.alone_ms[graph.reference])
    return out


def _measured(times: Mapping[str, list[np.ndarray]], name: str, n: int) -> dict[str, float]:
    """Mean time per example (ms) of the system and of the reference, from their per-example
    (per-batch) times' medians over the passes, and the speedup of each single pass."""
    per_pass = [ref.sum() / own.sum() for ref, own in zip(times[REFERENCE], times[name])]
    return {
        "measured_ms": float(np.median(times[name], axis=0).sum()) / n / 1e6,
        "measured_ref_ms": float(np.median(times[REFERENCE], axis=0).sum()) / n / 1e6,
        "measured_speedup_min": float(min(per_pass)),
        "measured_speedup_max": float(max(per_pass)),
    }


def _breakdown(total_ns: float, calls: pd.DataFrame, n: int) -> dict[str, float]:
    """The instrumented pass per example (ms): total, segments, decisions, the rest; decisions
    computed per example, and examples per segment call."""
    segment = calls[calls["kind"] == "segment"]
    decision = calls[calls["kind"] == "decision"]
    compute_ns, decision_ns = segment["ns"].sum(), decision["ns"].sum()
    return {
        "runtime_total_ms": total_ns / n / 1e6,
        "runtime_compute_ms": compute_ns / n / 1e6,
        "runtime_decision_ms": decision_ns / n / 1e6,
        "runtime_python_ms": (total_ns - compute_ns - decision_ns) / n / 1e6,
        "runtime_decisions": decision["examples"].sum() / n,
        "runtime_segment_batch": segment["examples"].mean() if len(segment) else np.nan,
    }


def _ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Speedups (reference time over the point's) and measured over predicted."""
    for kind in ("predicted", "retimed"):
        table[f"{kind}_speedup"] = table[f"{kind}_ref_ms"] / table[f"{kind}_ms"]
    table["measured_speedup"] = table["measured_ref_ms"] / table["measured_ms"]
    table["ratio"] = table["measured_speedup"] / table["predicted_speedup"]
    table["retimed_ratio"] = table["measured_speedup"] / table["retimed_speedup"]
    return table


def _segments(
    system: AdaptiveRuntime, costs: Mapping[str, StageGraph], calls: pd.DataFrame
) -> pd.DataFrame:
    """Per segment and decision node of an instrumented pass: calls, examples and time per
    example in the runtime (``measured_ms``) beside its cost per example in the tables
    (``predicted_ms``) and re-timed (``retimed_ms``)."""
    cost: dict[tuple[str, str, str], float] = {}
    for kind, graph in costs.items():
        for source, node, segment in system.segments():
            edge = graph.alone_ms[node] if source is None else graph.edge_ms[(source, node)]
            cost[("segment", segment.name, kind)] = float(edge)
        for node, name in enumerate(graph.names):
            cost[("decision", name, kind)] = float(graph.decision_ms[node])
    table = calls.groupby(["kind", "name"], sort=False).agg(
        calls=("ns", "size"), examples=("examples", "sum"), ns=("ns", "sum")
    ).reset_index()
    table["measured_ms"] = table["ns"] / table["examples"] / 1e6
    for kind in costs:
        keys = zip(table["kind"], table["name"])
        table[f"{kind}_ms"] = [cost[(k, name, kind)] for k, name in keys]
    return table.drop(columns="ns")


def _examples(
    graph: StageGraph, policy: TradeoffPolicy | None, example_ids: np.ndarray,
    answers: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], name: str,
    latency: list[np.ndarray],
) -> pd.DataFrame:
    """One row per example: the simulated answer, each mode's, the predicted latency and the
    measured one (median over the passes, ms)."""
    stop, cost, _ = _route(graph, policy, example_ids)
    names = np.asarray(graph.names, dtype=object)
    table = {"example_id": example_ids, "simulated_stop": names[stop],
             "simulated_class": graph.predictions[stop, graph.rows(example_ids)]}
    for mode, by_system in answers.items():
        table[f"{mode}_stop"] = names[by_system[name][0]]
        table[f"{mode}_class"] = by_system[name][1]
    table["predicted_ms"] = cost
    table["measured_ms"] = np.median(latency, axis=0) / 1e6
    return pd.DataFrame(table)


def _agreement(
    graph: StageGraph, policy: TradeoffPolicy | None, example_ids: np.ndarray,
    answers: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """How many examples got the simulated answer (stop node and class), and for those that
    did not, their ids and the nearest decision boundary on their simulated paths."""
    stop, _, _ = _route(graph, policy, example_ids)
    rows = graph.rows(example_ids)
    same = (answers[0] == stop) & (answers[1] == graph.predictions[stop, rows])
    differ = rows[~same]
    return {
        "same_answer": int(same.sum()),
        "different": int((~same).sum()),
        "min_margin": min_margin(graph, policy, differ) if policy is not None else np.nan,
        "different_ids": graph.example_ids[differ].tolist(),
    }


def min_margin(graph: StageGraph, policy: TradeoffPolicy, rows: np.ndarray) -> float:
    """The smallest distance of a decision score to zero at the learned nodes of the simulated
    paths of ``rows`` (NaN without rows or decisions)."""
    if len(rows) == 0:
        return np.nan
    route = policy.route_rows(graph, rows)
    margins = [
        np.abs(rule.scores(graph.node_features(node, rows[route.decided[:, node]]))).min()
        for node, rule in enumerate(policy.rules_)
        if rule is not None and route.decided[:, node].any()
    ]
    return float(min(margins)) if margins else np.nan


def network_images(
    data: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]], ids: Sequence[int]
) -> dict[str, torch.Tensor]:
    """The images of examples ``ids`` of the evaluation set as each network takes them, by
    network: a pre-trained network through its weights' transforms (as extraction reads them),
    the others as the dataset gives them; read once per distinct preprocessing."""
    from adaptive_inference.data import load_split

    read: dict[str, torch.Tensor] = {}
    images = {}
    for name, spec in specs.items():
        transform = None
        if spec["arch"] == "torchvision":
            from adaptive_inference.pretrained import transforms_of

            transform = transforms_of(spec["model"], spec["weights"])
        key = repr(transform)
        if key not in read:
            dataset = load_split(data, data["root"], train=False, transform=transform)
            read[key] = dataset_images(dataset, ids)
        images[name] = read[key]
    return images


def dataset_images(dataset: Dataset, ids: Sequence[int]) -> torch.Tensor:
    """The images of examples ``ids`` (positions in ``dataset``) as one tensor ``(N, C, H, W)``;
    an in-memory dataset is indexed at once."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0][torch.tensor(np.asarray(ids), dtype=torch.long)]
    return torch.stack([dataset[int(i)][0] for i in ids])
