"""The plotting module the notebooks share: readings of the result tables, style, saved files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from adaptive_inference import figures as fig


def point(
    point_id,
    method,
    *,
    variant="",
    train_loss="",
    speedup=1.0,
    top1_loss=0.0,
    top5_loss=0.0,
    cost_ms=1.0,
    scheme="s",
    val_speedup=None,
    val_top1_loss=None,
    se=0.0,
):
    """A row of ``points.parquet``: test measurements and their validation twins (by default
    equal to the test ones, standard error ``se``)."""
    val_speedup = speedup if val_speedup is None else val_speedup
    val_top1_loss = top1_loss if val_top1_loss is None else val_top1_loss
    return {
        "scheme": scheme,
        "point_id": point_id,
        "method": method,
        "variant": variant,
        "origin": "recursion" if method == "learned" else "",
        "family": "recursion" if method == "learned" else "",
        "shift": np.nan,
        "train_loss": train_loss,
        "budget_name": "",
        "budget": np.nan,
        "cost_ms": cost_ms,
        "speedup": speedup,
        "speedup_lo": speedup * 0.95,
        "speedup_hi": speedup * 1.05,
        "top1_acc": 90.0 - top1_loss,
        "top5_acc": 99.0 - top5_loss,
        "top1_loss": top1_loss,
        "top1_loss_lo": top1_loss - 0.1,
        "top1_loss_hi": top1_loss + 0.1,
        "top5_loss": top5_loss,
        "top5_loss_lo": top5_loss - 0.1,
        "top5_loss_hi": top5_loss + 0.1,
        "val_cost_ms": 1.0 / val_speedup,
        "val_speedup": val_speedup,
        "val_top1_loss": val_top1_loss,
        "val_top5_loss": top5_loss,
        "val_top1_loss_se": se,
        "val_top5_loss_se": se,
        "reference": "net/final",
        "reference_ms": 1.0,
        "reference_top1": 90.0,
        "reference_top5": 99.0,
        "n_test": 100,
        "n_validation": 50,
    }


@pytest.fixture
def points() -> pd.DataFrame:
    rows = [
        point(0, "learned", train_loss="top1", speedup=1.0, top1_loss=0.0),
        # better on test than on validation: the test envelope would pick it at 0.5 pts
        point(1, "learned", train_loss="top1", speedup=1.5, top1_loss=0.4, val_top1_loss=0.6),
        point(2, "learned", train_loss="top1", speedup=1.2, top1_loss=0.6),  # dominated
        # validation loss 1.5 with standard error 0.5: its bound at 80% is 1.92 pts
        point(3, "learned", train_loss="top1", speedup=2.0, top1_loss=1.5, se=0.5),
        point(4, "learned", train_loss="top5", speedup=3.0, top1_loss=5.0),
        point(5, "uniform", speedup=1.3, top1_loss=0.3),
        point(6, "oracle", variant="top1", speedup=4.0, top1_loss=-1.0),
        point(7, "oracle", variant="top5", speedup=5.0, top1_loss=3.0),
        point(8, "single", variant="net/stage1", speedup=2.5, top1_loss=6.0, cost_ms=0.4),
        point(9, "single", variant="net/final", speedup=1.0, top1_loss=0.0, cost_ms=1.0),
    ]
    return pd.DataFrame(rows)


def headline_row(
    scheme,
    method,
    *,
    metric="top1",
    max_loss=1.0,
    speedup=2.0,
    lo=1.9,
    hi=2.1,
    train_loss=None,
    choice="validation",
    loss=0.5,
):
    if train_loss is None:
        train_loss = metric if method in ("learned", "myopic") else ""
    return {
        "scheme": scheme,
        "method": method,
        "train_loss": train_loss,
        "metric": metric,
        "max_loss": max_loss,
        "choice": choice,
        "point_id": 0,
        "speedup": speedup,
        "speedup_lo": lo,
        "speedup_hi": hi,
        f"{metric}_loss": loss,
    }


def test_pareto_front_keeps_the_upper_envelope(points):
    learned = points[(points["method"] == "learned") & (points["train_loss"] == "top1")]
    front = fig.pareto_front(learned, "top1")
    assert list(front["point_id"]) == [0, 1, 3]
    assert front["top1_loss"].is_monotonic_increasing and front["speedup"].is_monotonic_increasing


def test_select_curves_takes_policies_trained_on_the_panels_loss(points):
    chosen = fig.select_curves(points, "top1", ["learned", "oracle", "single"])
    assert set(chosen.loc[chosen["method"] == "learned", "train_loss"]) == {"top1"}
    assert list(chosen.loc[chosen["method"] == "oracle", "variant"]) == ["top1"]
    assert (chosen["method"] == "single").sum() == 2


def test_operating_points_are_chosen_on_validation_with_confidence(points):
    ops = fig.operating_points(
        points, [0.5, 2.0, 1.8], metric="top1", methods=["learned"], confidence=0.8
    )
    assert set(ops["train_loss"]) == {"top1"} and set(ops["choice"]) == {"validation"}
    # at 0.5: point 1 is within the budget on test but not on validation
    # at 2.0: point 3's bound (1.5 + 0.84 * 0.5 = 1.92) qualifies; at 1.8 it does not, and
    # point 1 is the fastest left
    assert list(ops["point_id"]) == [0, 3, 1]
    assert list(ops["speedup"]) == [1.0, 2.0, 1.5]
    assert ops.loc[1, "val_ucb"] == pytest.approx(1.5 + 0.5 * 0.8416, abs=1e-3)
    lenient = fig.operating_points(
        points, [1.8], metric="top1", methods=["learned"], confidence=0.5
    )
    assert list(lenient["point_id"]) == [3]  # no margin at 50%
    none = fig.operating_points(points, [0.0], metric="top1", methods=["uniform"], confidence=0.8)
    assert none["point_id"].isna().all() and none["speedup"].isna().all()


def test_oracle_share_of_the_points_chosen_on_validation(points):
    share = fig.oracle_share(
        points, [0.5], metric="top1", methods=["learned", "uniform", "oracle"], confidence=0.8
    )
    assert set(share["method"]) == {"learned", "uniform"}
    learned = share[share["method"] == "learned"].iloc[0]
    assert learned["oracle_speedup"] == 4.0
    assert learned["speedup"] == 1.0 and learned["share"] == pytest.approx(25.0)
    uniform = share[share["method"] == "uniform"].iloc[0]
    assert uniform["share"] == pytest.approx(32.5)
    with pytest.raises(ValueError, match="no top1 oracle"):
        fig.oracle_share(
            points[points["method"] != "oracle"],
            [0.5],
            metric="top1",
            methods=["learned"],
            confidence=0.8,
        )


def test_chosen_rows_of_a_headline():
    rows = [
        headline_row("s", "learned"),
        headline_row("s", "learned", train_loss="top5"),
        headline_row("s", "learned", choice="test envelope", speedup=3.0),
        headline_row("s", "oracle"),
        headline_row("s", "uniform", metric="top5", loss=0.1),
    ]
    table = fig.chosen(pd.DataFrame(rows), "top1")
    assert list(table["method"]) == ["learned", "oracle"]
    assert list(table["speedup"]) == [2.0, 2.0] and set(table["choice"]) == {"validation"}
    assert list(fig.chosen(pd.DataFrame(rows), "top1", ["oracle"])["method"]) == ["oracle"]
    assert list(fig.chosen(pd.DataFrame(rows), "top5")["method"]) == ["uniform"]


def test_exit_accuracy_on_the_chosen_split():
    splits = pd.DataFrame(
        {"example_id": [0, 1, 2, 3], "split": ["test", "test", "test", "policy_train"]}
    )
    predictions = pd.DataFrame(
        {
            "example_id": [0, 1, 2, 3] * 2,
            "exit": [0] * 4 + [1] * 4,
            "exit_name": pd.Categorical(["stage1"] * 4 + ["final"] * 4),
            "correct_top1": [True, False, False, True, True, True, False, False],
            "correct_top5": [True] * 8,
        }
    )
    table = fig.exit_accuracy({"net": predictions}, splits)
    assert list(table["exit_name"]) == ["stage1", "final"]
    assert list(table["n"]) == [3, 3]
    np.testing.assert_allclose(table["top1_acc"], [100 / 3, 200 / 3])
    assert list(table["top5_err"]) == [0.0, 0.0]


def test_headline_table_orders_schemes_and_methods_as_given():
    rows = []
    for scheme in ["zeta", "alpha"]:
        for method, train_loss in [("oracle", ""), ("learned", "top1"), ("learned", "top5")]:
            rows.append(headline_row(scheme, method, train_loss=train_loss))
            rows.append(
                headline_row(
                    scheme,
                    method,
                    train_loss=train_loss,
                    speedup=9.0,
                    lo=8.0,
                    hi=10.0,
                    choice="test envelope",
                )
            )
    wide = fig.headline_table(pd.DataFrame(rows), ["learned", "oracle"])
    assert list(wide.index) == [
        ("zeta", "learned"),
        ("zeta", "oracle"),
        ("alpha", "learned"),
        ("alpha", "oracle"),
    ]
    assert list(wide.columns) == ["top-1 loss ≤ 1 pts"]
    assert (wide.iloc[:, 0] == "2.00× [1.90\u2060–\u20602.10]").all()  # never the envelope
    optimistic = fig.headline_table(pd.DataFrame(rows), ["learned"], choice="test envelope")
    assert (optimistic.iloc[:, 0] == "9.00× [8.00\u2060–\u206010.00]").all()


def test_format_speedup():
    assert fig.format_speedup(np.nan) == "–"
    assert fig.format_speedup(2.0, 2.0, 2.0) == "2.00×"
    assert fig.format_speedup(2.0, 1.5, 2.5).replace("\u2060", "") == "2.00× [1.50–2.50]"


def test_node_shares_skip_missing_points():
    nodes = pd.DataFrame(
        {
            "point_id": [1, 1],
            "node": ["a", "b"],
            "stop_fraction": [0.75, 0.25],
            "time_fraction": [0.4, 0.6],
        }
    )
    shares = fig.node_shares(nodes, {"at 1 pt": 1, "none": np.nan}, ["a", "b"])
    assert list(shares["label"]) == ["at 1 pt", "at 1 pt"]
    assert list(shares["stop_pct"]) == [75.0, 25.0] and list(shares["time_pct"]) == [40.0, 60.0]


def test_style_rejects_unknown_options_and_fixes_svg_ids():
    with pytest.raises(ValueError, match="colour"):
        fig.use_style({"colour": "red"})
    style = fig.use_style({"context": "paper"})
    assert style["palette"] == "colorblind" and matplotlib.rcParams["svg.hashsalt"]
    colours = fig.method_colours()
    assert set(colours) == set(fig.METHODS) and colours["oracle"] == (0.0, 0.0, 0.0)


def test_saved_figures_are_png_and_reproducible_svg(tmp_path):
    fig.use_style()
    outputs = []
    for run in range(2):
        f, ax = plt.subplots()
        ax.plot([1, 2], [3, 4])
        outputs.append(fig.save(f, tmp_path / str(run), "line"))
        plt.close(f)
    (png, svg), (_, svg_again) = outputs
    assert png.read_bytes().startswith(b"\x89PNG") and png.suffix == ".png"
    assert svg.read_text() == svg_again.read_text() and "<dc:date>" not in svg.read_text()


def test_speedup_panel_notes_what_lies_beyond_the_loss_axis(points):
    fig.use_style()
    f, ax = plt.subplots()
    notes = fig.plot_speedup_vs_loss(ax, points, "top1", max_loss=3.0)
    plt.close(f)
    assert notes == ["net/stage1 (top-1 loss 6.00 pts, 2.5×)"]
    assert ax.get_xlim()[1] <= 3.0 + 1e-9


def test_speedup_panel_marks_the_points_chosen_on_validation(points):
    fig.use_style()
    headline = fig.operating_points(
        points, [0.5, 2.0], metric="top1", methods=["learned"], confidence=0.8
    )
    f, ax = plt.subplots()
    fig.plot_speedup_vs_loss(ax, points, "top1", methods=["learned"], headline=headline)
    plt.close(f)
    marked = [line for line in ax.get_lines() if line.get_markersize() == 8]
    x = np.concatenate([line.get_xdata() for line in marked])
    y = np.concatenate([line.get_ydata() for line in marked])
    xy = sorted(zip(x, y, strict=True))
    assert xy == [(0.0, 1.0), (1.5, 2.0)]  # points 0 and 3, not the test envelope's point 1
    assert "chosen on validation, per budget" in ax.get_legend_handles_labels()[1]


def differences(
    values: dict[str, list[float]], *, metric="top1", scheme="s", levels=(0.5, 1.0)
) -> pd.DataFrame:
    """Learned minus each baseline over resplits: ``values[column]`` holds one value per
    resplit and budget (resplits outer)."""
    n = len(next(iter(values.values())))
    resplits = n // len(levels)
    table = pd.DataFrame(
        {
            "scheme": scheme,
            "resplit": np.repeat(np.arange(resplits), len(levels)),
            "metric": metric,
            "max_loss": np.tile(levels, resplits),
            **values,
        }
    )
    return table


def test_plot_robustness_draws_one_box_per_budget_and_baseline():
    fig.use_style()
    top1 = differences(
        {
            "minus_myopic": [0.1, 0.2, 0.3, 0.4],
            "minus_uniform": [0.5, -0.5, 0.6, -0.4],
            "minus_cascade": [0.0, 0.1, 0.2, 0.3],
            "minus_best": [0.0, -0.5, 0.2, -0.4],
        }
    )
    top5 = differences(
        {c: [100.0] * 4 for c in top1.columns if c.startswith("minus_")}, metric="top5"
    )
    f, ax = plt.subplots()
    fig.plot_robustness(ax, pd.concat([top1, top5]), "top1")
    plt.close(f)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["≤ 0.5 pts", "≤ 1 pts"]
    labels = ax.get_legend().get_texts()
    baselines = ("myopic", "uniform", "cascade")
    assert [t.get_text() for t in labels] == [fig.METHOD_LABELS[m] for m in baselines]
    low, high = ax.get_xlim()
    assert low < -0.5 and 0.6 < high < 100  # the top-5 panel's values are not drawn here
    assert any(tuple(line.get_xdata()) == (0, 0) for line in ax.get_lines())  # the zero line
    f, ax = plt.subplots()  # a study that ran one baseline
    fig.plot_robustness(
        ax, top1[["scheme", "resplit", "metric", "max_loss", "minus_uniform", "minus_best"]], "top1"
    )
    plt.close(f)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [fig.METHOD_LABELS["uniform"]]


def test_robustness_table_counts_over_resplits():
    diff = differences(
        {
            "minus_myopic": [0.2, 0.4, 0.2, 0.0, 0.4, 0.4],
            "minus_best": [0.1, -0.2, 0.3, 0.0, -0.1, 0.2],
        }
    )
    rows = pd.DataFrame(
        {
            "scheme": "s",
            "resplit": np.repeat([0, 1, 2], 2),
            "method": "learned",
            "train_loss": "top1",
            "metric": "top1",
            "max_loss": [0.5, 1.0] * 3,
            "within_budget": [True, True, False, True, True, False],
        }
    )
    baseline = rows.assign(method="myopic", within_budget=False)
    table = fig.robustness_table(diff, pd.concat([rows, baseline])).reset_index()
    half, one = table.iloc[0], table.iloc[1]
    assert (half["max_loss"], one["max_loss"]) == (0.5, 1.0)
    assert half["median minus_best"] == pytest.approx(0.1)
    assert one["median minus_best"] == pytest.approx(0.0)
    assert half["median minus_myopic"] == pytest.approx(0.2)
    assert half["learned ahead of all (%)"] == pytest.approx(200 / 3)
    assert one["learned ahead of all (%)"] == pytest.approx(100 / 3)
    assert half["learned within budget (%)"] == pytest.approx(200 / 3)  # learned rows only
    assert one["learned within budget (%)"] == pytest.approx(200 / 3)
    assert (table["resplits"] == 3).all()


@pytest.mark.parametrize(
    "speedup, lo, hi, word",
    [
        (3.0, 2.9, 3.2, "at or above the paper's figure"),
        (2.0, 1.8, 2.2, "below the paper's figure"),
        (2.7, 2.5, 3.0, "within the interval of the paper's figure"),
        (3.0, np.nan, np.nan, "at or above the paper's figure"),  # no bootstrap: the estimate
        (2.0, np.nan, np.nan, "below the paper's figure"),
        (np.nan, np.nan, np.nan, "no point of this study qualifies at this budget"),
    ],
)
def test_verdict_sets_the_measured_speedup_beside_the_paper(speedup, lo, hi, word):
    """The paper claims 2.8x for network selection at < 1 pt of top-5 loss."""
    headline = pd.DataFrame(
        [
            headline_row(
                "network_selection", "learned", metric="top5", speedup=speedup, lo=lo, hi=hi
            ),
            headline_row(
                "network_selection",
                "learned",
                metric="top5",
                max_loss=2.0,
                speedup=9.0,
                lo=9.0,
                hi=9.0,
            ),
            headline_row(
                "network_selection",
                "learned",
                metric="top5",
                speedup=9.0,
                lo=9.0,
                hi=9.0,
                choice="test envelope",
            ),
        ]
    )
    lines = fig.verdict(headline, None, study="demo", losses=["top5"])
    assert len(lines) == 1  # early exit was not run
    assert "up to 2.8×" in lines[0] and "**demo:**" in lines[0] and "the same metric" in lines[0]
    assert lines[0].endswith(f"— {word}.")


def test_verdict_reads_top1_where_top5_was_not_fitted_and_judges_the_resplits():
    headline = pd.DataFrame([headline_row("early_exit", "learned", speedup=1.1, lo=1.05, hi=1.15)])
    ahead = differences({"minus_best": [0.2, 0.1, 0.4, 0.3]}, scheme="early_exit")
    behind = differences({"minus_best": [0.2, -0.3, 0.4, -0.1]}, scheme="combined")
    tie = differences({"minus_best": [0.0, 0.0, 0.0, 0.0]}, scheme="network_selection")
    lines = fig.verdict(headline, pd.concat([ahead, behind, tie]), study="demo", losses=["top1"])
    assert len(lines) == 4
    assert "top-1 instead" in lines[0] and lines[0].endswith("— below the paper's figure.")
    assert "early_exit, top-1" in lines[1] and "+0.30× at ≤ 0.5" in lines[1]
    assert lines[1].endswith("learned ahead of the best baseline.")
    assert lines[2].endswith("learned behind the best baseline at some budget.")
    assert lines[3].endswith("learned ties the best baseline.")
    assert "2 resplits" in lines[1]


def runtime_speedups() -> pd.DataFrame:
    """Rows as :func:`~adaptive_inference.runtime_measure.measure_scheme` writes them (the
    columns the runtime figures read)."""
    rows = []
    for mode in ("batch1", "batched"):
        for label, max_loss, predicted, measured in (
            ("reference", np.nan, 1.0, 1.0),
            ("≤ 0.5 pts", 0.5, 1.6, 1.5),
            ("≤ 1 pts", 1.0, 2.0, 2.2),
        ):
            rows.append(
                {
                    "scheme": "s",
                    "mode": mode,
                    "label": label,
                    "max_loss": max_loss,
                    "predicted_ms": 1.0 / predicted,
                    "predicted_ref_ms": 1.0,
                    "measured_ms": 1.1 / measured,
                    "measured_ref_ms": 1.1,
                    "predicted_speedup": predicted,
                    "measured_speedup": measured,
                    "measured_speedup_min": measured * 0.9,
                    "measured_speedup_max": measured * 1.1,
                    "predicted_decision_ms": 0.0 if label == "reference" else 0.05,
                    "predicted_move_ms": 0.02 if mode == "batched" and label != "reference" else 0,
                    "runtime_total_ms": 1.2 / measured,
                    "runtime_compute_ms": 0.9 / measured,
                    "runtime_decision_ms": 0.0 if label == "reference" else 0.04,
                    "runtime_python_ms": 0.1,
                }
            )
    return pd.DataFrame(rows)


def test_runtime_time_parts_split_predicted_and_measured_time():
    table = runtime_speedups()
    assert not [c for c in table.columns if "retimed" in c]
    parts = fig.runtime_time_parts(table).set_index(["mode", "label", "kind", "part"])["ms"]
    point = ("batched", "≤ 1 pts")
    assert parts[(*point, "predicted", "compute")] == pytest.approx(0.5 - 0.05 - 0.02)
    assert parts[(*point, "predicted", "decision")] == pytest.approx(0.05)
    assert parts[(*point, "predicted", "python")] == pytest.approx(0.02)  # moving examples on
    assert parts[("batch1", "≤ 1 pts", "predicted", "python")] == 0.0
    assert parts[(*point, "measured", "compute")] == pytest.approx(0.9 / 2.2)
    assert parts[(*point, "measured", "python")] == pytest.approx(0.1)
    assert len(parts) == len(table) * 2 * len(fig.TIME_PARTS)


def test_runtime_plots_draw_every_point():
    fig.use_style()
    table = runtime_speedups()
    f, (left, right) = plt.subplots(1, 2)
    batched = table[table["mode"] == "batched"]
    fig.plot_measured_vs_predicted(left, batched, 0.1, ["s"])
    parts = fig.runtime_time_parts(batched)
    fig.plot_time_breakdown(right, parts, batched.set_index("label")["measured_ms"].to_dict())
    plt.close(f)
    texts = [t.get_text() for t in left.texts]
    assert texts == ["≤0.5", "≤1"]  # an annotation per operating point, none for the reference
    assert [t.get_text() for t in right.get_yticklabels()] == [
        f"{label}: {kind}" for label in batched["label"] for kind in ("predicted", "measured")
    ]
    assert len(right.patches) == len(parts)  # a bar per part
