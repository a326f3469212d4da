"""Operating points: "the best speedup within X points of loss", read off the curves honestly.

A curve is a set of points (one policy or threshold each) measured on three disjoint parts of
the evaluation set (docs/method.md, "Operating points"): fitted on ``policy_train``, **chosen**
on ``policy_validation``, **reported** on ``test``. For a loss budget ``X`` (points of top-1 or
top-5 accuracy against the reference), :func:`choose` takes the point with the best validation
speedup among those whose validation loss is within the budget with confidence: the upper
confidence bound ``monotone_loss + z * val_loss_se <= X`` (``z`` the one-sided normal quantile
of ``confidence``; ``val_loss_se`` the standard error of the paired per-example loss
difference). ``monotone_loss`` (:func:`monotone_loss`) is the curve's validation loss made
non-increasing in cost by isotonic regression: along a curve, more compute buys accuracy, and
a cheap point whose validation loss dips below that of costlier ones is mostly a dip of the
validation sample, which the choice among many neighbouring points would otherwise pick (the
winner's curse: it overshot budgets on test, and made the choice jump between two runs whose
costs differed by a few percent). The test split only reports the chosen point. Choosing on
validation keeps the test numbers unbiased; the bound keeps the realised test loss within the
budget most of the time. How often it holds is measured over resplits
(:mod:`adaptive_inference.robustness`).

:func:`envelope` is the optimistic reading: the best *test* point within the budget (the test
split both chooses and reports). It is kept for comparison, labelled as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression

from adaptive_inference.config import LOSSES

KEEP = [
    "point_id",
    "variant",
    "origin",
    "family",
    "budget_name",
    "budget",
    "cost_ms",
    "speedup",
    "speedup_lo",
    "speedup_hi",
]
GROUPS = ["scheme", "method", "train_loss"]


def z_score(confidence: float) -> float:
    """The one-sided normal quantile of ``confidence`` (0.5: no margin)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(confidence)


def monotone_loss(loss: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``loss`` (last axis: a curve's points; rows: resamples) made non-increasing in cost by
    isotonic regression (adjacent violators pooled); ``order`` sorts the points by cost,
    cheapest first."""
    ranked = np.atleast_2d(np.take(np.asarray(loss, dtype=np.float64), order, axis=-1))
    fitted = np.stack([isotonic_regression(row, increasing=False).x for row in ranked])
    out = np.empty_like(fitted)
    np.put_along_axis(out, np.broadcast_to(order, fitted.shape), fitted, axis=-1)
    return out.reshape(np.shape(loss))


def cost_order(points: pd.DataFrame) -> np.ndarray:
    """The positions of ``points`` sorted by validation cost, cheapest first (ties in table
    order)."""
    return np.lexsort((np.arange(len(points)), points["val_cost_ms"].to_numpy()))


def families(curve: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """The families of one curve (the points of one scheme, method and training loss; a family
    is one kind of policy, ``family`` column): for each, the positions of its points in
    ``curve`` and their order by validation cost (:func:`cost_order`)."""
    labels = curve["family"].to_numpy()
    members = [np.flatnonzero(labels == label) for label in dict.fromkeys(labels)]
    return [(m, cost_order(curve.iloc[m])) for m in members]


def smoothed_loss(
    loss: np.ndarray, curve_families: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """``loss`` (last axis: one curve's points; rows: resamples) made non-increasing in cost
    within each of ``curve_families`` (:func:`families`, :func:`monotone_loss`)."""
    loss = np.asarray(loss, dtype=np.float64)
    out = np.empty_like(loss)
    for members, order in curve_families:
        out[..., members] = monotone_loss(loss[..., members], order)
    return out


def upper_bound(points: pd.DataFrame, metric: str, confidence: float) -> pd.Series:
    """Each point's monotone validation loss (within its scheme, method, training loss and
    family: a curve of one kind of policy) plus its confidence margin (points of ``metric``)."""
    bound = pd.Series(np.nan, index=points.index)
    for _, group in points.groupby(GROUPS, sort=False):
        loss = group[f"val_{metric}_loss"].to_numpy()
        bound[group.index] = smoothed_loss(loss, families(group))
    return bound + z_score(confidence) * points[f"val_{metric}_loss_se"]


def _check(metric: str) -> None:
    if metric not in LOSSES:
        raise ValueError(f"metric must be one of {LOSSES}")


def _candidates(points: pd.DataFrame, metric: str, methods: Sequence[str] | None) -> pd.DataFrame:
    table = points if methods is None else points[points["method"].isin(methods)]
    return table[(table["method"] != "oracle") | (table["variant"] == metric)]


def choose(
    points: pd.DataFrame,
    loss_levels: Sequence[float],
    *,
    metric: str = "top1",
    confidence: float = 0.8,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per scheme, method and training loss, the point chosen on validation for each budget
    (module doc), with its test speedup and loss; NaN where no point qualifies. The oracle is
    read at its own loss."""
    _check(metric)
    table = _candidates(points, metric, methods).assign(
        val_ucb=lambda t: upper_bound(t, metric, confidence)
    )
    rows = []
    for (scheme, method, train_loss), group in table.groupby(GROUPS, sort=False):
        for level in loss_levels:
            qualifies = group[group["val_ucb"] <= level]
            row = {
                "scheme": scheme,
                "method": method,
                "train_loss": train_loss,
                "metric": metric,
                "max_loss": level,
                "choice": "validation",
                "confidence": confidence,
            }
            columns = [
                *KEEP,
                f"{metric}_loss",
                f"{metric}_loss_lo",
                f"{metric}_loss_hi",
                "val_speedup",
                f"val_{metric}_loss",
                "val_ucb",
            ]
            if qualifies.empty:
                row.update({c: np.nan for c in columns})
            else:
                row.update(qualifies.loc[qualifies["val_speedup"].idxmax(), columns].to_dict())
            rows.append(row)
    return pd.DataFrame(rows)


def envelope(
    points: pd.DataFrame,
    loss_levels: Sequence[float],
    *,
    metric: str = "top1",
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The optimistic reading: per scheme, method and training loss, the best *test* speedup
    within each budget of test loss (the test split chooses and reports)."""
    _check(metric)
    table = _candidates(points, metric, methods)
    columns = [*KEEP, f"{metric}_loss", f"{metric}_loss_lo", f"{metric}_loss_hi"]
    rows = []
    for (scheme, method, train_loss), group in table.groupby(GROUPS, sort=False):
        for level in loss_levels:
            within = group[group[f"{metric}_loss"] <= level]
            row = {
                "scheme": scheme,
                "method": method,
                "train_loss": train_loss,
                "metric": metric,
                "max_loss": level,
                "choice": "test envelope",
            }
            if within.empty:
                row.update({c: np.nan for c in columns})
            else:
                row.update(within.loc[within["speedup"].idxmax(), columns].to_dict())
            rows.append(row)
    return pd.DataFrame(rows)


def operating_points(
    points: pd.DataFrame,
    loss_levels: Sequence[float],
    *,
    metric: str,
    method: str,
    confidence: float,
) -> pd.DataFrame:
    """``method``'s points chosen on validation for each budget, for the policies trained on
    ``metric`` (what the runtime measures and the notebooks draw); NaN ``point_id`` where none
    qualifies."""
    table = choose(points, loss_levels, metric=metric, confidence=confidence, methods=[method])
    trained = table["train_loss"].isin([metric, ""])
    return table[trained].reset_index(drop=True)


# -------------------------------------------------------------------------------------------
# Learned against the baselines (over the resplits of adaptive_inference.robustness)
# -------------------------------------------------------------------------------------------

BASELINES = ("myopic", "uniform", "cascade")
"""The baselines the learned policy is held to (the oracle is a bound, single nodes are points
of every curve)."""


def learned_minus_baselines(table: pd.DataFrame) -> pd.DataFrame:
    """Per scheme, resplit, metric and budget: learned's speedup minus each baseline's and
    minus the best of them (a method with no point within a budget counts at speedup 1 there:
    one can always run the reference alone); the learned and myopic policies as trained on the
    metric."""
    trained = table[
        table["train_loss"].isin(["", np.nan]) | (table["train_loss"] == table["metric"])
    ]
    wide = trained.pivot_table(
        index=["scheme", "resplit", "metric", "max_loss"],
        columns="method",
        values="speedup",
        aggfunc="max",
        dropna=False,
    ).fillna(1.0)
    baselines = [m for m in BASELINES if m in wide.columns]
    out = pd.DataFrame({f"minus_{m}": wide["learned"] - wide[m] for m in baselines})
    out["minus_best"] = wide["learned"] - wide[baselines].max(axis=1)
    return out.reset_index()
