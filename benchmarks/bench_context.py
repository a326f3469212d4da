"""What runs just before a network moves its time: every network's segment from the input, timed
after a decision and after none, side by side.

    .venv/bin/python benchmarks/bench_context.py [--results results] [--config config.yaml]
        [--device cpu|cuda] [--rounds 600]

Loads a finished study's networks from ``results/`` and times, for each network's segment from
the input to each of its exits, one call in two contexts (untimed, right before it): the same
segment and a decision on its logits (a route's start: the previous example of a stream that
starts there decided there, as :mod:`adaptive_inference.cost_timing` prices it) and the same
segment and the answer only (a node alone: a single network, the reference among them, whose
runtime decides nothing). The
calls run in rounds, in an order rotated from round to round, in one process, at batch 1 with
the timing jobs' threads. Prints each segment's median time in both contexts and their ratio.
On the default study's networks (CPU, 1 thread) a decision just before made exit_resnet 4-5%
slower and the linear network about 1.5x: why the joint timing prices every node alone after its
answer (docs/timing.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from adaptive_inference.config import load_config
from adaptive_inference.cost_timing import random_decision
from adaptive_inference.costs import segment_key
from adaptive_inference.device import (
    apply_compute,
    compute_options,
    memory_format,
    pin_malloc_thresholds,
)
from adaptive_inference.layout import Layout
from adaptive_inference.networks import load_network
from adaptive_inference.segments import build_segment
from adaptive_inference.timing import Timer

REPO = Path(__file__).resolve().parents[1]
CONTEXTS = ("after a decision", "after the answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="the study's results folder")
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="the study's config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    config = load_config(args.config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    device = torch.device(args.device)
    torch.set_num_threads(config["timing"]["threads"])
    pin_malloc_thresholds()
    apply_compute(config["compute"])
    options = compute_options(config["compute"])
    fmt = memory_format(options["channels_last"])
    layout = Layout(args.results)
    decision = random_decision(1, 0, topk=config["policies"]["topk"], device=device)
    calls = []  # (segment name, context, prepare, timed call)
    for name in config["networks"]:
        model, spec = load_network(layout.network(name), with_spec=True)
        model.eval().to(device=device, dtype=options["dtype"], memory_format=fmt)
        shape = (1, spec["in_channels"], spec["image_size"], spec["image_size"])
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=generator).to(device, options["dtype"])
        x = x.contiguous(memory_format=fmt)
        for exit in range(model.num_exits):
            label = f"{name}:input->{model.exit_names[exit]}"
            segment = build_segment(model, segment_key(name, None, exit), name=label)

            def decided(segment=segment, x=x):
                decision.one(segment(x)[1], None)

            def answered(segment=segment, x=x):
                int(segment(x)[1].argmax(1))

            for context, prepare in zip(CONTEXTS, (decided, answered)):
                calls.append((label, context, prepare, lambda segment=segment, x=x: segment(x)))
    timer = Timer(device)
    times = np.empty((args.rounds, len(calls)))
    with torch.inference_mode():
        for r in range(args.warmup + args.rounds):
            order = np.roll(np.arange(len(calls)), -(r % len(calls)))
            for i in order:
                calls[i][2]()
                timer.call(calls[i][3])
            ms = timer.finish_pass()
            if r >= args.warmup:
                times[r - args.warmup, order] = ms
    table = pd.DataFrame(
        {
            "segment": [c[0] for c in calls],
            "context": [c[1] for c in calls],
            "median_ms": np.median(times, axis=0),
        }
    ).pivot(index="segment", columns="context", values="median_ms")[list(CONTEXTS)]
    table["decision / answer"] = table[CONTEXTS[0]] / table[CONTEXTS[1]]
    print(
        f"{args.device}, {torch.get_num_threads()} threads, batch 1, {args.rounds} rounds; "
        "median ms of each segment after each context"
    )
    print(table.round(4).to_string())


if __name__ == "__main__":
    main()
