"""The plotting module the notebooks share: readings of the result tables, style, saved files."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from adaptive_inference import figures as fig


def point(point_id, method, *, variant="", train_loss="", speedup=1.0, top1_loss=0.0,
          top5_loss=0.0, cost_ms=1.0, scheme="s"):
    return {
        "scheme": scheme, "point_id": point_id, "method": method, "variant": variant,
        "train_loss": train_loss, "budget_name": "", "budget": np.nan, "cost_ms": cost_ms,
        "speedup": speedup, "speedup_lo": speedup * 0.95, "speedup_hi": speedup * 1.05,
        "top1_acc": 90.0 - top1_loss, "top5_acc": 99.0 - top5_loss,
        "top1_loss": top1_loss, "top1_loss_lo": top1_loss - 0.1, "top1_loss_hi": top1_loss + 0.1,
        "top5_loss": top5_loss, "top5_loss_lo": top5_loss - 0.1, "top5_loss_hi": top5_loss + 0.1,
        "reference": "net/final", "reference_ms": 1.0, "reference_top1": 90.0,
        "reference_top5": 99.0, "n_test": 100,
    }


@pytest.fixture
def points() -> pd.DataFrame:
    rows = [
        point(0, "learned", train_loss="top1", speedup=1.0, top1_loss=0.0),
        point(1, "learned", train_loss="top1", speedup=1.5, top1_loss=0.4),
        point(2, "learned", train_loss="top1", speedup=1.2, top1_loss=0.6),  # dominated
        point(3, "learned", train_loss="top1", speedup=2.0, top1_loss=1.5),
        point(4, "learned", train_loss="top5", speedup=3.0, top1_loss=5.0),
        point(5, "uniform", speedup=1.3, top1_loss=0.3),
        point(6, "oracle", variant="top1", speedup=4.0, top1_loss=-1.0),
        point(7, "oracle", variant="top5", speedup=5.0, top1_loss=3.0),
        point(8, "single", variant="net/stage1", speedup=2.5, top1_loss=6.0, cost_ms=0.4),
        point(9, "single", variant="net/final", speedup=1.0, top1_loss=0.0, cost_ms=1.0),
    ]
    return pd.DataFrame(rows)


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


def test_operating_points_and_oracle_share(points):
    ops = fig.operating_points(points, [0.5, 2.0], metric="top1", methods=["learned"])
    assert list(ops["speedup"]) == [1.5, 2.0] and set(ops["train_loss"]) == {"top1"}
    share = fig.oracle_share(points, [0.5], metric="top1", methods=["learned", "uniform", "oracle"])
    assert set(share["method"]) == {"learned", "uniform"}
    learned = share[share["method"] == "learned"].iloc[0]
    assert learned["oracle_speedup"] == 4.0 and learned["share"] == pytest.approx(37.5)


def test_exit_accuracy_on_the_chosen_split():
    splits = pd.DataFrame({"example_id": [0, 1, 2, 3], "split": ["test", "test", "test", "policy_train"]})
    predictions = pd.DataFrame({
        "example_id": [0, 1, 2, 3] * 2,
        "exit": [0] * 4 + [1] * 4,
        "exit_name": pd.Categorical(["stage1"] * 4 + ["final"] * 4),
        "correct_top1": [True, False, False, True, True, True, False, False],
        "correct_top5": [True] * 8,
    })
    table = fig.exit_accuracy({"net": predictions}, splits)
    assert list(table["exit_name"]) == ["stage1", "final"]
    assert list(table["n"]) == [3, 3]
    np.testing.assert_allclose(table["top1_acc"], [100 / 3, 200 / 3])
    assert list(table["top5_err"]) == [0.0, 0.0]


def test_headline_table_orders_schemes_and_methods_as_given():
    rows = []
    for scheme in ["zeta", "alpha"]:
        for method, train_loss in [("oracle", np.nan), ("learned", "top1"), ("learned", "top5")]:
            rows.append({"scheme": scheme, "method": method, "train_loss": train_loss, "metric": "top1",
                         "max_loss": 1.0, "speedup": 2.0, "speedup_lo": 1.9, "speedup_hi": 2.1})
    wide = fig.headline_table(pd.DataFrame(rows), ["learned", "oracle"])
    assert list(wide.index) == [("zeta", "learned"), ("zeta", "oracle"), ("alpha", "learned"), ("alpha", "oracle")]
    assert list(wide.columns) == ["top-1 loss ≤ 1 pts"]
    assert wide.iloc[0, 0] == "2.00× [1.90\u2060–\u20602.10]"


def test_format_speedup():
    assert fig.format_speedup(np.nan) == "–"
    assert fig.format_speedup(2.0, 2.0, 2.0) == "2.00×"
    assert fig.format_speedup(2.0, 1.5, 2.5).replace("\u2060", "") == "2.00× [1.50–2.50]"


def test_node_shares_skip_missing_points():
    nodes = pd.DataFrame({
        "point_id": [1, 1], "node": ["a", "b"], "stop_fraction": [0.75, 0.25],
        "time_fraction": [0.4, 0.6],
    })
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
