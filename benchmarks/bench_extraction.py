"""Extraction throughput of the workflow's code against a bare ``model(x)`` loop.

Both run the same network over the same images with the same batch size and threads, interleaved
and repeated, in one process; the script prints the median images/s of each and their ratio.
Target: the workflow's extraction reaches at least 0.95x the bare loop.

    .venv/bin/python benchmarks/bench_extraction.py [--model results/networks/exit_resnet/model.pt]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import TensorDataset

from adaptive_inference.extraction import extract
from adaptive_inference.models import build_network
from adaptive_inference.training import load_network


def bare_loop(model, images: torch.Tensor, batch_size: int) -> float:
    """Images per second of a plain inference loop (channels-last, as the extraction runs)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in images.split(batch_size):
            model(batch.contiguous(memory_format=torch.channels_last))
    return len(images) / (time.perf_counter() - start)


def workflow(model, dataset: TensorDataset, batch_size: int) -> float:
    start = time.perf_counter()
    extract(model, dataset, batch_size=batch_size, progress=False)
    return len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a trained network (model.pt); default: a random exit_resnet")
    parser.add_argument("--examples", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = load_network(args.model)
    else:
        model = build_network("exit_resnet", num_classes=10, in_channels=1, image_size=28)
    model = model.eval().to(memory_format=torch.channels_last)
    images = torch.randn(args.examples, 1, 28, 28)
    dataset = TensorDataset(images, torch.randint(0, 10, (args.examples,)))

    bare_loop(model, images[: args.batch_size * 2], args.batch_size)  # warm-up
    bare, ours = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(model, images, args.batch_size))
        ours.append(workflow(model, dataset, args.batch_size))
    print(f"threads={args.threads} batch={args.batch_size} examples={args.examples} repeats={args.repeats}")
    print(f"bare model(x) loop : {statistics.median(bare):9.1f} images/s  (all: {[round(v) for v in bare]})")
    print(f"workflow extraction: {statistics.median(ours):9.1f} images/s  (all: {[round(v) for v in ours]})")
    print(f"ratio workflow/bare: {statistics.median(ours) / statistics.median(bare):.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
