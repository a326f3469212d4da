"""The fit and the read-off repeated over resplits: does the learned policy keep its place
against the baselines when the examples it learns on, is chosen on and is tested on change?

:func:`resplit_sweeps` deals the evaluation examples of policy_train, policy_validation and test
again (stratified, a seed per resplit), runs the sweep on each resplit (no bootstrap) and reads
every method's operating points off its validation curve, as the study does
(:mod:`adaptive_inference.readoff`). :func:`learned_minus_baselines` turns that into the
distribution of learned minus each baseline at each budget. A method with no point within a
budget is counted at speedup 1 there (one can always run the reference alone).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from adaptive_inference.graph import StageGraph
from adaptive_inference.splits import ids_of, resplit
from adaptive_inference.sweep import run_sweep

BASELINES = ("myopic", "uniform", "cascade")
"""The baselines the learned policy is held to (the oracle is a bound, single nodes are points
of every curve)."""


def resplit_sweeps(
    graph: StageGraph,
    splits: pd.DataFrame,
    fractions: Mapping[str, float],
    *,
    resplits: int,
    seed: int,
    options: Mapping[str, Any],
    progress: bool = True,
) -> pd.DataFrame:
    """One row per resplit, method, metric and budget: the point chosen on validation, its test
    speedup and loss and whether the loss stayed within the budget (``options``: the sweep's,
    its bootstrap left out)."""
    methods = [m for m in options["methods"] if m in ("learned", *BASELINES)]
    rows = []
    for r in tqdm(range(resplits), desc="resplits", disable=not progress):
        dealt = resplit(splits, fractions, seed + r)
        parts = [ids_of(dealt, name) for name in ("policy_train", "policy_validation", "test")]
        result = run_sweep(graph, *parts, **{**options, "methods": methods, "bootstrap_samples": 0})
        head = result.headline[result.headline["choice"] == "validation"]
        for row in head.itertuples():
            loss = getattr(row, f"{row.metric}_loss")
            rows.append(
                {
                    "scheme": graph.name,
                    "resplit": r,
                    "seed": seed + r,
                    "method": row.method,
                    "train_loss": row.train_loss,
                    "metric": row.metric,
                    "max_loss": row.max_loss,
                    "origin": row.origin,
                    "speedup": row.speedup,
                    "loss": loss,
                    "within_budget": bool(loss <= row.max_loss) if not np.isnan(loss) else np.nan,
                }
            )
    columns = [
        "scheme",
        "resplit",
        "seed",
        "method",
        "train_loss",
        "metric",
        "max_loss",
        "origin",
        "speedup",
        "loss",
        "within_budget",
    ]
    return pd.DataFrame(rows, columns=columns)


def learned_minus_baselines(table: pd.DataFrame) -> pd.DataFrame:
    """Per scheme, resplit, metric and budget: learned's speedup minus each baseline's and
    minus the best of them (a method without a point counts at speedup 1); the learned and
    myopic policies as trained on the metric."""
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
