"""The costs the policies trade against, as data: per component and batch size, the time of
one call, as the joint timing job measured it (:mod:`adaptive_inference.cost_timing`).

A **component** is a piece of work the runtime does, keyed by a tuple:

* ``("segment", network, source, exit)``: the stages of ``network`` after exit ``source`` (or
  from the input, ``source`` None) up to exit ``exit``, then that exit's head;
* ``("jump", network, exit, after_network, after_exit)``: the segment from the input into exit
  ``exit`` of ``network`` right after another node's work (exit ``after_exit`` of
  ``after_network`` and a decision there): an edge into another network, priced in the context
  the runtime runs it in (at the start of a route, a ``segment`` from the input, timed after the
  same segment on the previous example);
* ``("alone", network, exit)``: the same stages as the segment from the input to exit ``exit``
  of ``network``, priced as that node runs **alone** (every example stops there and nothing is
  decided: a single network, the reference among them): right after itself and its answer on the
  previous example, with no decision between;
* ``("decision", steps, reads, network, exit)``: a policy decision with ``steps`` linear steps
  (actions - 1) reading ``reads`` dominators' path features besides the node's own features, at
  the node of exit ``exit`` of ``network`` (timed right after that node's logits are computed,
  as the runtime runs it);
* ``("move", network, source)``: moving examples on in the rebatched runtime, per example
  moved: gathering what they carry from the call they leave (the activation that exit
  ``source`` of ``network`` left, for a continuation; ``network``'s input rows, ``source``
  None, for a jump into it) and regrouping them with the queue's other examples;
* ``("answer",)``: reading the answer of the node an example stops at.

:class:`Costs` holds every component's time per call at each timed batch size; the graphs take
the per-example cost at the setting's batch size (:attr:`Costs.batch_size`), and the batched
prediction prices a call of any size by interpolating between the timed sizes
(:meth:`Costs.call_ms`). All times are in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

Key = tuple
"""A component's key (see the module doc)."""

ANSWER: Key = ("answer",)

TABLE_COLUMNS = [
    "component",
    "kind",
    "network",
    "source",
    "exit",
    "after_network",
    "after_exit",
    "steps",
    "reads",
    "batch_size",
    "rounds",
    "contexts",
    "median_ms",
    "q25_ms",
    "q75_ms",
    "ratio_median",
    "ratio_q25",
    "ratio_q75",
    "ratio_warm",
    "ratio_cold",
    "cost_ms",
    "per_example_ms",
]
"""The columns of a joint timing table (``results/costs/<setting>.parquet``). ``contexts``: how
many contexts the component was timed in, in turn (:mod:`adaptive_inference.cost_timing`);
``ratio_median``: the ratio to the reference that prices it (the reference network alone at the
table's largest batch size, the setting's own, in the same round), the median over the rounds
(with several contexts, over the rounds of the first); ``ratio_warm`` and ``ratio_cold``: for a
decision timed in two contexts (batch 1), its median ratio in each, warm (after its producer,
itself and its producer again: its price) and cold (after its producer alone: for the record,
:func:`~adaptive_inference.cost_timing.priced_in`), NaN for a component timed in one;
``cost_ms``: ``ratio_median`` times that reference's median time."""


def segment_key(network: str, source: int | None, exit: int) -> Key:
    return ("segment", network, None if source is None else int(source), int(exit))


def alone_key(network: str, exit: int) -> Key:
    return ("alone", network, int(exit))


def jump_key(network: str, exit: int, after_network: str, after_exit: int) -> Key:
    return ("jump", network, int(exit), after_network, int(after_exit))


def decision_key(steps: int, reads: int, network: str, exit: int) -> Key:
    return ("decision", int(steps), int(reads), network, int(exit))


def move_key(network: str, source: int | None) -> Key:
    return ("move", network, None if source is None else int(source))


def component_name(key: Key) -> str:
    """A readable name of a component (the ``component`` column)."""
    if key[0] == "segment":
        _, network, source, exit = key
        start = "input" if source is None else f"exit{source}"
        return f"{network}:{start}->exit{exit}"
    if key[0] == "alone":
        return f"{key[1]}:input->exit{key[2]} alone"
    if key[0] == "jump":
        return f"{key[1]}:input->exit{key[2]} after {key[3]}:exit{key[4]}"
    if key[0] == "decision":
        return f"decision:{key[3]}:exit{key[4]}:steps{key[1]}:reads{key[2]}"
    if key[0] == "move":
        return f"move:{key[1]}:{'input' if key[2] is None else f'exit{key[2]}'}"
    return "answer"


@dataclass
class Costs:
    """Every component's time per call (ms) at each timed batch size.

    Args:
        batch_size: the batch size whose per-example costs the graphs use (the setting's).
        calls: ``{key: {batch size: ms per call}}``.
        spread: optional per-component record of the round-to-round spread (for the tables).
    """

    batch_size: int
    calls: dict[Key, dict[int, float]]
    spread: dict[Key, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, sizes in self.calls.items():
            if self.batch_size not in sizes:
                raise ValueError(
                    f"{component_name(key)} was not timed at batch size {self.batch_size}"
                )

    def timed(self, key: Key) -> dict[int, float]:
        """The component's time per call at each timed batch size."""
        try:
            return self.calls[key]
        except KeyError:
            raise KeyError(
                f"no cost for {component_name(key)}: the joint timing job did not time it "
                "(re-run rule time_costs after changing the networks or schemes, or after "
                "updating this package: snakemake --forcerun time_costs)"
            ) from None

    def per_example(self, key: Key) -> float:
        """The component's cost per example at :attr:`batch_size`."""
        return self.timed(key)[self.batch_size] / self.batch_size

    def segment_ms(self, network: str, source: int | None, exit: int) -> float:
        return self.per_example(segment_key(network, source, exit))

    def decision_ms(self, steps: int, reads: int, network: str, exit: int) -> float:
        return self.per_example(decision_key(steps, reads, network, exit))

    @property
    def answer_ms(self) -> float:
        return self.per_example(ANSWER)

    def call_ms(self, key: Key, size: int) -> float:
        """The time of one call on ``size`` examples: linear between the timed batch sizes
        (a timed size exactly; beyond the largest, its per-example cost times ``size``)."""
        timed = self.timed(key)
        sizes = np.array(sorted(timed), dtype=float)
        values = np.array([timed[int(s)] for s in sizes])
        if size > sizes[-1]:
            return float(values[-1] / sizes[-1] * size)
        return float(np.interp(size, sizes, values))

    # --- construction --------------------------------------------------------------------

    @classmethod
    def additive(
        cls,
        stage_ms: Mapping[str, Sequence[float]],
        head_ms: Mapping[str, Sequence[float]] | None = None,
        *,
        decision_ms: float = 0.0,
        answer_ms: float = 0.0,
        move_ms: float = 0.0,
        batch_size: int = 1,
        max_shape: int = 16,
    ) -> Costs:
        """Costs that add up, for tests and benchmarks: per network, the backbone cost of each
        exit's stages (beyond the previous exit) and of each head (a node alone and a jump
        into it cost its segment from the input); every decision (up to ``max_shape`` steps and
        reads, at any exit) costs ``decision_ms``, every move ``move_ms``. Costs are per example
        (the call on a batch costs ``batch_size`` times more)."""
        calls: dict[Key, dict[int, float]] = {}
        for network, stages in stage_ms.items():
            stages = np.asarray(stages, dtype=float)
            heads = (
                np.zeros(len(stages)) if head_ms is None else np.asarray(head_ms[network], float)
            )
            cumulative = np.concatenate([[0.0], np.cumsum(stages)])
            for source in [None, *range(len(stages))]:
                calls[move_key(network, source)] = {batch_size: move_ms * batch_size}
            for exit in range(len(stages)):
                for source in [None, *range(exit)]:
                    start = 0 if source is None else source + 1
                    ms = cumulative[exit + 1] - cumulative[start] + heads[exit]
                    calls[segment_key(network, source, exit)] = {batch_size: ms * batch_size}
                calls[alone_key(network, exit)] = calls[segment_key(network, None, exit)]
                for other, others in stage_ms.items():
                    for after in range(len(others)):
                        calls[jump_key(network, exit, other, after)] = {
                            batch_size: (cumulative[exit + 1] + heads[exit]) * batch_size
                        }
                for steps in range(1, max_shape + 1):
                    for reads in range(max_shape + 1):
                        key = decision_key(steps, reads, network, exit)
                        calls[key] = {batch_size: decision_ms * batch_size}
        calls[ANSWER] = {batch_size: answer_ms * batch_size}
        return cls(batch_size=batch_size, calls=calls)

    @classmethod
    def from_table(cls, table: pd.DataFrame, batch_size: int | None = None) -> Costs:
        """The costs of a joint timing table; ``batch_size`` None: its largest timed size (the
        setting's own)."""
        if batch_size is None:
            batch_size = int(table["batch_size"].max())
        calls: dict[Key, dict[int, float]] = {}
        spread: dict[Key, dict[str, float]] = {}
        for row in table.itertuples(index=False):
            key = _row_key(row)
            calls.setdefault(key, {})[int(row.batch_size)] = float(row.cost_ms)
            if int(row.batch_size) == batch_size:
                spread[key] = {"ratio_q25": float(row.ratio_q25), "ratio_q75": float(row.ratio_q75)}
        return cls(batch_size=int(batch_size), calls=calls, spread=spread)

    def scaled(self, factor: float) -> Costs:
        """Every cost times ``factor`` (a slower or faster machine: speedups do not change)."""
        calls = {k: {b: ms * factor for b, ms in v.items()} for k, v in self.calls.items()}
        return Costs(batch_size=self.batch_size, calls=calls, spread=dict(self.spread))


def _source_of(column: Any) -> int | None:
    """A ``source`` column's value as a key holds it (-1: the input, None)."""
    return None if int(column) < 0 else int(column)


def _source_column(source: int | None) -> int:
    """A key's source as the ``source`` column holds it (the input, None: -1)."""
    return -1 if source is None else source


def _row_key(row: Any) -> Key:
    if row.kind == "segment":
        return segment_key(str(row.network), _source_of(row.source), int(row.exit))
    if row.kind == "alone":
        return alone_key(str(row.network), int(row.exit))
    if row.kind == "jump":
        return jump_key(
            str(row.network), int(row.exit), str(row.after_network), int(row.after_exit)
        )
    if row.kind == "decision":
        return decision_key(int(row.steps), int(row.reads), str(row.network), int(row.exit))
    if row.kind == "move":
        return move_key(str(row.network), _source_of(row.source))
    return ANSWER


def key_columns(key: Key) -> dict[str, Any]:
    """The table columns that identify a component (see :data:`TABLE_COLUMNS`)."""
    columns = {
        "component": component_name(key),
        "kind": key[0],
        "network": "",
        "source": -1,
        "exit": -1,
        "after_network": "",
        "after_exit": -1,
        "steps": 0,
        "reads": 0,
    }
    if key[0] == "segment":
        _, network, source, exit = key
        columns.update(network=network, source=_source_column(source), exit=exit)
    elif key[0] == "alone":
        columns.update(network=key[1], exit=key[2])
    elif key[0] == "jump":
        _, network, exit, after_network, after_exit = key
        columns.update(
            network=network, exit=exit, after_network=after_network, after_exit=after_exit
        )
    elif key[0] == "decision":
        columns.update(steps=key[1], reads=key[2], network=key[3], exit=key[4])
    elif key[0] == "move":
        columns.update(network=key[1], source=_source_column(key[2]))
    return columns
