"""The paper's policy learner: a backward recursion of weighted binary classifications.

Objective (STUDY.md, section 3): minimise ``mean(loss + lambda * time)`` over the training
examples, ``loss`` the 0/1 loss of the answer given (top-1 or top-5), ``time`` in ms. Nodes are
visited in reverse topological order (terminal nodes first). For each example ``x``:

* terminal node ``t``: ``C_t(x) = loss_t(x)``;
* node ``n``: ``cost(stop) = loss_n(x)``; ``cost(go m) = lambda * edge_ms(n, m) + C_m(x)``,
  where ``C_m`` is the cost-to-go under the policy *already learned* downstream (global) or the
  successor's own loss ``loss_m(x)`` (``myopic=True``: the baseline that only looks one step
  ahead);
* the node's policy is learned from these costs (below), and ``C_n(x) = lambda * d_n + cost of
  the action the learned policy takes for x``, where ``d_n`` is the decision cost, paid when the
  node's policy depends on the example (a constant policy computes nothing).

**The reduction to weighted binary problems** (a decision list). The actions of a node are
ordered ``[stop, successor_1, ..., successor_s]`` (successors in the graph's order: next first).
Step ``i`` is a binary problem "take action ``i``" vs "defer to a later action", where the cost of
deferring is the cheapest of the later actions for that example: label = the cheaper side,
weight = ``|cost(take) - cost(defer)|`` (the regret of the wrong choice). Step 0 is trained on all
training examples; step ``i`` on the examples that the *learned* steps ``0..i-1`` deferred. The
last action is taken by whatever every step deferred. With two actions this is the paper's
stop-vs-go problem; with three (AlexNet: stop, GoogLeNet, ResNet50) it is STUDY.md's default:
stop vs go on (go cost = the cheapest successor), then, among the examples sent on, which
successor. Examples with zero weight (equal costs) carry no information and are dropped; the
weights of the kept examples are rescaled to mean 1, so that ``C`` means the same at every
lambda and node.

**Classifier**: scikit-learn's :class:`~sklearn.linear_model.LogisticRegression` with
``sample_weight`` on features standardised by a :class:`~sklearn.preprocessing.StandardScaler`
fitted once per node on all training examples. A step whose kept examples all share one label
(or that has none) is a constant rule; so is a whole node whose fitted steps send every training
example to the same action (it would pay the decision cost for nothing). Every step, learned or
constant, is a linear rule on the standardised features: take the action when
``((x - mean) / scale) @ coef + intercept > 0``; a
constant step has ``coef = 0`` and ``intercept = +1`` (take) or ``-1`` (defer). So a runtime can
apply a node's policy with a few tensor operations (:class:`NodeRule`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from adaptive_inference.graph import STOP, LOSSES, Route, StageGraph, route_table, walk

WEIGHT_TOLERANCE = 1e-12
"""Cost differences at or below this are ties (weight zero): such examples are dropped."""


# -------------------------------------------------------------------------------------------
# Learned rules
# -------------------------------------------------------------------------------------------


@dataclass
class NodeRule:
    """The learned decision at one node: a decision list of linear rules.

    Attributes:
        node: the node's index in the graph.
        actions: ``(A,)`` the actions in order: ``STOP`` (-1) or a successor's node index.
        feature_names: the names of the features the rule reads (``node:feature``).
        mean, scale: ``(F,)`` the standardisation (``z = (x - mean) / scale``).
        coef: ``(A - 1, F)`` the weights of each step on ``z``.
        intercept: ``(A - 1,)`` the intercept of each step.
        learned: ``(A - 1,)`` whether each step is a fitted classifier (else a constant).
    """

    node: int
    actions: np.ndarray
    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    learned: np.ndarray

    @property
    def constant_action(self) -> int | None:
        """The action taken for every example when the rule does not depend on the example."""
        for step in range(len(self.intercept)):
            if self.learned[step]:
                return None
            if self.intercept[step] > 0:
                return int(self.actions[step])
        return int(self.actions[-1])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """``(examples, A - 1)`` the score of every step on raw features."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def decide(self, features: np.ndarray) -> np.ndarray:
        """The action for each row of raw ``features``: the first step whose score is > 0."""
        take = self.scores(features) > 0
        first = np.where(take.any(axis=1), take.argmax(axis=1), len(self.actions) - 1)
        return self.actions[first]


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
) -> tuple[NodeRule, np.ndarray, list[LogisticRegression | None]]:
    """Learn the decision list of one node from per-example action costs.

    Args:
        node: the node's index.
        actions: the actions in decision-list order (STOP first, then successors).
        costs: ``(A, examples)`` the cost of each action for each training example.
        features: the node's standardised training features.
        make_estimator: ``make_estimator(step)`` returns the LogisticRegression to fit.

    Returns:
        The rule, the index (into ``actions``) it chooses for each training example, and the
        fitted estimator of each step (None for constant steps, and for every step when the
        fitted steps choose one action for every example: then the rule is that constant).
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
        defer = costs[step + 1:, pending].min(axis=0)
        z = features.z if pending.size == n else features.z[pending]
        c, b, est = _fit_step(z, take, defer, make_estimator(step))
        coef[step], intercept[step], learned[step] = c, b, est is not None
        estimators.append(est)
        taken = z @ c + b > 0
        chosen[pending[taken]] = step
        pending = pending[~taken]
    if learned.any() and n and (chosen == chosen[0]).all():
        # fitted steps that send every training example to the same action: the constant rule
        # takes the same actions on the training examples without computing a decision
        coef[:] = 0.0
        intercept[:] = -1.0
        if chosen[0] < steps:
            intercept[chosen[0]] = 1.0
        learned[:] = False
        estimators = [None] * steps
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
            cost-to-go (the paper's myopic baseline).
        solver, max_iter, tol: passed to LogisticRegression (``newton-cholesky`` suits many
            examples and few features; a tight ``tol`` costs one Newton step more and makes a
            warm-started fit agree with a cold one to ~1e-6).

    Attributes (after ``fit``):
        rules_: one :class:`NodeRule` per node (None for terminal nodes).
        estimators_: ``{(node, step): LogisticRegression}`` of every learned step.
        graph_signature_: the structure of the graph the policy was fitted on.
        train_objective_: ``mean(loss + lam * cost_ms)`` of the fitted policy on its training
            examples (cost including the entry cost and decisions), evaluated by the same
            backward pass with the fitted rules' choices (equal to simulating the policy).
        train_loss_, train_cost_ms_: its mean 0/1 loss and mean cost (ms) on them.
        recursion_objective_: the same objective as the recursion computed it (mean cost-to-go
            at the root plus ``lam`` times the entry cost): equal to ``train_objective_`` for the
            global policy; for the myopic one, what it believed.
        train_size_: the number of training examples.
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
            C=self.C, solver=self.solver, max_iter=self.max_iter, tol=self.tol,
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
        """Learn every node's rule on ``examples`` (ids or a boolean mask; None: all).

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
        index = np.arange(rows.size)
        cost_to_go = np.empty_like(loss)  # what the recursion minimises (myopic: its belief)
        loss_to_go = np.empty_like(loss)  # the fitted policy's actual loss from each node
        time_to_go = np.zeros_like(loss)  # and its actual time (ms) from each node on
        rules: list[NodeRule | None] = [None] * graph.num_nodes
        estimators: dict[tuple[int, int], LogisticRegression] = {}
        for node in reversed(range(graph.num_nodes)):
            succ = graph.successors[node]
            if not succ:
                cost_to_go[node] = loss_to_go[node] = loss[node]
                continue
            ahead = loss if self.myopic else cost_to_go
            go = [lam * graph.edge_ms[(node, m)] + ahead[m] for m in succ]
            costs = np.stack([loss[node], *go])
            rule, chosen, fitted = fit_node_rule(
                node, [STOP, *succ], costs, features[node],
                lambda step, node=node: self._estimator(node, step, init),
            )
            rules[node] = rule
            estimators.update({(node, s): e for s, e in enumerate(fitted) if e is not None})
            decides = rule.constant_action is None
            decision_ms = graph.decision_ms[node] if decides else 0.0
            cost_to_go[node] = costs[chosen, index] + lam * decision_ms
            loss_to_go[node] = loss[node]
            time_to_go[node] = decision_ms
            for a, m in enumerate(succ, start=1):
                sent = chosen == a
                loss_to_go[node, sent] = loss_to_go[m, sent]
                time_to_go[node, sent] += graph.edge_ms[(node, m)] + time_to_go[m, sent]
        self.rules_ = rules
        self.estimators_ = estimators
        self.graph_signature_ = graph.signature()
        self.train_size_ = int(rows.size)
        self.recursion_objective_ = float(cost_to_go[0].mean() + lam * graph.entry_ms)
        self.train_loss_ = float(loss_to_go[0].mean())
        self.train_cost_ms_ = float(time_to_go[0].mean() + graph.entry_ms)
        self.train_objective_ = self.train_loss_ + lam * self.train_cost_ms_
        return self

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
        return walk(graph, rows, lambda node, here: self.decide(graph, node, rows[here]))

    def predict(
        self, graph: StageGraph, examples: np.ndarray | Sequence[int] | None = None
    ) -> np.ndarray:
        """The node where each example stops (its index in the graph)."""
        return self.route(graph, examples).stop


def fit_policy(
    graph: StageGraph,
    examples: np.ndarray | Sequence[int] | None,
    lam: float,
    **params: Any,
) -> TradeoffPolicy:
    """``TradeoffPolicy(lam=lam, **params).fit(graph, examples)``."""
    return TradeoffPolicy(lam=lam, **params).fit(graph, examples)


# -------------------------------------------------------------------------------------------
# Evaluation
# -------------------------------------------------------------------------------------------


def objective(graph: StageGraph, route: Route, lam: float, loss: str = "top1") -> float:
    """``mean(loss + lam * cost_ms)`` of a route (cost: entry, stages and decisions)."""
    wrong = ~graph.correct(loss)[route.stop, route.rows]
    return float(np.mean(wrong + lam * route.cost_ms))


def evaluate(
    graph: StageGraph,
    policy: TradeoffPolicy | Route,
    examples: np.ndarray | Sequence[int] | None = None,
) -> pd.DataFrame:
    """Simulate a policy (or take a route) on ``examples``: one row per example with its stop
    node, path, cost (ms: every stage on the path plus the policy's decisions), answer and
    top-1 / top-5 correctness."""
    route = policy if isinstance(policy, Route) else policy.route(graph, examples)
    return route_table(graph, route)
