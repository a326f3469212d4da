"""The paper's setup on a CUDA GPU, through the real workflow, on an offline fixture.

    PYTHONPATH=src:build/device-site python benchmarks/gpu_paper_check.py --out OUT_DIR

1. writes a few thousand generated JPEGs in class folders and random AlexNet, GoogLeNet (with its
   auxiliary heads) and ResNet50 weights under torchvision's file names in a temporary TORCH_HOME;
2. runs ``snakemake`` with ``studies/imagenet.yaml`` (pointed at the fixture, ``device: cuda``) up
   to every network's predictions and timing tables: image index, splits, exit heads, extraction,
   Caffe-style timing with CUDA events;
3. measures the extraction's batch loop against a bare ``model(x)`` loop on the same pinned host
   tensors at the network's input size (so that JPEG decoding, which the workflow's manifest
   throughput includes, does not hide the difference), interleaved;
4. prints and writes (``OUT_DIR/gpu_paper_check.json``) the ratios and the stage costs.

``build/device-site`` holds Snakemake and its pure dependencies for a machine without them
(``benchmarks/make_device_site.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch.utils.data import TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "benchmarks")]

from bench_extraction import bare_loop  # noqa: E402
from imagenet_fixture import save_random_weights, synsets, write_class_folders  # noqa: E402

from adaptive_inference.extraction import extract  # noqa: E402
from adaptive_inference.networks import load_network  # noqa: E402


def write_study(work: Path, images: Path, device: str, iterations: int) -> Path:
    config = yaml.safe_load((REPO / "studies" / "imagenet.yaml").read_text())
    config["device"] = device
    config["data"]["imagenet"].update(eval=str(images), synsets=str(work / "synsets.txt"))
    config["data"]["validation_size"] = 100
    config["training"].update(steps=20)
    config["extraction"].update(batch_size=256, num_workers=12)
    config["timing"].update(
        warmup=20,
        iterations=iterations,
        throughput_warmup=3,
        throughput_iterations=max(2, iterations // 5),
    )
    (work / "synsets.txt").write_text("\n".join(synsets()) + "\n")
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def extraction_ratio(
    model, images: torch.Tensor, batch_size: int, device: torch.device, repeats: int
) -> dict:
    dataset = TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    model = model.eval().to(device, memory_format=torch.channels_last)
    bare_loop(model, images[: batch_size * 2], batch_size, device)
    extract(
        model,
        TensorDataset(*(t[: batch_size * 2] for t in dataset.tensors)),
        batch_size=batch_size,
        device=device,
        progress=False,
    )
    bare, loop, whole = [], [], []
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        bare.append(bare_loop(model, images, batch_size, device))
        start = time.perf_counter()
        result = extract(model, dataset, batch_size=batch_size, device=device, progress=False)
        whole.append(len(images) / (time.perf_counter() - start))
        loop.append(len(images) / result.manifest["loop_seconds"])
    return {
        "bare_images_per_s": statistics.median(bare),
        "extraction_loop_images_per_s": statistics.median(loop),
        "extraction_images_per_s": statistics.median(whole),
        "ratio_loop_vs_bare": statistics.median(loop) / statistics.median(bare),
        "ratio_whole_vs_bare": statistics.median(whole) / statistics.median(bare),
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "batch_size": batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_paper_check"))
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a quick check of the script)")
    parser.add_argument("--iterations", type=int, default=100, help="timed iterations at batch 1")
    args = parser.parse_args()
    device = torch.device(args.device)
    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    report: dict = {"device": name, "torch": torch.__version__}

    start = time.perf_counter()
    home = work / "torch_home"
    config = yaml.safe_load((REPO / "studies" / "imagenet.yaml").read_text())
    for entry in config["networks"].values():
        save_random_weights(home, entry["options"]["model"], entry["options"]["weights"])
    wnids = [synsets()[i] for i in (3, 50, 700)]
    images = write_class_folders(work / "val", wnids, per_class=args.per_class)
    config_path = write_study(work, images, args.device, args.iterations)
    report["fixture_seconds"] = time.perf_counter() - start
    print(
        f"fixture: {3 * args.per_class} JPEGs, weights in {home} "
        f"({report['fixture_seconds']:.0f} s)",
        flush=True,
    )

    networks = list(config["networks"])
    targets = [
        f"results/{kind}/{n}/{f}"
        for n in networks
        for kind, f in (("predictions", "manifest.json"), ("timing", "summary.json"))
    ]
    env = dict(os.environ, TORCH_HOME=str(home), PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--cores",
        "all",
        "--scheduler",
        "greedy",
        "--show-failed-logs",
        *targets,
        "--configfile",
        str(config_path),
    ]
    start = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    report["workflow_seconds"] = time.perf_counter() - start
    (out / "snakemake.log").write_text(run.stdout + run.stderr)
    print(f"snakemake exit {run.returncode} in {report['workflow_seconds']:.0f} s", flush=True)
    if run.returncode != 0:
        print((run.stdout + run.stderr)[-6000:])
        raise SystemExit(1)

    results = work / "results"
    os.environ["TORCH_HOME"] = str(home)
    for network in networks:
        manifest = json.loads((results / "predictions" / network / "manifest.json").read_text())
        timing = json.loads((results / "timing" / network / "summary.json").read_text())
        exits = pd.read_parquet(results / "timing" / network / "exits.parquet")
        entry = {
            "workflow_extraction_images_per_s": manifest["images_per_second"],
            "extraction_device": manifest["device_name"],
            "dtype": manifest["dtype"],
            "timing": [
                {
                    k: row[k]
                    for k in (
                        "setting",
                        "batch_size",
                        "forward_median_ms",
                        "layer_sum_ms",
                        "ratio",
                        "component_ratio",
                    )
                }
                for row in timing["summary"]
            ],
            "cudnn_benchmark": timing["environment"]["cudnn_benchmark"],
            "exit_costs": exits[
                ["setting", "exit_name", "stage_ms", "head_ms", "cumulative_ms"]
            ].to_dict(orient="records"),
        }
        model, spec = load_network(results / "networks" / network / "model.pt", with_spec=True)
        inputs = torch.randn(
            2048 if device.type == "cuda" else 64, 3, spec["image_size"], spec["image_size"]
        )
        inputs = inputs.pin_memory() if device.type == "cuda" else inputs
        entry["extraction_vs_bare"] = extraction_ratio(
            model, inputs, 256 if device.type == "cuda" else 32, device, args.repeats
        )
        report[network] = entry
        print(json.dumps({network: entry}, indent=1, default=str), flush=True)
    (out / "gpu_paper_check.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
