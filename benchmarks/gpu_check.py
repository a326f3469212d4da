"""The foundation's checks on a CUDA GPU: extraction vs a bare loop, and Caffe-style timing.

    PYTHONPATH=src python benchmarks/gpu_check.py [--model results/networks/exit_resnet/model.pt]

Prints the device, the timing summary of every network of the default family (layer sum and
stage sum vs a plain timed forward, with CUDA events), the exit costs and the decision cost.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from adaptive_inference.decision import time_decision
from adaptive_inference.models import build_network
from adaptive_inference.timing import profile_study_network
from adaptive_inference.training import load_network

TIMING = {"threads": 1, "warmup": 20, "iterations": 200, "throughput_iterations": 50,
          "batch_sizes": {"latency": 1, "throughput": 256}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=[], help="trained model.pt files")
    args = parser.parse_args()
    device = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(device), "torch", torch.__version__,
          "cudnn", torch.backends.cudnn.version())
    networks = {path.split("/")[-2]: load_network(path) for path in args.models} or {
        arch: build_network(arch, num_classes=10, in_channels=1, image_size=28)
        for arch in ("linear", "small_cnn", "exit_resnet")
    }
    pd.set_option("display.width", 200)
    for name, model in networks.items():
        result = profile_study_network(model, (1, 28, 28), TIMING, device=device)
        columns = ["setting", "batch_size", "layer_sum_ms", "component_total_median_ms",
                   "forward_median_ms", "forward_iqr_ms", "ratio", "ratio_total", "component_ratio"]
        print(f"== {name}\n{result['summary'][columns].to_string(index=False)}")
        print(result["exits"][["setting", "exit_name", "cumulative_ms", "layer_cumulative_ms"]].to_string(index=False))
    for batch_size in (1, 256):
        decision = time_decision(num_classes=10, topk=5, batch_size=batch_size, warmup=20,
                                 iterations=200, device=device)
        print("decision:", decision)


if __name__ == "__main__":
    main()
