"""A policy's decision at a node: its features and its linear rule, one implementation.

A policy decides at a node from what is known there without more compute (docs/method.md,
section "Features"):

* the node's own **confidence features**, from its softmax: the sorted top-k probabilities, the
  margin between the two most likely classes and the entropy (:func:`confidence_features`, the
  same code that writes the extracted tables);
* with path features, for each node that every path to it passes (its dominators, computed
  before it whatever the upstream policies chose), that node's own features, whether its top-1
  class **agrees** with this node's, and its probability of this node's top-1 class (read from
  its top-k; 0 where the class is not among them).

The rule (:class:`NodeRule`) is a decision list of linear steps on the standardised features:
take action ``i`` for the first step whose score ``((x - mean) / scale) @ coef[i] + intercept[i]``
is positive, else the last action. The same rule has three uses, all here: NumPy for learning
and simulating the policies on the extracted tables (:meth:`NodeRule.decide`), tensors for the
runtime (:class:`DecisionRule`, :class:`NodeDecision`), and the timing of the decision's cost,
which times :class:`NodeDecision` itself, per node shape
(:mod:`adaptive_inference.costs`). The path features exist twice, as NumPy over the tables
(:func:`path_columns`) and as tensors in the runtime (:meth:`PathMemo.columns`), side by side
here and tested against each other.

For one example (the runtime at batch 1) the decision reads the node's logits back to the host
once, which reading its action needs anyway, and computes the features there in float64
(:func:`one_example_features`, :meth:`PathMemo.columns_one`): Python float operations on one
row (NumPy calls with many classes) instead of a dozen tensor operations, each of which pays
PyTorch's dispatch (measured by ``benchmarks/bench_decision.py``). They equal the tensor
features up to float32 rounding.

PyTorch is imported by the functions that compute tensors, not with this module: the jobs that
fit and sweep the policies on the extracted tables (``fit_policies``, ``robustness``) never load
it, which saves each of them PyTorch's import, about 2 s of a 1-thread job
(``tests/test_imports.py`` keeps it so).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

STOP = -1
"""The action "stop here and answer" (other actions are successor node indices, >= 0)."""

PATH_EXTRA = ("agrees", "p_top1")
"""What path features add per dominator beyond its own features."""


def own_feature_names(topk: int) -> list[str]:
    """Names of a node's own confidence features."""
    return [f"top{j}_prob" for j in range(1, topk + 1)] + ["margin", "entropy"]


def confidence_features(probs: torch.Tensor, topk: int) -> dict[str, torch.Tensor]:
    """Features of a batch of probability vectors (rows): sorted top-k, margin, entropy."""
    k = min(topk, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    margin = top_p[:, 0] - top_p[:, 1] if k > 1 else top_p[:, 0]
    return {
        "top_p": top_p,
        "top_i": top_i,
        "max_prob": top_p[:, 0],
        "margin": margin,
        "entropy": entropy,
    }


def decision_features(
    logits: torch.Tensor, topk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A node's own features ``(N, topk + 2)`` from its logits, and its top-k classes and
    probabilities (what later nodes' path features read)."""
    import torch

    f = confidence_features(logits.float().softmax(1), topk)
    own = torch.cat([f["top_p"], f["margin"][:, None], f["entropy"][:, None]], dim=1)
    return own, f["top_i"], f["top_p"]


FEW_CLASSES = 64
"""Up to this many classes, one example's features are computed in plain Python floats; above
it (ImageNet's 1000), in NumPy (``benchmarks/bench_decision.py`` times both)."""


def one_example_features(
    logits: torch.Tensor, topk: int
) -> tuple[list[float], list[int], list[float]]:
    """:func:`decision_features` of one example (logits ``(1, classes)``) on the host, in
    float64: its own features, and its top-k classes and probabilities, the first of which is
    the example's class (exact ties to the lower index; above :data:`FEW_CLASSES`, among the
    top-k that :func:`many_class_features` selects).

    The entropy ``-sum p log p`` is ``log s - (e . z) / s`` with ``z`` the logits less their
    maximum, ``e = exp(z)`` and ``s = sum(e)`` (``log p = z - log s``). With few classes
    (:data:`FEW_CLASSES`) the logits are read as a Python list and every step is a Python
    float operation: a few microseconds, where a dozen NumPy calls cost two to three times that.
    """
    if logits.shape[-1] > FEW_CLASSES:
        return many_class_features(logits, topk)
    row = logits.tolist()[0]
    top = max(row)
    z = [v - top for v in row]
    e = [math.exp(v) for v in z]
    s = sum(e)
    order = sorted(range(len(e)), key=e.__getitem__, reverse=True)[:topk]  # stable
    top_p = [e[i] / s for i in order]
    margin = top_p[0] - top_p[1] if len(top_p) > 1 else top_p[0]
    entropy = math.log(s) - sum(map(operator.mul, e, z)) / s
    return [*top_p, margin, entropy], order, top_p


def many_class_features(
    logits: torch.Tensor, topk: int
) -> tuple[list[float], list[int], list[float]]:
    """:func:`one_example_features` in NumPy, sorting only the top-k (many classes). Exact ties
    go to the lower index among the top-k selected; with more tied maxima than ``topk``,
    :func:`numpy.argpartition` picks which are selected."""
    z = logits.float().numpy(force=True).reshape(-1).astype(np.float64)
    z -= z.max()
    e = np.exp(z)
    s = float(e.sum())
    top = np.sort(np.argpartition(e, -topk)[-topk:]) if len(e) > topk else np.arange(len(e))
    order = top[np.argsort(-e[top], kind="stable")]  # ties to the lower index
    top_p = (e[order] / s).tolist()
    margin = top_p[0] - top_p[1] if len(top_p) > 1 else top_p[0]
    entropy = math.log(s) - float(e @ z) / s
    return [*top_p, margin, entropy], order.tolist(), top_p


def path_columns(
    top1: np.ndarray, earlier_top_i: np.ndarray, earlier_top_p: np.ndarray
) -> np.ndarray:
    """``(N, 2)``: whether an earlier node's top-1 class equals ``top1`` (this node's), and the
    earlier node's probability of ``top1`` (0 where it is not in the earlier top-k)."""
    agrees = earlier_top_i[:, 0] == top1
    p_top1 = (earlier_top_p * (earlier_top_i == top1[:, None])).sum(axis=1)
    return np.stack([agrees.astype(np.float64), p_top1.astype(np.float64)], axis=1)


# -------------------------------------------------------------------------------------------
# The rule
# -------------------------------------------------------------------------------------------


@dataclass
class NodeRule:
    """The decision at one node: a decision list of linear rules.

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

    @classmethod
    def constant(
        cls,
        node: int,
        actions: Sequence[int],
        action: int,
        feature_names: Sequence[str],
        mean: np.ndarray,
        scale: np.ndarray,
    ) -> NodeRule:
        """The rule that takes ``action`` for every example (it computes nothing)."""
        steps = len(actions) - 1
        intercept = np.full(steps, -1.0)
        position = list(actions).index(action)
        if position < steps:
            intercept[position] = 1.0
        return cls(
            node=node,
            actions=np.asarray(actions, dtype=np.int64),
            feature_names=list(feature_names),
            mean=np.asarray(mean, dtype=float),
            scale=np.asarray(scale, dtype=float),
            coef=np.zeros((steps, len(feature_names))),
            intercept=intercept,
            learned=np.zeros(steps, dtype=bool),
        )

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

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """The steps as ``x @ weight + bias`` on raw features: ``weight = (coef / scale).T``
        ``(F, A - 1)`` and ``bias = intercept - coef @ (mean / scale)`` (float64; equal to
        :meth:`scores` up to float64 rounding, ~1e-16 of the scores)."""
        weight = (self.coef / self.scale).T
        bias = self.intercept - self.coef @ (self.mean / self.scale)
        return weight, bias

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain data (JSON): lists of numbers and names."""
        return {
            "node": int(self.node),
            "actions": self.actions.tolist(),
            "feature_names": list(self.feature_names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "learned": self.learned.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeRule:
        """The rule :meth:`to_dict` wrote."""
        steps = len(data["actions"]) - 1
        coef = np.asarray(data["coef"], dtype=np.float64).reshape(steps, len(data["mean"]))
        return cls(
            node=int(data["node"]),
            actions=np.asarray(data["actions"], dtype=np.int64),
            feature_names=list(data["feature_names"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            coef=coef,
            intercept=np.asarray(data["intercept"], dtype=np.float64),
            learned=np.asarray(data["learned"], dtype=bool),
        )


class DecisionRule:
    """A :class:`NodeRule` as tensor operations: ``x @ weight + bias`` (:meth:`NodeRule.folded`,
    float64 like the rule itself) on raw features; an example takes the action of the first
    step whose score is positive, else the last action.

    For one example (:meth:`decide_one`) the features are on the host already
    (:func:`one_example_features`) and the few multiply-adds of each step run there in Python
    floats (float64): cheaper than the tensor operations they replace.
    """

    def __init__(self, rule: NodeRule, device: torch.device | str = "cpu") -> None:
        import torch

        weight, bias = rule.folded()
        self.weight = torch.as_tensor(weight, dtype=torch.float64, device=device)
        self.bias = torch.as_tensor(bias, dtype=torch.float64, device=device)
        self.actions = [int(a) for a in rule.actions]
        self._steps = list(zip(self.actions, weight.T.tolist(), bias.tolist()))
        self._default = torch.ones(1, 1, dtype=torch.bool, device=device)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """``(examples, steps)`` float64 scores of raw features (rows)."""
        import torch

        return torch.addmm(self.bias, features.double(), self.weight)

    def decide_one(self, features: Sequence[float]) -> int:
        """The action for one example's ``F`` features (host floats)."""
        for action, weights, bias in self._steps:
            if sum(map(operator.mul, weights, features), bias) > 0:
                return action
        return self.actions[-1]

    def decide(self, features: torch.Tensor) -> torch.Tensor:
        """The position (in :attr:`actions`) of each row's action, on the features' device."""
        import torch

        take = self.scores(features) > 0
        take = torch.cat([take, self._default.expand(len(take), 1)], dim=1)
        return take.to(torch.uint8).argmax(dim=1)  # the first step that takes its action


# -------------------------------------------------------------------------------------------
# What the runtime computes at a node
# -------------------------------------------------------------------------------------------


class PathMemo:
    """The features, top-k classes and probabilities that nodes kept for later nodes' path
    features, for the examples of a run: at batch 1 (``size`` None) one example's host lists
    per node (:func:`one_example_features`); for a stream of ``size`` examples, full-size
    buffers indexed by the examples' rows."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self.values: dict[int, tuple] = {}  # tensors, or one example's host lists

    def put(self, node: int, kept: tuple, rows: torch.Tensor | None) -> None:
        if rows is None:
            self.values[node] = kept
            return
        if node not in self.values:
            self.values[node] = tuple(t.new_empty((self.size, *t.shape[1:])) for t in kept)
        for buffer, value in zip(self.values[node], kept):
            buffer[rows] = value

    def columns(self, node: int, top1: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``node``'s kept features, whether its top-1 agrees with ``top1`` and its probability
        of ``top1`` (:func:`path_columns` as tensors), for ``rows``."""
        import torch

        own, top_i, top_p = (t[rows] for t in self.values[node])
        same = top_i == top1[:, None]
        agrees = same[:, :1].to(own.dtype)
        p_top1 = (top_p * same).sum(dim=1, keepdim=True)
        return torch.cat([own, agrees, p_top1], dim=1)

    def columns_one(self, node: int, top1: int) -> list[float]:
        """:meth:`columns` of the one example of a batch-1 run (host lists)."""
        own, top_i, top_p = self.values[node]
        p_top1 = top_p[top_i.index(top1)] if top1 in top_i else 0.0
        return [*own, float(top_i[0] == top1), p_top1]


class NodeDecision:
    """What the runtime does at one node once its logits are known: the node's features (and
    its dominators' path features) and its rule, or nothing for a constant rule.

    Args:
        node: the node's index in the graph.
        actions: the node's actions (``STOP`` or successors), in the rule's order.
        rule: the rule as tensor operations, or None where the action is ``constant``.
        constant: the action of a constant rule (``STOP`` at terminal nodes).
        topk: how many sorted probabilities the features hold.
        keep: compute and keep this node's features for later policies (path features).
        reads: the dominators whose path features follow the node's own.
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

    @classmethod
    def of_rule(
        cls,
        rule: NodeRule | None,
        node: int,
        *,
        topk: int,
        keep: bool,
        reads: Sequence[int],
        device: torch.device | str,
    ) -> NodeDecision:
        """The decision of a fitted rule (None: a terminal node, which stops)."""
        if rule is None:
            return cls(node, [STOP], rule=None, constant=STOP, topk=topk, keep=keep)
        constant = rule.constant_action
        return cls(
            node,
            rule.actions.tolist(),
            rule=DecisionRule(rule, device) if constant is None else None,
            constant=constant,
            topk=topk,
            keep=keep,
            reads=reads if constant is None else (),
        )

    def _features(
        self, logits: torch.Tensor, memo: PathMemo | None, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' features and their top-1 classes."""
        import torch

        own, top_i, top_p = decision_features(logits, self.topk)
        if self.keep:
            memo.put(self.node, (own, top_i, top_p), rows)
        top1 = top_i[:, 0]
        if not self.reads:
            return own, top1
        columns = [memo.columns(d, top1, rows) for d in self.reads]
        return torch.cat([own, *columns], dim=1), top1

    def one(self, logits: torch.Tensor, memo: PathMemo | None) -> tuple[int, int | None]:
        """The action for one example (logits ``(1, classes)``), its features on the host, and
        where the rule computed them the example's class (its top-1), which the runtime answers
        with when the action is to stop (None: it reads the class from the logits)."""
        if not self.computes:
            return self.constant, None
        own, top_i, top_p = one_example_features(logits, self.topk)
        if self.keep:
            memo.put(self.node, (own, top_i, top_p), None)
        if self.rule is None:
            return self.constant, None
        for d in self.reads:
            own = own + memo.columns_one(d, top_i[0])
        return self.rule.decide_one(own), top_i[0]

    def many(
        self, logits: torch.Tensor, memo: PathMemo | None, rows: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The position (in :attr:`actions`) of each row's action and, where the rule computed
        them, the rows' classes (top-1); both None when every row takes the constant
        action."""
        if not self.computes:
            return None, None
        features, top1 = self._features(logits, memo, rows)
        return (None, None) if self.rule is None else (self.rule.decide(features), top1)
