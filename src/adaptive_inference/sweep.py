"""Budget sweeps: policies fitted on policy_train, chosen on policy_validation, measured on test.

:func:`run_sweep` fits the learned (global) and myopic policies over a lambda grid, sweeps
uniform's and the cascades' shared threshold, and adds the oracles and the single nodes; every
point is measured on the validation and the test examples against the reference (the graph's
most accurate full network, alone). It returns tidy tables keyed by ``(scheme, point_id)``.

**The learned curve** (docs/method.md, "Lambda sweep"). The lambda grid always holds its two
ends: lambda = 0 is "always the reference" (speedup 1, loss 0: the learned curve is never worse
than the reference), and the top of the grid stops everything at the cheapest start. Between
them, log-spaced lambdas from ``low = 1 / (n_train * T)`` (``T`` the costliest path) to
``high = 1 / min edge cost``, refined where the training curve moves most (:func:`fit_curve`).
A lambda sweep reaches only the lower convex hull of the achievable (loss, time) points, and
fixed decision costs make that set non-convex; the sweep is **filled** by shifting the learned
rules' "stop" intercepts of each lambda's policy over a grid (``shifts``: a conservative or
aggressive knob on the same rules), and the curve keeps the Pareto front of training (loss,
time) of all of them (ties in training loss kept: :func:`pareto_front`). Shifting was
preferred to mixing neighbouring policies: each point stays one deterministic policy that the
runtime runs as it is, and points off the hull are reached, not averaged. The uniform, cascade
and single-node policies are routes of the same class
(:func:`~adaptive_inference.policies.threshold_policy`), and join the candidates, so that at
every lambda the learned curve holds a policy whose training objective is at most theirs; they
stay on the curve also where they are off its training front, so that the validation choice can
take whatever a baseline's own curve offers. The ``origin`` column says where each learned point
comes from (``recursion``, ``shifted``, ``uniform``, ``cascade``, ``single``, ``reference``);
``family`` groups the points whose validation loss the read-off smooths together
(:func:`policy_family`).

``points``, one row per scheme x method x budget point:
    ``scheme``, ``point_id``, ``method`` (learned, myopic, uniform, cascade, oracle, single),
    ``variant`` (oracle: top1/top5; single: the node; cascade: its first node; else ""),
    ``origin``, ``family`` and ``shift`` (learned points; ``family`` also for cascades and single
    nodes), ``train_loss`` (the loss a learned/myopic policy
    minimised; "" otherwise), ``budget_name`` (lambda, threshold or ""), ``budget`` (its value),
    ``start`` (the node routes start at), ``cost_ms`` (mean cost per example on test),
    ``cost_ms_std``, ``speedup`` (reference cost / mean cost) with ``speedup_lo`` /
    ``speedup_hi``, ``top1_acc`` / ``top5_acc`` (%), ``top1_loss`` / ``top5_loss`` (reference
    accuracy minus the system's, points) with ``_lo`` / ``_hi``, ``train_objective``,
    ``val_cost_ms``, ``val_speedup``, ``val_top1_loss`` / ``val_top5_loss`` with their standard
    errors ``val_*_loss_se`` (paired differences), ``reference``, ``reference_ms``,
    ``reference_top1`` / ``reference_top5`` (%), ``n_test``, ``n_validation``.
    Intervals: percentile bootstrap over the test examples, every point and the reference
    resampled with the same draws (paired).

``nodes``, one row per point x node: ``stop_fraction`` and ``time_fraction`` on test.

``headline`` (:func:`headline_table`): per method and loss budget, the point chosen on
validation (:func:`~adaptive_inference.readoff.choose`) with a bootstrap interval that includes
the choice (validation and test resampled together, the choice made again in each resample),
beside the optimistic test envelope.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from adaptive_inference.config import LOSSES, METHODS
from adaptive_inference.graph import Route, StageGraph
from adaptive_inference.policies import (
    NodeFeatures,
    TradeoffPolicy,
    constant_policy,
    standardize,
    threshold_policy,
)
from adaptive_inference.readoff import choose, envelope, families, smoothed_loss, z_score

BOOTSTRAP_CHUNK = 128
# float32 holds every integer below this exactly: the bootstrap's sums of losses stay exact
EXACT_SUMS = 2**24


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
    span = graph.longest_path_ms() - graph.start_ms[0]
    edges = np.array(list(graph.edge_ms.values()))
    if low is None:
        if span <= 0:
            raise ValueError(
                "the graph has no positive path cost beyond its root: a scheme needs at least "
                "two nodes (an early-exit network with two exits or more)"
            )
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

    Refinement bisects (geometric mean) the pair of neighbouring lambdas whose *training* points
    are furthest apart, in units of the target resolution: ``max(|d loss| / loss_step,
    |d log cost| / cost_step)`` (defaults: a quarter of a point of loss, 2% of cost), among the
    pairs where the policy loses at most ``max_loss`` against the reference on the training
    examples, until every such gap is within the resolution or ``refine`` points were added. A
    pair whose lambdas are within a factor ``min_ratio`` is not split again: a gap that survives
    such a bisection is a jump of the fitted policies, which more lambdas cannot resolve (the
    intercept shifts of :func:`learned_curve` fill it). ``params`` go to
    :class:`TradeoffPolicy`; each fit is warm-started from its neighbour below when
    ``warm_start``.
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


def class_baselines(
    graph: StageGraph,
    features: Sequence[NodeFeatures | None],
    rows: np.ndarray,
    thresholds: Sequence[float],
    *,
    loss: str,
) -> list[TradeoffPolicy]:
    """The baselines as policies of the learned class, scored on ``rows``: "always the
    reference", every single node that may start a route, uniform at every threshold (the
    default chain from the root), every cascade at every threshold."""
    chain = {n: graph.successors[n][0] for n in graph.default_chain() if not graph.is_terminal(n)}
    out = [constant_policy(graph, features, graph.reference, rows, loss=loss, origin="reference")]
    out += [  # (a constant rule reads no features: a single node may start anywhere)
        constant_policy(graph, features, n, rows, loss=loss)
        for n in range(graph.num_nodes)
        if n != graph.reference
    ]
    starts = set(graph.start_candidates())
    for t in thresholds:
        out.append(
            threshold_policy(
                graph,
                features,
                start=0,
                go=chain,
                threshold=t,
                rows=rows,
                loss=loss,
                origin="uniform",
            )
        )
    for first in cascade_firsts(graph):
        if first not in starts:
            continue
        for t in thresholds:
            out.append(
                threshold_policy(
                    graph,
                    features,
                    start=first,
                    go={first: graph.reference},
                    threshold=t,
                    rows=rows,
                    loss=loss,
                    origin="cascade",
                )
            )
    return out


def pareto_front(policies: Sequence[TradeoffPolicy]) -> list[TradeoffPolicy]:
    """The policies that no policy at most as costly beats on training loss, cheapest first
    (of equal points, the first listed).

    Ties in training loss are kept: the 0/1 training loss is coarse, and a costlier policy with
    the same training loss is usually the more conservative one, so the validation split
    (:func:`~adaptive_inference.readoff.choose`) decides between them. Dropping them collapses
    the curve where the training loss saturates (accurate networks, a few hundred training
    examples): only the cheapest policy at the floor would be left between the aggressive
    points and the reference, and where its validation loss is over a budget nothing faster
    than the reference could be read off there, though uniform's conservative thresholds
    (candidates of the curve) reach it."""
    order = sorted(
        range(len(policies)), key=lambda i: (policies[i].train_cost_ms_, policies[i].train_loss_, i)
    )
    front, best, last = [], np.inf, None
    for i in order:
        point = (policies[i].train_cost_ms_, policies[i].train_loss_)
        if point[1] > best + 1e-12:
            continue
        if last is not None and np.allclose(point, last, rtol=0.0, atol=1e-12):
            continue  # the same point again
        front.append(policies[i])
        best, last = min(best, point[1]), point
    return front


def learned_curve(
    graph: StageGraph,
    train: np.ndarray | Sequence[int],
    lambdas: Sequence[float],
    *,
    features: list[NodeFeatures | None],
    thresholds: Sequence[float],
    shifts: Sequence[float] = (),
    **options: Any,
) -> list[TradeoffPolicy]:
    """The learned curve (module doc): the Pareto front of training (loss, time) of the
    recursion at every lambda (:func:`fit_curve`, ``options``), each policy's intercept shifts
    and the baselines of the class, cheapest first; then every baseline of the class as well
    ("always the reference", the curve's lambda-0 end, among them), whether on the training
    front or not, so that the validation split chooses among at least the points each baseline
    chooses among (:func:`~adaptive_inference.readoff.choose`). Each kept policy's ``lam`` is
    the first lambda of the grid (0 and the recursion's) at which it has the least training
    objective of the curve; for a policy that has it at none (off the lower convex hull), the
    lambda at which it comes nearest to the least; 0 for the reference."""
    rows = graph.rows(train)
    recursion = fit_curve(graph, train, lambdas, features=features, **options)
    loss = recursion[0].loss
    candidates = list(recursion)
    for policy in recursion:
        candidates += [policy.shifted(graph, s, rows) for s in shifts if s != 0]
    baselines = class_baselines(graph, features, rows, thresholds, loss=loss)
    candidates += baselines
    front = pareto_front(candidates)
    kept = {id(p) for p in front}
    front = sorted(
        [*front, *(p for p in baselines if id(p) not in kept)], key=lambda p: p.train_cost_ms_
    )
    reference = baselines[0]
    grid = np.concatenate([[0.0], [p.lam for p in recursion]])
    losses = np.array([p.train_loss_ for p in front])
    costs = np.array([p.train_cost_ms_ for p in front])
    objective = losses[:, None] + grid[None, :] * costs[:, None]
    winner, best = np.argmin(objective, axis=0), objective.min(axis=0)
    for i, policy in enumerate(front):
        wins = np.flatnonzero(winner == i)
        if policy is reference:
            policy.lam = 0.0
        elif wins.size:
            policy.lam = float(grid[wins[0]])
        else:  # off the lower hull (a shift's fill, say): where it comes nearest to the best
            policy.lam = float(grid[np.argmin(objective[i] - best)])
        policy.train_objective_ = policy.train_loss_ + policy.lam * policy.train_cost_ms_
    return front


@dataclass
class Metrics:
    """Per-example outcome of one point on some examples."""

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
    headline: pd.DataFrame
    policies: dict[int, TradeoffPolicy] = field(default_factory=dict)


def _counts(draws: np.ndarray) -> np.ndarray:
    """``(len(draws), n)`` float32: how often each row of ``draws`` (row indices into ``n``
    examples, drawn with replacement) takes each example."""
    size, n = draws.shape
    offsets = (draws + (np.arange(size) * n)[:, None]).ravel()
    return np.bincount(offsets, minlength=size * n).reshape(size, n).astype(np.float32)


def _resampled_means(values: np.ndarray, centre: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``(len(draws), columns)`` means of ``values`` (float32, from :func:`_bootstrap_columns`)
    over each row of ``draws`` (resampled row indices), ``centre`` added back."""
    return centre + _counts(draws) @ values / draws.shape[1]


def _bootstrap_columns(costs: np.ndarray, losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 columns that :func:`_resampled_means` averages, ``(examples, costs + losses)``,
    and the centre it adds back. The costs are centred, so that float32's digits hold their
    spread rather than their size. The losses (-1, 0 or 1 per example: reference right minus
    point right) stay as they are: their resampled sums are integers, which float32 holds
    exactly up to 2**24, so the loss bounds do not depend on the order in which BLAS adds (its
    kernel, its threads, the arrays' alignment) and the same predictions give the same bounds
    bit for bit on any run (a SLURM job's and a local run's differed in the last digit while
    the losses were centred)."""
    if len(losses) >= EXACT_SUMS:
        raise ValueError(
            f"{len(losses)} examples in a split that the bootstrap resamples: it sums losses "
            f"exactly in float32, over fewer than {EXACT_SUMS} examples; give the validation "
            "and test splits fewer examples (config `splits`)"
        )
    centre = np.concatenate([costs.mean(axis=0, dtype=np.float64), np.zeros(losses.shape[1])])
    values = np.concatenate(
        [(costs - centre[: costs.shape[1]]).astype(np.float32), losses.astype(np.float32)], axis=1
    )
    return values, centre


def node_family(kind: str, graph: StageGraph, node: int) -> str:
    """The family of a cascade's or a single node's points: ``<kind>:<node>`` (its first or
    only node), the same on the learned curve as in its own method."""
    return f"{kind}:{graph.names[node]}"


def policy_family(graph: StageGraph, policy: TradeoffPolicy) -> str:
    """The family of a learned curve's point (its validation loss is smoothed within it,
    :func:`~adaptive_inference.readoff.choose`): the fitted policies and their shifts, or each
    baseline of the class as its own method's points are (uniform, each cascade, each node)."""
    origin = policy.origin_
    if origin in ("recursion", "shifted"):
        return "recursion"
    if origin in ("cascade", "single"):
        return node_family(origin, graph, policy.start_)
    return origin


def run_sweep(
    graph: StageGraph,
    train: np.ndarray | Sequence[int],
    validation: np.ndarray | Sequence[int],
    test: np.ndarray | Sequence[int],
    *,
    losses: Sequence[str] = ("top1",),
    methods: Sequence[str] = METHODS,
    lambda_count: int = 40,
    lambda_min: float | None = None,
    lambda_max: float | None = None,
    lambda_refine: int = 20,
    shifts: Sequence[float] = (),
    threshold_count: int = 50,
    C: float = 1.0,
    solver: str = "newton-cholesky",
    warm_start: bool = True,
    bootstrap_samples: int = 1000,
    bootstrap_seed: int = 0,
    level: float = 0.95,
    loss_levels: Sequence[float] = (0.5, 1.0, 2.0),
    confidence: float = 0.8,
) -> SweepResult:
    """Fit on ``train``, choose on ``validation``, measure on ``test`` (example ids); see the
    module doc for the tables.

    Args:
        graph: the graph of stages.
        train, validation, test: example ids (policy_train, policy_validation, test).
        losses: the losses the learned and myopic policies minimise (one curve each).
        methods: which of :data:`METHODS` to run.
        lambda_count, lambda_min, lambda_max, lambda_refine: the lambda grid
            (:func:`lambda_grid`, :func:`fit_curve`).
        shifts: the intercept shifts that fill the learned curve (:func:`learned_curve`).
        threshold_count: uniform's and the cascades' thresholds (:func:`~adaptive_inference.
            baselines.default_thresholds`).
        C, solver, warm_start: the logistic regressions'.
        bootstrap_samples, bootstrap_seed, level: the bootstrap (0 samples: no intervals).
        loss_levels, confidence: the budgets of the headline and the confidence of the bound on
            the validation loss (:mod:`adaptive_inference.readoff`).
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; the methods are {METHODS}")
    if set(losses) - set(LOSSES):
        raise ValueError(f"losses must be among {LOSSES}")
    parts = {
        name: graph.rows(ids)
        for name, ids in (("train", train), ("validation", validation), ("test", test))
    }
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if np.intersect1d(parts[a], parts[b]).size:
            raise ValueError(f"the {a} and {b} examples overlap")
    train_rows = parts["train"]
    thresholds = default_thresholds(graph, train_rows, threshold_count)

    meta: list[dict[str, Any]] = []
    routes: list[tuple[Route, Route]] = []  # (validation, test)
    policies: dict[int, TradeoffPolicy] = {}

    def add(route_of, **info: Any) -> None:
        for key, value in (
            ("variant", ""),
            ("origin", ""),
            ("family", ""),
            ("shift", np.nan),
            ("train_loss", ""),
            ("budget_name", ""),
            ("budget", np.nan),
            ("start", -1),
            ("train_objective", np.nan),
        ):
            info.setdefault(key, value)
        meta.append(info)
        routes.append((route_of(parts["validation"]), route_of(parts["test"])))

    fitted = [m for m in ("learned", "myopic") if m in methods]
    if fitted:
        lambdas = lambda_grid(
            graph, train_rows.size, count=lambda_count, low=lambda_min, high=lambda_max
        )
        features = standardize(graph, train_rows)
        train_ids = graph.example_ids[train_rows]
        options = dict(refine=lambda_refine, warm_start=warm_start, C=C, solver=solver)
        for loss in losses:
            for method in fitted:
                if method == "learned":
                    curve = learned_curve(
                        graph,
                        train_ids,
                        lambdas,
                        features=features,
                        thresholds=thresholds,
                        shifts=shifts,
                        loss=loss,
                        **options,
                    )
                else:
                    curve = fit_curve(
                        graph,
                        train_ids,
                        lambdas,
                        features=features,
                        loss=loss,
                        myopic=True,
                        **options,
                    )
                for policy in curve:
                    policies[len(meta)] = policy
                    add(
                        lambda rows, p=policy: p.route_rows(graph, rows),
                        method=method,
                        train_loss=loss,
                        origin=policy.origin_,
                        family=policy_family(graph, policy),
                        shift=policy.shift_,
                        budget_name="lambda",
                        budget=float(policy.lam),
                        start=policy.start_,
                        train_objective=policy.train_objective_,
                    )
    if "uniform" in methods:
        for t in thresholds:
            add(
                lambda rows, t=t: uniform_route(graph, t, graph.example_ids[rows]),
                method="uniform",
                budget_name="threshold",
                budget=float(t),
                start=0,
            )
    if "cascade" in methods:
        for first in cascade_firsts(graph):
            for t in thresholds:
                add(
                    lambda rows, f=first, t=t: cascade_route(graph, f, t, graph.example_ids[rows]),
                    method="cascade",
                    variant=graph.names[first],
                    family=node_family("cascade", graph, first),
                    budget_name="threshold",
                    budget=float(t),
                    start=first,
                )
    if "oracle" in methods:
        for loss in LOSSES:
            add(
                lambda rows, loss=loss: oracle_route(graph, graph.example_ids[rows], loss=loss),
                method="oracle",
                variant=loss,
            )
    if "single" in methods:
        for node in range(graph.num_nodes):
            add(
                lambda rows, node=node: single_route(graph, node, graph.example_ids[rows]),
                method="single",
                variant=graph.names[node],
                family=node_family("single", graph, node),
                start=node,
            )

    val = [measure(graph, v) for v, _ in routes]
    tst = [measure(graph, t) for _, t in routes]
    points, nodes = _tables(graph, parts, meta, val, tst, bootstrap_samples, bootstrap_seed, level)
    headline = headline_table(
        graph,
        parts,
        points,
        val,
        tst,
        loss_levels=loss_levels,
        losses=losses,
        confidence=confidence,
        samples=bootstrap_samples,
        seed=bootstrap_seed,
        level=level,
    )
    return SweepResult(points=points, nodes=nodes, headline=headline, policies=policies)


def _loss_columns(graph: StageGraph, rows: np.ndarray, metrics: Sequence[Metrics], loss: str):
    """``(examples, points)`` paired per-example loss differences (reference right minus the
    point right) at ``loss``."""
    ref = graph.correct(loss)[graph.reference, rows].astype(np.float32)
    right = np.stack([getattr(m, f"correct_{loss}") for m in metrics], axis=1)
    return ref[:, None] - right


def _tables(
    graph: StageGraph,
    parts: Mapping[str, np.ndarray],
    meta: list[dict[str, Any]],
    val: list[Metrics],
    tst: list[Metrics],
    samples: int,
    seed: int,
    level: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    ref = graph.reference
    ref_ms = graph.reference_ms
    test_rows, val_rows = parts["test"], parts["validation"]
    points = pd.DataFrame(meta)
    points.insert(0, "point_id", np.arange(len(meta)))
    points.insert(0, "scheme", graph.name)
    cost = np.stack([m.cost_ms for m in tst], axis=1)
    c1 = np.stack([m.correct_top1 for m in tst], axis=1)
    c5 = np.stack([m.correct_top5 for m in tst], axis=1)
    ref1 = graph.correct_top1[ref, test_rows]
    ref5 = graph.correct_top5[ref, test_rows]
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
        centred, centre = _bootstrap_columns(
            cost,
            np.concatenate(
                [
                    _loss_columns(graph, test_rows, tst, "top1"),
                    _loss_columns(graph, test_rows, tst, "top5"),
                ],
                axis=1,
            ),
        )
        rng = np.random.default_rng(seed)
        means = np.empty((samples, 3 * k))
        for start in range(0, samples, BOOTSTRAP_CHUNK):
            size = min(BOOTSTRAP_CHUNK, samples - start)
            draws = rng.integers(0, len(test_rows), size=(size, len(test_rows)))
            means[start : start + size] = _resampled_means(centred, centre, draws)
        q = [(1 - level) / 2, 1 - (1 - level) / 2]
        with np.errstate(divide="ignore"):
            bounds["speedup"] = np.quantile(ref_ms / means[:, :k], q, axis=0)
        bounds["top1_loss"] = 100 * np.quantile(means[:, k : 2 * k], q, axis=0)
        bounds["top5_loss"] = 100 * np.quantile(means[:, 2 * k :], q, axis=0)
    for name in ("speedup", "top1_loss", "top5_loss"):
        lo, hi = bounds[name] if name in bounds else (np.nan, np.nan)
        position = points.columns.get_loc(name) + 1
        points.insert(position, f"{name}_hi", hi)
        points.insert(position, f"{name}_lo", lo)
    train_objective = points.pop("train_objective")
    points.insert(points.columns.get_loc("top5_loss_hi") + 1, "train_objective", train_objective)
    val_cost = np.stack([m.cost_ms for m in val], axis=1)
    points["val_cost_ms"] = val_cost.mean(axis=0)
    points["val_speedup"] = ref_ms / points["val_cost_ms"]
    for loss in LOSSES:
        diff = _loss_columns(graph, val_rows, val, loss)
        points[f"val_{loss}_loss"] = 100 * diff.mean(axis=0)
        points[f"val_{loss}_loss_se"] = 100 * diff.std(axis=0, ddof=1) / np.sqrt(len(val_rows))
    points["reference"] = graph.names[ref]
    points["reference_ms"] = ref_ms
    points["reference_top1"] = 100 * ref1.mean()
    points["reference_top5"] = 100 * ref5.mean()
    points["n_test"] = test_rows.size
    points["n_validation"] = val_rows.size

    num = graph.num_nodes
    nodes = pd.DataFrame(
        {
            "scheme": graph.name,
            "point_id": np.repeat(points["point_id"].to_numpy(), num),
            "node_index": np.tile(np.arange(num), len(tst)),
            "node": np.tile(np.asarray(graph.names, dtype=object), len(tst)),
            "network": np.tile(np.asarray(graph.networks, dtype=object), len(tst)),
            "stop_fraction": np.concatenate([m.stop_fraction for m in tst]),
            "time_fraction": np.concatenate([m.time_fraction for m in tst]),
        }
    )
    return points, nodes


def headline_table(
    graph: StageGraph,
    parts: Mapping[str, np.ndarray],
    points: pd.DataFrame,
    val: Sequence[Metrics],
    tst: Sequence[Metrics],
    *,
    loss_levels: Sequence[float],
    losses: Sequence[str],
    confidence: float,
    samples: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """For each metric of ``losses``: the points chosen on validation for each budget, with a
    bootstrap interval that includes the choice (each resample draws validation and test rows,
    chooses again by the same rule and reports the chosen point's test speedup and loss), then
    the optimistic test envelope (``choice`` = "test envelope")."""
    tables = []
    for metric in losses:
        chosen = choose(points, loss_levels, metric=metric, confidence=confidence)
        if samples > 0:
            chosen = _interval_with_choice(
                graph,
                parts,
                points,
                chosen,
                val,
                tst,
                metric=metric,
                confidence=confidence,
                samples=samples,
                seed=seed,
                level=level,
            )
        tables += [chosen, envelope(points, loss_levels, metric=metric)]
    table = pd.concat(tables, ignore_index=True)
    realised = np.choose(
        [losses.index(m) for m in table["metric"]], [table[f"{m}_loss"] for m in losses]
    )
    table["within_budget"] = np.where(np.isnan(realised), np.nan, realised <= table["max_loss"])
    return table


def _interval_with_choice(
    graph: StageGraph,
    parts: Mapping[str, np.ndarray],
    points: pd.DataFrame,
    chosen: pd.DataFrame,
    val: Sequence[Metrics],
    tst: Sequence[Metrics],
    *,
    metric: str,
    confidence: float,
    samples: int,
    seed: int,
    level: float,
) -> pd.DataFrame:
    """``chosen`` with ``speedup_lo/hi`` and ``<metric>_loss_lo/hi`` from resamples in which the
    choice is made again by the same rule (:func:`~adaptive_inference.readoff.choose`; the
    bound keeps the full sample's standard errors): validation and test examples are resampled
    together, and each resample reports the test speedup and loss of its own choice."""
    ref_ms = graph.reference_ms
    margin = z_score(confidence) * points[f"val_{metric}_loss_se"].to_numpy() / 100
    groups = {}
    for key, group in points.groupby(["scheme", "method", "train_loss"], sort=False):
        if key[1] == "oracle":
            group = group[group["variant"] == metric]
        groups[key] = group.index.to_numpy()
    curve_families = {key: families(points.loc[idx]) for key, idx in groups.items()}
    columns = np.unique(np.concatenate(list(groups.values())))
    position = {c: i for i, c in enumerate(columns)}
    k = len(columns)
    v_values, v_centre = _bootstrap_columns(
        np.stack([val[c].cost_ms for c in columns], axis=1),
        _loss_columns(graph, parts["validation"], [val[c] for c in columns], metric),
    )
    t_cost = np.stack([m.cost_ms for m in tst], axis=1)
    t_loss = _loss_columns(graph, parts["test"], tst, metric)
    n_val, n_test = len(parts["validation"]), len(parts["test"])
    rng = np.random.default_rng(seed + 1)
    picks: dict[tuple, list[tuple[float, float]]] = {
        (row.scheme, row.method, row.train_loss, row.max_loss): [] for row in chosen.itertuples()
    }
    for start in range(0, samples, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, samples - start)
        vm = _resampled_means(v_values, v_centre, rng.integers(0, n_val, (size, n_val)))
        counts = _counts(rng.integers(0, n_test, (size, n_test)))
        val_speedup = ref_ms / vm[:, :k]
        chosen_cols = np.full((size, len(picks)), -1)
        ucbs = {}  # per curve, once for all its budgets
        for g, (scheme, method, train_loss, budget) in enumerate(picks):
            key = (scheme, method, train_loss)
            cols = np.array([position[c] for c in groups[key]])
            if key not in ucbs:
                ucbs[key] = smoothed_loss(vm[:, k + cols], curve_families[key])
                ucbs[key] += margin[columns[cols]]
            ok = ucbs[key] <= budget / 100
            best = cols[np.where(ok, val_speedup[:, cols], -np.inf).argmax(axis=1)]
            chosen_cols[:, g] = np.where(ok.any(axis=1), columns[best], -1)
        used, slot = np.unique(np.maximum(chosen_cols, 0), return_inverse=True)
        # the losses' sums are exact (see _bootstrap_columns), then divided
        cost_means = counts @ t_cost[:, used].astype(np.float32) / n_test
        loss_means = counts @ t_loss[:, used] / n_test
        slot = slot.reshape(chosen_cols.shape)
        rows = np.arange(size)[:, None]
        speedup = np.where(chosen_cols >= 0, ref_ms / cost_means[rows, slot], np.nan)
        loss = np.where(chosen_cols >= 0, 100 * loss_means[rows, slot], np.nan)
        for g, key in enumerate(picks):
            picks[key].extend(zip(speedup[:, g], loss[:, g]))
    q = [(1 - level) / 2, 1 - (1 - level) / 2]
    chosen = chosen.copy()
    for i, row in enumerate(chosen.itertuples()):
        values = np.asarray(picks[(row.scheme, row.method, row.train_loss, row.max_loss)])
        if np.isnan(row.point_id) or np.isnan(values[:, 0]).all():
            continue
        chosen.loc[chosen.index[i], ["speedup_lo", "speedup_hi"]] = np.nanquantile(values[:, 0], q)
        chosen.loc[chosen.index[i], [f"{metric}_loss_lo", f"{metric}_loss_hi"]] = np.nanquantile(
            values[:, 1], q
        )
    return chosen


def sweep_options(section: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`run_sweep` from a validated ``policies`` config section (the
    schema holds every default)."""
    return {
        "losses": list(section["losses"]),
        "methods": list(section["methods"]),
        "C": float(section["C"]),
        "lambda_count": int(section["lambdas"]["count"]),
        "lambda_min": section["lambdas"]["min"],
        "lambda_max": section["lambdas"]["max"],
        "lambda_refine": int(section["lambdas"]["refine"]),
        "shifts": [float(s) for s in section["lambdas"]["shifts"]],
        "threshold_count": int(section["thresholds"]["count"]),
        "bootstrap_samples": int(section["bootstrap"]["samples"]),
        "bootstrap_seed": int(section["bootstrap"]["seed"]),
        "level": float(section["bootstrap"]["level"]),
        "loss_levels": list(section["loss_levels"]),
        "confidence": float(section["operating_points"]["confidence"]),
    }
