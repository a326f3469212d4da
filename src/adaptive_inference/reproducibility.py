"""Two finished runs of a study side by side: what must be bit-identical and is, how far the
learned speedups moved from one run to the other, and the runtime's measured against predicted
speedups in each.

Everything upstream of the timing is seeded (README, "Reproducible, and what is not"): on the
same machine and thread count two cold runs give bit-identical splits, weights (``model.pt``)
and probabilities (``probs.npy``), which :func:`identical_files` compares byte for byte. What
differs between two runs is what was timed, and through the costs the policies fitted and the
operating points chosen: :func:`speedup_differences` puts the learned policy's speedups at the
points chosen on validation side by side, their difference relative to the smaller of the two.
:func:`runtime_ratios` lists each run's measured/predicted speedups (``measure_runtime``) against
a band, and :func:`job_seconds` the jobs' wall times, which say how fast the host was in each
run. :func:`machine` says what each run ran on and in which arithmetic its networks trained: two
runs on different machines, or in different arithmetic (``training.precision: auto`` trains in
bfloat16 on a CPU with AMX, in float32 on one without), are not expected to give the same bytes.
``tools/compare_runs.py`` prints them all and fails when a check does.
"""

from __future__ import annotations

import filecmp
import json
import re
from glob import glob
from pathlib import Path

import numpy as np
import pandas as pd

from adaptive_inference.layout import Layout
from adaptive_inference.study import learned_choices, runtime_points

RUNTIME_COLUMNS = [
    "scheme",
    "mode",
    "label",
    "max_loss",
    "predicted_speedup",
    "measured_speedup",
    "ratio",
]
TRAINED_IN = re.compile(r"computing in torch\.(\w+)")
"""How a ``train_network`` log names the arithmetic the network trained in (read only for runs
from before the training curve's ``computed_in`` column)."""


def deterministic_files(results: Path | str) -> list[str]:
    """The outputs of ``results`` that two runs must give bit for bit, relative to it: the
    splits, and every network's weights and probabilities."""
    layout = Layout(str(results))
    patterns = [layout.splits, layout.network("*"), layout.predictions("*", "probs.npy")]
    found = [Path(p) for pattern in patterns for p in sorted(glob(pattern))]
    return [p.relative_to(results).as_posix() for p in found]


def identical_files(first: Path | str, second: Path | str) -> pd.DataFrame:
    """Each deterministic file of either run (:func:`deterministic_files`): ``path``, whether it
    is in ``first`` and in ``second``, and ``identical`` (in both, byte for byte)."""
    first, second = Path(first), Path(second)
    paths = sorted(set(deterministic_files(first)) | set(deterministic_files(second)))
    rows = []
    for path in paths:
        a, b = first / path, second / path
        both = a.is_file() and b.is_file()
        rows.append(
            {
                "path": path,
                "in_first": a.is_file(),
                "in_second": b.is_file(),
                "identical": both and filecmp.cmp(a, b, shallow=False),
            }
        )
    return pd.DataFrame(rows, columns=["path", "in_first", "in_second", "identical"])


def learned_speedups(results: Path | str, metric: str = "top1") -> pd.DataFrame:
    """The learned policy's operating points chosen on validation in every scheme of
    ``results`` (``speedup_at_loss.csv``), as trained and read off on ``metric``: ``scheme``,
    ``max_loss``, the test ``speedup`` and loss."""
    paths = sorted(glob(Layout(str(results)).policies("*", "speedup_at_loss.csv")))
    if not paths:
        raise FileNotFoundError(f"no policies/*/speedup_at_loss.csv under {results}: not a study")
    chosen = learned_choices(pd.concat([pd.read_csv(p) for p in paths], ignore_index=True))
    chosen = chosen[chosen["metric"] == metric]
    loss = f"{metric}_loss"
    return chosen[["scheme", "max_loss", "speedup", loss]].reset_index(drop=True)


def relative_difference(a: np.ndarray | pd.Series, b: np.ndarray | pd.Series) -> np.ndarray:
    """``|a - b|`` relative to the smaller of the two (so 2.0 against 2.3 is 15%, either way)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.abs(a - b) / np.minimum(a, b)


def speedup_differences(
    first: Path | str, second: Path | str, *, metric: str = "top1", tolerance: float = 0.1
) -> pd.DataFrame:
    """The learned speedups of two runs (:func:`learned_speedups`) side by side, per scheme and
    budget: ``first``, ``second``, their ``difference`` (:func:`relative_difference`) and
    ``within`` (at most ``tolerance``; a budget with no point in either run is not)."""
    a, b = learned_speedups(first, metric), learned_speedups(second, metric)
    both = a.merge(b, on=["scheme", "max_loss"], how="outer", suffixes=("_first", "_second"))
    both = both.rename(columns={"speedup_first": "first", "speedup_second": "second"})
    both["difference"] = relative_difference(both["first"], both["second"])
    both["within"] = both["difference"] <= tolerance
    return both.sort_values(["scheme", "max_loss"], kind="stable").reset_index(drop=True)


def runtime_ratios(results: Path | str, *, band: float = 0.1) -> pd.DataFrame:
    """The runtime's measured against predicted speedup at every operating point of every
    measured scheme of ``results`` (``measure_runtime``'s tables, their ``ratio``; the
    reference's own rows left out) and ``within`` (``|ratio - 1| <= band``)."""
    paths = sorted(glob(Layout(str(results)).runtime("*", "speedups.parquet")))
    if not paths:
        return pd.DataFrame(columns=[*RUNTIME_COLUMNS, "within"])
    table = pd.concat([runtime_points(p) for p in paths], ignore_index=True)
    points = table[RUNTIME_COLUMNS].copy()
    points["within"] = (points["ratio"] - 1).abs() <= band
    return points.reset_index(drop=True)


def job_seconds(results: Path | str) -> pd.Series:
    """Each job's wall time (s) from its Snakemake benchmark file, by ``<rule>/<name>``."""
    seconds = {
        f"{Path(p).parent.name}/{Path(p).stem}": float(pd.read_csv(p, sep="\t")["s"].iloc[0])
        for p in sorted(glob(Layout(str(results)).benchmark("*", "*")))
    }
    return pd.Series(seconds, name="seconds", dtype=float)


def trained_in(results: Path | str, network: str) -> str:
    """The arithmetic ``network`` trained in: its training curve's ``computed_in`` column or,
    in a run from before the curve had one, the words of its ``train_network`` log
    (:data:`TRAINED_IN`); ``"unknown"`` where neither says."""
    layout = Layout(str(results))
    curve = Path(layout.network(network, "training_curve.csv"))
    if curve.is_file():
        column = pd.read_csv(curve).get("computed_in")
        if column is not None and len(column):
            return "/".join(sorted(set(column.astype(str))))
    log = Path(layout.log("train_network", network))
    found = TRAINED_IN.search(log.read_text(errors="replace")) if log.is_file() else None
    return found.group(1) if found else "unknown"


def machine(results: Path | str) -> dict[str, str]:
    """What a run ran on: the joint timing job's device, threads and torch (``costs/latency.json``'s
    environment) and the arithmetic each network trained in (:func:`trained_in`); ``"unknown"``
    where a run lacks the file."""
    layout = Layout(str(results))
    described = {"device": "unknown", "threads": "unknown", "torch": "unknown"}
    costs = Path(layout.costs("latency", "json"))
    if costs.is_file():
        env = json.loads(costs.read_text())["environment"]
        described = {
            "device": str(env["device_name"]),
            "threads": str(env["threads"]),
            "torch": str(env["torch_version"]),
        }
    networks = {Path(p).parent.name for p in glob(layout.network("*", "training_curve.csv"))}
    networks |= {Path(p).stem for p in glob(layout.log("train_network", "*"))}
    described["trained in"] = (
        ", ".join(f"{net} {trained_in(results, net)}" for net in sorted(networks)) or "unknown"
    )
    return described
