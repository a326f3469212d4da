"""A DAG of stages: where an adaptive system may stop and answer, and what going on costs.

Early exit, network selection and their combination are one problem on three graphs (STUDY.md,
section 2). A **node** is a place where a policy may stop and answer with that node's prediction:
an exit of a network, or a whole network (its final exit). A node that is not terminal may instead
send the example on along one of its **edges**; an edge carries the cost (ms) of the computation
it starts, which depends on the edge:

* inside a network, from exit ``k`` to a later exit ``j``: the backbone stages between them plus
  head ``j`` (``stage_ms[j] - stage_ms[k] + head_ms[j]``);
* into another network (network selection, or a jump in the combined graph): that network's
  backbone up to the node plus the node's head (``alone_ms`` of the node: for a whole network,
  the cost of the full network).

The root (node 0) has an entry cost (``alone_ms`` of the root), paid by every example. Every
non-terminal node where a policy computes a decision adds ``decision_ms`` (the measured cost of
the policy itself). Nodes are numbered in topological order: every edge goes from a lower to a
higher index, and successors are listed with the default "next" edge first (the edge a
threshold rule follows: the next exit of the same network, else the next network).

Per-example data at each node: its prediction, its 0/1 losses at top-1 and top-5, and its
confidence features (the sorted top-k probabilities ``top1_prob..topK_prob``, the margin
``top1 - top2`` and the entropy; the maximum probability is ``top1_prob`` and is not repeated).
With ``path_features``, a node's policy also sees the features of the nodes that *every* path
from the root to it goes through (its dominators). On a chain those are all the earlier nodes; in
a DAG they are the nodes that are always computed before it whatever the policies upstream chose
(in network selection, the cheapest network for both later ones; in the combined graph, the
earlier exits of its own network, unless the graph may jump straight to the node, and the root
chain's common prefix), so the features are always available at run time.

Builders from the workflow's tables: :func:`early_exit_graph`, :func:`network_selection_graph`,
:func:`combined_graph`. Routing: :class:`Route` and :func:`walk`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

STOP = -1
"""The action "stop here and answer" (successors are node indices, >= 0)."""

LOSSES = ("top1", "top5")


@dataclass(repr=False)
class StageGraph:
    """A DAG of stages with per-example predictions, losses and features at every node.

    Args:
        scheme: what the graph is (``early_exit``, ``network_selection``, ``combined``, ...).
        names: a unique name per node (``network/exit`` or ``network``).
        networks: the network each node belongs to.
        exit_names: the exit of its network each node answers with.
        stage_ms: cumulative backbone cost of the node's network up to the node (ms).
        head_ms: cost of the node's exit head (ms).
        successors: the nodes each node may send an example to, the default "next" edge first;
            empty for terminal nodes.
        edge_ms: the cost of each edge ``(node, successor)``.
        decision_ms: the cost of one policy decision, paid at each non-terminal node where a
            decision is computed (a number, or one per node).
        example_ids: the examples, increasing; every per-example array follows this order.
        labels: the class of each example.
        predictions: ``(nodes, examples)`` top-1 class at each node.
        correct_top1: ``(nodes, examples)`` whether the top-1 answer is right.
        correct_top5: ``(nodes, examples)`` whether the label is among the top 5.
        features: ``(nodes, examples, features)`` the node's own confidence features.
        feature_names: names of the last axis of ``features``.
        path_features: whether a node's policy also sees its dominators' features.
        reference: index of the reference node (the most accurate full network): speedups and
            losses are measured against its answer at its ``alone_ms``.
    """

    scheme: str
    names: list[str]
    networks: list[str]
    exit_names: list[str]
    stage_ms: np.ndarray
    head_ms: np.ndarray
    successors: list[list[int]]
    edge_ms: dict[tuple[int, int], float]
    decision_ms: np.ndarray | float
    example_ids: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    correct_top1: np.ndarray
    correct_top5: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    path_features: bool = False
    reference: int = -1
    _dominators: list[tuple[int, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if len(set(self.names)) != n:
            raise ValueError(f"node names must be unique, got {self.names}")
        self.stage_ms = np.asarray(self.stage_ms, dtype=float)
        self.head_ms = np.asarray(self.head_ms, dtype=float)
        self.successors = [list(map(int, s)) for s in self.successors]
        self.edge_ms = {(int(a), int(b)): float(c) for (a, b), c in self.edge_ms.items()}
        decision = np.broadcast_to(np.asarray(self.decision_ms, dtype=float), (n,)).copy()
        decision[[not s for s in self.successors]] = 0.0
        self.decision_ms = decision
        self.example_ids = np.asarray(self.example_ids, dtype=np.int64)
        if np.any(np.diff(self.example_ids) <= 0):
            raise ValueError("example_ids must be strictly increasing")
        m = len(self.example_ids)
        for name in ("predictions", "correct_top1", "correct_top5"):
            if getattr(self, name).shape != (n, m):
                raise ValueError(f"{name} must have shape (nodes, examples) = {(n, m)}")
        self.correct_top1 = np.asarray(self.correct_top1, dtype=bool)
        self.correct_top5 = np.asarray(self.correct_top5, dtype=bool)
        self.features = np.asarray(self.features, dtype=np.float64)
        if self.features.shape[:2] != (n, m) or self.features.shape[2] != len(self.feature_names):
            raise ValueError("features must have shape (nodes, examples, len(feature_names))")
        for lst in (self.networks, self.exit_names, self.stage_ms, self.head_ms, self.successors):
            if len(lst) != n:
                raise ValueError("every per-node list must have one entry per node")
        for a, succ in enumerate(self.successors):
            if len(set(succ)) != len(succ):
                raise ValueError(f"node {self.names[a]} lists a successor twice")
            for b in succ:
                if not a < b < n:
                    raise ValueError(f"edge {a}->{b}: nodes must be in topological order")
                if (a, b) not in self.edge_ms:
                    raise ValueError(f"edge {a}->{b} has no cost")
        if set(self.edge_ms) != {(a, b) for a, s in enumerate(self.successors) for b in s}:
            raise ValueError("edge_ms has costs for edges that are not in successors")
        self.reference = int(self.reference) % n
        self._dominators = self._compute_dominators()
        if any(0 not in d for d in self._dominators):
            raise ValueError("every node must be reachable from the root (node 0)")

    def __repr__(self) -> str:
        return (
            f"StageGraph(scheme={self.scheme!r}, names={self.names}, "
            f"successors={self.successors}, examples={self.num_examples}, "
            f"reference={self.names[self.reference]!r})"
        )

    # ---------------------------------------------------------------------------------------
    # Structure
    # ---------------------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return len(self.names)

    @property
    def num_examples(self) -> int:
        return len(self.example_ids)

    @property
    def alone_ms(self) -> np.ndarray:
        """Cost of each node's answer alone: its network's backbone up to it plus its head."""
        return self.stage_ms + self.head_ms

    @property
    def entry_ms(self) -> float:
        """The cost every example pays to reach the root."""
        return float(self.alone_ms[0])

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

    def node_feature_names(self, node: int) -> list[str]:
        """Names of the columns of :meth:`node_features` (``node:feature``)."""
        nodes = self.feature_nodes(node)
        return [f"{self.names[m]}:{f}" for m in nodes for f in self.feature_names]

    def node_features(self, node: int, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Features a policy at ``node`` sees, float64, one row per example of ``rows``."""
        rows = slice(None) if rows is None else rows
        parts = [self.features[m, rows] for m in self.feature_nodes(node)]
        return np.concatenate(parts, axis=1)

    def default_chain(self, start: int = 0) -> list[int]:
        """The nodes reached from ``start`` by always following the default "next" edge."""
        chain = [start]
        while self.successors[chain[-1]]:
            chain.append(self.successors[chain[-1]][0])
        return chain

    def transition_ms(self, a: int, b: int) -> float:
        """Cost of computing node ``b``'s answer once node ``a``'s is known (``b`` after ``a``):
        the remaining backbone plus ``b``'s head inside one network, else ``b`` alone."""
        if self.networks[a] == self.networks[b] and self.stage_ms[b] >= self.stage_ms[a]:
            return float(self.stage_ms[b] - self.stage_ms[a] + self.head_ms[b])
        return float(self.alone_ms[b])

    def shortest_path_ms(self) -> tuple[np.ndarray, np.ndarray]:
        """Cheapest cost (entry included, no decisions) of reaching each node, and the
        predecessor on that path (-1 for the root)."""
        dist = np.full(self.num_nodes, np.inf)
        prev = np.full(self.num_nodes, -1)
        dist[0] = self.entry_ms
        for a in range(self.num_nodes):
            for b in self.successors[a]:
                if dist[a] + self.edge_ms[(a, b)] < dist[b]:
                    dist[b] = dist[a] + self.edge_ms[(a, b)]
                    prev[b] = a
        return dist, prev

    def longest_path_ms(self) -> float:
        """Cost of the costliest path from the root (entry, edges and decisions included)."""
        best = np.full(self.num_nodes, -np.inf)
        best[0] = self.entry_ms
        for a in range(self.num_nodes):
            for b in self.successors[a]:
                best[b] = max(best[b], best[a] + self.decision_ms[a] + self.edge_ms[(a, b)])
        return float(best.max())

    # ---------------------------------------------------------------------------------------
    # Per-example data
    # ---------------------------------------------------------------------------------------

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
        """What a fitted policy needs to match: scheme, nodes, edges and feature layout."""
        return (
            self.scheme,
            tuple(self.names),
            tuple(tuple(s) for s in self.successors),
            tuple(self.feature_names),
            self.path_features,
        )


# -------------------------------------------------------------------------------------------
# Routing
# -------------------------------------------------------------------------------------------


@dataclass
class Route:
    """Where each example of ``rows`` went, and what it paid in each node.

    ``paid_ms[i, n]`` is what example ``i`` paid in node ``n``: the cost of the edge it came in
    by (the entry cost at the start node) plus the decision computed there, if one was.
    """

    rows: np.ndarray
    stop: np.ndarray
    visited: np.ndarray
    decided: np.ndarray
    paid_ms: np.ndarray

    @property
    def cost_ms(self) -> np.ndarray:
        """Total cost of each example (ms): every stage on its path plus its decisions."""
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


def walk(
    graph: StageGraph,
    rows: np.ndarray,
    decide: Decider,
    *,
    start: int = 0,
    start_ms: float | None = None,
) -> Route:
    """Send the examples of ``rows`` through ``graph`` from ``start``, vectorised per node.

    Nodes are visited in topological order; at each non-terminal node ``decide`` gives every
    example there an action. The start node costs ``start_ms`` (the entry cost by default).
    """
    rows = np.asarray(rows)
    n, nodes = len(rows), graph.num_nodes
    at = np.zeros((nodes, n), dtype=bool)
    at[start] = True
    stop = np.full(n, -1, dtype=np.int64)
    visited = np.zeros((n, nodes), dtype=bool)
    decided = np.zeros((n, nodes), dtype=bool)
    paid = np.zeros((n, nodes), dtype=np.float64)
    paid[:, start] = graph.alone_ms[start] if start_ms is None else start_ms
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
    return Route(rows=rows, stop=stop, visited=visited, decided=decided, paid_ms=paid)


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


def _costs(exit_costs: pd.DataFrame, setting: str | None) -> pd.DataFrame:
    """The exit costs of one timing setting, sorted by exit, per example (ms).

    The timing tables hold the time of one pass over a batch; with a ``batch_size`` column the
    stage and head costs are divided by it (no change at batch 1, the latency setting).
    """
    table = exit_costs
    if "setting" in table.columns:
        settings = table["setting"].unique()
        if setting is None:
            if len(settings) != 1:
                raise ValueError(f"the exit costs hold settings {list(settings)}: choose one")
        else:
            table = table[table["setting"] == setting]
            if table.empty:
                raise ValueError(f"no exit costs for setting {setting!r} (have {list(settings)})")
    table = table.sort_values("exit").reset_index(drop=True)
    if table["exit"].tolist() != list(range(len(table))):
        raise ValueError("exit costs must hold exits 0..E-1 once each")
    if "batch_size" in table.columns:
        batch = table["batch_size"].to_numpy(float)
        table = table.assign(stage_ms=table["stage_ms"] / batch, head_ms=table["head_ms"] / batch)
    return table


@dataclass
class _NetworkData:
    """Per-exit arrays of one network, aligned on its example ids."""

    example_ids: np.ndarray
    labels: np.ndarray
    exit_names: list[str]
    predictions: np.ndarray
    correct_top1: np.ndarray
    correct_top5: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    stage_ms: np.ndarray
    head_ms: np.ndarray


def _network_data(
    predictions: pd.DataFrame, exit_costs: pd.DataFrame, setting: str | None, topk: int | None
) -> _NetworkData:
    table = predictions
    order = table["exit"].to_numpy().astype(np.int64) * (1 << 40) + table["example_id"].to_numpy()
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
    feature_names = [f"top{j}_prob" for j in range(1, k + 1)] + ["margin", "entropy"]
    features = np.stack(
        [table[c].to_numpy(np.float32).reshape(num_exits, n) for c in feature_names], axis=2
    )
    names = (
        table.groupby("exit", observed=True)["exit_name"].first().astype(str).tolist()
        if "exit_name" in table.columns
        else [f"exit{e}" for e in range(num_exits)]
    )
    costs = _costs(exit_costs, setting)
    if len(costs) != num_exits:
        raise ValueError(f"{num_exits} exits in the predictions, {len(costs)} in the exit costs")
    if "exit_name" in costs.columns and costs["exit_name"].astype(str).tolist() != names:
        raise ValueError(f"exit names differ: {names} vs {costs['exit_name'].tolist()}")
    return _NetworkData(
        example_ids=ids[0],
        labels=table["label"].to_numpy()[:n],
        exit_names=names,
        predictions=table["prediction"].to_numpy().reshape(num_exits, n),
        correct_top1=table["correct_top1"].to_numpy(bool).reshape(num_exits, n),
        correct_top5=table["correct_top5"].to_numpy(bool).reshape(num_exits, n),
        features=features,
        feature_names=feature_names,
        stage_ms=costs["stage_ms"].to_numpy(float),
        head_ms=costs["head_ms"].to_numpy(float),
    )


def _assemble(
    scheme: str,
    nets: Mapping[str, _NetworkData],
    nodes: Sequence[tuple[str, int]],
    names: Sequence[str],
    successors: Sequence[Sequence[int]],
    *,
    decision_ms: float | Sequence[float],
    path_features: bool,
    reference: str | None,
) -> StageGraph:
    """A graph over ``nodes`` = (network, exit) pairs; edge costs from the transition rule."""
    first = next(iter(nets.values()))
    for name, data in nets.items():
        if not np.array_equal(data.example_ids, first.example_ids):
            raise ValueError(f"network {name} was evaluated on other examples")
        if not np.array_equal(data.labels, first.labels):
            raise ValueError(f"network {name} has other labels")
        if data.feature_names != first.feature_names:
            raise ValueError(f"network {name} has other features (top-k)")

    def pick(attr: str) -> np.ndarray:
        return np.stack([getattr(nets[net], attr)[e] for net, e in nodes])

    graph = StageGraph(
        scheme=scheme,
        names=list(names),
        networks=[net for net, _ in nodes],
        exit_names=[nets[net].exit_names[e] for net, e in nodes],
        stage_ms=np.array([nets[net].stage_ms[e] for net, e in nodes]),
        head_ms=np.array([nets[net].head_ms[e] for net, e in nodes]),
        successors=[list(s) for s in successors],
        edge_ms={(a, b): 0.0 for a, s in enumerate(successors) for b in s},
        decision_ms=decision_ms,
        example_ids=first.example_ids,
        labels=first.labels,
        predictions=pick("predictions"),
        correct_top1=pick("correct_top1"),
        correct_top5=pick("correct_top5"),
        features=pick("features"),
        feature_names=first.feature_names,
        path_features=path_features,
    )
    graph.edge_ms = {(a, b): graph.transition_ms(a, b) for (a, b) in graph.edge_ms}
    graph.reference = _reference(graph, reference, nets)
    return graph


def _reference(graph: StageGraph, reference: str | None, nets: Mapping[str, _NetworkData]) -> int:
    """The named node, or the most accurate (top-1, all examples) full network of the graph."""
    if reference is not None:
        if reference in graph.names:
            return graph.names.index(reference)
        full = [i for i, net in enumerate(graph.networks) if net == reference
                and graph.exit_names[i] == nets[net].exit_names[-1]]
        if full:
            return full[0]
        raise ValueError(f"reference {reference!r} is not a node or full network of the graph")
    full = [
        i for i, net in enumerate(graph.networks) if graph.exit_names[i] == nets[net].exit_names[-1]
    ]
    accuracy = graph.correct_top1[full].mean(axis=1)
    best = np.flatnonzero(accuracy == accuracy.max())
    return full[int(best[np.argmin(graph.alone_ms[np.asarray(full)[best]])])]


def _network_order(
    nets: Mapping[str, _NetworkData], networks: Sequence[str] | None, sort_by_cost: bool
) -> list[str]:
    order = list(nets) if networks is None else list(networks)
    missing = set(order) - set(nets)
    if missing:
        raise ValueError(f"no predictions or costs for networks {sorted(missing)}")
    if sort_by_cost:
        order.sort(key=lambda net: nets[net].stage_ms[-1] + nets[net].head_ms[-1])
    return order


def _load_networks(
    predictions: Mapping[str, pd.DataFrame],
    exit_costs: Mapping[str, pd.DataFrame],
    networks: Sequence[str] | None,
    setting: str | None,
    topk: int | None,
) -> dict[str, _NetworkData]:
    names = list(predictions) if networks is None else list(networks)
    return {
        net: _network_data(predictions[net], exit_costs[net], setting, topk) for net in names
    }


def early_exit_graph(
    predictions: pd.DataFrame,
    exit_costs: pd.DataFrame,
    *,
    network: str,
    setting: str | None = "latency",
    decision_ms: float = 0.0,
    topk: int | None = None,
    path_features: bool = False,
) -> StageGraph:
    """The chain of exits of one network: exit ``k`` -> exit ``k+1``.

    The root is the first exit (entry cost: backbone up to it plus its head); each edge costs
    the backbone between the two exits plus the next head; the final exit is the reference.

    Args:
        predictions: the network's predictions table (one row per example x exit).
        exit_costs: the network's exit costs table (``setting`` selects the timing setting;
            batch times are divided by the batch size: every cost is per example).
        network: the network's name (node names are ``network/exit_name``).
        setting: the timing setting (``latency`` or ``throughput``), or None for a table
            holding one setting.
        decision_ms: the measured cost of one policy decision, per example, in the same
            setting as the stage costs.
        topk: how many sorted probabilities the features use (default: all in the table).
        path_features: also give each exit's policy the features of the earlier exits.
    """
    data = _network_data(predictions, exit_costs, setting, topk)
    e = len(data.exit_names)
    nodes = [(network, k) for k in range(e)]
    names = [f"{network}/{name}" for name in data.exit_names]
    successors = [[k + 1] if k + 1 < e else [] for k in range(e)]
    return _assemble(
        "early_exit", {network: data}, nodes, names, successors,
        decision_ms=decision_ms, path_features=path_features, reference=names[-1],
    )


def network_selection_graph(
    predictions: Mapping[str, pd.DataFrame],
    exit_costs: Mapping[str, pd.DataFrame],
    *,
    networks: Sequence[str] | None = None,
    sort_by_cost: bool = True,
    setting: str | None = "latency",
    decision_ms: float = 0.0,
    topk: int | None = None,
    path_features: bool = False,
    reference: str | None = None,
) -> StageGraph:
    """Whole networks as nodes, cheapest first; each may jump to any later one.

    Each node answers with its network's final exit. The root is the cheapest network (entry
    cost: its full cost); the edge to a later network costs that network's full cost (a jump
    A -> R pays R alone, after A). Successors are listed next network first.

    Args:
        predictions, exit_costs: tables per network name.
        networks: which networks (default: all of ``predictions``).
        sort_by_cost: order the networks by full cost (else keep the given order).
        reference: the reference network (default: the most accurate at top-1 over all the
            examples of the tables; ties go to the cheaper).
        setting, decision_ms, topk, path_features: as in :func:`early_exit_graph`.
    """
    nets = _load_networks(predictions, exit_costs, networks, setting, topk)
    order = _network_order(nets, networks, sort_by_cost)
    nodes = [(net, len(nets[net].exit_names) - 1) for net in order]
    successors = [list(range(i + 1, len(order))) for i in range(len(order))]
    return _assemble(
        "network_selection", nets, nodes, order, successors,
        decision_ms=decision_ms, path_features=path_features, reference=reference,
    )


def combined_graph(
    predictions: Mapping[str, pd.DataFrame],
    exit_costs: Mapping[str, pd.DataFrame],
    *,
    networks: Sequence[str] | None = None,
    sort_by_cost: bool = True,
    setting: str | None = "latency",
    decision_ms: float = 0.0,
    topk: int | None = None,
    path_features: bool = False,
    reference: str | None = None,
) -> StageGraph:
    """Exits inside networks, networks chained (cheapest first).

    From any exit of network ``i`` an example may go to the next exit of the same network
    (backbone between them plus the next head) or jump into any later network, at its first exit
    or at its final exit (the whole network, as in network selection; either way it pays the
    network's backbone up to that exit plus the head). The jumps to whole networks make the
    network-selection graph a subgraph of this one, so that adding exits can only add options:
    without them, reaching a later network's final answer would pay every head (and decision)
    of its earlier exits on the way. The default "next" edge is the next exit of the same
    network, and from a network's final exit the first exit of the next network; the other
    successors follow in node order. Arguments as in :func:`network_selection_graph`.
    """
    nets = _load_networks(predictions, exit_costs, networks, setting, topk)
    order = _network_order(nets, networks, sort_by_cost)
    nodes = [(net, k) for net in order for k in range(len(nets[net].exit_names))]
    names = [f"{net}/{nets[net].exit_names[k]}" for net, k in nodes]
    first_exit: dict[str, int] = {}
    final_exit: dict[str, int] = {}
    for i, (net, k) in enumerate(nodes):
        first_exit.setdefault(net, i)
        final_exit[net] = i
    successors = []
    for i, (net, k) in enumerate(nodes):
        later = [
            node
            for other in order[order.index(net) + 1:]
            for node in dict.fromkeys((first_exit[other], final_exit[other]))
        ]
        same = [i + 1] if k + 1 < len(nets[net].exit_names) else []
        successors.append(same + later)
    return _assemble(
        "combined", nets, nodes, names, successors,
        decision_ms=decision_ms, path_features=path_features, reference=reference,
    )


def scheme_graph(
    graph: str,
    networks: Sequence[str],
    predictions: Mapping[str, pd.DataFrame],
    exit_costs: Mapping[str, pd.DataFrame],
    *,
    reference: str | None = None,
    **options,
) -> StageGraph:
    """The graph of a scheme of the config (``graph``: early_exit, network_selection, combined).

    ``options`` (setting, decision_ms, topk, path_features) go to the builder. For early exit the
    reference is the network's final exit, whatever ``reference`` says.
    """
    if graph == "early_exit":
        if len(networks) != 1:
            raise ValueError(f"an early_exit graph takes one network, got {list(networks)}")
        (network,) = networks
        return early_exit_graph(predictions[network], exit_costs[network], network=network, **options)
    builders = {"network_selection": network_selection_graph, "combined": combined_graph}
    if graph not in builders:
        raise ValueError(f"unknown graph {graph!r}; choose early_exit, network_selection or combined")
    return builders[graph](
        predictions, exit_costs, networks=list(networks), reference=reference, **options
    )
