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
from adaptive_inference.networks import build_network, load_network


def bare_loop(model, images: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Images per second of a plain inference loop (channels-last, as the extraction runs).

    The images start on the host, as the extraction's do, and the loop waits for the device.
    """
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in images.split(batch_size):
            model(batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def workflow(
    model, dataset: TensorDataset, batch_size: int, device: torch.device
) -> tuple[float, float]:
    """Images per second of the whole extraction, and of its batch loop alone (without
    assembling the table at the end, a fixed cost that only a very fast network notices)."""
    start = time.perf_counter()
    result = extract(model, dataset, batch_size=batch_size, device=device, progress=False)
    total = time.perf_counter() - start
    return len(dataset) / total, len(dataset) / result.manifest["loop_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", help="a trained network (model.pt); default: a random exit_resnet"
    )
    parser.add_argument("--examples", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--widths",
        type=int,
        nargs=3,
        default=[32, 64, 128],
        help="exit_resnet widths of the random network (ignored with --model)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = load_network(args.model)
    else:
        model = build_network(
            "exit_resnet", num_classes=10, in_channels=1, image_size=28, widths=args.widths
        )
    model = model.eval().to(device, memory_format=torch.channels_last)
    images = torch.randn(args.examples, 1, 28, 28)
    if device.type == "cuda":
        images = images.pin_memory()
    dataset = TensorDataset(images, torch.randint(0, 10, (args.examples,)))

    bare_loop(model, images[: args.batch_size * 2], args.batch_size, device)  # warm-up
    workflow(
        model,
        TensorDataset(*(t[: args.batch_size * 2] for t in dataset.tensors)),
        args.batch_size,
        device,
    )
    bare, ours, loop = [], [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(model, images, args.batch_size, device))
        whole, batches = workflow(model, dataset, args.batch_size, device)
        ours.append(whole)
        loop.append(batches)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device={name} threads={args.threads} batch={args.batch_size} "
        f"examples={args.examples} repeats={args.repeats}"
    )
    for label, values in (
        ("bare model(x) loop ", bare),
        ("workflow extraction", ours),
        ("workflow batch loop", loop),
    ):
        print(
            f"{label}: {statistics.median(values):9.1f} images/s  "
            f"(all: {[round(v) for v in values]})"
        )
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"ratio workflow/bare: {ratio:.3f}  (target >= 0.95)")
    print(f"ratio loop/bare    : {statistics.median(loop) / statistics.median(bare):.3f}")


if __name__ == "__main__":
    main()
