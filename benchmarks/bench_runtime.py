"""The policies run for real on another device: rule measure_runtime's measurement, again.

    PYTHONPATH=src python benchmarks/bench_runtime.py --device cuda --max-examples 1000 \
        --repeats 3 --out runtime_gpu.json

For every scheme that rule measure_runtime measured (``results/runtime/<scheme>/summary.json``,
which records the config it ran with), it loads the study's networks, predictions, timing tables
and fitted policies and the test images, and measures the same operating points at batch 1 and
batched beside the reference alone on ``--device``, re-timing the networks and the decision there
(CUDA events on a GPU). Needs no Snakemake: only ``results/{networks,predictions,timing,policies,
splits,runtime}`` and the evaluation images (Fashion-MNIST: torchvision reads only the t10k files
of ``results/data/FashionMNIST/raw``, but wants the train files to exist; empty ones will do).

Prints the device, one table per scheme (predicted by the tables of the CPU run, re-timed on the
device, measured) and writes every number to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import pandas as pd
import torch

from adaptive_inference.io import read_json, write_json
from adaptive_inference.runtime import compute_options, study_files
from adaptive_inference.runtime_measure import measure_configured
from adaptive_inference.timing import environment, pin_malloc_thresholds

COLUMNS = ["mode", "label", "predicted_speedup", "retimed_speedup", "measured_speedup",
           "retimed_ratio", "measured_ms", "measured_ref_ms", "runtime_compute_ms",
           "runtime_decision_ms", "runtime_python_ms", "different"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="the study's results folder")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--max-examples", type=int, default=1000, help="test examples per scheme")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--retime-iterations", type=int, default=50,
                        help="latency iterations of the re-timing after each pass")
    parser.add_argument("--schemes", nargs="*", help="default: every scheme measured")
    parser.add_argument("--out", help="write every number to this JSON file")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = Path(args.results)
    pinned = pin_malloc_thresholds()
    summaries = {
        path.parent.name: read_json(path)
        for path in sorted((results / "runtime").glob("*/summary.json"))
    }
    schemes = args.schemes or list(summaries)
    first = summaries[schemes[0]]["config"]
    env = environment(
        device, dtype=compute_options(first["compute"])["dtype"],
        batch_sizes={"latency": 1, "throughput": first["runtime"]["batch_size"]},
        malloc_pinned=pinned,
    )
    print(f"device: {env['device_name']} ({env['device_type']}), torch {env['torch_version']}, "
          f"CUDA {env['cuda_version']}, cuDNN {env['cudnn_version']}")
    report: dict = {"environment": env, "schemes": {}}
    pd.set_option("display.width", 200)
    for scheme in schemes:
        config = summaries[scheme]["config"]
        config["runtime"] = {
            **config["runtime"], "max_examples": args.max_examples, "repeats": args.repeats,
            "retiming": {"warmup": 5, "iterations": args.retime_iterations,
                         "throughput_iterations": 2},
        }
        torch.set_num_threads(config["timing"]["threads"])
        start = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # the re-timing's progress bars
            result = measure_configured(
                scheme, config, **study_files(results, scheme, config["scheme"]["networks"]),
                device=device, progress=False,
            )
        print(f"== {scheme}: {result.summary['examples']} test examples, "
              f"{time.perf_counter() - start:.0f} s")
        print(result.speedups[COLUMNS].round(4).to_string(index=False))
        report["schemes"][scheme] = {
            "speedups": json.loads(result.speedups.to_json(orient="records")),
            "segments": json.loads(result.segments.to_json(orient="records")),
            "summary": result.summary,
        }
    if args.out:
        write_json(report, args.out)


if __name__ == "__main__":
    main()
