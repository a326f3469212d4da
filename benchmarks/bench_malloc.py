"""Training with glibc's malloc thresholds pinned or left adaptive, side by side.

glibc adapts its mmap threshold to the sizes freed so far, so a training step's large activations
are sometimes mmap-ed, zero-filled by the kernel, and unmapped again; pinning the thresholds
(``device.pin_malloc_thresholds``, which the timing jobs already apply) keeps them on the heap.
The pin is per process and cannot be undone, so each measurement is a child process: the
workflow's own ``training.train`` runs ``--steps`` optimizer steps of a network's recipe (and
its held-out evaluation) on random images, children alternating between the two allocators.
The script prints, per allocator, the median seconds, system CPU seconds and minor page faults
of a child's training, and the ratio default / pinned. The pin changes no arithmetic: the
children print their trained weights' checksum, which must agree.

    .venv/bin/python benchmarks/bench_malloc.py [--network exit_resnet] [--pairs 5]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOCATORS = ("default", "pinned")


def child(args: argparse.Namespace) -> None:
    """One training run in this process; prints a JSON line."""
    from adaptive_inference.device import pin_malloc_thresholds

    if args.child == "pinned" and not pin_malloc_thresholds():
        raise SystemExit("glibc's mallopt is not available here: nothing to compare")
    import torch
    from bench_training import build, recipe  # this script's folder is on sys.path
    from torch.utils.data import TensorDataset

    from adaptive_inference.config import load_config, network_training
    from adaptive_inference.training import train

    torch.set_num_threads(args.threads)
    config = load_config(args.config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    precision = network_training(config, args.network)["precision"]
    cfg = recipe(config, args.network, precision, steps=args.steps)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(cfg.batch_size * 20, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (len(images),), generator=generator)
    data = TensorDataset(images, labels)
    held_out = TensorDataset(images[:2000], labels[:2000])
    model = build(config, args.network)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    train(model, data, cfg, val_set=held_out, progress=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
    print(
        json.dumps(
            {
                "seconds": seconds,
                "sys": after.ru_stime - before.ru_stime,
                "faults": after.ru_minflt - before.ru_minflt,
                "checksum": checksum,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--network", default="exit_resnet")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=ALLOCATORS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    runs: dict[str, list[dict]] = {a: [] for a in ALLOCATORS}
    for pair in range(args.pairs):
        for allocator in ALLOCATORS if pair % 2 else ALLOCATORS[::-1]:
            command = [sys.executable, __file__, "--child", allocator, *sys.argv[1:]]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[allocator].append(json.loads(done.stdout.strip().splitlines()[-1]))
    checksums = {r["checksum"] for rs in runs.values() for r in rs}
    print(
        f"{args.network}: {args.steps} steps and a held-out evaluation, {args.threads} threads, "
        f"{args.pairs} children per allocator, alternating"
    )
    medians = {}
    for allocator, rs in runs.items():
        medians[allocator] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        m = medians[allocator]
        seconds = ", ".join(f"{r['seconds']:.2f}" for r in rs)
        print(
            f"  {allocator:8s} {m['seconds']:6.2f} s (runs: {seconds}), system CPU "
            f"{m['sys']:5.2f} s, minor faults {m['faults']:,.0f}"
        )
    print(
        f"  default / pinned: {medians['default']['seconds'] / medians['pinned']['seconds']:.3f}x "
        f"wall, {medians['default']['sys'] / medians['pinned']['sys']:.2f}x system CPU; "
        f"weights identical: {len(checksums) == 1}"
    )


if __name__ == "__main__":
    main()
