"""Budget sweeps: learned and baseline policies fitted on policy_train, measured on test.

:func:`run_sweep` fits the learned (global) and myopic policies at every lambda of a grid,
sweeps uniform's and the cascades' shared threshold, and adds the oracles and the single nodes;
every point is measured on the test examples against the reference (the graph's most accurate
full network, at its cost alone). It returns two tidy tables keyed by ``(scheme, point_id)``:

``points``, one row per scheme x method x budget point:
    ``scheme``, ``point_id``, ``method`` (learned, myopic, uniform, cascade, oracle, single),
    ``variant`` (oracle: top1/top5; single: the node; cascade: its first node; else ""),
    ``train_loss`` (the loss a learned/myopic policy minimised; "" otherwise), ``budget_name``
    (lambda, threshold or ""), ``budget`` (its value; NaN otherwise), ``cost_ms`` (mean cost
    per example), ``cost_ms_std`` (its standard deviation over examples), ``speedup`` (reference
    cost / mean cost) with ``speedup_lo`` / ``speedup_hi``, ``top1_acc`` / ``top5_acc`` (%),
    ``top1_loss`` / ``top5_loss`` (reference accuracy minus the system's, in points) with
    ``_lo`` / ``_hi`` bounds, ``train_objective`` (``mean(loss + lambda * ms)`` on
    policy_train; NaN for untrained methods), ``reference``, ``reference_ms``,
    ``reference_top1`` / ``reference_top5`` (%), ``n_test``.
    Intervals: percentile bootstrap over the test examples, every point and the reference
    resampled with the *same* draws (paired); ``samples``, ``seed`` and ``level`` are settings.

``nodes``, one row per point x node:
    ``scheme``, ``point_id``, ``node_index``, ``node``, ``network``, ``stop_fraction`` (share
    of the test examples that stop there), ``time_fraction`` (share of the total test time
    spent there: the stage entered plus the decisions computed there).

**The default lambda grid** (``lambda`` is the price of one ms in units of the 0/1 loss):
log-spaced between

* ``low = 1 / (n_train * T)``, ``T`` the costliest path beyond the entry (edges plus decisions):
  there the time of the whole training set is worth at most one example's loss, so the policy
  minimises training loss only (on data where the reference is right whenever any node is,
  that is "always the reference");
* ``high = 1 / min edge cost``: there going on costs more than any 0/1 loss can save, for every
  example (``lambda * edge >= 1 >= loss_n``), so every node learns "stop" and everything
  stops at the root: "always the cheapest answer".

Most of a log-spaced grid between these falls where the curve hardly moves, so each learned and
myopic curve gets ``lambda_refine`` more lambdas (default 20, after ``lambda_count`` = 40)
where its *training* points are furthest apart, never closer than 1% in lambda
(:func:`fit_curve`).

:func:`save_policies` / :func:`load_policies` keep the fitted policies; :func:`speedup_at_loss`
reads off the best speedup at a given loss.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive_inference.baselines import (
    cascade_firsts,
    cascade_route,
    default_thresholds,
    oracle_route,
    single_route,
    uniform_route,
)
from adaptive_inference.graph import LOSSES, Route, StageGraph
from adaptive_inference.io import atomic_path
from adaptive_inference.policies import TradeoffPolicy, standardize

METHODS = ("learned", "myopic", "uniform", "cascade", "oracle", "single")
BOOTSTRAP_CHUNK = 128


def lambda_grid(
    graph: StageGraph,
    n_train: int,
    *,
    count: int = 40,
    low: float | None = None,
    high: float | None = None,
) -> np.ndarray:
    """``count`` log-spaced lambdas (per ms) from ``low`` to ``high`` (defaults: module doc)."""
    if count < 1:
        raise ValueError("the lambda grid needs at least one point")
    span = graph.longest_path_ms() - graph.entry_ms
    edges = np.array(list(graph.edge_ms.values()))
    if low is None:
        if span <= 0:
            raise ValueError("the graph has no positive path cost beyond its root")
        low = 1.0 / (n_train * span)
    if high is None:
        positive = edges[edges > 0]
        if positive.size == 0:
            raise ValueError("the graph has no edge of positive cost")
        high = 1.0 / positive.min()
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got {low}, {high}")
    return np.geomspace(low, high, count)


def fit_curve(
    graph: StageGraph,
    train: np.ndarray | Sequence[int],
    lambdas: Sequence[float],
    *,
    refine: int = 0,
    loss_step: float = 0.0025,
    cost_step: float = 0.02,
    max_loss: float = 0.05,
    min_ratio: float = 1.01,
    features: list | None = None,
    warm_start: bool = True,
    **params: Any,
) -> list[TradeoffPolicy]:
    """Fit a :class:`TradeoffPolicy` at every lambda (ascending), then up to ``refine`` more.

    A log-spaced grid puts many points where the curve hardly moves (far below the lambdas at
    which time starts to matter) and few where it moves fast. Refinement bisects (geometric
    mean) the pair of neighbouring lambdas whose *training* points are furthest apart, in
    units of the target resolution: ``max(|d loss| / loss_step, |d log cost| / cost_step)``
    (defaults: a quarter of a point of loss, 2% of cost), among the pairs where the policy
    loses at most ``max_loss`` (5 points) against the reference on the training examples,
    until every such gap is within the resolution or ``refine`` points were added. A pair whose
    lambdas are within a factor ``min_ratio`` (1%) of each other is not split again: a gap that
    survives such a bisection is a jump of the fitted policies (a rule flipping as lambda
    crosses a value), which more lambdas cannot resolve, and bisecting it would spend the whole
    budget there. The test split is never looked at. ``params`` go to :class:`TradeoffPolicy`;
    each fit is warm-started from its neighbour below when ``warm_start``.
    """
    grid = np.sort(np.asarray(lambdas, dtype=float))
    rows = graph.rows(train)
    train_ids = graph.example_ids[rows]
    curve: list[TradeoffPolicy] = []

    def fit(lam: float, init: TradeoffPolicy | None) -> TradeoffPolicy:
        return TradeoffPolicy(lam=float(lam), **params).fit(
            graph, train_ids, features=features, init=init if warm_start else None
        )

    for lam in grid:
        curve.append(fit(lam, curve[-1] if curve else None))
    if refine <= 0 or len(curve) < 2:
        return curve
    kind = curve[0].loss
    reference_loss = float(np.mean(~graph.correct(kind)[graph.reference, rows]))
    added = 0
    while added < refine:
        loss = np.array([p.train_loss_ for p in curve])
        cost = np.log(np.array([p.train_cost_ms_ for p in curve]))
        gaps = np.maximum(np.abs(np.diff(loss)) / loss_step, np.abs(np.diff(cost)) / cost_step)
        relevant = np.minimum(loss[:-1], loss[1:]) - reference_loss <= max_loss
        lams = np.array([p.lam for p in curve])
        mids = np.where(lams[:-1] > 0, np.sqrt(lams[:-1] * lams[1:]), (lams[:-1] + lams[1:]) / 2)
        splittable = (mids > lams[:-1]) & (mids < lams[1:]) & (lams[1:] > min_ratio * lams[:-1])
        gaps = np.where(relevant & splittable, gaps, 0.0)
        i = int(np.argmax(gaps))
        if gaps[i] <= 1.0:
            break
        curve.insert(i + 1, fit(mids[i], curve[i]))
        added += 1
    return curve


@dataclass
class Metrics:
    """Per-example outcome of one point on the test examples."""

    cost_ms: np.ndarray
    correct_top1: np.ndarray
    correct_top5: np.ndarray
    stop_fraction: np.ndarray
    time_fraction: np.ndarray


def measure(graph: StageGraph, route: Route) -> Metrics:
    """What a route gives on its examples."""
    return Metrics(
        cost_ms=route.cost_ms,
        correct_top1=graph.correct_top1[route.stop, route.rows],
        correct_top5=graph.correct_top5[route.stop, route.rows],
        stop_fraction=route.stop_fraction(),
        time_fraction=route.time_fraction(),
    )


@dataclass
class SweepResult:
    """The tables of a sweep and the fitted policies (by point_id)."""

    points: pd.DataFrame
    nodes: pd.DataFrame
    policies: dict[int, TradeoffPolicy] = field(default_factory=dict)


def _bootstrap(centred: np.ndarray, centre: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """``(samples, columns)`` resampled means of columns given centred (float32) and centre.

    Every column is resampled with the same draws (paired). The products run in float32 (half
    the time of float64); since each resample has ``n`` draws the centre adds back exactly, so
    constant columns stay exact and the rounding is relative to a column's spread (~1e-7).
    """
    n = centred.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((samples, centred.shape[1]))
    for start in range(0, samples, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, samples - start)
        draws = rng.integers(0, n, size=(size, n))
        offsets = (draws + (np.arange(size) * n)[:, None]).ravel()
        counts = np.bincount(offsets, minlength=size * n).reshape(size, n).astype(np.float32)
        out[start:start + size] = centre + counts @ centred / n
    return out


def run_sweep(
    graph: StageGraph,
    train: np.ndarray | Sequence[int],
    test: np.ndarray | Sequence[int],
    *,
    losses: Sequence[str] = ("top1", "top5"),
    methods: Sequence[str] = METHODS,
    lambdas: Sequence[float] | None = None,
    lambda_count: int = 40,
    lambda_min: float | None = None,
    lambda_max: float | None = None,
    lambda_refine: int = 20,
    thresholds: Sequence[float] | None = None,
    threshold_count: int = 50,
    C: float = 1.0,
    solver: str = "newton-cholesky",
    warm_start: bool = True,
    bootstrap_samples: int = 1000,
    bootstrap_seed: int = 0,
    level: float = 0.95,
) -> SweepResult:
    """Fit on ``train`` (example ids), measure on ``test``; see the module doc for the tables.

    Args:
        graph: the graph of stages.
        train, test: example ids (policy_train and test splits).
        losses: the losses the learned and myopic policies minimise (one curve each).
        methods: which of :data:`METHODS` to run.
        lambdas: the lambda grid (default: :func:`lambda_grid` with ``lambda_count``,
            ``lambda_min`` and ``lambda_max``), refined with ``lambda_refine`` more points
            where the training curve moves most (:func:`fit_curve`).
        thresholds: uniform's and the cascades' grid (default: :func:`default_thresholds`
            with ``threshold_count``).
        C, solver: the logistic regressions' settings.
        warm_start: start each lambda's logistic regressions from the previous lambda's
            solution (same optimum up to the solver's tolerance, fewer iterations).
        bootstrap_samples, bootstrap_seed, level: the bootstrap (0 samples: no intervals).
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; the methods are {METHODS}")
    if set(losses) - set(LOSSES):
        raise ValueError(f"losses must be among {LOSSES}")
    train_rows, test_rows = graph.rows(train), graph.rows(test)
    if np.intersect1d(train_rows, test_rows).size:
        raise ValueError("the training and test examples overlap")
    if lambdas is None:
        lambdas = lambda_grid(
            graph, train_rows.size, count=lambda_count, low=lambda_min, high=lambda_max
        )
    if thresholds is None:
        thresholds = default_thresholds(graph, train_rows, threshold_count)
    test_ids = graph.example_ids[test_rows]

    meta: list[dict[str, Any]] = []
    metrics: list[Metrics] = []
    policies: dict[int, TradeoffPolicy] = {}

    def add(route: Route, **info: Any) -> None:
        info.setdefault("variant", "")
        info.setdefault("train_loss", "")
        info.setdefault("budget_name", "")
        info.setdefault("budget", np.nan)
        info.setdefault("train_objective", np.nan)
        meta.append(info)
        metrics.append(measure(graph, route))

    fitted = [m for m in ("learned", "myopic") if m in methods]
    if fitted:
        features = standardize(graph, train_rows)
        train_ids = graph.example_ids[train_rows]
        for loss in losses:
            for method in fitted:
                curve = fit_curve(
                    graph, train_ids, lambdas, refine=lambda_refine, features=features,
                    warm_start=warm_start, loss=loss, C=C, myopic=method == "myopic",
                    solver=solver,
                )
                for policy in curve:
                    policies[len(meta)] = policy
                    add(
                        policy.route_rows(graph, test_rows), method=method, train_loss=loss,
                        budget_name="lambda", budget=float(policy.lam),
                        train_objective=policy.train_objective_,
                    )
    if "uniform" in methods:
        for t in thresholds:
            add(
                uniform_route(graph, t, test_ids), method="uniform", budget_name="threshold",
                budget=float(t),
            )
    if "cascade" in methods:
        for first in cascade_firsts(graph):
            for t in thresholds:
                add(
                    cascade_route(graph, first, t, test_ids), method="cascade",
                    variant=graph.names[first], budget_name="threshold", budget=float(t),
                )
    if "oracle" in methods:
        for loss in LOSSES:
            add(oracle_route(graph, test_ids, loss=loss), method="oracle", variant=loss)
    if "single" in methods:
        for node in range(graph.num_nodes):
            add(single_route(graph, node, test_ids), method="single", variant=graph.names[node])

    points, nodes = _tables(
        graph, test_rows, meta, metrics, bootstrap_samples, bootstrap_seed, level
    )
    return SweepResult(points=points, nodes=nodes, policies=policies)


def _tables(
    graph: StageGraph,
    test_rows: np.ndarray,
    meta: list[dict[str, Any]],
    metrics: list[Metrics],
    samples: int,
    seed: int,
    level: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref = graph.reference
    ref_ms = float(graph.alone_ms[ref])
    ref1 = graph.correct_top1[ref, test_rows]
    ref5 = graph.correct_top5[ref, test_rows]
    points = pd.DataFrame(meta)
    points.insert(0, "point_id", np.arange(len(meta)))
    points.insert(0, "scheme", graph.scheme)
    cost = np.stack([m.cost_ms for m in metrics], axis=1)
    c1 = np.stack([m.correct_top1 for m in metrics], axis=1)
    c5 = np.stack([m.correct_top5 for m in metrics], axis=1)
    points["cost_ms"] = cost.mean(axis=0)
    points["cost_ms_std"] = cost.std(axis=0)
    points["speedup"] = ref_ms / points["cost_ms"]
    points["top1_acc"] = 100 * c1.mean(axis=0)
    points["top5_acc"] = 100 * c5.mean(axis=0)
    points["top1_loss"] = 100 * ref1.mean() - points["top1_acc"]
    points["top5_loss"] = 100 * ref5.mean() - points["top5_acc"]
    bounds = {}
    if samples > 0:
        k = cost.shape[1]
        centre = np.concatenate(
            [cost.mean(axis=0), ref1.mean() - c1.mean(axis=0), ref5.mean() - c5.mean(axis=0)]
        )
        centred = np.empty((test_rows.size, 3 * k), dtype=np.float32)
        centred[:, :k] = cost - centre[:k]
        centred[:, k:2 * k] = ref1[:, None].astype(np.float32) - c1 - centre[k:2 * k]
        centred[:, 2 * k:] = ref5[:, None].astype(np.float32) - c5 - centre[2 * k:]
        means = _bootstrap(centred, centre, samples, seed)
        q = [(1 - level) / 2, 1 - (1 - level) / 2]
        with np.errstate(divide="ignore"):
            speedups = ref_ms / means[:, :k]
        bounds["speedup"] = np.quantile(speedups, q, axis=0)
        bounds["top1_loss"] = 100 * np.quantile(means[:, k:2 * k], q, axis=0)
        bounds["top5_loss"] = 100 * np.quantile(means[:, 2 * k:], q, axis=0)
    for name in ("speedup", "top1_loss", "top5_loss"):
        lo, hi = bounds[name] if name in bounds else (np.nan, np.nan)
        position = points.columns.get_loc(name) + 1
        points.insert(position, f"{name}_hi", hi)
        points.insert(position, f"{name}_lo", lo)
    points["reference"] = graph.names[ref]
    points["reference_ms"] = ref_ms
    points["reference_top1"] = 100 * ref1.mean()
    points["reference_top5"] = 100 * ref5.mean()
    points["n_test"] = test_rows.size
    train_objective = points.pop("train_objective")
    points.insert(points.columns.get_loc("top5_loss_hi") + 1, "train_objective", train_objective)

    num = graph.num_nodes
    nodes = pd.DataFrame(
        {
            "scheme": graph.scheme,
            "point_id": np.repeat(points["point_id"].to_numpy(), num),
            "node_index": np.tile(np.arange(num), len(metrics)),
            "node": np.tile(np.asarray(graph.names, dtype=object), len(metrics)),
            "network": np.tile(np.asarray(graph.networks, dtype=object), len(metrics)),
            "stop_fraction": np.concatenate([m.stop_fraction for m in metrics]),
            "time_fraction": np.concatenate([m.time_fraction for m in metrics]),
        }
    )
    return points, nodes


def sweep_options(section: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`run_sweep` from a config section such as::

        losses: [top1, top5]
        methods: [learned, myopic, uniform, cascade, oracle, single]
        C: 1.0
        lambdas: {count: 40, min: null, max: null, refine: 20}
        thresholds: {count: 50}
        bootstrap: {samples: 1000, seed: 0, level: 0.95}
    """
    options: dict[str, Any] = {}
    if "losses" in section:
        options["losses"] = list(section["losses"])
    if "methods" in section:
        options["methods"] = list(section["methods"])
    if "C" in section:
        options["C"] = float(section["C"])
    lambdas = section.get("lambdas", {})
    options["lambda_count"] = int(lambdas.get("count", 40))
    options["lambda_min"] = lambdas.get("min")
    options["lambda_max"] = lambdas.get("max")
    options["lambda_refine"] = int(lambdas.get("refine", 20))
    options["threshold_count"] = int(section.get("thresholds", {}).get("count", 50))
    boot = section.get("bootstrap", {})
    options["bootstrap_samples"] = int(boot.get("samples", 1000))
    options["bootstrap_seed"] = int(boot.get("seed", 0))
    options["level"] = float(boot.get("level", 0.95))
    return options


# -------------------------------------------------------------------------------------------
# Saved policies
# -------------------------------------------------------------------------------------------


def save_policies(result: SweepResult, path: Path | str) -> None:
    """Pickle the fitted policies with their rows of ``points`` (atomically)."""
    ids = sorted(result.policies)
    payload = {
        "points": result.points[result.points["point_id"].isin(ids)].reset_index(drop=True),
        "policies": {i: result.policies[i] for i in ids},
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)


def load_policies(path: Path | str) -> tuple[pd.DataFrame, dict[int, TradeoffPolicy]]:
    """The rows of ``points`` and the policies (by point_id) written by :func:`save_policies`.

    Unpickling runs code: load only files this workflow wrote.
    """
    with open(path, "rb") as handle:
        payload = pickle.load(handle)
    return payload["points"], payload["policies"]


# -------------------------------------------------------------------------------------------
# Reading the curves
# -------------------------------------------------------------------------------------------


def speedup_at_loss(
    points: pd.DataFrame,
    losses: Sequence[float] = (0.5, 1.0, 2.0),
    *,
    metric: str = "top1",
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The best speedup at a loss of at most each of ``losses`` points (``metric``: top1 or
    top5), per scheme, method and training loss: the row of the point reaching it, with its
    intervals (NaN where no point is within the loss). The oracle is read at its own loss
    (top-1 oracle for ``top1``). The point is chosen on the test curve's estimates, as the
    paper's plots are read, so it is slightly optimistic for noisy curves."""
    if metric not in LOSSES:
        raise ValueError(f"metric must be one of {LOSSES}")
    loss_col = f"{metric}_loss"
    table = points if methods is None else points[points["method"].isin(methods)]
    table = table[(table["method"] != "oracle") | (table["variant"] == metric)]
    keep = [
        "point_id", "variant", "budget_name", "budget", "cost_ms", "speedup", "speedup_lo",
        "speedup_hi", loss_col, f"{loss_col}_lo", f"{loss_col}_hi",
    ]
    rows = []
    for (scheme, method, train_loss), group in table.groupby(
        ["scheme", "method", "train_loss"], sort=False
    ):
        for max_loss in losses:
            within = group[group[loss_col] <= max_loss]
            row = {
                "scheme": scheme, "method": method, "train_loss": train_loss, "metric": metric,
                "max_loss": max_loss,
            }
            if within.empty:
                row.update({c: np.nan for c in keep})
            else:
                row.update(within.loc[within["speedup"].idxmax(), keep].to_dict())
            rows.append(row)
    return pd.DataFrame(rows)
