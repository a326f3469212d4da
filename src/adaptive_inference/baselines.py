"""Baselines on the same graph, split and costs as the learned policies (STUDY.md, section 3).

* **uniform**: one threshold on the maximum softmax probability shared by every node; an example
  stops at the first node whose maximum probability is >= the threshold. On a DAG it follows the
  default "next" edge of every node (the graph's first successor: the next exit of the same
  network, else the next network), so it never skips: on the network-selection graph it is the
  fixed cascade cheapest -> ... -> costliest, on the combined graph the chain of every exit of
  every network. Every visited non-terminal node pays the decision cost. Threshold ``inf``
  never stops early.
* **oracle**: each example takes the cheapest path of the graph (a start anywhere plus edges)
  to a node whose answer is right (at top-1 or top-5, two oracles); when no node is right, the
  cheapest node alone. It pays every stage on its path but no decision cost: it is a bound that
  no policy on the graph can beat at equal accuracy.
* **single**: each node alone, at the cost of its network up to it plus its head (no other head,
  no decision): the single networks of network selection, the truncated network at each exit.
* **cascade**: two-stage cascades "node ``a``, then the reference": ``a`` alone (plus a decision)
  answers when its maximum probability is >= the threshold, else the reference's answer is
  computed along the edge ``a -> reference``. Offered for every node with such an edge that is
  cheaper than the reference; the threshold is swept like uniform's. Together with uniform (the
  full chain) these are the fixed cascades, and all of them are routes of the graph: policies of
  the learned class (:func:`~adaptive_inference.policies.threshold_policy`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaptive_inference.graph import LOSSES, STOP, Route, StageGraph, pay_answers, walk


def uniform_route(
    graph: StageGraph, threshold: float, examples: np.ndarray | Sequence[int] | None = None
) -> Route:
    """Stop at the first node (default chain) whose max probability is >= ``threshold``."""
    rows = graph.rows(examples)
    max_prob = graph.max_prob

    def decide(node: int, here: np.ndarray) -> tuple[np.ndarray, bool]:
        stop = max_prob[node, rows[here]] >= threshold
        return np.where(stop, STOP, graph.successors[node][0]), True

    return walk(graph, rows, decide)


def default_thresholds(graph: StageGraph, rows: np.ndarray, count: int = 50) -> np.ndarray:
    """Thresholds spanning "always stop at the root" to "never stop early": quantiles of the
    maximum probability at the non-terminal nodes of the default chain on ``rows`` (the
    training examples), each moved half a float32 step down, plus ``inf``."""
    chain = [n for n in graph.default_chain() if not graph.is_terminal(n)]
    if count < 2:
        raise ValueError("at least two thresholds are needed")
    pooled = graph.max_prob[np.ix_(chain, rows)].ravel()
    quantiles = np.quantile(pooled.astype(np.float64), np.linspace(0.0, 1.0, count - 1))
    # Half a float32 step below a float32 value: no (float32) probability equals a threshold,
    # so ">= t" here and the linear rules' "> t" (policies.threshold_policy) agree.
    near = quantiles.astype(np.float32)
    thresholds = near.astype(np.float64) - np.spacing(near).astype(np.float64) / 2
    return np.append(np.unique(thresholds), np.inf)


def oracle_route(
    graph: StageGraph, examples: np.ndarray | Sequence[int] | None = None, *, loss: str = "top1"
) -> Route:
    """The cheapest path to a right answer (``loss``: top1 or top5), else the cheapest node
    alone; a path may start at any node (as a policy's may)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    rows = graph.rows(examples)
    dist, prev = graph.shortest_path_ms()
    right = graph.correct(loss)[:, rows]
    cost = np.where(right, dist[:, None], np.inf)
    stop = np.where(right.any(axis=0), cost.argmin(axis=0), int(np.argmin(dist)))
    on_path = np.zeros((graph.num_nodes, graph.num_nodes), dtype=bool)
    step_ms = np.zeros(graph.num_nodes)
    for node in range(graph.num_nodes):
        step_ms[node] = dist[node] - (dist[prev[node]] if prev[node] >= 0 else 0.0)
        walker = node
        while walker >= 0:
            on_path[node, walker] = True
            walker = prev[walker]
    visited = on_path[stop]
    route = Route(
        rows=rows,
        stop=stop.astype(np.int64),
        visited=visited,
        decided=np.zeros_like(visited),
        paid_ms=visited * step_ms,
    )
    pay_answers(graph, route)  # nothing decided: every example reads its answer
    return route


def single_route(
    graph: StageGraph, node: int, examples: np.ndarray | Sequence[int] | None = None
) -> Route:
    """Every example answered by ``node`` alone, at ``single_ms[node]`` (plus the answer)."""
    rows = graph.rows(examples)
    visited = np.zeros((rows.size, graph.num_nodes), dtype=bool)
    visited[:, node] = True
    return Route(
        rows=rows,
        stop=np.full(rows.size, node, dtype=np.int64),
        visited=visited,
        decided=np.zeros_like(visited),
        paid_ms=visited * (graph.single_ms[node] + graph.answer_ms),
    )


def cascade_firsts(graph: StageGraph) -> list[int]:
    """The nodes a two-stage cascade may start from: those with an edge to the reference (so
    that the cascade is a route of the graph, and of the learned policies' class). The graph
    alone fixes them, not the measured costs: two runs of a study have the same baselines (a
    first node that happens to cost as much as the reference only gives slow points)."""
    ref = graph.reference
    return [n for n in range(ref) if ref in graph.successors[n]]


def cascade_route(
    graph: StageGraph,
    first: int,
    threshold: float,
    examples: np.ndarray | Sequence[int] | None = None,
) -> Route:
    """``first`` answers when its max probability is >= ``threshold``, else the reference does
    (the edge ``first -> reference``); the decision at ``first`` is paid by every example."""
    last = graph.reference
    if last not in graph.successors[first]:
        raise ValueError(f"{graph.names[first]} has no edge to the reference")
    rows = graph.rows(examples)
    stop_first = graph.max_prob[first, rows] >= threshold
    visited = np.zeros((rows.size, graph.num_nodes), dtype=bool)
    visited[:, first] = True
    visited[:, last] = ~stop_first
    decided = np.zeros_like(visited)
    decided[:, first] = True
    paid = np.zeros(visited.shape)
    paid[:, first] = graph.start_ms[first] + graph.decision_ms[first]
    paid[:, last] = np.where(stop_first, 0.0, graph.edge_ms[(first, last)])
    stop = np.where(stop_first, first, last).astype(np.int64)
    route = Route(rows=rows, stop=stop, visited=visited, decided=decided, paid_ms=paid)
    pay_answers(graph, route)
    return route
