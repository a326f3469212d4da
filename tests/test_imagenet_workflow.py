"""The paper's study (studies/imagenet.yaml) run through snakemake on an offline fixture: generated
ImageNet-style JPEGs, and random weights of AlexNet, GoogLeNet (with its auxiliary heads) and
ResNet50 saved under torchvision's file names in a temporary TORCH_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from imagenet_fixture import (
    class_index,
    save_random_weights,
    synsets,
    write_class_folders,
    write_flat_folder,
)
from test_workflow import REPO, snakemake

from adaptive_inference.pretrained import load_classifier, transforms_of

pytestmark = pytest.mark.e2e

PAPER = REPO / "studies" / "imagenet.yaml"
WNIDS = [synsets()[i] for i in (3, 50, 700)]


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    for entry in yaml.safe_load(PAPER.read_text())["networks"].values():
        save_random_weights(home, entry["options"]["model"], entry["options"]["weights"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))  # the snakemake jobs inherit it
        yield home


def paper_config(workdir: Path, **imagenet) -> Path:
    """studies/imagenet.yaml, pointed at the fixture and shrunk to seconds (same shape). Its
    networks have random weights, so they answer at chance: policies.allow_near_chance lets the
    policies be fitted all the same."""
    config = yaml.safe_load(PAPER.read_text())
    config["device"] = "cpu"
    config["data"]["imagenet"].update(imagenet)
    config["data"]["validation_size"] = 2
    config["training"].update(steps=6, batch_size=4)
    config["extraction"].update(batch_size=8, num_workers=2)
    config["timing"].update(
        warmup=1,
        iterations=3,
        throughput_iterations=2,
        throughput_warmup=0,
        rounds=5,
        throughput_rounds=3,
        warmup_rounds=0,
        throughput_warmup_rounds=0,
        batch_sizes={"latency": 1, "throughput": 2},  # timed at 1 and 2; 15 test images: a flush
    )
    config["policies"].update(
        lambdas={"count": 6, "refine": 2},
        thresholds={"count": 8},
        bootstrap={"samples": 20, "seed": 0, "level": 0.9},
        allow_near_chance=True,
    )
    config["runtime"].update(repeats=1, warmup=1, block_size=5)
    config["robustness"] = {"resplits": 1}
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def paper_study(tmp_path_factory, torch_home):
    workdir = tmp_path_factory.mktemp("paper")
    images = write_class_folders(workdir / "val", WNIDS, per_class=12)
    synset_file = workdir / "synsets.txt"
    synset_file.write_text("\n".join(synsets()) + "\n")
    paper_config(workdir, eval=str(images), synsets=str(synset_file))
    snakemake(workdir)
    return workdir


def test_the_paper_study_runs_end_to_end_on_the_fixture(paper_study):
    results = paper_study / "results"
    splits = pd.read_parquet(results / "splits" / "eval_splits.parquet")
    assert splits["split"].value_counts().to_dict() == {
        "test": 15,
        "policy_train": 10,
        "head_train": 7,
        "policy_validation": 4,
    }
    assert set(splits["label"]) == {class_index(w) for w in WNIDS}
    exits = {
        "alexnet": ["final"],
        "googlenet": ["inception3b", "inception4e", "final"],
        "resnet50": ["layer1", "layer2", "layer3", "final"],
    }
    for network, names in exits.items():
        manifest = json.loads((results / "predictions" / network / "manifest.json").read_text())
        assert manifest["network_exits"] == names and manifest["num_classes"] == 1000
        assert manifest["dtype"] == "float32" and manifest["probs_dtype"] == "float16"
        timing = json.loads((results / "timing" / network / "summary.json").read_text())
        assert timing["environment"]["channels_last"] is True
        assert {row["setting"] for row in timing["summary"]} == {"latency", "throughput"}
        costs = pd.read_parquet(results / "timing" / network / "exits.parquet")
        assert list(costs.loc[costs["setting"] == "latency", "exit_name"]) == names
    curve = pd.read_csv(results / "networks" / "resnet50" / "training_curve.csv")
    assert list(curve["step"]) == [1, 2, 3, 4, 5, 6]  # the heads' budget: training.steps
    assert {"val_accuracy_layer1", "val_accuracy_layer3"} <= set(curve.columns)
    assert (
        results / "networks" / "resnet50" / "model.pt"
    ).stat().st_size < 10_000_000  # heads only
    for setting in ("latency", "throughput"):
        costs = pd.read_parquet(results / "costs" / f"{setting}.parquet")
        assert set(costs["network"].dropna()) >= set(exits)
    for scheme in ("early_exit", "network_selection", "combined"):
        assert (results / "policies" / scheme / "speedup_at_loss.csv").exists()
        assert (results / "policies" / scheme / "policies.json").exists()
        assert (results / "robustness" / f"{scheme}.parquet").exists()
        assert (results / "runtime" / scheme / "speedups.parquet").exists()
    assert (results / "notebooks" / "6_summary.html").exists() and (results / "index.html").exists()


def test_each_network_reads_the_images_with_its_own_weights_transforms(paper_study):
    """The final exit's stored answer is the classifier's own on the JPEG as its transforms
    read it."""
    from PIL import Image

    results = paper_study / "results"
    index = pd.read_parquet(results / "data" / "imagenet" / "eval_index.parquet")
    table = pd.read_parquet(results / "predictions" / "googlenet" / "predictions.parquet")
    final = table[table["exit_name"] == "final"].set_index("example_id")
    model, weights = "googlenet", "GoogLeNet_Weights.IMAGENET1K_V1"
    classifier, transform = load_classifier(model, weights), transforms_of(model, weights)
    for example in (0, 17, 35):
        with Image.open(paper_study / "val" / index.loc[example, "file"]) as image:
            x = transform(image.convert("RGB"))[None]
        with torch.inference_mode():
            probs = classifier(x).softmax(1)[0]
        assert int(probs.argmax()) == final.loc[example, "prediction"]
        assert np.isclose(float(probs.max()), final.loc[example, "max_prob"], rtol=1e-3)
        assert final.loc[example, "label"] == index.loc[example, "label"]


def test_sharded_extraction_of_a_pretrained_network_matches_one_job(
    paper_study, tmp_path, torch_home
):
    config = yaml.safe_load((paper_study / "config.yaml").read_text())
    config["extraction"]["shards"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "results/predictions/alexnet/predictions.parquet")
    whole = pd.read_parquet(
        paper_study / "results" / "predictions" / "alexnet" / "predictions.parquet"
    )
    sharded = pd.read_parquet(
        tmp_path / "results" / "predictions" / "alexnet" / "predictions.parquet"
    )
    pd.testing.assert_frame_equal(whole, sharded)


def test_the_flat_layout_with_a_corrupt_image(tmp_path, torch_home):
    flat = write_flat_folder(tmp_path, count=30)
    broken = flat["eval"] / "ILSVRC2012_val_00000007.JPEG"
    broken.write_bytes(broken.read_bytes()[:300])
    paper_config(tmp_path, eval=str(flat["eval"]), layout="flat", devkit=str(flat["devkit"]))
    target = "results/splits/eval_splits.parquet"
    failed = snakemake(tmp_path, target, check=False)
    assert failed.returncode != 0
    assert (
        "1 of 30 images" in failed.stderr + failed.stdout
        and str(broken) in failed.stderr + failed.stdout
    )
    assert not (tmp_path / "results" / "data" / "imagenet" / "eval_index.parquet").exists()

    paper_config(
        tmp_path,
        eval=str(flat["eval"]),
        layout="flat",
        devkit=str(flat["devkit"]),
        corrupt_images="skip",
    )
    snakemake(tmp_path, target)
    summary = json.loads(
        (tmp_path / "results" / "data" / "imagenet" / "eval_summary.json").read_text()
    )
    assert (
        summary["skipped_corrupt"] == 1
        and summary["num_images"] == 29
        and summary["layout"] == "flat"
    )
    index = pd.read_parquet(tmp_path / "results" / "data" / "imagenet" / "eval_index.parquet")
    kept = [w for n, w in enumerate(flat["wnids"]) if n != 6]
    assert list(index["label"]) == [class_index(w) for w in kept]
    assert "ILSVRC2012_val_00000007.JPEG" not in set(index["file"])


def test_a_missing_imagenet_folder_stops_the_first_job_naming_it(tmp_path, torch_home):
    paper_config(tmp_path, eval=str(tmp_path / "nowhere"))
    result = snakemake(tmp_path, "results/splits/eval_splits.parquet", check=False)
    assert result.returncode != 0 and str(tmp_path / "nowhere") in result.stderr + result.stdout
    assert "does not exist" in result.stderr + result.stdout
    assert not (tmp_path / "results" / "data" / "imagenet").exists()
