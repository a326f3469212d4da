"""A finished study read back from ``results/``: one scheme's tables, costs and policies.

Paths come from :class:`~adaptive_inference.layout.Layout`. Fitted policies are saved as plain
data (``policies.json``: per point, each node's rule as numbers and names, the start node), so
loading a ``results/`` folder that someone shared runs no code from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from adaptive_inference.config import reference_network
from adaptive_inference.costs import Costs
from adaptive_inference.graph import NetworkTable, StageGraph, scheme_graph
from adaptive_inference.io import read_json, write_json
from adaptive_inference.layout import Layout
from adaptive_inference.policies import TradeoffPolicy
from adaptive_inference.splits import ids_of


def save_policies(policies: Mapping[int, TradeoffPolicy], path: Path | str) -> None:
    """Write fitted policies (by point_id) as data (JSON), atomically."""
    write_json({str(i): policies[i].to_dict() for i in sorted(policies)}, path)


def load_policies(path: Path | str) -> dict[int, TradeoffPolicy]:
    """The policies :func:`save_policies` wrote, by point_id."""
    return {int(i): TradeoffPolicy.from_dict(d) for i, d in read_json(path).items()}


@dataclass
class Study:
    """One scheme of a fitted study: what rule fit_policies read to build its graph (the
    networks' predictions, the costs of every timing setting, the config's choices) and what it
    fitted (points and policies).

    Args:
        name: the scheme's name (a key of ``policies.schemes``).
        kind: its graph (``early_exit``, ``network_selection``, ``combined``).
        networks: its networks, cheapest first.
        reference: the reference network (None: the most accurate).
        topk, path_features: the policies' features.
        tables: each network's extracted predictions.
        costs: the joint timing job's costs by setting (``latency``, ``throughput``).
    """

    name: str
    kind: str
    networks: list[str]
    reference: str | None
    topk: int
    path_features: bool
    tables: dict[str, NetworkTable]
    costs: dict[str, Costs]
    policies: dict[int, TradeoffPolicy] = field(default_factory=dict)
    points: pd.DataFrame = field(default_factory=pd.DataFrame)
    splits: pd.DataFrame = field(default_factory=pd.DataFrame)

    def graph(self, setting: str, costs: Costs | None = None) -> StageGraph:
        """The scheme's graph priced at one timing setting (or by ``costs`` given here)."""
        return scheme_graph(
            self.kind,
            {n: self.tables[n] for n in self.networks},
            self.costs[setting] if costs is None else costs,
            name=self.name,
            reference=self.reference,
            topk=self.topk,
            path_features=self.path_features,
        )

    @cached_property
    def graphs(self) -> dict[str, StageGraph]:
        """The graph at every timing setting of the study."""
        return {setting: self.graph(setting) for setting in self.costs}

    def ids(self, split: str):
        return ids_of(self.splits, split)


def study_from_files(
    name: str,
    entry: Mapping[str, Any],
    policies_section: Mapping[str, Any],
    reference: str | None,
    *,
    predictions: Mapping[str, Path | str],
    costs: Mapping[str, Path | str],
    splits: Path | str,
    points: Path | str | None = None,
    policies: Path | str | None = None,
) -> Study:
    """Scheme ``name`` (config entry ``{graph, networks}``) from the workflow's files: each
    network's ``predictions.parquet``, the joint costs of each setting, the splits and, when
    given, its fitted ``points.parquet`` and ``policies.json``; ``topk`` and ``path_features``
    of ``policies_section``."""
    topk = policies_section["topk"]
    study = Study(
        name=name,
        kind=entry["graph"],
        networks=list(entry["networks"]),
        reference=reference,
        topk=topk,
        path_features=policies_section["path_features"],
        tables={
            n: NetworkTable.read(pd.read_parquet(predictions[n]), topk) for n in entry["networks"]
        },
        costs={s: Costs.from_table(pd.read_parquet(path)) for s, path in costs.items()},
        splits=pd.read_parquet(splits),
    )
    if points is not None:
        study.points = pd.read_parquet(points)
    if policies is not None:
        study.policies = load_policies(policies)
    return study


def read_study(
    name: str,
    entry: Mapping[str, Any],
    policies_section: Mapping[str, Any],
    reference: str | None,
    *,
    layout: Layout,
    settings: tuple[str, ...] = ("latency", "throughput"),
    fitted: bool = True,
) -> Study:
    """:func:`study_from_files` with the files under ``layout`` (``fitted``: with its points
    and policies)."""
    return study_from_files(
        name,
        entry,
        policies_section,
        reference,
        predictions={n: layout.predictions(n) for n in entry["networks"]},
        costs={s: layout.costs(s) for s in settings},
        splits=layout.splits,
        points=layout.policies(name, "points.parquet") if fitted else None,
        policies=layout.policies(name, "policies.json") if fitted else None,
    )


def load_study(results: Path | str, config: Mapping[str, Any], scheme: str) -> Study:
    """Scheme ``scheme`` of the study whose results are in ``results``, with its validated
    config (:func:`adaptive_inference.config.load_config`)."""
    return read_study(
        scheme,
        config["policies"]["schemes"][scheme],
        config["policies"],
        reference_network(config),
        layout=Layout(str(results)),
    )


class FamilyError(ValueError):
    """A family of networks whose speedups would be measured against a broken reference."""


def check_family(
    tables: Mapping[str, NetworkTable],
    ids,
    *,
    reference: str,
    allow_near_chance: bool,
) -> pd.DataFrame:
    """Check, on examples ``ids`` (policy_train), that the reference is the most accurate final
    exit of the family and that no network answers at or near chance (top-1 at most twice the
    chance rate), unless ``allow_near_chance``; return each network's top-1 accuracy.

    A study whose reference is beaten by a cheaper member, or whose members guess, reports
    speedups "at no loss" that mean nothing (docs/method.md, "Unknowns"): such a study stops
    here, naming every accuracy and the fix."""
    rows = []
    for net, table in tables.items():
        positions = pd.Index(table.example_ids).get_indexer(ids)
        if (positions < 0).any():
            raise FamilyError(f"{net} was not evaluated on every policy-training example")
        classes = int(table.labels.max()) + 1
        accuracy = float(table.correct_top1[-1, positions].mean())
        rows.append({"network": net, "top1": accuracy, "chance": 1.0 / classes})
    family = pd.DataFrame(rows)
    listing = ", ".join(f"{r.network} {100 * r.top1:.1f}%" for r in family.itertuples())
    weak = family[family["top1"] <= 2 * family["chance"]]
    if len(weak) and not allow_near_chance:
        raise FamilyError(
            f"{', '.join(weak['network'])} answer at or near chance (top-1 on policy_train: "
            f"{listing}; chance {100 * family['chance'].iloc[0]:.1f}%): train longer "
            "(training.steps), check the data, or set policies.allow_near_chance: true to "
            "study them anyway."
        )
    best = family.loc[family["top1"].idxmax()]
    ref = family.loc[family["network"] == reference, "top1"].iloc[0]
    if best["top1"] > ref:
        raise FamilyError(
            f"the reference {reference} ({100 * ref:.1f}% top-1 on policy_train) is less "
            f"accurate than {best['network']} ({100 * best['top1']:.1f}%): every speedup would "
            f"be measured against a broken reference ({listing}). Train the reference longer "
            "(networks.<name>.training.steps), or name the most accurate network in "
            "policies.reference."
        )
    return family


def learned_choices(headline: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``speedup_at_loss.csv`` table that are the learned policy's operating
    points chosen on validation, each as trained on the loss it is read off on."""
    return headline[
        (headline["method"] == "learned")
        & (headline["choice"] == "validation")
        & (headline["train_loss"] == headline["metric"])
    ]


def runtime_points(path: Path | str) -> pd.DataFrame:
    """The rows of a ``measure_runtime`` speedups table at the operating points it ran (the
    reference's own rows, which ran no point, left out)."""
    table = pd.read_parquet(path)
    return table[table["point_id"].notna()]


def measured_at_batch1(layout: Layout, scheme: str) -> pd.DataFrame:
    """``measure_runtime``'s batch-1 rows of ``scheme`` at its operating points (``max_loss``,
    ``point_id``, ``measured_speedup``, ``predicted_speedup`` on the same examples,
    ``examples``); empty if the scheme's runtime was not measured."""
    columns = ["max_loss", "point_id", "measured_speedup", "predicted_speedup", "examples"]
    path = Path(layout.runtime(scheme, "speedups.parquet"))
    if not path.exists():
        return pd.DataFrame(columns=columns)
    table = runtime_points(path)
    return table[table["mode"] == "batch1"][columns]


def run_summary(layout: Layout, schemes, loss_levels) -> list[str]:
    """What a finished run says last: where to look and the headline speedups (the learned
    policy's points chosen on validation: test speedup and loss), and for the points run for
    real, the speedup measured at batch 1 beside the one predicted on the same examples."""
    lines = ["", f"Done. Open {layout.index} (every figure and page of the study)."]
    for scheme in schemes:
        path = Path(layout.policies(scheme, "speedup_at_loss.csv"))
        if not path.exists():
            continue
        table = learned_choices(pd.read_csv(path))
        runtime = measured_at_batch1(layout, scheme)
        for metric, part in table.groupby("metric", sort=False):
            cells, ran = [], []
            for row in part.itertuples():
                if row.max_loss not in loss_levels:
                    continue
                if pd.isna(row.speedup):
                    cells.append(f"≤{row.max_loss:g} pt: none")
                    continue
                loss = getattr(row, f"{metric}_loss")
                cells.append(f"≤{row.max_loss:g} pt: {row.speedup:.2f}x (loss {loss:.2f})")
                same = runtime[
                    (runtime["max_loss"] == row.max_loss) & (runtime["point_id"] == row.point_id)
                ]
                for r in same.itertuples():
                    ran.append(
                        f"≤{row.max_loss:g} pt: {r.measured_speedup:.2f}x "
                        f"({r.predicted_speedup:.2f}x predicted)"
                    )
            lines.append(f"  {scheme} ({metric}): " + ", ".join(cells))
            if ran:
                examples = int(runtime["examples"].iloc[0])
                lines.append(
                    f"    measured at batch 1 on {examples} test images: " + ", ".join(ran)
                )
    return lines
