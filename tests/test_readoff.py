"""Tests of the read-off of operating points (adaptive_inference.readoff): chosen on
validation with a confidence bound, reported on test; the optimistic test envelope."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from policy_data import synthetic_tables

from adaptive_inference.graph import scheme_graph
from adaptive_inference.readoff import (
    choose,
    envelope,
    operating_points,
    upper_bound,
    z_score,
)
from adaptive_inference.sweep import run_sweep

CONFIDENCES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def table(rows: list[dict], scheme: str = "s") -> pd.DataFrame:
    """A points table with the columns the read-off reads (defaults for the rest)."""
    defaults = {
        "scheme": scheme,
        "method": "m",
        "train_loss": "",
        "variant": "",
        "origin": "",
        "family": "",
        "budget_name": "",
        "budget": np.nan,
        "speedup_lo": np.nan,
        "speedup_hi": np.nan,
        "top1_loss_lo": np.nan,
        "top1_loss_hi": np.nan,
        "top5_loss": 0.0,
        "top5_loss_lo": np.nan,
        "top5_loss_hi": np.nan,
        "val_top5_loss": 0.0,
        "val_top5_loss_se": 0.0,
    }
    out = pd.DataFrame([{**defaults, **row} for row in rows])
    out.insert(0, "point_id", np.arange(len(out)))
    out["cost_ms"] = 1.0 / out["speedup"]
    out["val_cost_ms"] = 1.0 / out["val_speedup"]
    return out


def curve() -> pd.DataFrame:
    """One method's curve whose best test point and best validation point within 1 point of
    loss differ: point 0 is the fastest on test within the budget, but over it on validation.
    (Validation losses fall with validation cost, as a curve's do.)"""
    return table(
        [
            dict(
                speedup=4.0, top1_loss=0.5, val_speedup=4.2, val_top1_loss=3.0, val_top1_loss_se=0.5
            ),
            dict(
                speedup=2.0, top1_loss=1.5, val_speedup=2.1, val_top1_loss=0.4, val_top1_loss_se=0.3
            ),
            dict(
                speedup=1.4, top1_loss=0.2, val_speedup=1.5, val_top1_loss=0.2, val_top1_loss_se=0.1
            ),
            dict(
                speedup=1.0,
                top1_loss=0.0,
                val_speedup=1.0,
                val_top1_loss=0.0,
                val_top1_loss_se=0.0,
                origin="reference",
            ),
        ]
    )


def test_choose_reads_validation_and_envelope_reads_test():
    points = curve()
    chosen = choose(points, [1.0], confidence=0.8).iloc[0]
    best_test = envelope(points, [1.0]).iloc[0]
    assert chosen["point_id"] == 1 and chosen["choice"] == "validation"
    assert best_test["point_id"] == 0 and best_test["choice"] == "test envelope"
    # the chosen row reports the chosen point's test numbers beside its validation ones
    assert chosen["speedup"] == 2.0 and chosen["top1_loss"] == 1.5
    assert chosen["val_speedup"] == 2.1
    assert chosen["val_ucb"] == pytest.approx(0.4 + z_score(0.8) * 0.3)
    assert best_test["speedup"] == 4.0 and best_test["top1_loss"] == 0.5
    # the test split never enters the choice, the validation split never the envelope
    shuffled = points.assign(
        speedup=points["speedup"][::-1].to_numpy(), top1_loss=[9.0, 9.0, 9.0, 0.0]
    )
    assert choose(shuffled, [1.0]).iloc[0]["point_id"] == 1
    blind = points.assign(val_top1_loss=9.0, val_speedup=1.0)
    assert envelope(blind, [1.0]).iloc[0]["point_id"] == 0


def test_no_qualifying_point_reads_nan():
    points = curve().iloc[:3]  # without the reference
    chosen = choose(points, [0.1, 1.0], confidence=0.8).set_index("max_loss")
    assert np.isnan(chosen.loc[0.1, "point_id"]) and np.isnan(chosen.loc[0.1, "speedup"])
    assert chosen.loc[1.0, "point_id"] == 1
    within = envelope(points, [0.1]).iloc[0]
    assert np.isnan(within["point_id"])


def test_upper_bound_is_the_validation_loss_plus_the_confidence_margin():
    points = curve()
    for confidence in CONFIDENCES:
        expected = points["val_top1_loss"] + z_score(confidence) * points["val_top1_loss_se"]
        np.testing.assert_allclose(upper_bound(points, "top1", confidence), expected)
    assert z_score(0.5) == 0.0 and z_score(0.8) == pytest.approx(0.8416, abs=1e-4)
    with pytest.raises(ValueError, match="confidence"):
        z_score(1.0)
    with pytest.raises(ValueError, match="metric"):
        choose(points, [1.0], metric="top3")


def dipped_curve(families: list[str]) -> pd.DataFrame:
    """A curve whose validation loss dips at the second-cheapest point (0.3 points, below the
    costlier third point's 1.0): a dip of the validation sample, not of the policies."""
    return table(
        [
            dict(speedup=s, top1_loss=0.0, val_speedup=s, val_top1_loss=v, val_top1_loss_se=0.0)
            for s, v in zip([4.0, 3.0, 2.0, 1.0], [2.0, 0.3, 1.0, 0.0], strict=True)
        ]
    ).assign(family=families)


def test_a_dip_of_the_validation_loss_does_not_choose_the_point():
    # made non-increasing in cost (isotonic: the dip is pooled with the costlier point), the
    # dipped point's loss is 0.65: over a budget of 0.5, which only the reference meets
    points = dipped_curve(["f"] * 4)
    np.testing.assert_allclose(upper_bound(points, "top1", 0.8), [2.0, 0.65, 0.65, 0.0])
    assert choose(points, [0.5]).iloc[0]["point_id"] == 3
    assert choose(points, [0.7]).iloc[0]["point_id"] == 1  # both pooled points qualify
    # within a family only: a point of a family of its own (a baseline in the learned class)
    # keeps its validation loss, and is chosen
    mixed = dipped_curve(["f", "single:a", "f", "f"])
    np.testing.assert_allclose(upper_bound(mixed, "top1", 0.8), [2.0, 0.3, 1.0, 0.0])
    assert choose(mixed, [0.5]).iloc[0]["point_id"] == 1


def random_curve(seed: int, n: int = 30) -> pd.DataFrame:
    """A curve whose validation loss falls with validation cost, with noisy standard errors;
    test numbers unrelated to the choice."""
    rng = np.random.default_rng(seed)
    val_speedup = np.sort(rng.uniform(1.0, 5.0, n))[::-1]
    val_loss = np.sort(rng.exponential(1.0, n))[::-1] * rng.uniform(0.5, 3.0)
    se = rng.uniform(0.05, 1.0, n)
    return table(
        [
            dict(
                speedup=rng.uniform(1, 5),
                top1_loss=rng.uniform(0, 3),
                val_speedup=s,
                val_top1_loss=v,
                val_top1_loss_se=e,
            )
            for s, v, e in zip(val_speedup, val_loss, se, strict=True)
        ]
    )


@pytest.mark.parametrize("seed", range(6))
def test_higher_confidence_is_more_cautious(seed):
    points = random_curve(seed)
    levels = [0.25, 0.5, 1.0, 2.0, 3.0]
    for level in levels:
        picks = []
        for confidence in CONFIDENCES:
            row = choose(points, [level], confidence=confidence).iloc[0]
            ucb = upper_bound(points, "top1", confidence)
            qualifying = points[ucb <= level]
            if qualifying.empty:
                assert np.isnan(row["point_id"])
                picks.append(None)
                continue
            # the fastest point on validation among those within the budget with confidence
            assert row["val_ucb"] <= level
            assert row["val_speedup"] == qualifying["val_speedup"].max()
            picks.append(int(row["point_id"]))
        for low, high, c_low in zip(picks, picks[1:], CONFIDENCES, strict=False):
            if high is None:
                continue
            assert low is not None  # what qualifies at a higher confidence qualifies below
            assert upper_bound(points, "top1", c_low)[high] <= level
            # never faster, and never a point with a higher validation loss
            assert points.loc[high, "val_speedup"] <= points.loc[low, "val_speedup"]
            assert points.loc[high, "val_top1_loss"] <= points.loc[low, "val_top1_loss"]
        # with one standard error for every point, never a point with a higher bound either
        same = points.assign(val_top1_loss_se=0.4)
        bounds = [
            upper_bound(same, "top1", 0.8)[int(p)]
            for p in (choose(same, [level], confidence=c).iloc[0]["point_id"] for c in CONFIDENCES)
            if not np.isnan(p)
        ]
        assert bounds == sorted(bounds, reverse=True)


def test_groups_methods_and_the_oracle_at_its_own_loss():
    rows = [
        dict(
            method="learned",
            train_loss="top1",
            speedup=3.0,
            top1_loss=0.4,
            val_speedup=3.0,
            val_top1_loss=0.3,
            val_top1_loss_se=0.1,
        ),
        dict(
            method="learned",
            train_loss="top5",
            speedup=5.0,
            top1_loss=0.4,
            val_speedup=5.0,
            val_top1_loss=0.3,
            val_top1_loss_se=0.1,
        ),
        dict(
            method="uniform",
            speedup=2.0,
            top1_loss=0.4,
            val_speedup=2.0,
            val_top1_loss=0.3,
            val_top1_loss_se=0.1,
        ),
        dict(
            method="oracle",
            variant="top1",
            speedup=4.0,
            top1_loss=-5.0,
            val_speedup=4.0,
            val_top1_loss=-5.0,
            val_top1_loss_se=0.5,
        ),
        dict(
            method="oracle",
            variant="top5",
            speedup=9.0,
            top1_loss=-1.0,
            val_speedup=9.0,
            val_top1_loss=-1.0,
            val_top1_loss_se=0.5,
        ),
    ]
    points = pd.concat([table(rows, "a"), table(rows, "b")], ignore_index=True)
    points["point_id"] = np.arange(len(points))
    chosen = choose(points, [0.5, 1.0])
    assert len(chosen) == 2 * 4 * 2  # schemes x (learned top1/top5, uniform, oracle) x budgets
    oracle = chosen[chosen["method"] == "oracle"]
    assert (oracle["speedup"] == 4.0).all()  # the top-5 oracle is not read at top-1
    top = envelope(points, [0.5])
    assert (top[top["method"] == "oracle"]["speedup"] == 4.0).all()
    # operating points: one method, the policies trained on the metric
    ops = operating_points(points, [0.5, 1.0], metric="top1", method="learned", confidence=0.8)
    assert set(ops["train_loss"]) == {"top1"} and (ops["speedup"] == 3.0).all()
    assert len(ops) == 4 and list(ops.index) == [0, 1, 2, 3]
    ops = operating_points(points, [0.5], metric="top1", method="uniform", confidence=0.8)
    assert len(ops) == 2 and (ops["speedup"] == 2.0).all()


def test_read_off_a_sweep():
    n = 900
    predictions, costs = synthetic_tables(
        {"a": 1, "b": 1, "c": 1}, n=n, seed=5, decision_ms=0.05, answer_ms=0.01
    )
    graph = scheme_graph("network_selection", predictions, costs)
    ids = np.arange(n)
    result = run_sweep(
        graph,
        ids[ids % 3 == 0],
        ids[ids % 3 == 1],
        ids[ids % 3 == 2],
        lambda_count=6,
        lambda_refine=0,
        threshold_count=8,
        bootstrap_samples=0,
    )
    points = result.points
    levels = [0.5, 1.0, 2.0, 5.0]
    chosen = choose(points, levels, metric="top1", confidence=0.8)
    ucb = upper_bound(points, "top1", 0.8)
    for row in chosen.dropna(subset=["point_id"]).itertuples():
        group = points[(points["method"] == row.method) & (points["train_loss"] == row.train_loss)]
        if row.method == "oracle":
            group = group[group["variant"] == "top1"]
        qualifying = group[ucb[group.index] <= row.max_loss]
        assert row.val_speedup == qualifying["val_speedup"].max()
        point = points.set_index("point_id").loc[int(row.point_id)]
        assert row.speedup == point["speedup"] and row.top1_loss == point["top1_loss"]
    learned = chosen[chosen["method"] == "learned"].set_index("max_loss")
    assert learned["point_id"].notna().all()  # the reference qualifies at any budget
    assert learned.loc[5.0, "val_speedup"] > 1.0
    assert (learned["val_speedup"].diff().dropna() >= 0).all()  # a larger budget is no slower
