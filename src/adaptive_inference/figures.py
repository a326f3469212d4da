"""The study's figures: one style, one colour-blind-safe palette, and the plotting helpers that the
notebooks in ``notebooks/`` share, so that each notebook stays a few short cells; and the
training curve each network's training writes (:func:`plot_training_curve`).

The notebooks read ``results/`` and draw. Everything they show was computed by a rule; the only
readings done here are the ones a plot needs: a curve's points in order of cost, operating
points read off a curve at a loss budget with the study's own rule (chosen on validation,
:func:`~adaptive_inference.readoff.choose`), and the accuracy of each exit on the test split
(:func:`exit_accuracy`, a mean of the per-example correctness the extraction wrote). The
optimistic test envelope (:func:`pareto_front`) is drawn only where it is labelled as such.

Units everywhere: time in ms per example, accuracy and its loss in percentage points (pts),
speedup as the reference's mean time over the system's (x).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from adaptive_inference.config import METHODS
from adaptive_inference.io import atomic_path
from adaptive_inference.readoff import BASELINES, choose

DEFAULT_STYLE: dict[str, Any] = {
    "context": "notebook",  # seaborn context: paper, notebook, talk, poster
    "theme": "whitegrid",  # seaborn style
    "palette": "colorblind",  # qualitative palette of the methods and schemes
    "node_palette": "viridis",  # sequential palette of the nodes, cheapest first
    "font_scale": 1.0,
    "dpi": 150,  # of the saved PNGs
}
FORMATS = ("png", "svg")
INLINE_DPI = 100  # of the figures shown in the notebooks and their HTML pages
METHOD_LABELS = {
    "learned": "learned policy",
    "myopic": "myopic policy",
    "uniform": "uniform threshold",
    "cascade": "fixed cascade (best)",
    "oracle": "oracle",
    "single": "single network / exit",
}
METRIC_LABELS = {"top1": "top-1", "top5": "top-5"}
_METHOD_COLOUR_INDEX = {"learned": 0, "myopic": 1, "uniform": 2, "cascade": 3, "single": 4}
_MARKERS = {
    "learned": "o",
    "myopic": "s",
    "uniform": "^",
    "cascade": "D",
    "oracle": "*",
    "single": "P",
}
_LINESTYLES = {"learned": "-", "myopic": "--", "uniform": ":", "cascade": "-."}
_SPEEDUP_TICKS = (  # candidate tick sets of a log speedup axis, densest first
    (0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 15, 20),
    (0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500),
    (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
    (0.1, 1, 10, 100, 1000, 10000),
)

_style: dict[str, Any] = dict(DEFAULT_STYLE)


# --- style ---------------------------------------------------------------------------------------


def use_style(style: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Set the study's seaborn theme and matplotlib settings; return the style in use.

    ``style`` overrides :data:`DEFAULT_STYLE` (the config's ``figures.style``). Saved SVGs get
    a fixed hash salt and no date, so that the same figure gives the same file.
    """
    global _style
    unknown = set(style or {}) - set(DEFAULT_STYLE)
    if unknown:
        raise ValueError(
            f"unknown style option(s) {sorted(unknown)}; known: {sorted(DEFAULT_STYLE)}"
        )
    _style = {**DEFAULT_STYLE, **(style or {})}
    sns.set_theme(
        context=_style["context"],
        style=_style["theme"],
        palette=_style["palette"],
        font_scale=_style["font_scale"],
    )
    mpl.rcParams.update(
        {
            "figure.dpi": INLINE_DPI,
            "savefig.dpi": _style["dpi"],
            "savefig.bbox": "tight",
            "figure.constrained_layout.use": True,
            "svg.hashsalt": "adaptive-inference",
            "legend.frameon": False,
        }
    )
    return dict(_style)


def method_colours() -> dict[str, tuple[float, float, float]]:
    """One colour per method from the style's qualitative palette; the oracle is black."""
    colours = sns.color_palette(_style["palette"], 10)
    mapping = {m: colours[i % len(colours)] for m, i in _METHOD_COLOUR_INDEX.items()}
    mapping["oracle"] = (0.0, 0.0, 0.0)
    return mapping


def series_colours(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per name (networks, schemes) from the qualitative palette, in order."""
    colours = sns.color_palette(_style["palette"], max(len(names), 1))
    return dict(zip(names, colours))


def node_colours(nodes: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per node from the sequential node palette, cheapest node first."""
    return dict(zip(nodes, sns.color_palette(_style["node_palette"], max(len(nodes), 1))))


def save(fig: plt.Figure, figure_dir: Path | str, name: str) -> list[Path]:
    """Save ``fig`` as ``<figure_dir>/<name>.png`` and ``.svg``; return the paths."""
    figure_dir = Path(figure_dir)
    figure_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = figure_dir / f"{name}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(path, format=fmt, metadata=metadata)
        paths.append(path)
    return paths


def show(fig: plt.Figure, figure_dir: Path | str, name: str, *, alt: str | None = None) -> None:
    """Save ``fig`` (PNG and SVG) and show it inline: the saved PNG, drawn at screen resolution
    (``INLINE_DPI``; sharp on a high-density screen), with an alternative text (the rendered
    page's ``alt``; default: the figure's name). Drawing the figure a third time at screen
    resolution took a third of a notebook's figure time."""
    from IPython.display import Image, display

    png = next(p for p in save(fig, figure_dir, name) if p.suffix == ".png").read_bytes()
    saved_dpi = mpl.rcParams["savefig.dpi"]
    saved_dpi = fig.dpi if saved_dpi == "figure" else saved_dpi
    plt.close(fig)
    width_px = int.from_bytes(png[16:20], "big")  # the PNG header's width
    width = round(width_px * INLINE_DPI / saved_dpi)
    display(Image(data=png, width=width, metadata={"alt": alt or name.replace("_", " ")}))


def speedup_axis(
    ax: plt.Axes,
    axis: str = "y",
    *,
    log: bool | None = None,
    data_range: tuple[float, float] | None = None,
) -> None:
    """Speedup ticks labelled ``1.5x``; a log scale when asked or (``log=None``) when the
    speedups drawn (``data_range``, default: the data of the axes) span more than 4x."""
    if data_range is None:
        data_range = ax.dataLim.intervaly if axis == "y" else ax.dataLim.intervalx
    lo, hi = (float(v) for v in data_range)
    if log is None:
        log = lo > 0 and hi / lo > 4
    target = ax.yaxis if axis == "y" else ax.xaxis
    if log:
        lo, hi = lo / 1.25, hi * 1.25
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)
        candidates = [[t for t in ticks if lo <= t <= hi] for ticks in _SPEEDUP_TICKS]
        ticks = next((c for c in candidates if len(c) <= 7), candidates[-1])
        target.set_major_locator(FixedLocator(ticks))
        target.set_minor_locator(NullLocator())
    else:
        target.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))


def method_legend(fig: plt.Figure, axes: Iterable[plt.Axes], *, ncol: int | None = None) -> None:
    """One legend below the panels with every label drawn on them (each once)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncol=ncol or min(len(handles), 4),
        )


# --- reading the results -------------------------------------------------------------------------


def read_tables(paths: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """One table from one or several Parquet / CSV files (the same columns), concatenated."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = [pd.read_parquet(p) if str(p).endswith(".parquet") else pd.read_csv(p) for p in paths]
    return pd.concat(frames, ignore_index=True)


def exit_accuracy(
    predictions: Mapping[str, pd.DataFrame], splits: pd.DataFrame, *, split: str = "test"
) -> pd.DataFrame:
    """Top-1 / top-5 accuracy (%) of every exit of every network on one split of the examples.

    ``predictions``: network name -> its ``predictions.parquet``. One row per network and exit:
    ``network``, ``exit``, ``exit_name``, ``n``, ``top1_acc``, ``top5_acc`` and the half-width of
    their normal-approximation 95% intervals ``top1_err`` / ``top5_err``.
    """
    ids = splits.loc[splits["split"] == split, "example_id"]
    rows = []
    for network, table in predictions.items():
        table = table[table["example_id"].isin(ids)]
        for (exit_index, exit_name), group in table.groupby(["exit", "exit_name"], observed=True):
            row = {
                "network": network,
                "exit": int(exit_index),
                "exit_name": str(exit_name),
                "n": len(group),
            }
            for metric in ("top1", "top5"):
                p = float(group[f"correct_{metric}"].mean())
                row[f"{metric}_acc"] = 100 * p
                row[f"{metric}_err"] = 100 * 1.96 * math.sqrt(p * (1 - p) / max(len(group), 1))
            rows.append(row)
    return pd.DataFrame(rows)


def select_curves(points: pd.DataFrame, metric: str, methods: Sequence[str]) -> pd.DataFrame:
    """The points drawn on a ``metric`` panel: learned and myopic policies trained on that loss,
    the oracle of that loss, and every point of the other methods in ``methods``."""
    table = points[points["method"].isin(methods)]
    trained = table["method"].isin(["learned", "myopic"])
    table = table[~trained | (table["train_loss"] == metric)]
    return table[(table["method"] != "oracle") | (table["variant"] == metric)]


def pareto_front(points: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The points no other point beats on test (less or equal loss and more speedup), by loss:
    the optimistic test envelope (the test split both chooses and reports)."""
    loss = f"{metric}_loss"
    ordered = points.sort_values([loss, "speedup"], ascending=[True, False])
    best_before = ordered["speedup"].cummax().shift(fill_value=-np.inf)
    return ordered[ordered["speedup"] > best_before]


def operating_points(
    points: pd.DataFrame,
    loss_levels: Sequence[float],
    *,
    metric: str,
    methods: Sequence[str],
    confidence: float,
) -> pd.DataFrame:
    """Each method's point chosen on validation for each loss budget (the study's rule,
    :func:`~adaptive_inference.readoff.choose`), learned and myopic policies as trained on
    ``metric``; NaN where no point qualifies."""
    table = choose(
        points, list(loss_levels), metric=metric, confidence=confidence, methods=list(methods)
    )
    trained = table["method"].isin(["learned", "myopic"])
    return table[~trained | (table["train_loss"] == metric)].reset_index(drop=True)


def chosen(
    headline: pd.DataFrame, metric: str, methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of a headline table chosen on validation (not the test envelope) for
    ``metric``, learned and myopic policies as trained on it."""
    table = headline[(headline["choice"] == "validation") & (headline["metric"] == metric)]
    if methods is not None:
        table = table[table["method"].isin(methods)]
    trained = table["method"].isin(["learned", "myopic"])
    return table[~trained | (table["train_loss"] == metric)].reset_index(drop=True)


def oracle_share(
    points: pd.DataFrame,
    loss_levels: Sequence[float],
    *,
    metric: str,
    methods: Sequence[str],
    confidence: float,
) -> pd.DataFrame:
    """Each method's speedup at each loss budget (chosen on validation) as a share of the
    oracle's speedup.

    The oracle (of ``metric``) answers every example it can right at the least cost, so its
    loss is zero or negative and its speedup bounds what a policy reaches without loss; a
    method that accepts a loss can exceed it. Adds ``oracle_speedup`` and ``share`` (%).
    """
    oracle = points[(points["method"] == "oracle") & (points["variant"] == metric)]
    if oracle.empty:
        raise ValueError(f"no {metric} oracle among the points")
    others = [m for m in methods if m != "oracle"]
    table = operating_points(
        points, loss_levels, metric=metric, methods=others, confidence=confidence
    )
    table["oracle_speedup"] = float(oracle["speedup"].iloc[0])
    table["share"] = 100 * table["speedup"] / table["oracle_speedup"]
    return table


def node_shares(
    nodes: pd.DataFrame, point_ids: Mapping[str, float], node_order: Sequence[str]
) -> pd.DataFrame:
    """Share of examples stopping at and of time spent in each node (%), at each labelled point.

    ``point_ids``: label -> point_id (points that do not exist, NaN, are left out). One row per
    label and node in ``node_order``: ``label``, ``node``, ``stop_pct``, ``time_pct``.
    """
    rows = []
    for label, point_id in point_ids.items():
        if point_id is None or (isinstance(point_id, float) and math.isnan(point_id)):
            continue
        at = nodes[nodes["point_id"] == int(point_id)].set_index("node")
        for node in node_order:
            rows.append(
                {
                    "label": label,
                    "node": node,
                    "stop_pct": 100 * float(at["stop_fraction"].get(node, 0.0)),
                    "time_pct": 100 * float(at["time_fraction"].get(node, 0.0)),
                }
            )
    return pd.DataFrame(rows, columns=["label", "node", "stop_pct", "time_pct"])


def short_node(node: str) -> str:
    """``exit_resnet/stage1`` -> ``exit_resnet/stage1``; ``linear/final`` -> ``linear``."""
    return node[: -len("/final")] if node.endswith("/final") else node


def format_speedup(speedup: float, lo: float | None = None, hi: float | None = None) -> str:
    """``2.67x [2.58–2.76]`` (the interval left out where it rounds to the estimate), or an en
    dash where there is no point."""
    if speedup is None or not np.isfinite(speedup):
        return "–"
    text = f"{speedup:.2f}×"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        if f"{lo:.2f}" != text[:-1] or f"{hi:.2f}" != text[:-1]:
            text += f" [{lo:.2f}\u2060–\u2060{hi:.2f}]"  # word joiners: no line break inside
    return text


def headline_table(
    headline: pd.DataFrame, methods: Sequence[str], choice: str = "validation"
) -> pd.DataFrame:
    """The headline speedups (``speedup_at_loss.csv`` of every scheme) as one wide table.

    Rows: scheme x method (learned and myopic policies as trained on each column's loss);
    columns: loss metric x loss budget; cells: speedup with its bootstrap interval, of the
    points chosen on validation (``choice``; or the optimistic "test envelope")."""
    table = headline[headline["method"].isin(methods) & (headline["choice"] == choice)].copy()
    trained = table["method"].isin(["learned", "myopic"])
    table = table[~trained | (table["train_loss"] == table["metric"])]
    table["cell"] = [
        format_speedup(s, lo, hi)
        for s, lo, hi in zip(table["speedup"], table["speedup_lo"], table["speedup_hi"])
    ]
    table["loss"] = [
        f"{METRIC_LABELS.get(m, m)} loss ≤ {level:g} pts"
        for m, level in zip(table["metric"], table["max_loss"])
    ]
    schemes = list(dict.fromkeys(table["scheme"]))
    table["_scheme"] = table["scheme"].map({s: i for i, s in enumerate(schemes)})
    table["_method"] = table["method"].map({m: i for i, m in enumerate(methods)})
    columns = list(dict.fromkeys(table["loss"]))
    wide = table.pivot_table(
        index=["_scheme", "_method", "scheme", "method"],
        columns="loss",
        values="cell",
        aggfunc="first",
    )
    wide = wide.reset_index(["_scheme", "_method"], drop=True)[columns]
    wide.columns.name = None
    return wide


# --- drawing -------------------------------------------------------------------------------------


def plot_speedup_vs_loss(
    ax: plt.Axes,
    points: pd.DataFrame,
    metric: str,
    *,
    methods: Sequence[str] = METHODS,
    bands: bool = True,
    max_loss: float | None = None,
    headline: pd.DataFrame | None = None,
) -> list[str]:
    """Speedup (y) against accuracy loss (x, pts) of one scheme's methods on one panel.

    Each policy and threshold baseline is drawn as the test measurement of every point of its
    curve, in order of cost (no envelope: what each candidate gives on test), with the bootstrap
    interval of the speedup as a band; with a ``headline`` table, the points chosen on
    validation for its budgets are large markers with intervals that include the choice. The
    oracle is a star with both intervals; single networks / exits are labelled markers.
    Returns notes on what falls beyond ``max_loss`` (drawn off the panel).
    """
    colours = method_colours()
    loss = f"{metric}_loss"
    table = select_curves(points, metric, methods)
    notes = []
    for method in [m for m in methods if m in ("learned", "myopic", "uniform", "cascade")]:
        curve = table[table["method"] == method]
        if method == "cascade":  # several cascades: the best first node's envelope
            curve = pareto_front(curve, metric)
        if method == "learned" and "family" in curve:  # the fitted policies and the reference;
            # the class's baselines are drawn as their own methods
            curve = curve[curve["family"].isin(["recursion", "reference"])]
        curve = curve.sort_values("cost_ms", ascending=False)
        if max_loss is not None:
            curve = curve[curve[loss] <= max_loss]
        if curve.empty:
            continue
        ax.plot(
            curve[loss],
            curve["speedup"],
            color=colours[method],
            ls=_LINESTYLES[method],
            marker=_MARKERS[method],
            ms=2.5,
            lw=1.3,
            label=METHOD_LABELS[method],
        )
        if bands:
            ax.fill_between(
                curve[loss],
                curve["speedup_lo"],
                curve["speedup_hi"],
                color=colours[method],
                alpha=0.15,
                lw=0,
            )
        if headline is not None:
            picked = chosen(
                headline[headline["scheme"].isin(points["scheme"].unique())], metric, [method]
            ).dropna(subset=["speedup"])
            ax.errorbar(
                picked[loss],
                picked["speedup"],
                yerr=_errors(picked["speedup"], picked["speedup_lo"], picked["speedup_hi"]),
                ls="none",
                marker=_MARKERS[method],
                ms=8,
                color=colours[method],
                markeredgecolor="black",
                capsize=2,
                lw=1,
            )
    if headline is not None:
        ax.plot(
            [],
            [],
            ls="none",
            marker="o",
            ms=8,
            color="0.6",
            markeredgecolor="black",
            label="chosen on validation, per budget",
        )
    if "oracle" in methods:
        for _, row in table[table["method"] == "oracle"].iterrows():
            ax.errorbar(
                row[loss],
                row["speedup"],
                xerr=_errors([row[loss]], [row[f"{loss}_lo"]], [row[f"{loss}_hi"]]),
                yerr=_errors([row["speedup"]], [row["speedup_lo"]], [row["speedup_hi"]]),
                color=colours["oracle"],
                marker=_MARKERS["oracle"],
                ms=12,
                lw=1,
                capsize=2,
                ls="none",
                label=METHOD_LABELS["oracle"],
            )
    if "single" in methods:
        singles = table[table["method"] == "single"].sort_values("cost_ms")
        for _, row in singles.iterrows():
            name = short_node(str(row["variant"]))
            if max_loss is not None and row[loss] > max_loss:
                notes.append(
                    f"{name} ({METRIC_LABELS.get(metric, metric)} loss {row[loss]:.2f} pts, "
                    f"{row['speedup']:.3g}×)"
                )
                continue
            ax.plot(
                row[loss],
                row["speedup"],
                ls="none",
                marker=_MARKERS["single"],
                ms=8,
                color=colours["single"],
                label=METHOD_LABELS["single"],
            )
            ax.annotate(
                name,
                (row[loss], row["speedup"]),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize="x-small",
            )
    _speedup_vs_loss_axes(ax, points, metric, max_loss)
    return notes


def plot_proportions(
    axes: Sequence[plt.Axes], shares: pd.DataFrame, node_order: Sequence[str]
) -> None:
    """Stacked horizontal bars: per labelled point, the share of examples stopping at each node
    (first axes) and of time spent in each (second axes), nodes cheapest first."""
    colours = node_colours(list(node_order))
    labels = list(dict.fromkeys(shares["label"]))
    y = np.arange(len(labels))
    titles = ["examples that stop at each node", "time spent in each node"]
    for ax, column, title in zip(axes, ["stop_pct", "time_pct"], titles):
        left = np.zeros(len(labels))
        for node in node_order:
            at_node = shares[shares["node"] == node].set_index("label")[column]
            values = at_node.reindex(labels).fillna(0.0).to_numpy()
            ax.barh(
                y,
                values,
                left=left,
                color=colours[node],
                label=short_node(node),
                edgecolor="white",
                lw=0.5,
            )
            for yi, (start, width) in enumerate(zip(left, values)):
                if width >= 8:
                    ax.text(
                        start + width / 2,
                        yi,
                        f"{width:.0f}",
                        ha="center",
                        va="center",
                        fontsize="x-small",
                        color=_text_colour(colours[node]),
                    )
            left += values
        ax.set_yticks(y, labels if ax is axes[0] else [""] * len(labels))
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"{title} (%)")
        ax.grid(axis="y", visible=False)


def _loss_axis(ax: plt.Axes, max_loss: float | None) -> None:
    """The loss axis: from the least loss drawn (or 0) to the largest drawn, at most
    ``max_loss``, with a margin (a saturated loss, such as top-5 on an easy dataset, is not
    squeezed into a corner)."""
    low, high = (float(v) for v in ax.dataLim.intervalx)
    low, high = min(low, 0.0), max(high, 0.0)
    if max_loss is not None:
        high = min(high, max_loss)
    span = max(high - low, 0.1)
    right = high + 0.08 * span
    ax.set_xlim(low - 0.05 * span, right if max_loss is None else min(right, max_loss))


def _errors(value, lo, hi) -> np.ndarray:
    """Error-bar lengths below and above ``value`` from an interval (rounding can put an
    interval's end a hair past the estimate: clipped at zero)."""
    value, lo, hi = (np.asarray(v, dtype=float) for v in (value, lo, hi))
    return np.clip(np.vstack([value - lo, hi - value]), 0.0, None)


def _text_colour(rgb: Sequence[float]) -> str:
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return "black" if luminance > 0.5 else "white"


def plot_accuracy_vs_cost(ax: plt.Axes, table: pd.DataFrame, metric: str) -> None:
    """Accuracy (y, %) against the time to answer (x, ms per example, log scale) of every exit
    of every network: a line per network through its exits, 95% intervals as error bars.

    ``table``: :func:`exit_accuracy` joined with the exits' ``cumulative_ms``.
    """
    networks = list(dict.fromkeys(table["network"]))
    colours = series_colours(networks)
    for network in networks:
        rows = table[table["network"] == network].sort_values("cumulative_ms")
        ax.errorbar(
            rows["cumulative_ms"],
            rows[f"{metric}_acc"],
            yerr=rows[f"{metric}_err"],
            color=colours[network],
            marker="o",
            ms=6,
            lw=1.6,
            capsize=3,
            label=network,
        )
        if len(rows) > 1:
            for _, row in rows.iterrows():
                ax.annotate(
                    row["exit_name"],
                    (row["cumulative_ms"], row[f"{metric}_acc"]),
                    xytext=(6, -10),
                    textcoords="offset points",
                    fontsize="x-small",
                )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("time to answer (ms per example)")
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} accuracy on the test split (%)")


def plot_layer_times(ax: plt.Axes, layers: pd.DataFrame, kinds: Sequence[str]) -> None:
    """Caffe-style breakdown of one network at one batch size: a bar per layer in execution
    order, its median time per example (ms) with the interquartile range, coloured by kind."""
    colours = series_colours(list(kinds))
    rows = layers.sort_values("order").reset_index(drop=True)
    batch = rows["batch_size"].to_numpy()
    y = np.arange(len(rows))
    ax.barh(
        y,
        rows["median_ms"] / batch,
        color=[colours[k] for k in rows["kind"]],
        xerr=_errors(rows["median_ms"], rows["q25_ms"], rows["q75_ms"]) / batch,
        error_kw={"lw": 0.8, "capsize": 0, "ecolor": "0.3"},
    )
    labels = [f"{stage} · {kind}" for stage, kind in zip(rows["stage"], rows["kind"])]
    ax.set_yticks(y, labels, fontsize="x-small")
    for boundary in np.flatnonzero(rows["stage"].to_numpy()[1:] != rows["stage"].to_numpy()[:-1]):
        ax.axhline(boundary + 0.5, color="0.6", lw=0.6)
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.set_xlabel("median time per example (ms)")


def kind_shares(layers: pd.DataFrame) -> pd.DataFrame:
    """Share (%) of each network's summed layer time that each kind of layer takes, per
    setting: ``network``, ``setting``, ``batch_size``, ``kind``, ``ms`` (per example), ``pct``."""
    per_example = layers.assign(ms=layers["median_ms"] / layers["batch_size"])
    table = per_example.groupby(
        ["network", "setting", "batch_size", "kind"], sort=False, as_index=False
    )["ms"].sum()
    table["pct"] = 100 * table["ms"] / table.groupby(["network", "setting"])["ms"].transform("sum")
    return table


def plot_kind_shares(ax: plt.Axes, shares: pd.DataFrame, kinds: Sequence[str]) -> None:
    """Stacked horizontal bars: for each network and batch size, the share of time per kind."""
    colours = series_colours(list(kinds))
    shares = shares.assign(
        label=[f"{n} (batch {b})" for n, b in zip(shares["network"], shares["batch_size"])]
    )
    labels = list(dict.fromkeys(shares["label"]))
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    for kind in kinds:
        of_kind = shares[shares["kind"] == kind].set_index("label")["pct"]
        values = of_kind.reindex(labels).fillna(0.0)
        ax.barh(
            y,
            values.to_numpy(),
            left=left,
            color=colours[kind],
            label=kind,
            edgecolor="white",
            lw=0.5,
        )
        left += values.to_numpy()
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("share of the network's summed layer time (%)")


def plot_exit_gain(ax: plt.Axes, points: pd.DataFrame, metric: str, headline: pd.DataFrame) -> None:
    """The accuracy of each exit of an early-exit scheme alone (bars, %), the gain over the exit
    before it (``+x.x pts``), the time to reach it and its speedup (tick labels), and the learned
    policy's speedup at each loss budget, chosen on validation (``@1 pt: 1.35x``, as in the
    paper's annotations)."""
    colours = method_colours()
    singles = points[points["method"] == "single"].sort_values("cost_ms")
    acc = singles[f"{metric}_acc"].to_numpy()
    x = np.arange(len(singles))
    ax.bar(x, acc, color=colours["single"], width=0.6)
    for xi, (value, gain) in enumerate(zip(acc, np.diff(acc, prepend=np.nan))):
        text = f"{value:.1f}" + ("" if np.isnan(gain) else f"\n({gain:+.1f} pts)")
        ax.annotate(
            text,
            (xi, value),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize="small",
        )
    ax.set_xticks(
        x,
        [
            f"{str(v).split('/')[-1]}\n{c:.3g} ms, {s:.2f}×"
            for v, c, s in zip(singles["variant"], singles["cost_ms"], singles["speedup"])
        ],
    )
    low = max(0.0, float(np.nanmin(acc)) - 8)
    top = float(np.nanmax(acc))
    ax.set_ylim(low, top + 0.5 * (top - low))  # room above the bars for the labels and the box
    ax.set_yticks([t for t in ax.get_yticks() if low <= t <= min(top + 0.5 * (top - low), 100)])
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} accuracy of the exit alone (%)")
    ops = chosen(headline, metric, ["learned"])
    lines = [
        f"@{row.max_loss:g} pt{'s' if row.max_loss != 1 else ''}: {format_speedup(row.speedup)}"
        for row in ops.itertuples()
    ]
    ax.text(
        0.02,
        0.97,
        "learned policy\n" + "\n".join(lines),
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize="small",
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
    )


def plot_schemes(
    ax: plt.Axes,
    points: pd.DataFrame,
    metric: str,
    schemes: Sequence[str],
    *,
    bands: bool = True,
    max_loss: float | None = None,
) -> None:
    """The learned policy of each scheme (its curve's points on test in order of cost, a colour
    each) and its oracle (star), speedup against accuracy loss on one panel."""
    colours = series_colours(list(schemes))
    loss = f"{metric}_loss"
    for scheme in schemes:
        table = select_curves(points[points["scheme"] == scheme], metric, ["learned", "oracle"])
        front = table[table["method"] == "learned"].sort_values("cost_ms", ascending=False)
        if max_loss is not None:
            front = front[front[loss] <= max_loss]
        ax.plot(
            front[loss],
            front["speedup"],
            color=colours[scheme],
            marker="o",
            ms=3,
            lw=1.8,
            label=f"{scheme}: learned",
        )
        if bands:
            ax.fill_between(
                front[loss],
                front["speedup_lo"],
                front["speedup_hi"],
                color=colours[scheme],
                alpha=0.2,
                lw=0,
            )
        oracle = table[table["method"] == "oracle"]
        ax.plot(
            oracle[loss],
            oracle["speedup"],
            ls="none",
            marker="*",
            ms=13,
            color=colours[scheme],
            markeredgecolor="black",
            label=f"{scheme}: oracle",
        )
    _speedup_vs_loss_axes(ax, points, metric, max_loss)


def _speedup_vs_loss_axes(ax: plt.Axes, points: pd.DataFrame, metric: str, max_loss: float) -> None:
    """Reference lines, limits and labels of a speedup-against-loss panel."""
    ax.axvline(0, color="0.5", lw=0.8, zorder=0)
    ax.axhline(1, color="0.5", lw=0.8, zorder=0)
    _loss_axis(ax, max_loss)
    speedup_axis(ax)
    reference = points["reference"].iloc[0]
    ax.set_xlabel(f"{METRIC_LABELS.get(metric, metric)} accuracy loss vs {reference} (pts)")
    ax.set_ylabel(f"speedup over {reference} (×)")


def plot_oracle_share(
    ax: plt.Axes,
    points: pd.DataFrame,
    metric: str,
    methods: Sequence[str],
    max_loss: float,
    *,
    confidence: float,
    steps: int = 61,
) -> None:
    """The share of the oracle's speedup (y, %) each method reaches at a loss budget of x pts
    (its point chosen on validation; a step per point of its curve)."""
    colours = method_colours()
    grid = np.linspace(0.0, max_loss, steps)
    share = oracle_share(points, grid, metric=metric, methods=methods, confidence=confidence)
    for method in [m for m in methods if m != "oracle"]:
        rows = share[share["method"] == method]
        if rows["share"].notna().any():
            ax.step(
                rows["max_loss"],
                rows["share"],
                where="post",
                color=colours[method],
                ls=_LINESTYLES.get(method, "-"),
                lw=1.8,
                label=METHOD_LABELS[method],
            )
    ax.axhline(100, color="black", lw=0.8, ls="--", label="oracle")
    ax.set_xlim(0, max_loss)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(f"{METRIC_LABELS.get(metric, metric)} accuracy loss allowed (pts)")
    ax.set_ylabel("share of the oracle's speedup (%)")


def plot_headline(
    ax: plt.Axes, headline: pd.DataFrame, metric: str, methods: Sequence[str]
) -> None:
    """Grouped bars of the headline speedups (chosen on validation) at each loss budget (x) per
    method (hue), one scheme per panel, with intervals that include the choice."""
    colours = method_colours()
    table = chosen(headline, metric, methods)
    levels = sorted(table["max_loss"].unique())
    shown = [m for m in methods if m in set(table["method"])]
    width = 0.8 / max(len(shown), 1)
    for i, method in enumerate(shown):
        rows = table[table["method"] == method].set_index("max_loss").reindex(levels)
        x = np.arange(len(levels)) + (i - (len(shown) - 1) / 2) * width
        ax.bar(
            x,
            rows["speedup"],
            width=width,
            color=colours[method],
            label=METHOD_LABELS[method],
            yerr=_errors(rows["speedup"], rows["speedup_lo"], rows["speedup_hi"]),
            error_kw={"lw": 0.8, "capsize": 2},
        )
    ax.set_xticks(np.arange(len(levels)), [f"≤ {v:g} pts" for v in levels])
    ax.axhline(1, color="0.5", lw=0.8)
    ax.set_xlabel(f"{METRIC_LABELS.get(metric, metric)} accuracy loss allowed")
    ax.set_ylabel("speedup (×)")
    lo, hi = float(np.nanmin(table["speedup_lo"])), float(np.nanmax(table["speedup_hi"]))
    log = hi / max(lo, 1e-3) > 4
    speedup_axis(ax, log=log, data_range=(min(lo, 1.0), hi))
    if not log:
        ax.set_ylim(0, hi * 1.1)


# --- the runtime ---------------------------------------------------------------------------------

RUNTIME_MODES = {"batch1": "batch 1 (latency)", "batched": "batched (throughput)"}
TIME_PARTS = {
    "compute": "stages and heads",
    "decision": "policy decisions",
    "python": "runtime's own work (moving examples, Python)",
}


def runtime_time_parts(speedups: pd.DataFrame) -> pd.DataFrame:
    """Where the time per example goes (ms) per scheme, mode and operating point: ``scheme``,
    ``mode``, ``label``, ``kind`` (predicted, measured), ``part`` (:data:`TIME_PARTS`), ``ms``.
    Predicted: the joint costs along the simulated routes (decisions at their timed cost;
    rebatched, the moves of the examples that go on as the runtime's own work); measured: the
    runtime's instrumented pass."""
    rows = []
    for row in speedups.itertuples():
        keys = {"scheme": row.scheme, "mode": row.mode, "label": row.label}
        kinds = {
            "predicted": {
                "compute": row.predicted_ms - row.predicted_decision_ms - row.predicted_move_ms,
                "decision": row.predicted_decision_ms,
                "python": row.predicted_move_ms,
            },
            "measured": {
                "compute": row.runtime_compute_ms,
                "decision": row.runtime_decision_ms,
                "python": row.runtime_python_ms,
            },
        }
        for kind, parts in kinds.items():
            rows += [{**keys, "kind": kind, "part": part, "ms": ms} for part, ms in parts.items()]
    return pd.DataFrame(rows)


def plot_measured_vs_predicted(
    ax: plt.Axes, speedups: pd.DataFrame, tolerance: float, schemes: Sequence[str]
) -> None:
    """Measured against predicted speedup of one mode, a colour per scheme, an operating point
    per marker (labelled with its loss budget), bars spanning the speedups of the single
    passes. The diagonal (measured = predicted) lies in a band of ±``tolerance``."""
    colours = series_colours(list(schemes))
    table = speedups[speedups["label"] != "reference"]
    values = table[["predicted_speedup", "measured_speedup_min", "measured_speedup_max"]].to_numpy()
    line = np.linspace(min(float(np.nanmin(values)) / 1.1, 1.0), float(np.nanmax(values)) * 1.1, 50)
    ax.fill_between(
        line,
        line * (1 - tolerance),
        line * (1 + tolerance),
        color="0.88",
        lw=0,
        label=f"within ±{tolerance:.0%}",
    )
    ax.plot(line, line, color="0.4", lw=1, label="measured = predicted")
    for scheme in schemes:
        rows = table[table["scheme"] == scheme]
        if rows.empty:
            continue
        colour = colours[scheme]
        for row in rows.itertuples():
            ax.annotate(
                f"≤{row.max_loss:g}",
                (row.predicted_speedup, row.measured_speedup),
                textcoords="offset points",
                xytext=(4, -11),
                fontsize="x-small",
                color=colour,
            )
        ax.errorbar(
            rows["predicted_speedup"],
            rows["measured_speedup"],
            yerr=_errors(
                rows["measured_speedup"], rows["measured_speedup_min"], rows["measured_speedup_max"]
            ),
            fmt="o",
            color=colour,
            capsize=2,
            label=scheme,
        )
    ax.set_xlim(line[0], line[-1])
    ax.set_ylim(line[0], line[-1])
    speedup_axis(ax, "x", log=False)
    speedup_axis(ax, "y", log=False)
    ax.set_xlabel("predicted speedup (joint costs)")
    ax.set_ylabel("measured speedup")


def plot_time_breakdown(
    ax: plt.Axes, parts: pd.DataFrame, measured_ms: Mapping[str, float]
) -> None:
    """Stacked horizontal bars of one scheme and mode: for each operating point, the time per
    example predicted by the joint costs and measured (instrumented), split into
    :data:`TIME_PARTS`; a black tick marks the mean time of the timed passes (``measured_ms`` by
    label)."""
    colours = dict(zip(TIME_PARTS, sns.color_palette(_style["palette"], 10)[5:8]))
    kinds = {"predicted": "predicted", "measured": "measured"}
    y, ticks = 0.0, []
    for label in dict.fromkeys(parts["label"]):
        for kind, text in kinds.items():
            rows = parts[(parts["label"] == label) & (parts["kind"] == kind)].set_index("part")
            left = 0.0
            for part in TIME_PARTS:
                ms = float(rows.loc[part, "ms"])
                ax.barh(y, ms, left=left, height=0.8, color=colours[part], label=TIME_PARTS[part])
                left += ms
            if kind == "measured":
                ax.plot(
                    [measured_ms[label]] * 2,
                    [y - 0.45, y + 0.45],
                    color="black",
                    lw=1.5,
                    label="timed passes (mean)",
                )
            ticks.append((y, f"{label}: {text}"))
            y += 1
        y += 0.6
    ax.set_yticks([t for t, _ in ticks], [text for _, text in ticks], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("time per example (ms)")


# --- robustness and the verdict ----------------------------------------------------------------


def plot_robustness(ax: plt.Axes, differences: pd.DataFrame, metric: str) -> None:
    """Learned minus each baseline (speedup, x) at each loss budget over the resplits: a box per
    budget and baseline (y), one scheme per panel; right of zero, learned is ahead."""
    colours = method_colours()
    table = differences[differences["metric"] == metric]
    columns = [f"minus_{m}" for m in BASELINES if f"minus_{m}" in table.columns]
    long = table.melt(
        id_vars=["max_loss"], value_vars=columns, var_name="baseline", value_name="difference"
    )
    long["baseline"] = long["baseline"].str.removeprefix("minus_")
    long["budget"] = [f"≤ {v:g} pts" for v in long["max_loss"]]
    sns.boxplot(
        data=long,
        x="difference",
        y="budget",
        hue="baseline",
        ax=ax,
        orient="h",
        palette={m: colours[m] for m in BASELINES},
        fliersize=2,
        linewidth=0.8,
    )
    sns.stripplot(
        data=long,
        x="difference",
        y="budget",
        hue="baseline",
        ax=ax,
        orient="h",
        dodge=True,
        size=2.5,
        palette=dict.fromkeys(BASELINES, "0.25"),
        legend=False,
    )
    ax.axvline(0, color="0.3", lw=1)
    ax.set_xlabel("learned minus baseline (speedup, ×)")
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} loss budget")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [METHOD_LABELS.get(label, label) for label in labels], fontsize="small")


def robustness_table(differences: pd.DataFrame, resplit_rows: pd.DataFrame) -> pd.DataFrame:
    """Per scheme, metric and budget over the resplits: the median of learned minus the best
    baseline and minus each one, how often learned is strictly ahead of every baseline, and how
    often its realised test loss stayed within the budget."""
    columns = [c for c in differences.columns if c.startswith("minus_")]
    grouped = differences.groupby(["scheme", "metric", "max_loss"], sort=False)
    table = grouped[columns].median().add_prefix("median ")
    table["learned ahead of all (%)"] = 100 * grouped["minus_best"].apply(lambda d: (d > 0).mean())
    learned = resplit_rows[
        (resplit_rows["method"] == "learned")
        & (resplit_rows["train_loss"] == resplit_rows["metric"])
    ]
    within = learned.groupby(["scheme", "metric", "max_loss"], sort=False)["within_budget"].mean()
    table["learned within budget (%)"] = 100 * within.reindex(table.index)
    table["resplits"] = grouped.size()
    return table


PAPER_CLAIMS = (
    (
        "network_selection",
        "top5",
        1.0,
        2.8,
        "network selection: up to 2.8× at < 1% top-5 loss (ImageNet, AlexNet/GoogLeNet/ResNet50)",
    ),
    (
        "early_exit",
        "top5",
        1.0,
        1.25,
        "early exit alone gives much less (roughly 20-30%, second-hand figure)",
    ),
)


def verdict(
    headline: pd.DataFrame,
    differences: pd.DataFrame | None,
    *,
    study: str,
    losses: Sequence[str],
) -> list[str]:
    """Markdown lines setting the paper's claims beside what this study measured (its points
    chosen on validation, test speedups with intervals that include the choice) and the
    learned-vs-baselines comparison over resplits, with an honest word on each."""
    lines = []
    for scheme, metric, level, claim, text in PAPER_CLAIMS:
        use = metric if metric in losses else losses[0]
        rows = chosen(headline[headline["scheme"] == scheme], use, ["learned"])
        rows = rows[rows["max_loss"] == level]
        if rows.empty:
            continue
        row = rows.iloc[0]
        got = format_speedup(row["speedup"], row["speedup_lo"], row["speedup_hi"])
        where = (
            "the same metric"
            if use == metric
            else f"{METRIC_LABELS[use]} instead (this study's top-5 is saturated or not fitted)"
        )
        # without a bootstrap (no interval) the estimate itself is set beside the claim
        lo, hi = (
            row[c] if np.isfinite(row[c]) else row["speedup"] for c in ("speedup_lo", "speedup_hi")
        )
        if not np.isfinite(row["speedup"]):
            word = "no point of this study qualifies at this budget"
        elif lo >= claim:
            word = "at or above the paper's figure"
        elif hi < claim:
            word = "below the paper's figure"
        else:
            word = "within the interval of the paper's figure"
        lines.append(
            f"- **Paper:** {text}. **{study}:** {got} at ≤ {level:g} pt, {where} — {word}."
        )
    if differences is not None and len(differences):
        for (scheme, metric), part in differences.groupby(["scheme", "metric"], sort=False):
            medians = part.groupby("max_loss")["minus_best"].median()
            cells = ", ".join(f"{d:+.2f}× at ≤ {lvl:g}" for lvl, d in medians.items())
            ahead = (medians > 0).any()
            behind = (medians < 0).any()
            word = (
                "learned ahead of the best baseline"
                if ahead and not behind
                else "learned behind the best baseline at some budget"
                if behind
                else "learned ties the best baseline"
            )
            lines.append(
                f"- **Paper:** the learned policy beats the baselines. **{study}, "
                f"{scheme}, {METRIC_LABELS[metric]}** (median over "
                f"{part['resplit'].nunique()} resplits, learned minus best of myopic, "
                f"uniform, cascade): {cells} — {word}."
            )
    return lines


def plot_training_curve(curve: pd.DataFrame, path: Path | str, title: str = "") -> None:
    """A network's training curve (:func:`~adaptive_inference.training.train`): training loss
    and held-out accuracy of every exit against the optimizer step, saved as an image (rule
    ``plot_training_curve``; here rather than beside the training so that drawing it does not
    import PyTorch)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    if curve.empty:  # a pre-trained network without intermediate exits: nothing was trained
        fig.text(0.5, 0.5, "pre-trained network used as is: no exit heads to train", ha="center")
    ax_loss.plot(curve["step"], curve["train_loss"], marker="o")
    ax_loss.set(xlabel="optimizer step", ylabel="training loss (weighted exit CE)")
    if "train_accuracy" in curve:
        ax_acc.plot(
            curve["step"], curve["train_accuracy"] * 100, marker="o", label="train (final exit)"
        )
    for column in [c for c in curve.columns if c.startswith("val_accuracy_")]:
        label = f"held out ({column.removeprefix('val_accuracy_')})"
        ax_acc.plot(curve["step"], curve[column] * 100, marker="o", label=label)
    ax_acc.set(xlabel="optimizer step", ylabel="top-1 accuracy (%)")
    if not curve.empty:
        ax_acc.legend(fontsize="small")
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
