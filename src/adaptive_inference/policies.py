"""The paper's policy learner: a backward recursion of weighted binary classifications.

Objective (docs/method.md, "The objective"): minimise ``mean(loss + lambda * time)`` over the
training examples, ``loss`` the 0/1 loss of the answer given (top-1 or top-5), ``time`` in ms.
Nodes are visited in reverse topological order (terminal nodes first). For each example ``x``:

* terminal node ``t``: ``C_t(x) = loss_t(x) + lambda * a``, ``a`` the cost of reading the
  answer from the logits;
* node ``n``: ``cost(stop) = loss_n(x)``; ``cost(go m) = lambda * edge_ms(n, m) + C_m(x)``,
  where ``C_m`` is the cost-to-go under the policy *already learned* downstream (global) or the
  successor's own loss ``loss_m(x)`` (``myopic=True``: the baseline that only looks one step
  ahead);
* the node's rule is learned from these costs (below), and ``C_n(x) = lambda * d_n + cost of
  the action the rule takes for x``, where ``d_n`` is the node's own decision cost, paid when
  its rule depends on the example (a constant rule computes nothing). Such a decision's
  features hold the example's class, which it answers with; a constant stop reads it from the
  logits and pays ``lambda * a`` (:func:`~adaptive_inference.graph.pay_answers`).

**Decision-cost-aware nodes.** Once a node's rule is fitted, its training objective (the
actions' costs plus ``lambda * d_n`` per example) is compared with that of every constant
action, exactly, and the cheapest is kept: a node never pays for a decision that does not earn
its cost.

**Where the route starts.** A route may start at any node (:meth:`~adaptive_inference.graph.
GraphStructure.start_candidates`): the global policy starts where ``mean(C_s) + lambda *
entry_s`` is least (a constant choice, the virtual start's; ``entry_s`` is ``start_ms[s]``, or
``single_ms[s]`` where the route is ``s`` alone: its rule stops every example without a
decision), so a single network or a fixed cascade that skips the graph's first node is a route
of the learned class. The myopic baseline starts at the root, as the paper's does.

**The reduction to weighted binary problems** (a decision list). The actions of a node are
ordered ``[stop, successor_1, ..., successor_s]``. Step ``i`` is a binary problem "take action
``i``" vs "defer to a later action", where the cost of deferring is the cheapest of the later
actions for that example: label = the cheaper side, weight = ``|cost(take) - cost(defer)|`` (the
regret of the wrong choice). Step 0 is trained on all training examples; step ``i`` on the
examples that the *learned* steps ``0..i-1`` deferred. Examples with zero weight carry no
information and are dropped; the weights of the kept examples are rescaled to mean 1.

**Classifier**: scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` with
``sample_weight`` on features standardised by a :class:`~sklearn.preprocessing.StandardScaler`
fitted once per node on the training examples. Every step, learned or constant, is a linear rule
on the standardised features (:class:`~adaptive_inference.decision.NodeRule`), so a runtime
applies a node's policy with a few tensor operations and a policy is saved as plain data
(:meth:`TradeoffPolicy.to_dict`).

**Threshold rules in the class.** :func:`threshold_policy` writes the uniform and cascade
baselines as policies of the same class (a step "stop when the top-1 probability exceeds ``t``"
is a linear rule on one standardised feature), so the sweep can hold the learned curve to them
(:mod:`adaptive_inference.sweep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from adaptive_inference.decision import NodeRule
from adaptive_inference.graph import LOSSES, STOP, Route, StageGraph, walk

WEIGHT_TOLERANCE = 1e-12
"""Cost differences at or below this are ties (weight zero): such examples are dropped."""


@dataclass
class NodeFeatures:
    """Standardised features of one node on the training examples, and the scaler's state."""

    z: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    names: list[str]


def standardize(graph: StageGraph, rows: np.ndarray) -> list[NodeFeatures | None]:
    """Fit a :class:`StandardScaler` per non-terminal node on ``rows``; reusable across fits."""
    out: list[NodeFeatures | None] = []
    for node in range(graph.num_nodes):
        if graph.is_terminal(node):
            out.append(None)
            continue
        x = graph.node_features(node, rows)
        scaler = StandardScaler().fit(x)
        z = (x - scaler.mean_) / scaler.scale_
        names = graph.node_feature_names(node)
        out.append(NodeFeatures(z, scaler.mean_.copy(), scaler.scale_.copy(), names))
    return out


def _fit_step(
    z: np.ndarray, take: np.ndarray, defer: np.ndarray, estimator: LogisticRegression
) -> tuple[np.ndarray, float, LogisticRegression | None]:
    """One weighted binary problem "take" vs "defer"; returns (coef, intercept, estimator)."""
    diff = defer - take  # > 0: taking the action is cheaper
    weight = np.abs(diff)
    keep = weight > WEIGHT_TOLERANCE
    label = diff > 0
    features = z.shape[1]
    if not keep.any():
        constant = take.sum() <= defer.sum()  # all ties: take (the earlier, cheaper action)
        return np.zeros(features), 1.0 if constant else -1.0, None
    kept_labels = label[keep]
    if kept_labels.all() or not kept_labels.any():
        return np.zeros(features), 1.0 if kept_labels[0] else -1.0, None
    w = weight[keep]
    estimator.fit(z[keep], kept_labels, sample_weight=w / w.mean())
    return estimator.coef_[0].copy(), float(estimator.intercept_[0]), estimator


def fit_node_rule(
    node: int,
    actions: Sequence[int],
    costs: np.ndarray,
    features: NodeFeatures,
    make_estimator: Callable[[int], LogisticRegression],
    decision_cost: float = 0.0,
    answer_cost: float = 0.0,
) -> tuple[NodeRule, np.ndarray, list[LogisticRegression | None]]:
    """Learn the decision list of one node from per-example action costs.

    Args:
        node: the node's index.
        actions: the actions in decision-list order (STOP first, then successors).
        costs: ``(A, examples)`` the cost of each action for each training example.
        features: the node's standardised training features.
        make_estimator: ``make_estimator(step)`` returns the LogisticRegression to fit.
        decision_cost: what computing the decision costs per example, in the units of
            ``costs`` (``lambda * decision_ms``): the fitted rule is kept only where its total
            (actions plus decisions) is below every constant action's, which computes nothing.
        answer_cost: what reading the answer from the logits costs per example, in the same
            units: a constant STOP pays it, where a fitted rule's features hold the class
            (:func:`~adaptive_inference.graph.pay_answers`).

    Returns:
        The rule, the index (into ``actions``) it chooses for each training example, and the
        fitted estimator of each step (all None when the rule is constant).
    """
    num_actions, n = costs.shape
    steps = num_actions - 1
    coef = np.zeros((steps, features.z.shape[1]))
    intercept = np.zeros(steps)
    learned = np.zeros(steps, dtype=bool)
    estimators: list[LogisticRegression | None] = []
    chosen = np.full(n, steps, dtype=np.int64)
    pending = np.arange(n)
    for step in range(steps):
        if pending.size == 0:
            intercept[step] = -1.0  # nobody left: defer (never used on the training set)
            estimators.append(None)
            continue
        take = costs[step, pending]
        defer = costs[step + 1 :, pending].min(axis=0)
        z = features.z if pending.size == n else features.z[pending]
        c, b, est = _fit_step(z, take, defer, make_estimator(step))
        coef[step], intercept[step], learned[step] = c, b, est is not None
        estimators.append(est)
        taken = z @ c + b > 0
        chosen[pending[taken]] = step
        pending = pending[~taken]
    if learned.any():
        fitted_total = costs[chosen, np.arange(n)].sum() + decision_cost * n
        totals = costs.sum(axis=1)
        totals[list(actions).index(STOP)] += answer_cost * n
        best = int(np.argmin(totals))
        if totals[best] <= fitted_total:  # a constant action is at least as good: no decision
            rule = NodeRule.constant(
                node, actions, int(actions[best]), features.names, features.mean, features.scale
            )
            return rule, np.full(n, best, dtype=np.int64), [None] * steps
    rule = NodeRule(
        node=node,
        actions=np.asarray(actions, dtype=np.int64),
        feature_names=list(features.names),
        mean=features.mean,
        scale=features.scale,
        coef=coef,
        intercept=intercept,
        learned=learned,
    )
    return rule, chosen, estimators


# -------------------------------------------------------------------------------------------
# The policy
# -------------------------------------------------------------------------------------------


class TradeoffPolicy(BaseEstimator):
    """A policy on a :class:`~adaptive_inference.graph.StageGraph` minimising loss + lambda*time.

    Args:
        lam: the price of time, per ms (``lambda``); 0 cares about loss only.
        loss: the 0/1 loss the policy minimises: ``top1`` or ``top5``.
        C: inverse regularisation strength of the logistic regressions.
        myopic: compare each node with its successors' own losses instead of the learned
            cost-to-go (the paper's myopic baseline; it starts at the root).
        solver, max_iter, tol: passed to LogisticRegression (``newton-cholesky`` suits many
            examples and few features; a tight ``tol`` costs one Newton step more and makes a
            warm-started fit agree with a cold one to ~1e-6).

    Attributes (after ``fit``, or as built by :func:`threshold_policy` / :meth:`from_dict`):
        rules_: one :class:`~adaptive_inference.decision.NodeRule` per node (None for terminal
            nodes).
        start_: the node every route starts at.
        estimators_: ``{(node, step): LogisticRegression}`` of every learned step (not saved).
        graph_signature_: the structure of the graph the policy was fitted on.
        origin_: how the policy was made: ``recursion``, ``shifted`` (its learned rules'
            intercepts moved, :meth:`shifted`), ``uniform``, ``cascade``, ``single`` or
            ``reference`` (threshold and constant policies of the same class).
        shift_: the intercept shift of a ``shifted`` policy (0 otherwise).
        train_loss_, train_cost_ms_, train_objective_: its mean 0/1 loss, mean cost (ms) and
            ``train_loss_ + lam * train_cost_ms_`` on its training examples.
        recursion_objective_: the objective as the recursion computed it (equal to
            ``train_objective_`` for the global policy; for the myopic one, what it believed).
    """

    def __init__(
        self,
        lam: float = 0.0,
        loss: str = "top1",
        C: float = 1.0,
        myopic: bool = False,
        solver: str = "newton-cholesky",
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        self.lam = lam
        self.loss = loss
        self.C = C
        self.myopic = myopic
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol

    def _estimator(self, node: int, step: int, init: TradeoffPolicy | None) -> LogisticRegression:
        """A fresh estimator; started from ``init``'s solution for the same step if it has one
        (a warm start: the problem is strictly convex, so only the iterations change)."""
        start = None if init is None else getattr(init, "estimators_", {}).get((node, step))
        estimator = LogisticRegression(
            C=self.C,
            solver=self.solver,
            max_iter=self.max_iter,
            tol=self.tol,
            warm_start=start is not None,
        )
        if start is not None:
            estimator.coef_ = start.coef_.copy()
            estimator.intercept_ = start.intercept_.copy()
        return estimator

    def fit(
        self,
        graph: StageGraph,
        examples: np.ndarray | Sequence[int] | None = None,
        *,
        features: list[NodeFeatures | None] | None = None,
        init: TradeoffPolicy | None = None,
    ) -> TradeoffPolicy:
        """Learn every node's rule and the start node on ``examples`` (ids or a boolean mask;
        None: all).

        ``features`` may pass :func:`standardize` of the same graph and rows, computed once for
        many fits (a sweep over lambda). ``init``, a policy fitted on the same graph and
        examples (the previous lambda of a sweep), warm-starts the logistic regressions.
        """
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")
        rows = graph.rows(examples)
        if rows.size == 0:
            raise ValueError("no training examples")
        if features is None:
            features = standardize(graph, rows)
        elif features[0] is not None and len(features[0].z) != rows.size:
            raise ValueError("the standardised features do not match the training examples")
        loss = graph.loss(self.loss, rows)
        lam = float(self.lam)
        cost_to_go = np.empty_like(loss)  # what the recursion minimises (myopic: its belief)
        loss_to_go = np.empty_like(loss)  # the fitted policy's actual loss from each node
        time_to_go = np.zeros_like(loss)  # and its actual time (ms) from each node on
        rules: list[NodeRule | None] = [None] * graph.num_nodes
        estimators: dict[tuple[int, int], LogisticRegression] = {}
        index = np.arange(rows.size)
        for node in reversed(range(graph.num_nodes)):
            succ = graph.successors[node]
            if not succ:
                loss_to_go[node] = loss[node]
                cost_to_go[node] = loss[node] + lam * graph.answer_ms
                time_to_go[node] = graph.answer_ms
                continue
            ahead = loss if self.myopic else cost_to_go
            go = [lam * graph.edge_ms[(node, m)] + ahead[m] for m in succ]
            costs = np.stack([loss[node], *go])
            rule, chosen, fitted = fit_node_rule(
                node,
                [STOP, *succ],
                costs,
                features[node],
                lambda step, node=node: self._estimator(node, step, init),
                decision_cost=lam * graph.decision_ms[node],
                answer_cost=lam * graph.answer_ms,
            )
            rules[node] = rule
            estimators.update({(node, s): e for s, e in enumerate(fitted) if e is not None})
            decides = rule.constant_action is None
            decision_ms = graph.decision_ms[node] if decides else 0.0
            answer_ms = 0.0 if decides else graph.answer_ms  # paid by the examples that stop
            paid_ms = decision_ms + answer_ms * (chosen == 0)
            cost_to_go[node] = costs[chosen, index] + lam * paid_ms
            loss_to_go[node] = loss[node]
            time_to_go[node] = decision_ms + answer_ms
            for a, m in enumerate(succ, start=1):
                sent = chosen == a
                loss_to_go[node, sent] = loss_to_go[m, sent]
                time_to_go[node, sent] = (
                    decision_ms + graph.edge_ms[(node, m)] + time_to_go[m, sent]
                )

        def entry_ms(s: int) -> float:
            alone = rules[s] is None or rules[s].constant_action == STOP
            return float(graph.single_ms[s] if alone else graph.start_ms[s])

        if self.myopic:
            start = 0
        else:
            candidates = graph.start_candidates()
            totals = [cost_to_go[s].mean() + lam * entry_ms(s) for s in candidates]
            start = candidates[int(np.argmin(totals))]
        self.rules_ = rules
        self.start_ = int(start)
        self.estimators_ = estimators
        self.graph_signature_ = graph.signature()
        self.origin_ = "recursion"
        self.shift_ = 0.0
        self.recursion_objective_ = float(cost_to_go[start].mean() + lam * entry_ms(start))
        # what the fitted rules do (equal to simulating the policy: a test checks it)
        self.train_loss_ = float(loss_to_go[start].mean())
        self.train_cost_ms_ = float(time_to_go[start].mean() + entry_ms(start))
        self.train_objective_ = self.train_loss_ + lam * self.train_cost_ms_
        return self

    def _score(self, graph: StageGraph, rows: np.ndarray) -> None:
        """Record the training loss, cost and objective of the policy as it is, by simulation."""
        route = self.route_rows(graph, rows)
        self.train_loss_ = float((~graph.correct(self.loss)[route.stop, rows]).mean())
        self.train_cost_ms_ = float(route.cost_ms.mean())
        self.train_objective_ = self.train_loss_ + float(self.lam) * self.train_cost_ms_

    def _check(self, graph: StageGraph) -> None:
        if not hasattr(self, "rules_"):
            raise RuntimeError("the policy is not fitted")
        if graph.signature() != self.graph_signature_:
            raise ValueError("the graph differs from the one the policy was fitted on")

    def decide(self, graph: StageGraph, node: int, rows: np.ndarray) -> tuple[np.ndarray, bool]:
        """Actions at ``node`` for the examples at positions ``rows``, and whether a decision
        was computed (False for a constant rule)."""
        rule = self.rules_[node]
        constant = rule.constant_action
        if constant is not None:
            return np.full(len(rows), constant, dtype=np.int64), False
        return rule.decide(graph.node_features(node, rows)), True

    def route(self, graph: StageGraph, examples: np.ndarray | Sequence[int] | None = None) -> Route:
        """Where each example goes: stop node, path, decisions and cost per node."""
        return self.route_rows(graph, graph.rows(examples))

    def route_rows(self, graph: StageGraph, rows: np.ndarray) -> Route:
        """:meth:`route` for examples given by their positions in the graph's arrays."""
        self._check(graph)
        return walk(
            graph, rows, lambda node, here: self.decide(graph, node, rows[here]), start=self.start_
        )

    def predict(
        self, graph: StageGraph, examples: np.ndarray | Sequence[int] | None = None
    ) -> np.ndarray:
        """The node where each example stops (its index in the graph)."""
        return self.route(graph, examples).stop

    # --- variants and data ------------------------------------------------------------------

    def shifted(self, graph: StageGraph, shift: float, rows: np.ndarray) -> TradeoffPolicy:
        """A copy whose learned "stop" steps take ``shift`` more on their score (positive: stop
        more often, cheaper and less accurate; negative: more conservative), scored on
        ``rows`` (the training examples)."""
        twin = self._copy()
        for rule in twin.rules_:
            if rule is not None and rule.learned[0]:
                rule.intercept = rule.intercept.copy()
                rule.intercept[0] += shift
        twin.origin_, twin.shift_ = "shifted", float(shift)
        twin._score(graph, rows)
        return twin

    def _copy(self) -> TradeoffPolicy:
        twin = TradeoffPolicy(**self.get_params())
        twin.rules_ = [None if r is None else NodeRule.from_dict(r.to_dict()) for r in self.rules_]
        for name in ("start_", "graph_signature_", "origin_", "shift_", "recursion_objective_"):
            setattr(twin, name, getattr(self, name, None))
        twin.estimators_ = {}
        return twin

    def to_dict(self) -> dict[str, Any]:
        """The fitted policy as plain data (JSON): its parameters, start node, origin and each
        node's rule (:meth:`NodeRule.to_dict`); the logistic regressions are not kept."""
        if not hasattr(self, "rules_"):
            raise RuntimeError("the policy is not fitted")
        return {
            "params": self.get_params(),
            "start": self.start_,
            "origin": self.origin_,
            "shift": self.shift_,
            "graph_signature": _jsonable(self.graph_signature_),
            "rules": [None if r is None else r.to_dict() for r in self.rules_],
            "train": {
                "loss": self.train_loss_,
                "cost_ms": self.train_cost_ms_,
                "objective": self.train_objective_,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TradeoffPolicy:
        """A policy :meth:`to_dict` wrote, ready to route examples (nothing is executed: the
        rules are numbers)."""
        policy = cls(**data["params"])
        policy.rules_ = [None if r is None else NodeRule.from_dict(r) for r in data["rules"]]
        policy.start_ = int(data["start"])
        policy.origin_ = str(data["origin"])
        policy.shift_ = float(data["shift"])
        policy.graph_signature_ = _signature(data["graph_signature"])
        policy.estimators_ = {}
        policy.train_loss_ = float(data["train"]["loss"])
        policy.train_cost_ms_ = float(data["train"]["cost_ms"])
        policy.train_objective_ = float(data["train"]["objective"])
        return policy


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _signature(value: Any) -> Any:
    return tuple(_signature(v) for v in value) if isinstance(value, list) else value


# -------------------------------------------------------------------------------------------
# Baselines as policies of the class
# -------------------------------------------------------------------------------------------


def threshold_policy(
    graph: StageGraph,
    features: Sequence[NodeFeatures | None],
    *,
    start: int,
    go: Mapping[int, int],
    threshold: float,
    rows: np.ndarray,
    lam: float = 0.0,
    loss: str = "top1",
    origin: str,
) -> TradeoffPolicy:
    """The policy that starts at ``start`` and, at each node of ``go`` (node -> the successor
    it sends examples on to), stops when its maximum probability is above ``threshold``, else
    goes on; nodes outside ``go`` stop. Scored on ``rows`` (training examples) at ``lam``.

    A step "stop when ``top1_prob > t``" is the linear rule ``coef = scale`` on the node's own
    standardised ``top1_prob`` and ``intercept = mean - t`` (score ``top1_prob - t``), so these
    are policies of the learned class; with the thresholds of
    :func:`~adaptive_inference.baselines.default_thresholds` (half a float32 step below a
    representable value) ``> t`` and the baselines' ``>= t`` agree on every example.
    """
    policy = TradeoffPolicy(lam=lam, loss=loss)
    rules: list[NodeRule | None] = []
    for node in range(graph.num_nodes):
        f = features[node]
        if graph.is_terminal(node):
            rules.append(None)
            continue
        actions = [STOP, *graph.successors[node]]
        if node not in go:
            rules.append(NodeRule.constant(node, actions, STOP, f.names, f.mean, f.scale))
            continue
        column = f.names.index(f"{graph.names[node]}:top1_prob")
        steps = len(actions) - 1
        coef = np.zeros((steps, len(f.names)))
        intercept = np.full(steps, -1.0)
        coef[0, column] = f.scale[column]
        intercept[0] = f.mean[column] - threshold
        onward = actions.index(go[node])
        if onward < steps:  # (the last action is taken when every step defers)
            intercept[onward] = 1.0
        learned = np.zeros(steps, dtype=bool)
        learned[0] = True
        rules.append(
            NodeRule(
                node=node,
                actions=np.asarray(actions, dtype=np.int64),
                feature_names=list(f.names),
                mean=f.mean,
                scale=f.scale,
                coef=coef,
                intercept=intercept,
                learned=learned,
            )
        )
    policy.rules_ = rules
    policy.start_ = int(start)
    policy.estimators_ = {}
    policy.graph_signature_ = graph.signature()
    policy.origin_ = origin
    policy.shift_ = 0.0
    policy.recursion_objective_ = float("nan")
    policy._score(graph, rows)
    return policy


def constant_policy(
    graph: StageGraph,
    features: Sequence[NodeFeatures | None],
    node: int,
    rows: np.ndarray,
    *,
    lam: float = 0.0,
    loss: str = "top1",
    origin: str = "single",
) -> TradeoffPolicy:
    """The policy that answers every example with ``node`` alone (start there, stop)."""
    return threshold_policy(
        graph,
        features,
        start=node,
        go={},
        threshold=np.inf,
        rows=rows,
        lam=lam,
        loss=loss,
        origin=origin,
    )
