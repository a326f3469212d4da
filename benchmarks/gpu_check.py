"""The GPU checks of the runtime, in one prepared run (a lent device's budget is minutes).

    PYTHONPATH=src python benchmarks/gpu_check.py [--results results] [--device cuda]
        [--out gpu_check.json]

1. **The paper's networks, eager against captured.** AlexNet, GoogLeNet and ResNet50 (random
   weights: speed does not depend on their values) cut at the exits of ``studies/imagenet.yaml``:
   each exit's segment from the input (the network up to the exit, then its head; the final exit
   is the whole network) timed with CUDA events at batch 1 and at the throughput batch, eagerly
   and replayed as a captured CUDA graph (:mod:`adaptive_inference.cuda_graphs`), interleaved,
   median over ``--iterations``.
2. **The default study on the device** (when ``--results`` holds a finished one): the costs timed
   again on the device by the joint timing job's code (captured segments there), then every
   scheme's operating points measured against predicted at batch 1 and rebatched, with the
   throughput of both (``benchmarks/bench_runtime.py --retime``).

On a CPU it runs as a check of the script: segments are not captured (the reason is printed).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from torchvision import models

from adaptive_inference.costs import segment_key
from adaptive_inference.cuda_graphs import CapturedSegment, capture_reason
from adaptive_inference.io import write_json
from adaptive_inference.models import MultiExitNetwork
from adaptive_inference.pretrained import pool_linear_head, split_network
from adaptive_inference.segments import build_segment
from adaptive_inference.timing import Timer

REPO = Path(__file__).resolve().parents[1]


def paper_network(model: str, exits: list[str]) -> MultiExitNetwork:
    """A torchvision classifier with random weights, cut at ``exits`` (pooled linear heads)."""
    kwargs = {"aux_logits": False, "init_weights": False} if model == "googlenet" else {}
    network = models.get_model(model, weights=None, **kwargs).eval()
    stages, names = split_network(network, exits)
    heads, x = [], torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        for stage in stages[:-1]:
            x = stage(x)
            heads.append(pool_linear_head(x.shape[1], 1000))
    heads.append(torch.nn.Identity())
    return MultiExitNetwork(stages, heads, list(range(len(stages))), names).eval()


def median_ms(call, x: torch.Tensor, device: torch.device, iterations: int) -> float:
    timer = Timer(device)
    for _ in range(10):
        call(x)
    samples = []
    for _ in range(iterations):
        timer.call(call, x)
        samples += timer.finish_pass()
    return statistics.median(samples)


def eager_vs_captured(device: torch.device, batches: list[int], iterations: int) -> list[dict]:
    study = yaml.safe_load((REPO / "studies" / "imagenet.yaml").read_text())
    rows = []
    reason = capture_reason(device, True)
    fmt = torch.channels_last
    for name, entry in study["networks"].items():
        options = entry["options"]
        network = paper_network(options["model"], list(options.get("exits", [])))
        network.to(device=device, memory_format=fmt)
        for exit in range(network.num_exits):
            segment = build_segment(network, segment_key(name, None, exit), name=f"{name}/{exit}")
            for batch in batches:
                x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=fmt)
                with torch.inference_mode():
                    row = {
                        "network": name,
                        "exit": network.exit_names[exit],
                        "batch": batch,
                        "eager_ms": median_ms(segment, x, device, iterations),
                    }
                    if reason is None:
                        replayed = CapturedSegment(segment, x[:1], [batch], keep_outputs=False)
                        row["captured_ms"] = median_ms(replayed, x, device, iterations)
                        row["eager_over_captured"] = row["eager_ms"] / row["captured_ms"]
                rows.append(row)
                print(row, flush=True)
    if reason is not None:
        print(f"not captured: {reason}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--results", default="results", help="a finished default study")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--out", help="write every number to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    report = {
        "device": name,
        "paper_networks": eager_vs_captured(device, args.batches, args.iterations),
    }
    if (Path(args.results) / "policies").is_dir():
        command = [
            sys.executable,
            str(REPO / "benchmarks" / "bench_runtime.py"),
            "--results",
            args.results,
            "--device",
            args.device,
            "--retime",
        ]
        if args.out:
            command += ["--out", str(Path(args.out).with_suffix(".runtime.json"))]
        subprocess.run(command, check=True)
    if args.out:
        write_json(report, args.out)


if __name__ == "__main__":
    main()
