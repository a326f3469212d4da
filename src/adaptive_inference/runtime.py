"""Adaptive inference for real: a fitted policy runs the study's networks on input images.

The policies are learned and evaluated on tables (:mod:`adaptive_inference.policies`): every
node's prediction and features were extracted beforehand, and a route only *adds up* the costs
the joint timing job measured. :class:`AdaptiveRuntime` runs the same graph on images: it
evaluates a segment, computes the policy's decision from the logits it produced
(:class:`~adaptive_inference.decision.NodeDecision`, the very code whose cost was timed), and
either answers or runs the segment of the edge the decision chose.

**Graph to computation.** A node is an exit of a :class:`~adaptive_inference.models.
MultiExitNetwork`. The computation that gives node ``b``'s logits after node ``a``'s is a
:class:`Segment`, keyed like its cost (:meth:`~adaptive_inference.graph.GraphStructure.segment`):
inside one network the stages after ``a``'s exit up to ``b``'s, continuing from ``a``'s
activation, then ``b``'s head; into another network (or at the start of a route) that network
from its input. Equal computations are one object, so examples arriving by equal jumps run
together.

**Two modes.** :meth:`AdaptiveRuntime.run_one`: one example at a time (batch-1 latency).
:meth:`AdaptiveRuntime.run_stream`: a stream of examples, **rebatched** (docs/method.md,
"Batched runtime"): every segment has a queue; input batches of ``batch_size`` enter the start
segment's queue, and a segment runs when its queue holds a full batch, on exactly
``batch_size`` examples; the examples that go on wait in the next segment's queue and are
regrouped with later ones into full batches; once the input is exhausted the queues are
flushed in topological order (one partial call per segment at most). So every stage runs at the
batch size it was priced at, and the prediction can count the calls exactly
(:func:`~adaptive_inference.runtime_measure.predicted_batched_ms`). Answers come back in input
order.

**Exactness.** The simulated routes read features extracted in batches; the runtime computes
them from its own logits. Both are float32 and agree to rounding (~1e-7), so an answer can only
differ where a score lies within that of a decision boundary, or two classes within that of a
tie (the measurements count such examples).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from adaptive_inference.decision import STOP, NodeDecision, PathMemo
from adaptive_inference.device import memory_format
from adaptive_inference.graph import StageGraph
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.segments import Plan, Segment

if TYPE_CHECKING:  # scikit-learn (1.2 s to import) stays out of the timing job (rule time_costs)
    from adaptive_inference.policies import TradeoffPolicy


@dataclass
class Answers:
    """Where each example stopped (its node in the graph) and the class it was given."""

    nodes: np.ndarray
    classes: np.ndarray


class _Queue:
    """The examples waiting for one segment: their rows (positions in the stream) and what the
    segment reads (activations, or the network's input)."""

    __slots__ = ("rows", "sources", "count")

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []
        self.sources: list[torch.Tensor] = []
        self.count = 0

    def push(self, rows: torch.Tensor, source: torch.Tensor) -> None:
        self.rows.append(rows)
        self.sources.append(source)
        self.count += len(rows)

    def pop(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``size`` waiting examples (all of them if fewer wait)."""
        rows, sources = regroup(self.rows), regroup(self.sources)
        if size >= len(rows):
            self.rows, self.sources, self.count = [], [], 0
            return rows, sources
        self.rows, self.sources = [rows[size:]], [sources[size:]]
        self.count = len(rows) - size
        return rows[:size], sources[:size]


class AdaptiveRuntime:
    """A fitted policy run for real on a study's networks.

    Args:
        graph: the scheme's graph (its structure, feature layout and reference; the per-example
            tables are not used).
        policy: a policy fitted on ``graph`` (``graph.signature()`` must match).
        networks: the networks of the graph by name (put in eval mode and moved to ``device``,
            ``dtype`` and the memory format, in place).
        device: where the networks and decisions run.
        dtype, channels_last: how the networks run, as extraction and timing ran them
            (:func:`~adaptive_inference.device.compute_options`).

    :meth:`reference_alone` builds the same engine for the graph's reference network alone,
    so that both are timed through the same code.
    """

    def __init__(
        self,
        graph: StageGraph,
        policy: TradeoffPolicy,
        networks: Mapping[str, MultiExitNetwork],
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        channels_last: bool,
    ) -> None:
        if getattr(policy, "graph_signature_", None) != graph.signature():
            raise ValueError("the policy was not fitted on this graph (signatures differ)")
        device = torch.device(device)
        deciding = [
            n
            for n, rule in enumerate(policy.rules_)
            if rule is not None and rule.constant_action is None
        ]
        readers = {m for n in deciding for m in graph.feature_nodes(n)[1:]}
        topk = sum(name.endswith("_prob") for name in graph.feature_names)
        decisions = [
            NodeDecision.of_rule(
                rule,
                node,
                topk=topk,
                keep=node in readers,
                reads=graph.feature_nodes(node)[1:],
                device=device,
            )
            for node, rule in enumerate(policy.rules_)
        ]
        self._setup(
            graph, networks, device, dtype, channels_last, start=policy.start_, decisions=decisions
        )
        self.policy = policy

    @classmethod
    def reference_alone(
        cls,
        graph: StageGraph,
        networks: Mapping[str, MultiExitNetwork],
        *,
        device: torch.device | str,
        dtype: torch.dtype,
        channels_last: bool,
    ) -> AdaptiveRuntime:
        """The graph's reference network alone: from its input to its answer."""
        runtime = cls.__new__(cls)
        decisions = [
            NodeDecision(node, [STOP], rule=None, constant=STOP, topk=0)
            for node in range(graph.num_nodes)
        ]
        runtime._setup(
            graph,
            networks,
            torch.device(device),
            dtype,
            channels_last,
            start=graph.reference,
            decisions=decisions,
        )
        runtime.policy = None
        return runtime

    def _setup(
        self,
        graph: StageGraph,
        networks: Mapping[str, MultiExitNetwork],
        device: torch.device,
        dtype: torch.dtype,
        channels_last: bool,
        *,
        start: int,
        decisions: list[NodeDecision],
    ) -> None:
        plan = Plan(graph, networks)
        self.memory_format = memory_format(channels_last)
        for net in set(graph.networks):
            networks[net].eval().to(device=device, dtype=dtype, memory_format=self.memory_format)
        self.graph = graph
        self.networks = {net: networks[net] for net in dict.fromkeys(graph.networks)}
        self.device = device
        self.dtype = dtype
        self.start = start
        self._decisions = decisions
        self._entry = plan.segment(None, start, alone=decisions[start].constant == STOP)
        self._edges = [
            {b: plan.segment(a, b) for b in graph.successors[a]} for a in range(graph.num_nodes)
        ]
        self._paths = any(d.keep for d in decisions)

    def inputs(self, images: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images ``(N, C, H, W)`` as each network of the graph takes them (device, dtype, memory
        format), by network name: one tensor for every network, or, where the networks
        preprocess differently (each pre-trained network with its weights' transforms), a
        mapping of each network's preprocessed images. Networks given the same tensor share the
        prepared one."""
        given = images if isinstance(images, Mapping) else dict.fromkeys(self.networks, images)
        prepared: dict[int, torch.Tensor] = {}
        for tensor in given.values():
            if id(tensor) not in prepared:
                moved = tensor.to(self.device, self.dtype)
                prepared[id(tensor)] = moved.contiguous(memory_format=self.memory_format)
        return {net: prepared[id(given[net])] for net in self.networks}

    # --- one example at a time --------------------------------------------------------------

    def run_one(self, x: Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """Route one example, ``x`` its :meth:`inputs` (``(1, C, H, W)`` per network): its stop
        node and class. The caller holds :func:`torch.inference_mode` (the lean path that the
        measurements time; :meth:`classify_one` does both)."""
        node = self.start
        h, logits = self._entry(x[self._entry.network])
        memo = PathMemo() if self._paths else None
        decisions, edges = self._decisions, self._edges
        while True:
            action, top1 = decisions[node].one(logits, memo)
            if action == STOP:
                return node, int(logits.argmax(1)) if top1 is None else top1
            segment = edges[node][action]
            h, logits = segment(x[segment.network] if segment.from_input else h)
            node = action

    def classify_one(self, image: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """The stop node and class of one image ``(C, H, W)`` (or one per network)."""
        batch = (
            {net: one.unsqueeze(0) for net, one in image.items()}
            if isinstance(image, Mapping)
            else image.unsqueeze(0)
        )
        with torch.inference_mode():
            return self.run_one(self.inputs(batch))

    # --- a stream, rebatched ------------------------------------------------------------------

    def run_stream(
        self, x: Mapping[str, torch.Tensor], batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Route every example of ``x`` (its :meth:`inputs`) with the segments rebatched (module
        doc): the stop node and class of every example, in input order, on the device. The
        caller holds inference mode. One host synchronisation per segment call where a policy
        decides (the count of each action)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        first = x[self._entry.network]
        n = first.shape[0]
        stop = torch.empty(n, dtype=torch.int64, device=first.device)
        classes = torch.empty(n, dtype=torch.int64, device=first.device)
        memo = PathMemo(n) if self._paths else None
        queues: dict[Segment, _Queue] = {}
        every = torch.arange(n, device=first.device)
        for start in range(0, n, batch_size):
            self._enqueue(
                queues,
                self._entry,
                every[start : start + batch_size],
                first[start : start + batch_size],
            )
            self._pump(queues, x, batch_size, memo, stop, classes, flush=False)
        self._pump(queues, x, batch_size, memo, stop, classes, flush=True)
        return stop, classes

    @staticmethod
    def _enqueue(queues, segment, rows: torch.Tensor, source: torch.Tensor) -> None:
        queues.setdefault(segment, _Queue()).push(rows, source)

    def _pump(self, queues, x, batch_size, memo, stop, classes, *, flush: bool) -> None:
        """Run segments whose queue holds a full batch (``flush``: any example), the one of the
        earliest node first, until none can run."""
        while True:
            ready = [s for s, q in queues.items() if q.count >= batch_size or (flush and q.count)]
            if not ready:
                return
            segment = min(ready, key=lambda s: s.node)
            rows, source = queues[segment].pop(batch_size)
            h, logits = segment(source)
            node = segment.node
            decision = self._decisions[node]
            positions, top1 = decision.many(logits, memo, rows)
            for action, taken, mask in split_by_action(decision, positions, rows):
                if action == STOP:
                    stop[taken] = node
                    classes[taken] = stop_classes(logits, top1, mask)
                    continue
                nxt = self._edges[node][action]
                if nxt.from_input:
                    onward = gather_rows(x[nxt.network], taken)
                else:
                    onward = h if mask is None else gather_rows(h, mask)
                self._enqueue(queues, nxt, taken, onward)

    def classify(
        self, images: torch.Tensor | Mapping[str, torch.Tensor], batch_size: int = 256
    ) -> Answers:
        """Stop nodes and classes of ``images`` ``(N, C, H, W)`` (or one such tensor per
        network, see :meth:`inputs`), rebatched ``batch_size`` at a time."""
        with torch.inference_mode():
            stop, answer = self.run_stream(self.inputs(images), batch_size)
        return Answers(stop.cpu().numpy(), answer.cpu().numpy())

    # --- its parts ------------------------------------------------------------------------------

    def wrapped(
        self,
        segment: Callable[[Segment], Segment],
        decision: Callable[[NodeDecision, str], NodeDecision],
    ) -> AdaptiveRuntime:
        """A twin of this runtime whose segments and decisions are ``segment(s)`` and
        ``decision(d, node name)`` (each distinct segment wrapped once): how the measurements
        instrument a run without a branch in the engine."""
        twin = copy.copy(self)
        wrapped: dict[Segment, Segment] = {}

        def wrap(s: Segment) -> Segment:
            if s not in wrapped:
                wrapped[s] = segment(s)
            return wrapped[s]

        twin._entry = wrap(self._entry)
        twin._edges = [{b: wrap(s) for b, s in edges.items()} for edges in self._edges]
        twin._decisions = [decision(d, name) for d, name in zip(self._decisions, self.graph.names)]
        return twin

    def warm_up(self, x: Mapping[str, torch.Tensor]) -> None:
        """Run every segment of the runtime once on :meth:`inputs` ``x`` (inference mode)."""
        for _, _, segment in self.segments():
            segment.warm_up(x[segment.network])

    def segments(self) -> list[tuple[int | None, int, Segment]]:
        """``(source, node, segment)`` of the start (source None) and of every edge."""
        edges = [(a, b, s) for a, out in enumerate(self._edges) for b, s in out.items()]
        return [(None, self.start, self._entry), *edges]


def slice_inputs(x: Mapping[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Rows ``start:stop`` of per-network inputs (networks sharing a tensor share the slice)."""
    sliced: dict[int, torch.Tensor] = {}
    for tensor in x.values():
        sliced.setdefault(id(tensor), tensor[start:stop])
    return {net: sliced[id(tensor)] for net, tensor in x.items()}


def gather_rows(tensor: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """The rows of ``tensor`` that go on (``which``: their positions, or a mask): what a
    rebatched run copies for the examples it moves to another segment's queue (priced per
    example moved, :mod:`adaptive_inference.cost_timing`)."""
    return tensor[which]


def regroup(parts: list[torch.Tensor]) -> torch.Tensor:
    """The examples a queue holds, from the calls that sent them, as one batch (a copy where
    they came from more than one call)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def stop_classes(
    logits: torch.Tensor, top1: torch.Tensor | None, mask: torch.Tensor | None
) -> torch.Tensor:
    """The classes of the rows that stop at a node (``mask``; None: every row): the top-1 its
    decision computed, else the argmax of the logits (the answer, priced where no decision
    was computed, :data:`~adaptive_inference.costs.ANSWER`)."""
    if top1 is None:
        return (logits if mask is None else logits[mask]).argmax(1)
    return top1 if mask is None else top1[mask]


def split_by_action(
    decision: NodeDecision, positions: torch.Tensor | None, rows: torch.Tensor
) -> list[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """The examples ``rows`` at a node by action: ``(action, rows, mask)``, the mask (over
    ``rows``) None where every example takes the action. One host synchronisation (the count
    of each action) where the node decided."""
    if positions is None:
        return [(decision.constant, rows, None)]
    counts = torch.bincount(positions, minlength=len(decision.actions)).tolist()
    groups = []
    for index, (action, count) in enumerate(zip(decision.actions, counts)):
        if count == len(rows):
            groups.append((action, rows, None))
        elif count:
            mask = positions == index
            groups.append((action, rows[mask], mask))
    return groups
