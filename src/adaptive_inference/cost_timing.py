"""The costs the policies trade against, timed side by side and in context (rule time_costs).

Speedups are ratios, and CPU timings drift from one job to the next (docs/method.md, "Costs";
STUDY.md's pitfalls: a network's median moved 0.64-1.02 ms between three processes a minute
apart while its ratio to another network held within 3%). So one job times **every component**
of a study, the way the runtime runs it, in **rounds**: each round runs every component once, in
its own random order (seeded), and every component's time in a round is divided by the
reference network's time in the same round. A component's cost is the median of those ratios
times the reference's median time: its ratios to the reference come from one machine state, and
the absolute scale from the reference. The order is drawn afresh every round because what ran
a few components before moves a small component's time even after its own context: in a fixed
rotation (every component always after the same neighbours), adding the node-alone components
to the study moved the decision at exit_resnet's first exit from 0.10-0.13 to 0.14-0.18 of the
reference, and the decisions of the linear network sat at 0.05-0.07 against 0.08 in random
orders; in random orders both sets of components gave 0.08-0.09 and 0.08 (one process, 200
rounds at batch 1, alternated). So with random orders a component's cost does not depend on
which other components the study holds. Neither order predicts the runtime better on this
machine: timed and measured in one process, alternated twice on each of two studies, random
orders came within 1.8% and 4.6% of the measured batch-1 speedups on average where the
rotation came within 2.4% and 2.8%.

The components (:mod:`adaptive_inference.costs`) are those some route of some scheme may run
(:meth:`~adaptive_inference.graph.GraphStructure.components`): every node's segment from the
input (at a route's start, and alone), every continuation between two exits of one network,
each decision shape, the answer.
Each is timed **in context**, right after what precedes it in the runtime:

* a continuation ``k -> j``: after the segment that reached exit ``k`` and a decision on its
  logits (untimed), on the activation it left;
* a jump into another network (a segment from the input on an edge): right after the work of
  the node it comes from (that node's segment and a decision on its logits), a cold start for
  the network jumped into;
* a segment from the input at the start of a route: right after the same segment and a
  decision on its logits, as the previous example of a stream that starts there ran them (timed
  after unrelated work, a network entered directly from the start was priced 1.2x dearer than
  the stream that always starts there measured);
* a node alone (a single network; the reference network, the denominator of every speedup,
  among them): right after itself and the answer, with no decision between, as its runtime runs
  it (a decision just before a network slows it: on the default study's networks at batch 1,
  the reference by 4-5%, small_cnn by about a tenth and the linear network by about half,
  ``benchmarks/bench_context.py``; timed after one, the reference came out 2-3% dearer against
  every other component than its runtime runs, and early exit's predicted batch-1 speedups 2-4%
  high);
* a decision: right after the segment that produces its node's logits (from the input), with
  the runtime's own :class:`~adaptive_inference.decision.NodeDecision` of the node's shape (its
  steps and the path features it reads; every step evaluated, the costliest case), including,
  batched, the split of the batch by action that the runtime does. At batch 1 the runtime runs
  a node's decision example after example, right after its producer and moments after the same
  decision ran on the previous example: it is priced in that context, **warm** (the rounds
  that price it run the producer, the same decision and the producer again). Odd rounds time it
  after its producer alone (after whatever component the round ran before), kept for the record
  (the table's ``ratio_cold``): the runtime finds a decision that cold only after a costly route
  (network selection's first decision measured 29-42 us after an example that ran exit_resnet,
  9-17 us after one that stopped at the linear network or small_cnn), and priced at the mean of
  the two contexts, network selection and combined measured 6.3% and 3.3% faster than their
  batch-1 predictions on average, priced warm 0.1% faster and 2.0% slower (side by side on the
  same measurements, ``benchmarks/bench_runtime.py --retime --passes 3``). Rebatched, a full
  batch of every other stage runs between two calls of a decision, so it is timed after its
  producer alone. The measurements behind these: docs/timing.md;
* a move (rebatched): the runtime's own gathering of the examples that go on, every row of a
  batch (:func:`~adaptive_inference.runtime.gather_rows`; the activation an exit left, right
  after the segment that left it, or a network's input rows for a jump), then regrouping them
  in two parts, as a queue regroups examples from several calls
  (:func:`~adaptive_inference.runtime.regroup`);
* the answer: reading the class of the node where an example stops.

Batched, every component is timed at several batch sizes (the setting's and smaller ones), so
that the prediction can price a flush call of any size (:meth:`~adaptive_inference.costs.Costs.
call_ms`). The sizes share the rounds (a round runs every component at every size, in one random
order), and every time is divided by the reference's at the setting's own size in the same
round, so a flush call's price and a full batch's come from one machine state. Timed size after
size, each against the reference at its own size, a slow stretch during one size's rounds went
into that size's prices: in one cold run every exit_resnet call of 64 examples came out 1.3x
dearer per example than at 256 and dearer than at 16, and network selection's and combined's
cheapest rebatched points, whose flush call of 42-86 examples to exit_resnet that price set,
measured 1.14-1.16x their predictions (docs/runs.md, run 17). The ratios of the small sizes
spread more over the rounds this way (their denominator is a longer call, further away in the
round; docs/timing.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from adaptive_inference.costs import (
    ANSWER,
    TABLE_COLUMNS,
    Costs,
    Key,
    alone_key,
    component_name,
    key_columns,
    segment_key,
)
from adaptive_inference.cuda_graphs import CapturedSegment
from adaptive_inference.decision import (
    PATH_EXTRA,
    DecisionRule,
    NodeDecision,
    NodeRule,
    PathMemo,
    own_feature_names,
)
from adaptive_inference.device import memory_format
from adaptive_inference.graph import GraphStructure
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.runtime import gather_rows, regroup, split_by_action
from adaptive_inference.segments import build_segment
from adaptive_inference.timing import Timer


def timing_batch_sizes(batch_size: int) -> list[int]:
    """The batch sizes a setting is timed at: its own, a quarter and a sixteenth of it, and 1
    (where a flush call's cost is interpolated)."""
    return sorted({batch_size, max(1, batch_size // 4), max(1, batch_size // 16), 1})


def random_decision(
    steps: int, reads: int, *, topk: int, device: torch.device, seed: int = 0
) -> NodeDecision:
    """A decision of a node with ``steps`` steps reading ``reads`` dominators' path features,
    with random weights and intercepts so negative that every step is evaluated."""
    generator = torch.Generator().manual_seed(seed)
    own = own_feature_names(topk)
    names = own + [f"d{d}:{f}" for d in range(reads) for f in (*own, *PATH_EXTRA)]
    features = len(names)
    rule = NodeRule(
        node=reads,
        actions=np.arange(-1, steps, dtype=np.int64),
        feature_names=names,
        mean=torch.rand(features, generator=generator).double().numpy(),
        scale=(torch.rand(features, generator=generator) + 0.5).double().numpy(),
        coef=torch.randn(steps, features, generator=generator).double().numpy() * 1e-3,
        intercept=np.full(steps, -1e6),
        learned=np.ones(steps, dtype=bool),
    )
    return NodeDecision(
        reads,
        rule.actions.tolist(),
        rule=DecisionRule(rule, device),
        constant=None,
        topk=topk,
        reads=tuple(range(reads)),
    )


class ComponentInContext:
    """One component with what may precede it in the runtime: each of ``contexts`` runs one
    such context (untimed) and returns the call to time. A component with several contexts is
    timed in each in turn, round after round (:meth:`prepare`), and priced in the first, the one
    the runtime runs it in (:func:`context_ratio`); the others are kept for the record."""

    def __init__(self, key: Key, *contexts: Callable[[], Callable[[], Any]]) -> None:
        self.key = key
        self.contexts = contexts

    def prepare(self, index: int = 0) -> Callable[[], Any]:
        """Run the context of timed round ``index`` (``index % len(contexts)``) and return the
        call to time."""
        return self.contexts[index % len(self.contexts)]()


def context_medians(ratios: np.ndarray, contexts: int) -> list[float]:
    """A component's median ratio to the reference in each of its ``contexts`` (round ``j`` ran
    in context ``j % contexts``)."""
    return [float(np.median(ratios[c::contexts])) for c in range(contexts)]


def context_ratio(ratios: np.ndarray, contexts: int) -> float:
    """A component's ratio to the reference from its ratios in every timed round: the median of
    the rounds of its first context (every round where it has one context,
    :func:`context_medians`)."""
    return context_medians(ratios, contexts)[0]


def priced_in(table: pd.DataFrame, context: str) -> Costs:
    """The costs of a joint timing table (:func:`measure_costs`) with every component timed in
    two contexts (a decision at batch 1) priced in ``context``: ``warm`` (its first, the table's
    own price), ``cold`` (after its producer alone) or ``mean`` (of the two): how far the
    prediction would move were the decisions priced otherwise (``benchmarks/bench_runtime.py``)."""
    if context not in ("warm", "cold", "mean"):
        raise ValueError(f"context must be warm, cold or mean, got {context!r}")
    two = table["contexts"] == 2
    warm, cold = table["ratio_warm"], table["ratio_cold"]
    ratio = {"warm": warm, "cold": cold, "mean": (warm + cold) / 2}[context]
    repriced = table.copy()
    reference_ms = table["cost_ms"] / table["ratio_median"]  # the reference's median time
    repriced.loc[two, "cost_ms"] = ratio[two] * reference_ms[two]
    repriced.loc[two, "per_example_ms"] = repriced.loc[two, "cost_ms"] / table["batch_size"][two]
    return Costs.from_table(repriced)


def components_in_context(
    keys: Sequence[Key],
    networks: Mapping[str, MultiExitNetwork],
    inputs: Mapping[str, torch.Tensor],
    reference: Key,
    *,
    topk: int,
    device: torch.device,
    capture: bool = False,
) -> list[ComponentInContext]:
    """Every component of ``keys`` at the batch size of ``inputs``, with its context (segments
    replayed as captured CUDA graphs with ``capture``, as the runtime runs them then)."""
    batch = next(iter(inputs.values())).shape[0]
    rows = torch.arange(batch, device=device)
    segments = {
        k: build_segment(networks[k[1]], k, name=component_name(k))
        for k in keys
        if k[0] in ("segment", "alone")
    }
    if capture:
        segments = {
            k: CapturedSegment(s, s.prefix(inputs[k[1]][:1]), [batch], keep_outputs=False)
            for k, s in segments.items()
        }
    ref_segment = segments[reference]
    ref_input = inputs[reference[1]]
    settle = random_decision(1, 0, topk=topk, device=device, seed=1)

    def decide(decision: NodeDecision, logits: torch.Tensor, memo: PathMemo | None):
        if batch == 1:
            return decision.one(logits, memo)
        return split_by_action(decision, decision.many(logits, memo, rows)[0], rows)

    classes = torch.empty(batch, dtype=torch.int64, device=device)

    def answer(logits: torch.Tensor):
        """Read the class of every example (where they stop), as the runtime does."""
        if batch == 1:
            return int(logits.argmax(1))
        return classes.__setitem__(rows, logits.argmax(1))

    def from_input(network: str, exit: int, name: str):
        """The segment from the input to ``exit`` of ``network`` (the timed one, where it is)."""
        key = segment_key(network, None, exit)
        return segments.get(key) or build_segment(networks[network], key, name=name)

    def after_node(key: Key, before, before_x: torch.Tensor, call) -> ComponentInContext:
        """``call`` (on the activation ``before`` left) timed right after a node's work:
        ``before`` on ``before_x`` and a decision on its logits."""

        def prepare():
            h, logits = before(before_x)
            decide(settle, logits, None)
            return lambda: call(h)

        return ComponentInContext(key, prepare)

    def for_alone(key: Key) -> ComponentInContext:
        """A node alone: after itself and its answer on the previous example."""
        segment, x = segments[key], inputs[key[1]]

        def prepare():
            answer(segment(x)[1])
            return lambda: segment(x)

        return ComponentInContext(key, prepare)

    def for_segment(key: Key) -> ComponentInContext:
        segment = segments[key]
        x = inputs[key[1]]
        if key[2] is None:  # a route's start: after the same segment on the previous example
            return after_node(key, segment, x, lambda _: segment(x))
        return after_node(key, from_input(key[1], key[2], "before"), x, segment)

    def for_decision(key: Key) -> ComponentInContext:
        _, steps, reads, network, exit = key
        decision = random_decision(steps, reads, topk=topk, device=device)
        producer = from_input(network, exit, "producer")
        x = inputs[network]
        memo = None
        if reads:
            memo = PathMemo(None if batch == 1 else batch)
            _, logits = producer(x)
            for d in range(reads):
                keeper = NodeDecision(d, [-1], rule=None, constant=-1, topk=topk, keep=True)
                keeper.many(logits, memo, rows) if batch > 1 else keeper.one(logits, memo)

        def after_producer():
            _, logits = producer(x)
            return lambda: decide(decision, logits, memo)

        def after_itself():  # the previous example ran this decision moments ago (module doc)
            _, logits = producer(x)
            decide(decision, logits, memo)
            _, logits = producer(x)
            return lambda: decide(decision, logits, memo)

        if batch == 1:
            return ComponentInContext(key, after_itself, after_producer)
        return ComponentInContext(key, after_producer)

    def for_answer() -> ComponentInContext:
        def prepare():
            _, logits = ref_segment(ref_input)
            return lambda: answer(logits)

        return ComponentInContext(ANSWER, prepare)

    def for_move(key: Key) -> ComponentInContext:
        _, network, source = key
        x = inputs[network]
        every = torch.ones(batch, dtype=torch.bool, device=device)
        half = batch // 2

        def move(carried: torch.Tensor, which: torch.Tensor) -> None:
            moved = gather_rows(carried, which)
            regroup([moved[:half], moved[half:]])

        if source is None:  # a jump: the input rows of the network jumped into
            return ComponentInContext(key, lambda: lambda: move(x, rows))
        producer = from_input(network, source, "producer")

        def prepare():
            h, _ = producer(x)
            return lambda: move(h, every)

        return ComponentInContext(key, prepare)

    def for_jump(key: Key) -> ComponentInContext:
        _, network, exit, after_network, after_exit = key
        segment = from_input(network, exit, component_name(key))
        before = from_input(after_network, after_exit, "before")
        x = inputs[network]
        return after_node(key, before, inputs[after_network], lambda _: segment(x))

    builders = {
        "segment": for_segment,
        "alone": for_alone,
        "jump": for_jump,
        "decision": for_decision,
        "move": for_move,
    }
    return [for_answer() if k == ANSWER else builders[k[0]](k) for k in keys]


def round_orders(count: int, rounds: int, seed: int = 0) -> Iterator[list[int]]:
    """``rounds`` orders of ``count`` components, each a fresh random permutation (seeded): no
    component is always timed after the same neighbours (module doc)."""
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        yield rng.permutation(count).tolist()


def time_rounds(
    components: Sequence[ComponentInContext],
    reference: Key,
    *,
    rounds: int,
    warmup: int,
    device: torch.device,
    seed: int = 0,
    progress: bool = False,
) -> dict[Key, np.ndarray]:
    """Each component's time (ms) in each of ``rounds`` rounds (after ``warmup`` untimed
    ones), every round running all of them once in its own random order
    (:func:`round_orders`)."""
    timer = Timer(device)
    times = {c.key: np.empty(rounds) for c in components}
    orders = round_orders(len(components), warmup + rounds, seed)
    bar = tqdm(orders, "joint timing", warmup + rounds, file=sys.stderr, disable=not progress)
    for r, order in enumerate(bar):
        keys = []
        for i in order:
            call = components[i].prepare(r - warmup)
            timer.call(call)
            keys.append(components[i].key)
        if r >= warmup:
            for key, ms in zip(keys, timer.finish_pass()):
                times[key][r - warmup] = ms
        else:
            timer.finish_pass()
    if reference not in times:
        raise ValueError(f"the reference {reference} was not timed")
    return times


def _summary(
    key: Key,
    batch: int,
    samples: np.ndarray,
    ratios: np.ndarray,
    ref_median: float,
    contexts: int,
):
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    r25, r75 = np.percentile(ratios, [25, 75])
    ratio = context_ratio(ratios, contexts)
    # a decision at batch 1: context 0 warm, context 1 after its producer alone (for_decision)
    warm, cold = context_medians(ratios, contexts) if contexts == 2 else (np.nan, np.nan)
    return {
        **key_columns(key),
        "batch_size": batch,
        "rounds": len(samples),
        "contexts": contexts,
        "median_ms": median,
        "q25_ms": q25,
        "q75_ms": q75,
        "ratio_median": ratio,
        "ratio_q25": r25,
        "ratio_q75": r75,
        "ratio_warm": warm,
        "ratio_cold": cold,
        "cost_ms": ratio * ref_median,
        "per_example_ms": ratio * ref_median / batch,
    }


def measure_costs(
    networks: Mapping[str, MultiExitNetwork],
    structures: Sequence[GraphStructure],
    *,
    input_shapes: Mapping[str, Sequence[int]],
    reference: str,
    batch_sizes: Sequence[int],
    rounds: int,
    warmup: int,
    topk: int,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
    capture: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Time every component of ``structures`` at every batch size (module doc); one row per
    component and batch size (:data:`~adaptive_inference.costs.TABLE_COLUMNS`).

    Args:
        networks: the study's networks by name (moved to ``device``, ``dtype`` and the memory
            format in place; eval mode).
        structures: the schemes' graph structures (which components exist, their shapes).
        input_shapes: ``(C, H, W)`` of each network's input (random inputs of that shape).
        reference: the reference network (its whole forward, alone, is the ratios'
            denominator).
        batch_sizes: the batch sizes to time at, all in every round; the largest is the
            reference's in the ratios (the setting's own).
        rounds, warmup: timed and untimed rounds (each runs every component at every size).
        topk: the sorted probabilities among the decisions' features.
        capture: time the segments as captured CUDA graphs (the runtime's way on a GPU with
            ``compute.cuda_graphs``; :mod:`adaptive_inference.cuda_graphs`).
    """
    fmt = memory_format(channels_last)
    for model in networks.values():
        model.eval().to(device=device, dtype=dtype, memory_format=fmt)
    keys = sorted(set().union(*(s.components() for s in structures)), key=str)
    ref_exit = networks[reference].num_exits - 1
    ref_key = alone_key(reference, ref_exit)
    if ref_key not in keys:
        keys.append(ref_key)
    generator = torch.Generator().manual_seed(seed)
    shapes = {tuple(shape) for shape in input_shapes.values()}
    components = []
    with torch.inference_mode():
        for batch in batch_sizes:
            by_shape = {
                shape: torch.randn((batch, *shape), generator=generator)
                .to(device=device, dtype=dtype)
                .contiguous(memory_format=fmt)
                for shape in shapes
            }
            inputs = {net: by_shape[tuple(shape)] for net, shape in input_shapes.items()}
            components += [
                ComponentInContext((batch, c.key), *c.contexts)
                for c in components_in_context(
                    keys, networks, inputs, ref_key, topk=topk, device=device, capture=capture
                )
            ]
        # every size in the same rounds, priced against the reference at the setting's own
        # size in the same round (module doc: a flush call's price and the full batch's share
        # one machine state)
        anchor = (max(batch_sizes), ref_key)
        times = time_rounds(
            components,
            anchor,
            rounds=rounds,
            warmup=warmup,
            device=device,
            seed=seed,
            progress=progress,
        )
    ref_times = times[anchor]
    ref_median = float(np.median(ref_times))
    contexts = {c.key: len(c.contexts) for c in components}
    rows = [
        _summary(key, batch, samples, samples / ref_times, ref_median, contexts[batch, key])
        for (batch, key), samples in times.items()
    ]
    return pd.DataFrame(rows)[TABLE_COLUMNS]
