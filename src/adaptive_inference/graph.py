"""A DAG of stages: where an adaptive system may stop and answer, and what going on costs.

Early exit, network selection and their combination are one problem on three graphs
(docs/method.md, "The graph of stages"). A **node** is a place where a policy may stop and answer
with that node's prediction: an exit of a network, or a whole network (its final exit). A node
that is not terminal may instead send the example on along one of its **edges**. Nodes are
numbered in topological order (every edge goes from a lower to a higher index), and successors
are listed with the default "next" edge first (the edge a threshold rule follows: the next exit
of the same network, else the next network).

**Where a route starts.** Every node's answer can be computed from the input (its network up to
its exit, then its head), so a policy may *start* at any node (a virtual start node with constant
actions, chosen by the same recursion as the rest of the policy): a fixed cascade such as
``small_cnn -> exit_resnet`` is then a route of the graph, whatever the graph's first node is.

**Costs** (ms per example, from a :class:`~adaptive_inference.costs.Costs` as the joint timing
job measured them, in context): starting at node ``n`` costs ``start_ms[n]`` (the segment from
the input to its answer, as a stream that starts and decides there runs it), or ``single_ms[n]``
where the route is that node alone (every example stops there and nothing is decided: a single
network, the reference; :func:`starts_alone`), as it runs after its own answer with no decision
between; an edge ``a -> b`` costs its segment: inside one network, the stages after ``a``'s exit
up to ``b``'s plus ``b``'s head; into another network, ``b``'s network from the input, timed
right after ``a``'s work (:meth:`GraphStructure.edge_component`).
A node where a policy decides pays ``decision_ms[n]``, the measured cost of a decision of its own
shape (steps and path features); the node an example stops at pays ``answer_ms`` (reading the
answer from its logits), as the reference alone does, unless a decision was computed there: the
decision's features hold the class (:func:`pay_answers`).

Per-example data at each node: its prediction, its 0/1 losses at top-1 and top-5, its
confidence features (the sorted top-k probabilities ``top1_prob..topK_prob``, the margin and the
entropy) and its top-k classes and probabilities. With ``path_features``, a node's policy also
sees, for each node that *every* path from the root to it goes through (its dominators: always
computed before it, whatever the policies upstream chose), that node's features, whether its top-1
agrees with this node's, and its probability of this node's top-1
(:func:`~adaptive_inference.decision.path_columns`).

Builders: :func:`scheme_structure` (the structure alone, from the networks' exits),
:func:`scheme_graph` (structure, the extracted tables and the costs). Routing: :class:`Route`
and :func:`walk`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from adaptive_inference.config import LOSSES
from adaptive_inference.costs import (
    ANSWER,
    Costs,
    Key,
    alone_key,
    decision_key,
    jump_key,
    move_key,
    segment_key,
)
from adaptive_inference.decision import PATH_EXTRA, STOP, own_feature_names, path_columns

KINDS = ("early_exit", "network_selection", "combined")

__all__ = [
    "STOP",
    "LOSSES",
    "KINDS",
    "GraphStructure",
    "StageGraph",
    "Route",
    "walk",
    "starts_alone",
    "scheme_structure",
    "scheme_graph",
    "route_table",
]


@dataclass(kw_only=True, repr=False)
class GraphStructure:
    """The nodes and edges of a graph of stages, without data or costs.

    Args:
        kind: ``early_exit``, ``network_selection`` or ``combined``.
        names: a unique name per node (``network/exit`` or ``network``).
        networks: the network each node belongs to.
        exit_names: the exit of its network each node answers with.
        exits: that exit's index in its network.
        successors: the nodes each node may send an example to, the default "next" edge first;
            empty for terminal nodes.
        path_features: whether a node's policy also sees its dominators' path features.
    """

    kind: str
    names: list[str]
    networks: list[str]
    exit_names: list[str]
    exits: list[int]
    successors: list[list[int]]
    path_features: bool = False
    _dominators: list[tuple[int, ...]] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(set(self.names)) != n:
            raise ValueError(f"node names must be unique, got {self.names}")
        self.successors = [list(map(int, s)) for s in self.successors]
        self.exits = [int(e) for e in self.exits]
        for lst in (self.networks, self.exit_names, self.exits, self.successors):
            if len(lst) != n:
                raise ValueError("every per-node list must have one entry per node")
        for a, succ in enumerate(self.successors):
            if len(set(succ)) != len(succ):
                raise ValueError(f"node {self.names[a]} lists a successor twice")
            for b in succ:
                if not a < b < n:
                    raise ValueError(f"edge {a}->{b}: nodes must be in topological order")
        self._dominators = self._compute_dominators()
        if any(0 not in d for d in self._dominators):
            raise ValueError("every node must be reachable from the root (node 0)")

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(kind={self.kind!r}, names={self.names}, successors={self.successors})"

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    def is_terminal(self, node: int) -> bool:
        return not self.successors[node]

    def predecessors(self, node: int) -> list[int]:
        return [a for a, succ in enumerate(self.successors) if node in succ]

    def _compute_dominators(self) -> list[tuple[int, ...]]:
        """Nodes on every path from the root to each node (the node included), ascending."""
        doms: list[set[int] | None] = [None] * self.num_nodes
        doms[0] = {0}
        for b in range(1, self.num_nodes):
            preds = [doms[a] for a in self.predecessors(b) if doms[a] is not None]
            doms[b] = set.intersection(*preds) | {b} if preds else None
        return [tuple(sorted(d)) if d is not None else () for d in doms]

    def dominators(self, node: int) -> tuple[int, ...]:
        """The nodes every path from the root to ``node`` goes through, ``node`` included."""
        return self._dominators[node]

    def feature_nodes(self, node: int) -> tuple[int, ...]:
        """Whose features a policy at ``node`` sees: ``node`` first, then its strict dominators
        in topological order when ``path_features`` is set."""
        if not self.path_features:
            return (node,)
        return (node, *(d for d in self._dominators[node] if d != node))

    def start_candidates(self) -> list[int]:
        """The nodes a route may start at. Without path features, every node. With them, a
        node's policy reads its dominators' features, which a route that starts past the root
        has not computed: the root, or a terminal node (a single network alone)."""
        if not self.path_features:
            return list(range(self.num_nodes))
        return [0, *(n for n in range(1, self.num_nodes) if self.is_terminal(n))]

    def decision_shape(self, node: int) -> tuple[int, int]:
        """``(steps, reads)`` of a decision at ``node``: its actions but one, and the
        dominators whose path features it reads."""
        return len(self.successors[node]), len(self.feature_nodes(node)) - 1

    def decision(self, node: int) -> Key:
        """The component of a decision at ``node``: its shape, where its logits come from."""
        return decision_key(*self.decision_shape(node), self.networks[node], self.exits[node])

    def default_chain(self, start: int = 0) -> list[int]:
        """The nodes reached from ``start`` by always following the default "next" edge."""
        chain = [start]
        while self.successors[chain[-1]]:
            chain.append(self.successors[chain[-1]][0])
        return chain

    def segment(self, source: int | None, node: int) -> Key:
        """The component computing ``node``'s answer after ``source``'s (None: from the input):
        the stages in between inside one network, else ``node``'s network from the input."""
        net, exit = self.networks[node], self.exits[node]
        inside = source is not None and self.networks[source] == net and self.exits[source] < exit
        return segment_key(net, self.exits[source] if inside else None, exit)

    def single_component(self, node: int) -> Key:
        """The component that prices ``node`` alone: its segment from the input, run after its
        own answer with no decision between (a route that is that node alone)."""
        return alone_key(self.networks[node], self.exits[node])

    def edge_component(self, source: int, node: int) -> Key:
        """The component that prices computing ``node``'s answer after ``source``'s: the
        continuation inside one network, else the jump into ``node``'s network right after
        ``source``'s work (its context in the runtime)."""
        key = self.segment(source, node)
        if key[2] is not None:
            return key
        return jump_key(
            self.networks[node], self.exits[node], self.networks[source], self.exits[source]
        )

    def move_component(self, source: int, node: int) -> Key:
        """The component that prices moving examples from ``source``'s call on to ``node``'s
        queue in the rebatched runtime: the activation ``source`` left inside one network, else
        ``node``'s network's input rows."""
        _, network, after_exit, _ = self.segment(source, node)
        return move_key(network, after_exit)

    def components(self) -> set[Key]:
        """Every component a route of this graph may run: each node from the input (at a
        route's start, and alone), the continuation between any two exits of one network, each
        decision shape, each move on to another node (rebatched), the answer."""
        keys: set[Key] = {ANSWER}
        for b in range(self.num_nodes):
            keys.add(self.segment(None, b))
            keys.add(self.single_component(b))
            keys.update(self.segment(a, b) for a in range(b))
            keys.update(self.edge_component(a, b) for a in range(b))
            keys.update(self.move_component(a, b) for a in range(b))
            if not self.is_terminal(b):
                keys.add(self.decision(b))
        return keys

    def signature(self) -> tuple:
        """What a fitted policy needs to match: kind, nodes, edges and feature layout."""
        return (
            self.kind,
            tuple(self.names),
            tuple(tuple(s) for s in self.successors),
            self.path_features,
        )


def scheme_structure(
    kind: str, exits: Mapping[str, Sequence[str]], *, path_features: bool = False
) -> GraphStructure:
    """The structure of a scheme's graph from its networks' exit names, cheapest first (the
    order of the config's ``networks``).

    * ``early_exit``: one network's exits, a chain (exit ``k`` -> ``k + 1``);
    * ``network_selection``: whole networks (their final exits); each may jump to any later one,
      the next one first (node names are the networks');
    * ``combined``: every exit of every network; from an exit, the next exit of its network,
      then every later network's first and final exits (the jumps to whole networks make network
      selection a subgraph of this one, so adding exits can only add options); from a network's
      final exit, the next network's first exit comes first.
    """
    order = list(exits)
    if kind == "early_exit":
        if len(order) != 1:
            raise ValueError(f"an early_exit graph takes one network, got {order}")
        (net,) = order
        names = [f"{net}/{e}" for e in exits[net]]
        k = len(names)
        return GraphStructure(
            kind=kind,
            names=names,
            networks=[net] * k,
            exit_names=list(exits[net]),
            exits=list(range(k)),
            successors=[[i + 1] if i + 1 < k else [] for i in range(k)],
            path_features=path_features,
        )
    if kind == "network_selection":
        return GraphStructure(
            kind=kind,
            names=list(order),
            networks=list(order),
            exit_names=[exits[net][-1] for net in order],
            exits=[len(exits[net]) - 1 for net in order],
            successors=[list(range(i + 1, len(order))) for i in range(len(order))],
            path_features=path_features,
        )
    if kind != "combined":
        raise ValueError(f"unknown graph {kind!r}; choose one of {', '.join(KINDS)}")
    nodes = [(net, k) for net in order for k in range(len(exits[net]))]
    first: dict[str, int] = {}
    final: dict[str, int] = {}
    for i, (net, _) in enumerate(nodes):
        first.setdefault(net, i)
        final[net] = i
    successors = []
    for i, (net, k) in enumerate(nodes):
        later = [
            node
            for other in order[order.index(net) + 1 :]
            for node in dict.fromkeys((first[other], final[other]))
        ]
        same = [i + 1] if k + 1 < len(exits[net]) else []
        successors.append(same + later)
    return GraphStructure(
        kind=kind,
        names=[f"{net}/{exits[net][k]}" for net, k in nodes],
        networks=[net for net, _ in nodes],
        exit_names=[exits[net][k] for net, k in nodes],
        exits=[k for _, k in nodes],
        successors=successors,
        path_features=path_features,
    )


@dataclass(kw_only=True, repr=False)
class StageGraph(GraphStructure):
    """A graph of stages with per-example data at every node and the costs of its components.

    Args (beyond :class:`GraphStructure`'s):
        example_ids: the examples, increasing; every per-example array follows this order.
        labels: the class of each example.
        predictions: ``(nodes, examples)`` top-1 class at each node.
        correct_top1, correct_top5: ``(nodes, examples)`` whether the answer is right.
        features: ``(nodes, examples, F)`` each node's own confidence features.
        feature_names: names of the last axis of ``features``.
        top_i, top_p: ``(nodes, examples, k)`` each node's top-k classes and probabilities (for
            path features; None without them).
        costs: the components' costs (per example at their setting's batch size).
        reference: index of the reference node (the most accurate full network): speedups and
            losses are measured against its answer alone.
        name: the scheme's name (the config's key); the graph's kind when not given.
    """

    example_ids: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    correct_top1: np.ndarray
    correct_top5: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    costs: Costs
    top_i: np.ndarray | None = None
    top_p: np.ndarray | None = None
    reference: int = -1
    name: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        n, m = self.num_nodes, len(self.example_ids)
        self.name = self.name or self.kind
        self.example_ids = np.asarray(self.example_ids, dtype=np.int64)
        if np.any(np.diff(self.example_ids) <= 0):
            raise ValueError("example_ids must be strictly increasing")
        for name in ("predictions", "correct_top1", "correct_top5"):
            if np.shape(getattr(self, name)) != (n, m):
                raise ValueError(f"{name} must have shape (nodes, examples) = {(n, m)}")
        self.correct_top1 = np.asarray(self.correct_top1, dtype=bool)
        self.correct_top5 = np.asarray(self.correct_top5, dtype=bool)
        self.features = np.asarray(self.features, dtype=np.float64)
        if self.features.shape[:2] != (n, m) or self.features.shape[2] != len(self.feature_names):
            raise ValueError("features must have shape (nodes, examples, len(feature_names))")
        if self.path_features and (self.top_i is None or self.top_p is None):
            raise ValueError("path features need every node's top-k classes and probabilities")
        self.reference = int(self.reference) % n
        self.start_ms = np.array([self.costs.per_example(self.segment(None, b)) for b in range(n)])
        self.single_ms = np.array(
            [self.costs.per_example(self.single_component(b)) for b in range(n)]
        )
        self.edge_ms = {
            (a, b): self.costs.per_example(self.edge_component(a, b))
            for a, succ in enumerate(self.successors)
            for b in succ
        }
        self.decision_ms = np.array(
            [
                0.0 if self.is_terminal(b) else self.costs.per_example(self.decision(b))
                for b in range(n)
            ]
        )
        self.answer_ms = self.costs.answer_ms

    def __repr__(self) -> str:
        return (
            f"StageGraph(name={self.name!r}, kind={self.kind!r}, names={self.names}, "
            f"successors={self.successors}, examples={self.num_examples}, "
            f"reference={self.names[self.reference]!r})"
        )

    # --- costs --------------------------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        return len(self.example_ids)

    @property
    def reference_ms(self) -> float:
        """The reference alone: its network from the input to its answer, read."""
        return float(self.single_ms[self.reference] + self.answer_ms)

    def transition_ms(self, a: int, b: int) -> float:
        """Cost of computing node ``b``'s answer once node ``a``'s is known (``b`` after ``a``,
        edge or not)."""
        return self.costs.per_example(self.edge_component(a, b))

    def shortest_path_ms(self) -> tuple[np.ndarray, np.ndarray]:
        """Cheapest cost (no decisions, no answer) of reaching each node from the input (a route
        may start anywhere), and the predecessor on that path (-1 where it starts there)."""
        dist = self.start_ms.astype(float).copy()
        prev = np.full(self.num_nodes, -1)
        for a in range(self.num_nodes):
            for b in self.successors[a]:
                if dist[a] + self.edge_ms[(a, b)] < dist[b]:
                    dist[b] = dist[a] + self.edge_ms[(a, b)]
                    prev[b] = a
        return dist, prev

    def longest_path_ms(self, start: int = 0) -> float:
        """Cost of the costliest path from ``start`` (edges and decisions, its start included)."""
        best = np.full(self.num_nodes, -np.inf)
        best[start] = self.start_ms[start]
        for a in range(start, self.num_nodes):
            for b in self.successors[a]:
                best[b] = max(best[b], best[a] + self.decision_ms[a] + self.edge_ms[(a, b)])
        return float(best.max())

    # --- per-example data -------------------------------------------------------------------

    def node_feature_names(self, node: int) -> list[str]:
        """Names of the columns of :meth:`node_features` (``node:feature``)."""
        own, *earlier = self.feature_nodes(node)
        names = [f"{self.names[own]}:{f}" for f in self.feature_names]
        for d in earlier:
            names += [f"{self.names[d]}:{f}" for f in (*self.feature_names, *PATH_EXTRA)]
        return names

    def node_features(self, node: int, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Features a policy at ``node`` sees, float64, one row per example of ``rows``: its
        own, then per dominator (path features) that node's own and its two path columns."""
        rows = slice(None) if rows is None else rows
        own, *earlier = self.feature_nodes(node)
        if not earlier:
            return self.features[own, rows]
        parts = [self.features[own, rows]]
        top1 = self.predictions[own, rows]
        for d in earlier:
            parts += [
                self.features[d, rows],
                path_columns(top1, self.top_i[d, rows], self.top_p[d, rows]),
            ]
        return np.concatenate(parts, axis=1)

    def correct(self, loss: str) -> np.ndarray:
        """``(nodes, examples)`` bool: the answer is right at ``top1`` or ``top5``."""
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        return self.correct_top1 if loss == "top1" else self.correct_top5

    def loss(self, loss: str, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """``(nodes, len(rows))`` float 0/1 loss."""
        rows = slice(None) if rows is None else rows
        return (~self.correct(loss)[:, rows]).astype(np.float64)

    @property
    def max_prob(self) -> np.ndarray:
        """``(nodes, examples)`` the maximum softmax probability at each node."""
        return self.features[:, :, self.feature_names.index("top1_prob")]

    def rows(self, examples: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Positions of ``examples`` (example ids, or a boolean mask over the examples; None
        for all) in the per-example arrays."""
        if examples is None:
            return np.arange(self.num_examples)
        examples = np.asarray(examples)
        if examples.dtype == bool:
            if examples.shape != (self.num_examples,):
                raise ValueError("a boolean mask must have one entry per example")
            return np.flatnonzero(examples)
        pos = np.searchsorted(self.example_ids, examples)
        pos = np.clip(pos, 0, self.num_examples - 1)
        if not np.array_equal(self.example_ids[pos], examples):
            raise KeyError("some example ids are not in the graph")
        return pos

    def signature(self) -> tuple:
        return (*super().signature(), tuple(self.feature_names))

    def with_costs(self, costs: Costs) -> StageGraph:
        """The same graph and examples priced by other costs (another setting, or timed
        again)."""
        fields_ = {f: getattr(self, f) for f in self.__dataclass_fields__ if not f.startswith("_")}
        return StageGraph(**{**fields_, "costs": costs})


# -------------------------------------------------------------------------------------------
# Routing
# -------------------------------------------------------------------------------------------


@dataclass
class Route:
    """Where each example of ``rows`` went, and what it paid in each node.

    ``paid_ms[i, n]`` is what example ``i`` paid in node ``n``: the cost of the segment it
    came in by (its start node's from the input) plus the decision computed there, if one was,
    plus reading the answer where it stopped.
    """

    rows: np.ndarray
    stop: np.ndarray
    visited: np.ndarray
    decided: np.ndarray
    paid_ms: np.ndarray

    @property
    def cost_ms(self) -> np.ndarray:
        """Total cost of each example (ms): every stage on its path, its decisions, the answer."""
        return self.paid_ms.sum(axis=1)

    def stop_fraction(self) -> np.ndarray:
        """Proportion of examples stopping at each node."""
        return np.bincount(self.stop, minlength=self.visited.shape[1]) / len(self.stop)

    def time_fraction(self) -> np.ndarray:
        """Proportion of the total time spent in each node."""
        spent = self.paid_ms.sum(axis=0)
        return spent / spent.sum()


Decider = Callable[[int, np.ndarray], tuple[np.ndarray, bool]]
"""``decide(node, positions)``: the action (STOP or a successor) for each example at ``node``
(``positions`` index the route's rows) and whether a decision was computed (its cost is paid)."""


def walk(graph: StageGraph, rows: np.ndarray, decide: Decider, *, start: int = 0) -> Route:
    """Send the examples of ``rows`` through ``graph`` from ``start``, vectorised per node.

    Nodes are visited in topological order; at each non-terminal node ``decide`` gives every
    example there an action. The start node costs ``start_ms[start]``, or ``single_ms[start]``
    where the route is that node alone (:func:`starts_alone`); every example pays the answer at
    the node it stops at, unless a decision was computed there (:func:`pay_answers`).
    """
    rows = np.asarray(rows)
    n, nodes = len(rows), graph.num_nodes
    at = np.zeros((nodes, n), dtype=bool)
    at[start] = True
    stop = np.full(n, -1, dtype=np.int64)
    visited = np.zeros((n, nodes), dtype=bool)
    decided = np.zeros((n, nodes), dtype=bool)
    paid = np.zeros((n, nodes), dtype=np.float64)
    paid[:, start] = graph.start_ms[start]
    for node in range(start, nodes):
        here = np.flatnonzero(at[node])
        if here.size == 0:
            continue
        visited[here, node] = True
        succ = graph.successors[node]
        if not succ:
            stop[here] = node
            continue
        actions, made = decide(node, here)
        actions = np.asarray(actions)
        if made:
            decided[here, node] = True
            paid[here, node] += graph.decision_ms[node]
        stop[here[actions == STOP]] = node
        handled = actions == STOP
        for nxt in succ:
            going = actions == nxt
            handled |= going
            moving = here[going]
            at[nxt, moving] = True
            paid[moving, nxt] += graph.edge_ms[(node, nxt)]
        if not handled.all():
            raise ValueError(f"actions at node {graph.names[node]} must be STOP or a successor")
    route = Route(rows=rows, stop=stop, visited=visited, decided=decided, paid_ms=paid)
    if starts_alone(route, start):
        paid[:, start] = graph.single_ms[start]
    pay_answers(graph, route)
    return route


def pay_answers(graph: StageGraph, route: Route) -> None:
    """Every example pays reading its answer (``answer_ms``) at its stop node, unless a decision
    was computed there: the decision's features hold the class (its top-1), which the runtime
    answers with (:meth:`~adaptive_inference.decision.NodeDecision.one`)."""
    rows = np.arange(len(route.stop))
    read = ~route.decided[rows, route.stop]
    route.paid_ms[rows[read], route.stop[read]] += graph.answer_ms


def starts_alone(route: Route, start: int) -> bool:
    """Whether a route from ``start`` is that node alone: every example stops there and no
    decision is computed there (a terminal node, or a constant "stop"), so that its stream runs
    the node's segment after its own answer, with no decision between (priced ``single_ms``)."""
    return bool(
        len(route.stop) and np.all(route.stop == start) and not route.decided[:, start].any()
    )


def route_table(graph: StageGraph, route: Route) -> pd.DataFrame:
    """One row per example: id, stop node, path, cost (ms), answer and its correctness."""
    rows = route.rows
    names = np.asarray(graph.names, dtype=object)
    paths = [">".join(names[v]) for v in route.visited]
    return pd.DataFrame(
        {
            "example_id": graph.example_ids[rows],
            "stop": route.stop,
            "stop_node": pd.Categorical(names[route.stop], categories=graph.names),
            "path": paths,
            "cost_ms": route.cost_ms,
            "decisions": route.decided.sum(axis=1),
            "prediction": graph.predictions[route.stop, rows],
            "correct_top1": graph.correct_top1[route.stop, rows],
            "correct_top5": graph.correct_top5[route.stop, rows],
        }
    )


# -------------------------------------------------------------------------------------------
# Builders from the workflow's tables
# -------------------------------------------------------------------------------------------


@dataclass
class NetworkTable:
    """Per-exit arrays of one network's extracted predictions, aligned on its example ids."""

    example_ids: np.ndarray
    labels: np.ndarray
    exit_names: list[str]
    predictions: np.ndarray
    correct_top1: np.ndarray
    correct_top5: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    top_i: np.ndarray
    top_p: np.ndarray

    @classmethod
    def read(cls, table: pd.DataFrame, topk: int | None = None) -> NetworkTable:
        """From a predictions table (extraction's format: one row per example and exit)."""
        order = (
            table["exit"].to_numpy().astype(np.int64) * (1 << 40) + table["example_id"].to_numpy()
        )
        if np.any(np.diff(order) <= 0):
            table = table.iloc[np.argsort(order, kind="stable")]
        exits = np.unique(table["exit"].to_numpy())
        if exits.tolist() != list(range(len(exits))):
            raise ValueError("predictions must hold exits 0..E-1")
        num_exits = len(exits)
        if len(table) % num_exits:
            raise ValueError("every exit must hold the same examples")
        n = len(table) // num_exits
        ids = table["example_id"].to_numpy().reshape(num_exits, n)
        if not (ids == ids[:1]).all() or np.any(np.diff(ids[0]) <= 0):
            raise ValueError("every exit must hold the same examples, once each")
        available = sorted(
            int(c[3:-5]) for c in table.columns if c.startswith("top") and c.endswith("_prob")
        )
        k = len(available) if topk is None else int(topk)
        if available[:k] != list(range(1, k + 1)):
            raise ValueError(f"predictions have top-k probabilities {available}, {k} asked")

        def stacked(columns: Sequence[str], dtype) -> np.ndarray:
            return np.stack(
                [table[c].to_numpy(dtype).reshape(num_exits, n) for c in columns], axis=2
            )

        names = own_feature_names(k)
        exit_names = (
            table.groupby("exit", observed=True)["exit_name"].first().astype(str).tolist()
            if "exit_name" in table.columns
            else [f"exit{e}" for e in range(num_exits)]
        )
        return cls(
            example_ids=ids[0],
            labels=table["label"].to_numpy()[:n],
            exit_names=exit_names,
            predictions=table["prediction"].to_numpy().reshape(num_exits, n),
            correct_top1=table["correct_top1"].to_numpy(bool).reshape(num_exits, n),
            correct_top5=table["correct_top5"].to_numpy(bool).reshape(num_exits, n),
            features=stacked(names, np.float32),
            feature_names=names,
            top_i=stacked([f"top{j}_class" for j in range(1, k + 1)], np.int64),
            top_p=stacked([f"top{j}_prob" for j in range(1, k + 1)], np.float32),
        )


def scheme_graph(
    kind: str,
    predictions: Mapping[str, pd.DataFrame | NetworkTable],
    costs: Costs,
    *,
    name: str | None = None,
    reference: str | None = None,
    topk: int | None = None,
    path_features: bool = False,
) -> StageGraph:
    """The graph of a scheme (``kind``: early_exit, network_selection, combined) over the
    networks of ``predictions`` (cheapest first, in the mapping's order), priced by ``costs``.

    ``reference`` names the reference network (its final exit; a node name also works); default
    the most accurate full network at top-1 on all the examples of the tables (ties go to the
    cheaper). For early exit the reference is the network's final exit.
    """
    nets = {
        net: table if isinstance(table, NetworkTable) else NetworkTable.read(table, topk)
        for net, table in predictions.items()
    }
    first = next(iter(nets.values()))
    for net, data in nets.items():
        if not np.array_equal(data.example_ids, first.example_ids):
            raise ValueError(f"network {net} was evaluated on other examples")
        if not np.array_equal(data.labels, first.labels):
            raise ValueError(f"network {net} has other labels")
        if data.feature_names != first.feature_names:
            raise ValueError(f"network {net} has other features (top-k)")
    structure = scheme_structure(
        kind, {net: data.exit_names for net, data in nets.items()}, path_features=path_features
    )

    def pick(attr: str) -> np.ndarray:
        return np.stack(
            [getattr(nets[net], attr)[e] for net, e in zip(structure.networks, structure.exits)]
        )

    graph = StageGraph(
        kind=kind,
        name=name or kind,
        names=structure.names,
        networks=structure.networks,
        exit_names=structure.exit_names,
        exits=structure.exits,
        successors=structure.successors,
        path_features=path_features,
        example_ids=first.example_ids,
        labels=first.labels,
        predictions=pick("predictions"),
        correct_top1=pick("correct_top1"),
        correct_top5=pick("correct_top5"),
        features=pick("features"),
        feature_names=first.feature_names,
        top_i=pick("top_i"),
        top_p=pick("top_p"),
        costs=costs,
    )
    graph.reference = _reference(graph, reference if kind != "early_exit" else None)
    return graph


def _reference(graph: StageGraph, reference: str | None) -> int:
    """The named network's final exit (or named node), or the most accurate full network."""
    finals = [
        i
        for i in range(graph.num_nodes)
        if i == max(j for j in range(graph.num_nodes) if graph.networks[j] == graph.networks[i])
    ]
    if reference is not None:
        if reference in graph.names:
            return graph.names.index(reference)
        full = [i for i in finals if graph.networks[i] == reference]
        if full:
            return full[0]
        raise ValueError(f"reference {reference!r} is not a node or network of the graph")
    accuracy = graph.correct_top1[finals].mean(axis=1)
    best = np.flatnonzero(accuracy == accuracy.max())
    return finals[int(best[np.argmin(graph.single_ms[np.asarray(finals)[best]])])]
