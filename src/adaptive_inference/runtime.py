"""Adaptive inference for real: a fitted policy runs the study's networks on input images.

The policies are learned and evaluated on tables (:mod:`adaptive_inference.policies`): every
node's prediction and confidence features were extracted beforehand, and a route only *adds up*
the costs of the timing tables. :class:`AdaptiveRuntime` runs the same graph on images: it
evaluates a stage, computes the policy's features and decision from the logits it produced, and
either answers or runs the computation of the edge the decision chose, one example at a time
(:meth:`~AdaptiveRuntime.run_one`, batch-1 latency) or a batch at a time
(:meth:`~AdaptiveRuntime.run_batch`: after each node the examples that stop leave the batch, the
others go on as smaller batches; answers come back in input order).

**Graph to computation.** A node is an exit of a :class:`~adaptive_inference.models.
MultiExitNetwork` (``graph.networks[n]``, ``graph.exit_names[n]``). An edge ``a -> b`` pays for
what :meth:`~adaptive_inference.graph.StageGraph.transition_ms` charges: inside one network, the
stages after ``a``'s exit up to ``b``'s, continuing from ``a``'s activation, then ``b``'s head;
into another network, that network from the input up to ``b``'s exit, then its head. Each such
piece of computation is a :class:`Segment`; the state carried along an example's path is the
activation of the last stage run (and the input, for jumps).

**Decisions.** A node's :class:`~adaptive_inference.policies.NodeRule` becomes a
:class:`DecisionRule` once: the standardisation is folded into float64 weights, so a decision
is the extraction's confidence features of the node's logits
(:func:`~adaptive_inference.decision.decision_features`, the same code as the extracted
tables), then the step scores (one ``addmm`` for a batch; for one example, a few multiply-adds
on the features read back to the host) and the first step whose score is positive takes its
action. No per-example call into scikit-learn. A constant rule computes nothing, as the
simulation charges nothing for it.
With ``path_features`` a policy also reads the features of the node's dominators, in the order
of :meth:`~adaptive_inference.graph.StageGraph.feature_nodes`; those are kept as the example
passes them (computed there even where that node's own rule is constant).

**Exactness.** The simulated routes read features extracted in batches; the runtime computes
them from its own logits, at batch 1 or in smaller batches. Both are float32 and agree to
rounding (~1e-7), so an answer can only differ where a score lies within that of a decision
boundary, or two classes within that of a tie (the measurements count such examples).

:meth:`AdaptiveRuntime.from_results` loads a fitted study from its ``results/`` folder.
"""

from __future__ import annotations

import copy
import operator
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from adaptive_inference.decision import decision_features
from adaptive_inference.graph import STOP, StageGraph, scheme_graph
from adaptive_inference.io import read_json
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.policies import NodeRule, TradeoffPolicy
from adaptive_inference.sweep import load_policies, speedup_at_loss


# -------------------------------------------------------------------------------------------
# Decisions as tensor operations
# -------------------------------------------------------------------------------------------


class DecisionRule:
    """A :class:`~adaptive_inference.policies.NodeRule` as tensor operations.

    The rule's step scores ``((x - mean) / scale) @ coef.T + intercept`` are computed as
    ``x @ weight + bias`` with ``weight = (coef / scale).T`` and
    ``bias = intercept - coef @ (mean / scale)``, in float64 like the rule itself (the two
    forms differ by float64 rounding, ~1e-16 of the scores). An example takes the action of
    the first step whose score is positive, else the last action.

    For one example (:meth:`decide_one`) the features are read back to the host, which reading
    the action needs anyway, and the few multiply-adds of each step run there in Python floats
    (float64): cheaper than the tensor operations they replace.
    """

    def __init__(self, rule: NodeRule, device: torch.device | str = "cpu") -> None:
        weight = (rule.coef / rule.scale).T
        bias = rule.intercept - rule.coef @ (rule.mean / rule.scale)
        self.weight = torch.as_tensor(weight, dtype=torch.float64, device=device)
        self.bias = torch.as_tensor(bias, dtype=torch.float64, device=device)
        self.actions = [int(a) for a in rule.actions]
        self._steps = list(zip(self.actions, weight.T.tolist(), bias.tolist()))
        self._default = torch.ones(1, 1, dtype=torch.bool, device=device)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """``(examples, steps)`` float64 scores of raw features (rows)."""
        return torch.addmm(self.bias, features.double(), self.weight)

    def decide_one(self, features: torch.Tensor) -> int:
        """The action for one example's features ``(1, F)`` (one host synchronisation)."""
        x = features[0].tolist()
        for action, weights, bias in self._steps:
            if sum(map(operator.mul, weights, x), bias) > 0:
                return action
        return self.actions[-1]

    def decide(self, features: torch.Tensor) -> torch.Tensor:
        """The position (in :attr:`actions`) of each row's action, on the features' device."""
        take = self.scores(features) > 0
        take = torch.cat([take, self._default.expand(len(take), 1)], dim=1)
        return take.to(torch.uint8).argmax(dim=1)  # the first step that takes its action


class _PathFeatures:
    """The features of the nodes an example (or each example of a batch) passed, for policies
    that read their dominators' features. At batch 1 ``rows`` is None."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: dict[int, torch.Tensor] = {}

    def put(self, node: int, features: torch.Tensor, rows: torch.Tensor | None) -> None:
        if rows is None:
            self.values[node] = features
        else:
            full = features.new_empty((self.size, features.shape[1]))
            full[rows] = features
            self.values[node] = full

    def get(self, node: int, rows: torch.Tensor | None) -> torch.Tensor:
        return self.values[node] if rows is None else self.values[node][rows]


class NodeDecision:
    """What the runtime does at one node after its logits are known.

    Args:
        node: the node's index in the graph.
        actions: the node's actions (``STOP`` or successors), in the rule's order.
        rule: the rule as tensor operations, or None where the action is ``constant``.
        constant: the action of a constant rule (``STOP`` at terminal nodes).
        topk: how many sorted probabilities the features hold.
        keep: compute and keep this node's features for later policies (path features).
        reads: the dominators whose kept features follow the node's own.
    """

    def __init__(
        self,
        node: int,
        actions: Sequence[int],
        *,
        rule: DecisionRule | None,
        constant: int | None,
        topk: int,
        keep: bool = False,
        reads: Sequence[int] = (),
    ) -> None:
        if (rule is None) == (constant is None):
            raise ValueError("a node decision has a rule or a constant action, not both")
        self.node = node
        self.actions = list(actions)
        self.rule = rule
        self.constant = constant
        self.topk = topk
        self.keep = keep
        self.reads = tuple(reads)
        self.computes = rule is not None or keep

    def _features(
        self, logits: torch.Tensor, memo: _PathFeatures | None, rows: torch.Tensor | None
    ) -> torch.Tensor:
        own = decision_features(logits, self.topk)
        if self.keep:
            memo.put(self.node, own, rows)
        if not self.reads:
            return own
        return torch.cat([own, *(memo.get(d, rows) for d in self.reads)], dim=1)

    def one(self, logits: torch.Tensor, memo: _PathFeatures | None) -> int:
        """The action for one example (logits ``(1, classes)``)."""
        if not self.computes:
            return self.constant
        features = self._features(logits, memo, None)
        return self.constant if self.rule is None else self.rule.decide_one(features)

    def many(
        self, logits: torch.Tensor, memo: _PathFeatures | None, rows: torch.Tensor
    ) -> torch.Tensor | None:
        """The position (in :attr:`actions`) of each row's action; None when every row takes
        the constant action."""
        if not self.computes:
            return None
        features = self._features(logits, memo, rows)
        return None if self.rule is None else self.rule.decide(features)


# -------------------------------------------------------------------------------------------
# Computation
# -------------------------------------------------------------------------------------------


class Segment:
    """Stages ``first..last`` of one network (named ``network``), then one of its exit heads.

    ``segment(h)`` returns the last stage's activation (where a later segment of the same
    network continues) and the head's logits; a segment ``from_input`` reads the network's own
    input.
    """

    __slots__ = ("stages", "head", "from_input", "network", "name", "_before")

    def __init__(
        self, network: MultiExitNetwork, first: int, last: int, head: int, *, network_name: str,
        name: str,
    ) -> None:
        self.stages = tuple(network.stages[first:last + 1])
        self.head = network.heads[head]
        self.from_input = first == 0
        self.network = network_name
        self.name = name
        self._before = tuple(network.stages[:first])

    def __call__(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for stage in self.stages:
            h = stage(h)
        return h, self.head(h)

    def warm_up(self, x: torch.Tensor) -> None:
        """Run once on input images ``x`` (the network's earlier stages first, when the segment
        continues from them), so that one-off costs (kernel selection, buffers) of this input
        shape are paid outside any measurement."""
        for stage in self._before:
            x = stage(x)
        self(x)

    def __repr__(self) -> str:
        return f"Segment({self.name})"


@dataclass
class Answers:
    """Where each example stopped (its node in the graph) and the class it was given."""

    nodes: np.ndarray
    classes: np.ndarray


class _Plan:
    """The segments of a graph: where each node's exit sits in its network, the segment of the
    entry and of every edge (one object per distinct computation, so that examples arriving by
    equal jumps run together)."""

    def __init__(self, graph: StageGraph, networks: Mapping[str, MultiExitNetwork]) -> None:
        missing = sorted(set(graph.networks) - set(networks))
        if missing:
            raise ValueError(f"no network given for {missing}")
        self.exits = []
        for net, exit_name in zip(graph.networks, graph.exit_names):
            if exit_name not in networks[net].exit_names:
                raise ValueError(f"network {net} has no exit {exit_name!r}")
            self.exits.append(networks[net].exit_names.index(exit_name))
        self.graph, self.networks = graph, networks
        self._segments: dict[tuple[int, int], Segment] = {}

    def stage(self, node: int) -> int:
        """The last stage before node's exit head."""
        return self.networks[self.graph.networks[node]].exit_after[self.exits[node]]

    def segment(self, source: int | None, node: int) -> Segment:
        """The computation from ``source``'s state (None: the input) to ``node``'s logits."""
        net = self.graph.networks[node]
        inside = source is not None and self.graph.networks[source] == net
        first = self.stage(source) + 1 if inside and self.stage(source) < self.stage(node) else 0
        key = (first, node)
        if key not in self._segments:
            name = self.graph.names[node] + (f" from {self.graph.names[source]}" if first else "")
            self._segments[key] = Segment(
                self.networks[net], first, self.stage(node), self.exits[node], network_name=net,
                name=name,
            )
        return self._segments[key]


# -------------------------------------------------------------------------------------------
# The runtime
# -------------------------------------------------------------------------------------------


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
            (:func:`compute_options` of the config's ``compute`` section).

    :meth:`reference_alone` builds the same engine for the graph's reference network alone,
    so that both are timed through the same code.
    """

    def __init__(
        self,
        graph: StageGraph,
        policy: TradeoffPolicy,
        networks: Mapping[str, MultiExitNetwork],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        if getattr(policy, "graph_signature_", None) != graph.signature():
            raise ValueError("the policy was not fitted on this graph (signatures differ)")
        device = torch.device(device)
        readers = {
            m for n, rule in enumerate(policy.rules_)
            if rule is not None and rule.constant_action is None
            for m in graph.feature_nodes(n)[1:]
        }
        topk = sum(name.endswith("_prob") for name in graph.feature_names)
        decisions = []
        for node, rule in enumerate(policy.rules_):
            if rule is None:
                decisions.append(NodeDecision(node, [STOP], rule=None, constant=STOP, topk=topk))
                continue
            constant = rule.constant_action
            decisions.append(
                NodeDecision(
                    node, rule.actions.tolist(),
                    rule=DecisionRule(rule, device) if constant is None else None,
                    constant=constant, topk=topk, keep=node in readers,
                    reads=graph.feature_nodes(node)[1:] if constant is None else (),
                )
            )
        self._setup(graph, networks, device, dtype, channels_last, start=0, decisions=decisions)
        self.policy = policy

    @classmethod
    def reference_alone(
        cls,
        graph: StageGraph,
        networks: Mapping[str, MultiExitNetwork],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> AdaptiveRuntime:
        """The graph's reference network alone: its stages up to the reference exit, its head."""
        runtime = cls.__new__(cls)
        decisions = [
            NodeDecision(node, [STOP], rule=None, constant=STOP, topk=0)
            for node in range(graph.num_nodes)
        ]
        runtime._setup(
            graph, networks, torch.device(device), dtype, channels_last, start=graph.reference,
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
        plan = _Plan(graph, networks)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for net in set(graph.networks):
            networks[net].eval().to(device=device, dtype=dtype, memory_format=self.memory_format)
        self.graph = graph
        self.networks = {net: networks[net] for net in dict.fromkeys(graph.networks)}
        self.device = device
        self.dtype = dtype
        self.start = start
        self._decisions = decisions
        self._entry = plan.segment(None, start)
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
        memo = _PathFeatures(1) if self._paths else None
        decisions, edges = self._decisions, self._edges
        while True:
            action = decisions[node].one(logits, memo)
            if action == STOP:
                return node, int(logits.argmax(1))
            segment = edges[node][action]
            h, logits = segment(x[segment.network] if segment.from_input else h)
            node = action

    def classify_one(self, image: torch.Tensor | Mapping[str, torch.Tensor]) -> tuple[int, int]:
        """The stop node and class of one image ``(C, H, W)`` (or one per network)."""
        batch = (
            {net: one.unsqueeze(0) for net, one in image.items()} if isinstance(image, Mapping)
            else image.unsqueeze(0)
        )
        with torch.inference_mode():
            return self.run_one(self.inputs(batch))

    # --- batches ------------------------------------------------------------------------------

    def run_batch(self, x: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Route a batch, ``x`` its :meth:`inputs`, node by node in topological order: the
        examples that stop at a node leave, the others go on in smaller batches (those
        arriving at a node by the same computation run together). Returns the stop node and
        class of every example, in input order, on the device. The caller holds inference
        mode; one host synchronisation per node where a policy decides."""
        first = x[self._entry.network]
        n = first.shape[0]
        stop = torch.empty(n, dtype=torch.int64, device=first.device)
        classes = torch.empty(n, dtype=torch.int64, device=first.device)
        memo = _PathFeatures(n) if self._paths else None
        arrivals: list[list[tuple[Segment, torch.Tensor, torch.Tensor]]] = [
            [] for _ in range(self.graph.num_nodes)
        ]
        every = torch.arange(n, device=first.device)  # the rows in input order
        arrivals[self.start].append((self._entry, every, first))
        for node in range(self.start, self.graph.num_nodes):
            if not arrivals[node]:
                continue
            rows, h, logits = _run_arrivals(arrivals[node])
            decision = self._decisions[node]
            positions = decision.many(logits, memo, rows)
            for action, taken, mask in _split(decision, positions, rows):
                if action == STOP:
                    stop[taken] = node
                    classes[taken] = (logits if mask is None else logits[mask]).argmax(1)
                    continue
                segment = self._edges[node][action]
                if segment.from_input:
                    images = x[segment.network]
                    source = images if taken is every else images[taken]
                else:
                    source = h if mask is None else h[mask]
                arrivals[action].append((segment, taken, source))
        return stop, classes

    def classify(
        self, images: torch.Tensor | Mapping[str, torch.Tensor], batch_size: int = 256
    ) -> Answers:
        """Stop nodes and classes of ``images`` ``(N, C, H, W)`` (or one such tensor per
        network, see :meth:`inputs`), ``batch_size`` at a time."""
        nodes, classes = [], []
        with torch.inference_mode():
            x = self.inputs(images)
            for start in range(0, len(next(iter(x.values()))), batch_size):
                stop, answer = self.run_batch(slice_inputs(x, start, start + batch_size))
                nodes.append(stop.cpu())
                classes.append(answer.cpu())
        return Answers(torch.cat(nodes).numpy(), torch.cat(classes).numpy())

    # --- where the time goes -------------------------------------------------------------------

    def instrumented(self) -> tuple[AdaptiveRuntime, Stopwatch]:
        """A twin of this runtime whose segments and decisions add their time to a
        :class:`Stopwatch` (the rest of a run's time is the runtime's own Python)."""
        clock = Stopwatch(self.device)
        twin = copy.copy(self)
        timed: dict[Segment, _TimedSegment] = {}

        def wrap(segment: Segment) -> _TimedSegment:
            return timed.setdefault(segment, _TimedSegment(segment, clock))

        twin._entry = wrap(self._entry)
        twin._edges = [{b: wrap(s) for b, s in edges.items()} for edges in self._edges]
        twin._decisions = [
            _TimedDecision(d, name, clock) for d, name in zip(self._decisions, self.graph.names)
        ]
        return twin, clock

    def warm_up(self, x: Mapping[str, torch.Tensor]) -> None:
        """Run every segment of the runtime once on :meth:`inputs` ``x`` (inference mode)."""
        for _, _, segment in self.segments():
            segment.warm_up(x[segment.network])

    def segments(self) -> list[tuple[int | None, int, Segment]]:
        """``(source, node, segment)`` of the entry (source None) and of every edge: what
        each computation is in the graph (its predicted cost: the entry's or the edge's)."""
        edges = [(a, b, s) for a, out in enumerate(self._edges) for b, s in out.items()]
        return [(None, self.start, self._entry), *edges]

    # --- loading a study -------------------------------------------------------------------------

    @classmethod
    def from_results(
        cls,
        results: Path | str,
        config: Mapping[str, Any],
        scheme: str,
        *,
        point_id: int | None = None,
        loss_level: float = 1.0,
        metric: str = "top1",
        method: str = "learned",
        device: torch.device | str = "cpu",
    ) -> AdaptiveRuntime:
        """The runtime of a fitted study: its networks, the graph and a policy of ``scheme``.

        Args:
            results: the study's results folder (networks, predictions, timing, policies).
            config: the study's config, validated (:func:`adaptive_inference.config.load_config`).
            scheme: a scheme of ``policies.schemes``.
            point_id: the fitted policy to run (a ``point_id`` of ``policies.pkl``); by default
                ``method``'s best point within ``loss_level`` points of ``metric`` loss on the
                test split (:func:`operating_points`).
            device: where it runs.
        """
        from adaptive_inference.training import load_network

        study = load_study(results, config, scheme)
        if point_id is None:
            chosen = operating_points(study.points, [loss_level], metric=metric, method=method)
            if chosen["point_id"].isna().all():
                raise ValueError(
                    f"no {method} point of {scheme} within {loss_level} pts of {metric} loss"
                )
            point_id = int(chosen["point_id"].iloc[0])
        graph = study.graphs[config["policies"]["setting"]]
        models = study_files(results, scheme, study.entry["networks"])["models"]
        networks = {net: load_network(models[net]) for net in dict.fromkeys(graph.networks)}
        return cls(
            graph, study.policies[point_id], networks, device=device,
            **compute_options(config.get("compute", {})),
        )


# -------------------------------------------------------------------------------------------
# Timing a run's parts
# -------------------------------------------------------------------------------------------


class Stopwatch:
    """Every timed call of an instrumented run: ``(name, examples, ns)`` of each segment call
    (``segments``) and of each decision computed (``decisions``, named by node).

    On CUDA every timed call is bracketed by synchronisations, so that a decision's host
    synchronisation does not absorb the stages' queued work.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.segments: list[tuple[str, int, int]] = []
        self.decisions: list[tuple[str, int, int]] = []

    def now(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter_ns()

    def calls(self) -> pd.DataFrame:
        """One row per call: ``kind`` (segment, decision), ``name``, ``examples``, ``ns``."""
        rows = [("segment", *call) for call in self.segments]
        rows += [("decision", *call) for call in self.decisions]
        return pd.DataFrame(rows, columns=["kind", "name", "examples", "ns"])


class _TimedSegment:
    """A segment that records each call's batch size and time in a :class:`Stopwatch`."""

    __slots__ = ("segment", "clock", "from_input", "network")

    def __init__(self, segment: Segment, clock: Stopwatch) -> None:
        self.segment, self.clock = segment, clock
        self.from_input, self.network = segment.from_input, segment.network

    def __call__(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.clock.now()
        out = self.segment(h)
        self.clock.segments.append((self.segment.name, h.shape[0], self.clock.now() - start))
        return out


class _TimedDecision:
    """A node decision that records each decision it computes in a :class:`Stopwatch`."""

    def __init__(self, decision: NodeDecision, name: str, clock: Stopwatch) -> None:
        self.decision, self.name, self.clock = decision, name, clock
        self.actions, self.constant = decision.actions, decision.constant

    def _timed(self, method, logits, *args):
        if not self.decision.computes:
            return method(logits, *args)
        start = self.clock.now()
        out = method(logits, *args)
        self.clock.decisions.append((self.name, logits.shape[0], self.clock.now() - start))
        return out

    def one(self, logits, memo):
        return self._timed(self.decision.one, logits, memo)

    def many(self, logits, memo, rows):
        return self._timed(self.decision.many, logits, memo, rows)


def slice_inputs(x: Mapping[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Rows ``start:stop`` of per-network inputs (networks sharing a tensor share the slice)."""
    sliced: dict[int, torch.Tensor] = {}
    for tensor in x.values():
        sliced.setdefault(id(tensor), tensor[start:stop])
    return {net: sliced[id(tensor)] for net, tensor in x.items()}


def _split(
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


def _run_arrivals(
    arrivals: list[tuple[Segment, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the segments of the examples arriving at a node (those of one segment together);
    their rows, activations and logits, concatenated."""
    groups: dict[Any, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for segment, rows, source in arrivals:
        groups.setdefault(segment, []).append((rows, source))
    parts = []
    for segment, items in groups.items():
        rows = items[0][0] if len(items) == 1 else torch.cat([r for r, _ in items])
        source = items[0][1] if len(items) == 1 else torch.cat([s for _, s in items])
        parts.append((rows, *segment(source)))
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(column) for column in zip(*parts))


# -------------------------------------------------------------------------------------------
# A fitted study
# -------------------------------------------------------------------------------------------


@dataclass
class Study:
    """One scheme of a fitted study: what rule fit_policies read to build its graph (the
    networks' predictions and exit costs, the decision's cost per timing setting, the config's
    choices) and the policies it fitted, with their rows of the sweep's points."""

    name: str
    entry: Mapping[str, Any]
    reference: str | None
    topk: int
    path_features: bool
    predictions: dict[str, pd.DataFrame]
    exits: dict[str, pd.DataFrame]
    decision: dict[str, dict[str, Any]]
    policies: dict[int, TradeoffPolicy] = field(default_factory=dict)
    points: pd.DataFrame = field(default_factory=pd.DataFrame)

    def graph(
        self,
        setting: str,
        *,
        exits: Mapping[str, pd.DataFrame] | None = None,
        decision: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> StageGraph:
        """The scheme's graph with the costs of one timing setting: the study's, or other exit
        costs and decision costs (of the same networks, timed again) given here. The structure,
        examples and features do not depend on the costs."""
        decision = self.decision if decision is None else decision
        graph = scheme_graph(
            self.entry["graph"], self.entry["networks"], self.predictions,
            self.exits if exits is None else exits, reference=self.reference, setting=setting,
            decision_ms=decision[setting]["per_example_ms"], topk=self.topk,
            path_features=self.path_features,
        )
        graph.scheme = self.name
        return graph

    @cached_property
    def graphs(self) -> dict[str, StageGraph]:
        """The graph at every timing setting of the study."""
        return {setting: self.graph(setting) for setting in self.decision}


def read_study(
    name: str,
    entry: Mapping[str, Any],
    policies_section: Mapping[str, Any],
    reference: str | None,
    *,
    predictions: Mapping[str, Path | str],
    exits: Mapping[str, Path | str],
    decision: Path | str,
    policies: Path | str | None = None,
) -> Study:
    """Scheme ``name`` (config entry ``{graph, networks}``) from the workflow's files: its
    networks' ``predictions.parquet`` and ``exits.parquet``, ``policy_decision.json`` and
    (unless None) ``policies.pkl``; ``topk`` and ``path_features`` of ``policies_section``."""
    nets = entry["networks"]
    study = Study(
        name=name, entry=entry, reference=reference, topk=policies_section["topk"],
        path_features=policies_section["path_features"],
        predictions={n: pd.read_parquet(predictions[n]) for n in nets},
        exits={n: pd.read_parquet(exits[n]) for n in nets},
        decision=read_json(decision)["settings"],
    )
    if policies is not None:
        study.points, study.policies = load_policies(policies)
    return study


def study_files(results: Path | str, scheme: str, networks: Sequence[str]) -> dict[str, Any]:
    """Where the workflow wrote what the runtime of ``scheme`` reads, under ``results``."""
    results = Path(results)
    return {
        "predictions": {n: results / "predictions" / n / "predictions.parquet" for n in networks},
        "exits": {n: results / "timing" / n / "exits.parquet" for n in networks},
        "models": {n: results / "networks" / n / "model.pt" for n in networks},
        "decision": results / "timing" / "policy_decision.json",
        "policies": results / "policies" / scheme / "policies.pkl",
        "splits": results / "splits" / "eval_splits.parquet",
    }


def load_study(results: Path | str, config: Mapping[str, Any], scheme: str) -> Study:
    """Scheme ``scheme`` of the study whose results are in ``results`` (:func:`read_study`
    of :func:`study_files`)."""
    from adaptive_inference.config import reference_network

    entry = config["policies"]["schemes"][scheme]
    files = study_files(results, scheme, entry["networks"])
    return read_study(
        scheme, entry, config["policies"], reference_network(config),
        **{key: files[key] for key in ("predictions", "exits", "decision", "policies")},
    )


def compute_options(compute: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime's ``dtype`` and ``channels_last`` from a config's ``compute`` section (how
    extraction and timing run the networks; float32 and contiguous where it says nothing)."""
    return {
        "dtype": getattr(torch, compute.get("dtype", "float32")),
        "channels_last": bool(compute.get("channels_last", False)),
    }


def operating_points(
    points: pd.DataFrame, loss_levels: Sequence[float], *, metric: str, method: str
) -> pd.DataFrame:
    """``method``'s best point (trained on ``metric``) within each loss level (points of
    ``metric`` loss on the test split), as :func:`~adaptive_inference.sweep.speedup_at_loss`
    reads the curves; NaN ``point_id`` where none is within a level."""
    table = speedup_at_loss(points, list(loss_levels), metric=metric, methods=[method])
    return table[table["train_loss"] == metric].reset_index(drop=True)
