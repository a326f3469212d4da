"""Measured against predicted speedup: the runtime timed beside the reference network alone.

For one scheme of a fitted study (:class:`~adaptive_inference.study.Study`) and its operating
points (chosen on validation, :func:`~adaptive_inference.readoff.operating_points`),
:func:`measure_scheme` runs every policy with :class:`~adaptive_inference.runtime.
AdaptiveRuntime`, and the reference network alone through the same engine, in one process, on
one device and thread count, on the same test images:

* **batch 1** (latency): the examples in blocks; in each block every system classifies every
  example, one call each, timed with :func:`time.perf_counter_ns`, the systems' order rotating
  from block to block; an example's latency is its median over the ``repeats`` passes, a
  system's latency the mean over the examples;
* **batched** (throughput): each system classifies the whole stream, rebatched
  (:meth:`~adaptive_inference.runtime.AdaptiveRuntime.run_stream`), the systems' order rotating
  from pass to pass (:data:`STREAMS_PER_PASS` of them after each batch-1 pass); a system's
  time is its median over them, and its speedup the median over the passes of the reference's
  time over its own in the same pass (paired, as the joint timing's cost ratios are: a pass
  lasts a fraction of a second and every system in it meets the same machine state, which the
  ratio of two medians, taken over different moments, does not cancel).

**Predicted** is the point's simulated route on the same examples priced by the joint timing
job's costs (:mod:`adaptive_inference.cost_timing`): at batch 1 the latency costs, as the
sweep prices them; batched, :func:`predicted_batched_ms` counts the calls each segment,
decision and answer makes when rebatched (full batches, then one flush call per segment) and
prices each at its own size, and the moves of the examples that go on (gathered from the call
they leave and regrouped in the next queue). Both systems' predictions and measurements are
ratios to the reference in the same job, so the machine's absolute speed cancels; its state
does not entirely: on a shared CPU the speedup a runtime gets moves with it, more than the
costs' ratios do (docs/runtime.md).

**Where the time goes**: an instrumented pass of each system (batch 1 on the first
:data:`INSTRUMENTED` examples; the whole stream rebatched) times every segment call and every
decision; the rest is the runtime's own Python. Per segment, the time in the runtime is set
beside its cost in the joint table.

The answers of both modes are compared with the simulated ones (stop node and class per
example); where they differ, ``min_margin`` is the smallest distance of a decision score to its
boundary along the simulated paths of those examples.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from adaptive_inference.baselines import single_route
from adaptive_inference.costs import ANSWER, Costs, Key
from adaptive_inference.cuda_graphs import capture_reason, capture_sizes, captured
from adaptive_inference.data import load_split
from adaptive_inference.decision import NodeDecision
from adaptive_inference.device import compute_options
from adaptive_inference.graph import Route, StageGraph, starts_alone
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.policies import TradeoffPolicy
from adaptive_inference.pretrained import transforms_of
from adaptive_inference.readoff import operating_points
from adaptive_inference.runtime import AdaptiveRuntime, slice_inputs
from adaptive_inference.segments import Segment
from adaptive_inference.study import Study

REFERENCE = "reference"
STREAMS_PER_PASS = 4
"""Rebatched passes per batch-1 pass: a stream lasts a tenth of a batch-1 pass, and its time is
the median of more passes (a pass's speedup varied by about 9% from pass to pass on 2 CPU cores,
docs/runtime.md)."""
INSTRUMENTED = 500
"""Examples of the instrumented batch-1 pass (where the time goes; the stream's is whole)."""
MODES = {"batch1": "latency", "batched": "throughput"}
"""Each measured mode and the timing setting whose costs predict it."""


@dataclass(frozen=True)
class RuntimeSettings:
    """How the measurement runs: the config's ``runtime`` section, its batch size resolved
    (null: the throughput batch of ``timing``) and the operating points' confidence."""

    method: str
    metric: str
    loss_levels: tuple[float, ...]
    confidence: float
    max_examples: int | None
    repeats: int
    warmup: int
    block_size: int
    batch_size: int

    @classmethod
    def from_config(
        cls, runtime: Mapping[str, Any], *, throughput_batch: int, confidence: float
    ) -> RuntimeSettings:
        return cls(
            method=runtime["method"],
            metric=runtime["metric"],
            loss_levels=tuple(runtime["loss_levels"]),
            confidence=float(confidence),
            max_examples=runtime["max_examples"],
            repeats=int(runtime["repeats"]),
            warmup=int(runtime["warmup"]),
            block_size=int(runtime["block_size"]),
            batch_size=int(runtime["batch_size"] or throughput_batch),
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
# Predictions
# -------------------------------------------------------------------------------------------


def route_of(graph: StageGraph, policy: TradeoffPolicy | None, rows: np.ndarray) -> Route:
    """The simulated route of ``policy`` (None: the reference alone) on ``rows``."""
    if policy is None:
        return single_route(graph, graph.reference, graph.example_ids[rows])
    return policy.route_rows(graph, rows)


def segment_counts(graph: StageGraph, route: Route, start: int) -> dict[tuple[Key, int], int]:
    """How many examples each segment of a route runs on, keyed ``(component, node)``: the
    segment from the input into the start node (the node alone where the route is,
    :func:`~adaptive_inference.graph.starts_alone`) and the segment of every edge taken (equal
    computations into a node, such as jumps from two nodes, are one segment)."""
    counts: dict[tuple[Key, int], int] = {}

    def add(key: Key, node: int, count: int) -> None:
        if count:
            counts[(key, node)] = counts.get((key, node), 0) + count

    entry = (
        graph.single_component(start) if starts_alone(route, start) else graph.segment(None, start)
    )
    add(entry, start, int(route.visited[:, start].sum()))
    for (a, b), count in edge_counts(graph, route).items():
        add(graph.segment(a, b), b, count)
    return counts


def edge_counts(graph: StageGraph, route: Route) -> dict[tuple[int, int], int]:
    """How many examples of a route go from node ``a`` on to node ``b``, for every edge some
    example takes."""
    visited = route.visited
    counts = {}
    for a in range(graph.num_nodes):
        for b in graph.successors[a]:
            taken = visited[:, a] & visited[:, b] & ~np.any(visited[:, a + 1 : b], axis=1)
            if taken.any():
                counts[(a, b)] = int(taken.sum())
    return counts


def predicted_batched_ms(
    graph: StageGraph, route: Route, start: int, costs: Costs, batch_size: int
) -> float:
    """The time (ms) of a route's examples run rebatched at ``batch_size``: a segment on ``c``
    examples makes ``c // batch_size`` full calls and one call on the rest; after each call,
    the node's decision (where its rule computes one; it gives the stopping examples' classes)
    or else the answer (where examples stop there) run on that call's examples; each priced at
    its size (:meth:`~adaptive_inference.costs.Costs.call_ms`); and the examples that go on are
    moved (:func:`predicted_moves_ms`)."""
    deciding = route.decided.any(axis=0)
    stopping = np.bincount(route.stop, minlength=graph.num_nodes) > 0
    counts = segment_counts(graph, route, start)
    total = 0.0
    for (key, node), count in counts.items():
        full, rest = divmod(count, batch_size)
        keys = [key]
        if deciding[node]:
            keys.append(graph.decision(node))
        elif stopping[node]:  # a decision's features hold the class (graph.pay_answers)
            keys.append(ANSWER)
        for part in keys:
            total += full * costs.call_ms(part, batch_size)
            if rest:
                total += costs.call_ms(part, rest)
    return total + _moves_ms(graph, route, counts, costs, batch_size)


def predicted_moves_ms(
    graph: StageGraph, route: Route, start: int, costs: Costs, batch_size: int
) -> float:
    """The time (ms) a route's examples run rebatched at ``batch_size`` spend being moved on: the
    examples that go on from a node are gathered and regrouped in the next queue after its
    calls, an equal share after each (one example at least)."""
    return _moves_ms(graph, route, segment_counts(graph, route, start), costs, batch_size)


def _moves_ms(
    graph: StageGraph,
    route: Route,
    counts: dict[tuple[Key, int], int],
    costs: Costs,
    batch_size: int,
) -> float:
    """:func:`predicted_moves_ms` from the route's :func:`segment_counts`."""
    calls_at = np.zeros(graph.num_nodes, dtype=np.int64)
    for (_, node), count in counts.items():
        calls_at[node] += -(-count // batch_size)
    total = 0.0
    for (a, b), moved in edge_counts(graph, route).items():
        moves = min(calls_at[a], moved)
        total += moves * costs.call_ms(graph.move_component(a, b), moved / moves)
    return total


def _predicted_moves(
    study: Study, policy: TradeoffPolicy | None, route: Route, mode: str, settings: RuntimeSettings
) -> float:
    """Per example, the moves among a point's predicted time (none at batch 1)."""
    if mode == "batch1":
        return 0.0
    graph, costs = study.graphs[MODES[mode]], study.costs[MODES[mode]]
    start = graph.reference if policy is None else policy.start_
    moves = predicted_moves_ms(graph, route, start, costs, settings.batch_size)
    return moves / len(route.stop)


def predicted_ms(
    study: Study, policy: TradeoffPolicy | None, rows: np.ndarray, mode: str, batch_size: int
) -> tuple[float, float]:
    """The predicted time per example (ms) of a policy (None: the reference alone) and of the
    reference alone on graph ``rows``, in ``mode`` (:data:`MODES`), priced by ``study``'s costs
    of that mode's setting: batch 1 the route's mean cost, batched
    :func:`predicted_batched_ms` at ``batch_size``."""
    priced = study.graphs[MODES[mode]]
    route = route_of(priced, policy, rows)
    if mode == "batch1":
        return float(route.cost_ms.mean()), priced.reference_ms
    costs, n, ref = study.costs[MODES[mode]], len(rows), priced.reference
    start = ref if policy is None else policy.start_
    return (
        predicted_batched_ms(priced, route, start, costs, batch_size) / n,
        predicted_batched_ms(priced, route_of(priced, None, rows), ref, costs, batch_size) / n,
    )


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
    systems: Mapping[str, AdaptiveRuntime],
    xs: Sequence[Mapping[str, torch.Tensor]],
    block_size: int,
    progress: tqdm | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """One batch-1 pass over examples ``xs``: per-example latency (ns) and answers (stop node,
    class) of every system, in blocks of ``block_size`` examples, the order rotating per block."""
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


def stream_pass(
    systems: Mapping[str, AdaptiveRuntime],
    x: Mapping[str, torch.Tensor],
    batch_size: int,
    order: Sequence[str],
) -> tuple[dict[str, int], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every system classifies the whole stream ``x`` rebatched, in ``order``: its time (ns,
    the answers read back to the host included) and its answers."""
    times, answers = {}, {}
    clock = time.perf_counter_ns
    for name in order:
        begin = clock()
        stop, cls = (t.cpu() for t in systems[name].run_stream(x, batch_size))
        times[name] = clock() - begin
        answers[name] = (stop.numpy(), cls.numpy())
    return times, answers


class Stopwatch:
    """Every timed call of an instrumented run: ``(kind, name, examples, ns)`` of each segment
    call and each decision computed. On CUDA every timed call is bracketed by
    synchronisations."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.records: list[tuple[str, str, int, int]] = []

    def now(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter_ns()

    def segment(self, segment: Segment) -> _TimedSegment:
        return _TimedSegment(segment, self)

    def decision(self, decision: NodeDecision, name: str) -> NodeDecision | _TimedDecision:
        return _TimedDecision(decision, name, self) if decision.computes else decision

    def calls(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=["kind", "name", "examples", "ns"])


class _TimedSegment:
    """A segment that records each call's batch size and time in a :class:`Stopwatch`."""

    __slots__ = ("segment", "clock", "from_input", "network", "node", "key", "name")

    def __init__(self, segment: Segment, clock: Stopwatch) -> None:
        self.segment, self.clock = segment, clock
        self.from_input, self.network = segment.from_input, segment.network
        self.node, self.key, self.name = segment.node, segment.key, segment.name

    def __call__(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.clock.now()
        out = self.segment(h)
        self.clock.records.append(("segment", self.name, h.shape[0], self.clock.now() - start))
        return out


class _TimedDecision:
    """A node decision that records each decision it computes in a :class:`Stopwatch`."""

    def __init__(self, decision: NodeDecision, name: str, clock: Stopwatch) -> None:
        self.decision, self.name, self.clock = decision, name, clock
        self.actions, self.constant = decision.actions, decision.constant
        self.computes = decision.computes

    def _timed(self, method, logits, *args):
        start = self.clock.now()
        out = method(logits, *args)
        self.clock.records.append(
            ("decision", self.name, logits.shape[0], self.clock.now() - start)
        )
        return out

    def one(self, logits, memo):
        return self._timed(self.decision.one, logits, memo)

    def many(self, logits, memo, rows):
        return self._timed(self.decision.many, logits, memo, rows)


def instrumented_pass(
    system: AdaptiveRuntime,
    xs: Sequence[Mapping[str, torch.Tensor]] | None,
    stream: Mapping[str, torch.Tensor] | None,
    batch_size: int,
) -> tuple[float, pd.DataFrame]:
    """One instrumented pass, batch 1 over ``xs`` or rebatched over ``stream``: its total time
    (ns) and every timed call (:meth:`Stopwatch.calls`)."""
    clock = Stopwatch(system.device)
    twin = system.wrapped(clock.segment, clock.decision)
    begin = time.perf_counter_ns()
    if stream is not None:
        twin.run_stream(stream, batch_size)[0].cpu()
    else:
        for x in xs:
            twin.run_one(x)
    return time.perf_counter_ns() - begin, clock.calls()


# -------------------------------------------------------------------------------------------
# The measurement
# -------------------------------------------------------------------------------------------


def chosen_points(study: Study, settings: RuntimeSettings) -> pd.DataFrame:
    """The operating points that ``settings`` measure (chosen on validation)."""
    return operating_points(
        study.points,
        settings.loss_levels,
        metric=settings.metric,
        method=settings.method,
        confidence=settings.confidence,
    )


def runtimes(
    study: Study,
    networks: Mapping[str, MultiExitNetwork],
    point_ids: Sequence[int],
    setting: str,
    device: torch.device,
    compute: Mapping[str, Any],
) -> dict[str, AdaptiveRuntime]:
    """The reference alone (:data:`REFERENCE`) and the runtime of each point (by its id as a
    string) on ``setting``'s graph."""
    graph = study.graphs[setting]
    options = dict(device=device, **compute_options(compute))
    systems = {REFERENCE: AdaptiveRuntime.reference_alone(graph, networks, **options)}
    for point_id in point_ids:
        systems[str(point_id)] = AdaptiveRuntime(
            graph, study.policies[point_id], networks, **options
        )
    return systems


def measure_scheme(
    study: Study,
    networks: Mapping[str, MultiExitNetwork],
    images: torch.Tensor | Mapping[str, torch.Tensor],
    example_ids: np.ndarray,
    *,
    settings: RuntimeSettings,
    setting: str,
    device: torch.device | str,
    compute: Mapping[str, Any],
    progress: bool = True,
) -> Measurement:
    """Measure the operating points of one scheme against its reference (module doc).

    Args:
        study: the scheme's tables, costs (both settings), policies and points.
        networks: the scheme's networks by name.
        images: the images of ``example_ids``, in the same order: one tensor for every network,
            or one per network (:meth:`~adaptive_inference.runtime.AdaptiveRuntime.inputs`).
        example_ids: test examples (ids of the graph).
        settings: which points, repeats, warm-up, block and batch sizes.
        setting: the timing setting the policies were trained against (their graph).
        compute: the config's ``compute`` section (dtype, memory format).
    """
    device = torch.device(device)
    graph = study.graphs[setting]
    chosen = chosen_points(study, settings)
    point_ids = [int(p) for p in chosen["point_id"].dropna().unique()]
    systems = runtimes(study, networks, point_ids, setting, device, compute)
    x = systems[REFERENCE].inputs(images)
    n = len(example_ids)
    xs = [slice_inputs(x, i, i + 1) for i in range(n)]
    not_captured = capture_reason(device, bool(compute["cuda_graphs"]))
    streams_of = systems
    if not_captured is None:  # a CUDA graph per segment and batch size in use
        streams_of = {
            k: captured(s, xs[0], capture_sizes(settings.batch_size), keep_outputs=True)
            for k, s in systems.items()
        }
        systems = {k: captured(s, xs[0], [1], keep_outputs=False) for k, s in systems.items()}
    with torch.inference_mode(), _no_gc():
        for system in systems.values():
            system.warm_up(xs[0])
            latency_pass({"_": system}, xs[: settings.warmup], settings.block_size)
        for system in streams_of.values():
            system.run_stream(slice_inputs(x, 0, settings.batch_size), settings.batch_size)
        latency, streams = [], []
        names = list(systems)
        with tqdm(
            total=settings.repeats * n, desc="runtime", mininterval=5.0, disable=not progress
        ) as bar:
            for order in _rotations(names, settings.repeats):
                latency.append(latency_pass(systems, xs, settings.block_size, bar))
                for _ in range(STREAMS_PER_PASS):
                    streams.append(stream_pass(streams_of, x, settings.batch_size, order))
        instrumented = {
            name: {
                "batch1": instrumented_pass(system, xs[:INSTRUMENTED], None, 1),
                "batched": instrumented_pass(streams_of[name], None, x, settings.batch_size),
            }
            for name, system in systems.items()
        }
    rows = graph.rows(example_ids)
    speedups, segments, examples = [], [], []
    for label, row in _labels(chosen):
        name = REFERENCE if row is None else str(int(row["point_id"]))
        policy = None if row is None else study.policies[int(row["point_id"])]
        route = route_of(graph, policy, rows)
        for mode, cost_setting in MODES.items():
            priced = study.graphs[cost_setting]
            predicted, predicted_ref = predicted_ms(study, policy, rows, mode, settings.batch_size)
            if mode == "batch1":
                measured = float(np.median([t[name] for t, _ in latency], axis=0).mean()) / 1e6
                measured_ref = (
                    float(np.median([t[REFERENCE] for t, _ in latency], axis=0).mean()) / 1e6
                )
                per_pass = [t[REFERENCE].sum() / t[name].sum() for t, _ in latency]
                speedup = measured_ref / measured
                answers = latency[0][1][name]
            else:
                measured = float(np.median([t[name] for t, _ in streams])) / 1e6 / n
                measured_ref = float(np.median([t[REFERENCE] for t, _ in streams])) / 1e6 / n
                per_pass = [t[REFERENCE] / t[name] for t, _ in streams]
                speedup = float(np.median(per_pass))  # paired: see the module's doc
                answers = streams[0][1][name]
            total_ns, calls = instrumented[name][mode]
            timed = min(n, INSTRUMENTED) if mode == "batch1" else n
            speedups.append(
                {
                    "scheme": study.name,
                    "mode": mode,
                    "label": label,
                    **_point(row, settings.metric),
                    "examples": n,
                    "batch_size": 1 if mode == "batch1" else settings.batch_size,
                    "predicted_ms": predicted,
                    "predicted_ref_ms": predicted_ref,
                    "measured_ms": measured,
                    "measured_ref_ms": measured_ref,
                    "measured_speedup": speedup,
                    "measured_speedup_min": float(min(per_pass)),
                    "measured_speedup_max": float(max(per_pass)),
                    "predicted_decision_ms": float((route.decided @ priced.decision_ms).mean()),
                    "predicted_move_ms": _predicted_moves(study, policy, route, mode, settings),
                    **_breakdown(total_ns, calls, timed),
                    **_agreement(graph, policy, route, answers),
                }
            )
            segments.append(
                _segments(systems[name], priced, calls).assign(
                    scheme=study.name, mode=mode, label=label
                )
            )
        latency_ns = [t[name] for t, _ in latency]
        examples.append(
            _examples(graph, route, latency, name, latency_ns, streams).assign(
                scheme=study.name, label=label
            )
        )
    speedups = pd.DataFrame(speedups)
    speedups["predicted_speedup"] = speedups["predicted_ref_ms"] / speedups["predicted_ms"]
    speedups["ratio"] = speedups["measured_speedup"] / speedups["predicted_speedup"]
    speedups["throughput"] = 1e3 / speedups["measured_ms"]
    speedups["reference_throughput"] = 1e3 / speedups["measured_ref_ms"]
    keys = ["scheme", "mode", "label"]
    segments = pd.concat(segments, ignore_index=True)
    examples = pd.concat(examples, ignore_index=True)
    summary = {
        "scheme": study.name,
        "setting": setting,
        "examples": n,
        "settings": asdict(settings),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compute": dict(compute),
        "point_ids": point_ids,
        "cuda_graphs": "captured" if not_captured is None else f"not captured: {not_captured}",
    }
    return Measurement(
        speedups,
        segments[keys + [c for c in segments.columns if c not in keys]],
        examples[["scheme", "label"] + [c for c in examples.columns if c not in keys]],
        summary,
    )


def _labels(chosen: pd.DataFrame) -> list[tuple[str, pd.Series | None]]:
    """The rows of the tables: the reference alone, then each loss level that has a point."""
    labels: list[tuple[str, pd.Series | None]] = [(REFERENCE, None)]
    for _, row in chosen.iterrows():
        if pd.notna(row["point_id"]):
            labels.append((f"≤ {row['max_loss']:g} pts", row))
    return labels


def _point(row: pd.Series | None, metric: str) -> dict[str, Any]:
    """The operating point as the sweep measured it on the test split."""
    if row is None:
        return {
            "max_loss": np.nan,
            "point_id": np.nan,
            "budget": np.nan,
            f"{metric}_loss": 0.0,
            "sweep_speedup": 1.0,
        }
    return {
        "max_loss": row["max_loss"],
        "point_id": int(row["point_id"]),
        "budget": row["budget"],
        f"{metric}_loss": row[f"{metric}_loss"],
        "sweep_speedup": row["speedup"],
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


def _segments(system: AdaptiveRuntime, graph: StageGraph, calls: pd.DataFrame) -> pd.DataFrame:
    """Per segment and decision node of an instrumented pass: calls, examples and time per
    example in the runtime (``measured_ms``) beside its cost per example in the joint table at
    the mode's setting (``predicted_ms``)."""
    cost = {("segment", s.name): graph.costs.per_example(s.key) for _, _, s in system.segments()}
    cost.update(
        {
            ("decision", name): float(graph.decision_ms[node])
            for node, name in enumerate(graph.names)
        }
    )
    table = (
        calls.groupby(["kind", "name"], sort=False)
        .agg(calls=("ns", "size"), examples=("examples", "sum"), ns=("ns", "sum"))
        .reset_index()
    )
    table["measured_ms"] = table["ns"] / table["examples"] / 1e6
    table["predicted_ms"] = [cost[(k, name)] for k, name in zip(table["kind"], table["name"])]
    return table.drop(columns="ns")


def _examples(
    graph: StageGraph,
    route: Route,
    latency,
    name: str,
    latency_ns,
    streams,
) -> pd.DataFrame:
    """One row per example: the simulated answer, each mode's, the predicted latency and the
    measured one (median over the passes, ms)."""
    names = np.asarray(graph.names, dtype=object)
    table = {
        "example_id": graph.example_ids[route.rows],
        "simulated_stop": names[route.stop],
        "simulated_class": graph.predictions[route.stop, route.rows],
    }
    for mode, answers in (("batch1", latency[0][1][name]), ("batched", streams[0][1][name])):
        table[f"{mode}_stop"] = names[answers[0]]
        table[f"{mode}_class"] = answers[1]
    table["predicted_ms"] = route.cost_ms
    table["measured_ms"] = np.median(latency_ns, axis=0) / 1e6
    return pd.DataFrame(table)


def _agreement(
    graph: StageGraph,
    policy: TradeoffPolicy | None,
    route: Route,
    answers: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """How many examples got the simulated answer (stop node and class), and for those that
    did not, their ids and the nearest decision boundary on their simulated paths."""
    rows = route.rows
    same = (answers[0] == route.stop) & (answers[1] == graph.predictions[route.stop, rows])
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


# -------------------------------------------------------------------------------------------
# Images
# -------------------------------------------------------------------------------------------


def network_images(
    data: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any]], ids: Sequence[int]
) -> dict[str, torch.Tensor]:
    """The images of examples ``ids`` of the evaluation set as each network takes them, by
    network: a pre-trained network through its weights' transforms (as extraction reads them),
    the others as the dataset gives them; read once per distinct preprocessing."""
    read: dict[str, torch.Tensor] = {}
    images = {}
    for name, spec in specs.items():
        transform = None
        if spec["arch"] == "torchvision":
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
