"""The fit and the read-off repeated over resplits: does the learned policy keep its place
against the baselines when the examples it learns on, is chosen on and is tested on change?

:func:`resplit_sweeps` deals the evaluation examples of policy_train, policy_validation and test
again (stratified, a seed per resplit), runs the sweep on each resplit (no bootstrap) and reads
every method's operating points off its validation curve, as the study does
(:mod:`adaptive_inference.readoff`);
:func:`~adaptive_inference.readoff.learned_minus_baselines` turns that into the distribution of
learned minus each baseline at each budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from adaptive_inference.graph import StageGraph
from adaptive_inference.readoff import BASELINES
from adaptive_inference.splits import ids_of, resplit
from adaptive_inference.sweep import run_sweep


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
