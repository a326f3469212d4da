"""Training speed in float32 and in bfloat16 autocast, side by side (`training.precision`).

For every network of the config, the workflow's own ``training.train`` runs blocks of optimizer
steps of the network's recipe in each precision, interleaved and repeated in one process; the
script prints the median seconds a step of each and their ratio. With ``--accuracy`` it then
trains each network's whole recipe in both precisions on the prepared Fashion-MNIST and prints
the test accuracy of every exit and the training time.

    .venv/bin/python benchmarks/bench_training.py [--networks exit_resnet] [--accuracy]

bfloat16 needs a device that computes it natively (``device.native_bfloat16``: a CPU with AMX, a
GPU with bfloat16); elsewhere the script says so and stops. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from adaptive_inference.config import load_config, network_training
from adaptive_inference.data import fashion_mnist
from adaptive_inference.device import native_bfloat16, resolve_device, seed_everything
from adaptive_inference.networks import build_network, network_spec
from adaptive_inference.training import TrainConfig, evaluate, train

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "bfloat16")


def build(config: dict, name: str) -> torch.nn.Module:
    network = config["networks"][name]
    spec = network_spec(
        network["arch"], network["options"], num_classes=10, input_shape=(1, 28, 28)
    )
    seed_everything(0)
    return build_network(**spec)


def recipe(config: dict, name: str, precision: str, steps: int | None = None) -> TrainConfig:
    section = {**network_training(config, name), "precision": precision}
    if steps is not None:
        section["steps"] = steps
    return TrainConfig.from_config(section)


def seconds_per_step(config: dict, name: str, args, device: torch.device) -> dict[str, list]:
    """Blocks of ``args.steps`` steps in each precision, alternating, ``args.repeats`` times."""
    batch = network_training(config, name)["batch_size"]
    images = torch.randn(batch * 4, 1, 28, 28)
    data = TensorDataset(images, torch.randint(0, 10, (len(images),)))
    models = {p: build(config, name) for p in PRECISIONS}
    times: dict[str, list] = {p: [] for p in PRECISIONS}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for precision in PRECISIONS if repeat % 2 else PRECISIONS[::-1]:
            cfg = recipe(config, name, precision, steps=args.steps)
            start = time.perf_counter()
            train(models[precision], data, cfg, device=device, progress=False)
            if repeat:
                times[precision].append((time.perf_counter() - start) / args.steps)
    return times


def whole_recipe(config: dict, name: str, device: torch.device) -> None:
    root = config["data"]["root"]
    full, test = fashion_mnist(REPO / root, True), fashion_mnist(REPO / root, False)
    for precision in PRECISIONS:
        model = build(config, name)
        cfg = recipe(config, name, precision)
        start = time.perf_counter()
        train(model, full, cfg, device=device, progress=False)
        seconds = time.perf_counter() - start
        accuracy = evaluate(model, *test.tensors, device=device)
        exits = ", ".join(f"{100 * a:.2f}%" for a in accuracy)
        print(f"  {name:12s} {precision:9s} {seconds:7.1f} s, test accuracy per exit: {exits}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--networks", nargs="*", help="default: every network of the config")
    parser.add_argument("--steps", type=int, default=8, help="steps in a timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--accuracy", action="store_true", help="also train every recipe whole in both"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if not native_bfloat16(device):
        raise SystemExit(f"this {device.type} has no native bfloat16: nothing to compare")
    config = load_config(args.config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    names = args.networks or list(config["networks"])
    print(f"{device.type}, {torch.get_num_threads()} threads, blocks of {args.steps} steps")
    for name in names:
        times = seconds_per_step(config, name, args, device)
        medians = {p: statistics.median(t) for p, t in times.items()}
        print(
            f"  {name:12s} float32 {1000 * medians['float32']:7.1f} ms/step, "
            f"bfloat16 {1000 * medians['bfloat16']:7.1f} ms/step, "
            f"float32/bfloat16 {medians['float32'] / medians['bfloat16']:.2f}x"
        )
    if args.accuracy:
        for name in names:
            whole_recipe(config, name, device)


if __name__ == "__main__":
    main()
