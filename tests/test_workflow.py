"""The real workflow, run through snakemake on the tiny study (tests/configs/tiny.yaml)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from adaptive_inference.config import load_config
from adaptive_inference.device import native_bfloat16
from adaptive_inference.reproducibility import identical_files, machine

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
NETWORKS = ["linear", "small_cnn", "exit_resnet"]

pytestmark = pytest.mark.e2e


def snakemake(workdir: Path, *args: str, config: Path | None = None, check: bool = True):
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(REPO / "profiles" / "default"),
        "--cores",
        "2",
        *args,  # before --configfile, which takes every value that follows it
        "--configfile",
        str(config or workdir / "config.yaml"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_rules(result) -> list[str]:
    """The rules a (dry) run plans, one entry per job: read from Snakemake's "Job stats" table,
    which is printed whatever the profile keeps quiet (the rules' own blocks may not be)."""
    lines = (result.stdout + result.stderr).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Job stats:")]
    if not starts:
        assert "Nothing to be done" in result.stdout + result.stderr, result.stdout + result.stderr
        return []
    jobs = []
    for line in lines[starts[0] + 3 :]:  # after the header and its rule
        if line.startswith("total"):
            break
        name, count = line.split()
        jobs += [name] * int(count)
    return jobs


def write_config(path: Path, base: Path = TINY, **changes) -> Path:
    """``base`` (the tiny study) with ``changes`` (dotted keys), written to ``path``."""
    config = yaml.safe_load(base.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """The tiny study, run once from nothing: its folder and what Snakemake printed."""
    workdir = tmp_path_factory.mktemp("study")
    write_config(workdir / "config.yaml")
    return workdir, snakemake(workdir)


@pytest.fixture(scope="module")
def study(study_run) -> Path:
    return study_run[0]


def test_outputs_of_the_study(study):
    results = study / "results"
    arithmetic = "bfloat16" if native_bfloat16(torch.device("cpu")) else "float32"
    splits = pd.read_parquet(results / "splits" / "eval_splits.parquet")
    assert len(splits) == 300
    assert splits["split"].value_counts().to_dict() == {
        "test": 150,
        "policy_train": 105,
        "policy_validation": 45,
        "head_train": 0,
    }
    for network in NETWORKS:
        manifest = json.loads((results / "predictions" / network / "manifest.json").read_text())
        exits = manifest["network_exits"]
        assert (
            manifest["dtype"] == "float32" and manifest["channels_last"] is True
        )  # compute defaults
        probs = np.load(results / "predictions" / network / "probs.npy")
        assert probs.shape == (len(exits), 300, 10)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
        table = pd.read_parquet(results / "predictions" / network / "predictions.parquet")
        assert len(table) == 300 * len(exits)
        assert (
            table.loc[table["exit"] == 0, "label"].to_numpy() == splits["label"].to_numpy()
        ).all()
        summary = json.loads((results / "timing" / network / "summary.json").read_text())
        assert {row["setting"] for row in summary["summary"]} == {"latency", "throughput"}
        assert summary["environment"]["threads"] == 1
        timed_exits = pd.read_parquet(results / "timing" / network / "exits.parquet")
        assert len(timed_exits) == 2 * len(exits)
        curve = pd.read_csv(results / "networks" / network / "training_curve.csv")
        steps = 400 if network == "exit_resnet" else 60  # the network's own, or the study's
        assert curve["step"].iloc[-1] == steps and len(curve) == 10
        assert curve["epoch"].iloc[-1] == pytest.approx(steps / 8)  # 500 images, batches of 64
        assert (results / "networks" / network / "training_curve.png").stat().st_size > 0
        # training.precision: auto, resolved on this machine, said in the log and recorded in
        # the curve
        log = (results / "logs" / "train_network" / f"{network}.log").read_text()
        assert f"computing in torch.{arithmetic}" in log
        assert set(curve["computed_in"]) == {arithmetic}
        assert "malloc thresholds pinned: True" in log
    # tools/compare_runs.py reads it back from the curves
    trained = ", ".join(f"{network} {arithmetic}" for network in sorted(NETWORKS))
    assert machine(results)["trained in"] == trained
    assert json.loads((results / "predictions" / "exit_resnet" / "manifest.json").read_text())[
        "network_exits"
    ] == ["stage1", "stage2", "final"]


def test_joint_costs_of_both_settings(study):
    """One time_costs job per setting: every component of the study timed side by side."""
    results = study / "results"
    for setting, sizes in [("latency", [1]), ("throughput", None)]:
        costs = pd.read_parquet(results / "costs" / f"{setting}.parquet")
        record = json.loads((results / "costs" / f"{setting}.json").read_text())
        assert record["setting"] == setting and record["environment"]["threads"] == 1
        assert (
            record["rounds"] == (10 if setting == "latency" else 3) and record["warmup_rounds"] == 1
        )
        if sizes is not None:
            assert record["batch_sizes"] == sizes
        assert max(record["batch_sizes"]) == (1 if setting == "latency" else 8)
        assert set(record["full_network_ms"]) == set(NETWORKS)
        assert {"segment", "decision", "answer"} <= set(costs["kind"])
        assert set(costs["network"].dropna()) >= set(NETWORKS)
        assert (costs["per_example_ms"] > 0).all()


SCHEMES = ["early_exit", "network_selection", "combined"]
NOTEBOOK_RULES = {
    "1_networks": "notebook_networks",
    "2_early_exit": "notebook_early_exit",
    "3_network_selection": "notebook_network_selection",
    "4_exit_proportions": "notebook_exit_proportions",
    "5_oracle": "notebook_oracle",
    "6_summary": "notebook_summary",
    "7_runtime": "notebook_runtime",
}
# The notebooks that read the policies' tables (all but the networks' one).
POLICY_NOTEBOOKS = [rule for rule in NOTEBOOK_RULES.values() if rule != "notebook_networks"]


def test_policy_sweeps_of_every_scheme(study):
    from adaptive_inference.study import load_policies

    results = study / "results"
    for scheme in SCHEMES:
        points = pd.read_parquet(results / "policies" / scheme / "points.parquet")
        assert set(points["scheme"]) == {scheme}
        assert {"learned", "myopic", "uniform", "cascade", "oracle", "single"} <= set(
            points["method"]
        )
        (reference,) = set(points["reference"])  # the configured reference's full network
        assert reference in {"exit_resnet", "exit_resnet/final"}
        assert (points["n_test"] == 150).all() and (points["n_validation"] == 45).all()
        nodes = pd.read_parquet(results / "policies" / scheme / "nodes.parquet")
        fractions = nodes.groupby("point_id")["stop_fraction"].sum()
        np.testing.assert_allclose(fractions, 1.0, atol=1e-9)
        assert not (results / "policies" / scheme / "policies.pkl").exists()
        policies = load_policies(results / "policies" / scheme / "policies.json")  # data, no pickle
        assert policies and set(policies) <= set(points["point_id"])
        headline = pd.read_csv(results / "policies" / scheme / "speedup_at_loss.csv")
        assert set(headline["max_loss"]) == {0.5, 1.0, 2.0}
        assert "validation" in set(headline["choice"])  # operating points chosen on validation
        robustness = pd.read_parquet(results / "robustness" / f"{scheme}.parquet")
        assert set(robustness["resplit"]) == {0, 1} and set(robustness["scheme"]) == {scheme}
        assert (results / "logs" / "robustness" / f"{scheme}.log").exists()


def test_runtime_gives_the_simulated_answers_and_measures_speedups(study):
    """The policies run for real at every operating point: the simulated answer for every test
    example in both modes, speedups measured beside the reference alone."""
    results = study / "results"
    config = load_config(
        study / "config.yaml", REPO / "workflow" / "schemas" / "config.schema.yaml"
    )
    confidence = config["policies"]["operating_points"]["confidence"]
    for scheme in SCHEMES:
        table = pd.read_parquet(results / "runtime" / scheme / "speedups.parquet")
        assert set(table["mode"]) == {"batch1", "batched"} and "reference" in set(table["label"])
        assert (table["examples"] == 150).all() and (table["same_answer"] == 150).all()
        assert (table["different"] == 0).all()
        assert (table["measured_speedup"] > 0).all() and (table["predicted_speedup"] > 0).all()
        reference = table[table["label"] == "reference"]
        np.testing.assert_allclose(reference["measured_speedup"], 1.0)
        examples = pd.read_parquet(results / "runtime" / scheme / "examples.parquet")
        assert (examples["batch1_stop"] == examples["simulated_stop"]).all()
        assert (examples["batched_class"] == examples["simulated_class"]).all()
        summary = json.loads((results / "runtime" / scheme / "summary.json").read_text())
        assert summary["threads"] == 1 and summary["settings"]["batch_size"] == 8
        assert summary["settings"]["max_examples"] is None
        assert summary["settings"]["confidence"] == confidence  # the study's, not restated
        assert summary["cuda_graphs"].startswith("not captured")  # eager on the CPU, with why
        assert (results / "logs" / "measure_runtime" / f"{scheme}.log").exists()


def test_a_successful_run_says_where_to_look_and_the_headline(study_run):
    """onsuccess: the index page, then a headline line (speedups at the loss levels) per scheme
    and loss the policies were trained on; under the runtime's loss (top-1), the speedups the
    runtime measured at batch 1 at the same points, as its own table has them."""
    workdir, result = study_run
    text = result.stdout + result.stderr
    assert "Open results/index.html" in text
    for scheme in SCHEMES:
        for metric in ("top1", "top5"):
            line = re.search(rf"^  {scheme} \({metric}\): (.*)\n(.*)$", text, re.MULTILINE)
            assert line, f"no headline of {scheme} ({metric}) in:\n{text[-3000:]}"
            cells = line.group(1).split(", ")
            assert [c.split(":")[0] for c in cells] == ["≤0.5 pt", "≤1 pt", "≤2 pt"]
            assert all(
                re.fullmatch(r"≤[\d.]+ pt: (none|\d+\.\d\dx \(loss -?\d+\.\d\d\))", c)
                for c in cells
            ), cells
            chosen = [c.split(":")[0] for c in cells if not c.endswith("none")]
            measured = re.fullmatch(r"    measured at batch 1 on (\d+) test images: (.*)", line[2])
            if metric != "top1" or not chosen:
                assert not measured, line[2]
                continue
            assert measured, f"no runtime line under {scheme} ({metric}): {line[2]!r}"
            table = pd.read_parquet(workdir / f"results/runtime/{scheme}/speedups.parquet")
            batch1 = table[(table["mode"] == "batch1") & table["point_id"].notna()]
            assert int(measured[1]) == batch1["examples"].iloc[0]
            expected = [
                f"≤{r.max_loss:g} pt: {r.measured_speedup:.2f}x ({r.predicted_speedup:.2f}x "
                "predicted)"
                for r in batch1.itertuples()
            ]
            assert measured[2].split(", ") == expected


def test_runtime_option_reruns_only_the_measurements(study, tmp_path):
    changed = write_config(tmp_path / "changed.yaml", **{"runtime.repeats": 2})
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert sorted(planned) == sorted(["all", "notebook_runtime"] + ["measure_runtime"] * 3)


def test_lambda_grid_reruns_only_policies_and_their_notebooks(study, tmp_path):
    changed = write_config(
        tmp_path / "changed.yaml", **{"policies.lambdas": {"count": 5, "refine": 0}}
    )
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert sorted(planned) == sorted(
        ["all"] + ["fit_policies", "robustness", "measure_runtime"] * 3 + POLICY_NOTEBOOKS
    )


def test_second_run_does_nothing(study):
    assert planned_rules(snakemake(study, "--dry-run")) == []


def test_timing_batch_size_reruns_only_timing(study, tmp_path):
    changed = write_config(
        tmp_path / "changed.yaml", **{"timing.batch_sizes": {"latency": 1, "throughput": 4}}
    )
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    # the policies trade against the joint costs, so they follow; extraction and training do
    # not, nor does the latency setting's joint timing (its batch is the same)
    assert sorted(set(planned)) == sorted(
        [
            "all",
            "time_costs",
            "time_network",
            "fit_policies",
            "robustness",
            "measure_runtime",
            *NOTEBOOK_RULES.values(),
        ]
    )
    assert planned.count("time_network") == 3 and planned.count("time_costs") == 1
    assert (
        planned.count("fit_policies")
        == planned.count("robustness")
        == planned.count("measure_runtime")
        == 3
    )


def test_joint_timing_rounds_rerun_the_joint_timing_not_the_per_layer_tables(study, tmp_path):
    changed = write_config(tmp_path / "changed.yaml", **{"timing.throughput_warmup_rounds": 2})
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert planned.count("time_costs") == 1 and "time_network" not in planned
    assert "train_network" not in planned and "extract_predictions" not in planned


def test_network_training_change_reruns_that_network_only(study, tmp_path):
    changed = write_config(tmp_path / "changed.yaml", **{"networks.linear.training": {"steps": 2}})
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert sorted(planned) == sorted(
        ["all", "train_network", "plot_training_curve", "extract_predictions", "time_network"]
        # the joint costs time every network together, and every scheme's policies use them
        + ["time_costs"] * 2
        + ["fit_policies", "robustness", "measure_runtime"] * 3
        + list(NOTEBOOK_RULES.values())
    )


@pytest.mark.parametrize(
    "change, rules",
    [
        ({"figures": {"early_exit": {"max_loss": 2.5}}}, ["notebook_early_exit"]),
        ({"figures": {"exit_proportions": {"loss_levels": [1.0]}}}, ["notebook_exit_proportions"]),
        ({"figures": {"runtime": {"tolerance": 0.2}}}, ["notebook_runtime"]),
        ({"figures": {"style": {"palette": "deep"}}}, list(NOTEBOOK_RULES.values())),
    ],
    ids=["one-option", "operating-points", "runtime-tolerance", "style"],
)
def test_figure_option_reruns_only_its_notebooks(study, tmp_path, change, rules):
    changed = write_config(tmp_path / "changed.yaml", **change)
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert sorted(planned) == sorted(["all", *rules])


def test_editing_a_notebook_reruns_it(study, tmp_path):
    """A copy of the workflow (files and times kept) whose early-exit template is edited."""
    copy = tmp_path / "workflow"
    for part in [
        "Snakefile",
        "workflow",
        "notebooks",
        "profiles",
        "envs",
        "src/adaptive_inference/figures.py",
    ]:
        source, target = REPO / part, copy / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    template = copy / "notebooks" / "2_early_exit.ipynb"
    template.write_text(template.read_text().replace("# Early exit", "# Early exit, edited", 1))
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(copy / "Snakefile"),
        "--directory",
        str(study),
        "--profile",
        str(REPO / "profiles" / "default"),
        "--cores",
        "2",
        "--dry-run",
        # the copy's paths differ from the study's record: only modification times count
        "--rerun-triggers",
        "mtime",
        "--configfile",
        str(study / "config.yaml"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=study)
    assert result.returncode == 0, result.stderr
    assert sorted(planned_rules(result)) == ["all", "notebook_early_exit"]


def test_every_notebook_ran_with_its_parameters(study):
    """The papermill smoke test: every template executed on the tiny study's results (by the
    study's own rules, which refuse an unknown or missing parameter)."""
    import nbformat

    from adaptive_inference.notebooks import NOTEBOOKS

    results = study / "results"
    for name in NOTEBOOKS:
        notebook = nbformat.read(results / "notebooks" / f"{name}.ipynb", as_version=4)
        assert notebook.cells[1].metadata["tags"] == ["injected-parameters"]
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"], (
            name
        )
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1, name
        assert notebook.metadata["papermill"]["input_path"] == f"notebooks/{name}.ipynb"
        page = (results / "notebooks" / f"{name}.html").read_text()
        assert "<img" in page and "import pandas" not in page  # code hidden
        figures = sorted((results / "figures" / name).iterdir())
        assert figures and {f.suffix for f in figures} == {".png", ".svg"}
        for png in (f for f in figures if f.suffix == ".png"):
            assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
    index = (results / "index.html").read_text()
    for link in re.findall(r'(?:href|src)="([^"]+)"', index):
        assert link == "report.html" or (results / link).is_file(), link


def test_rendered_pages_hold_no_machine_paths(study):
    results = study / "results"
    machine = {str(study.resolve()), str(REPO), sys.prefix, os.path.expanduser("~") + "/"}
    pages = [
        results / "index.html",
        *(results / "notebooks").glob("*.html"),
        *(results / "notebooks").glob("*.ipynb"),
    ]
    assert len(pages) == 15
    for page in pages:
        text = page.read_text()
        found = [path for path in machine if path in text]
        assert not found, f"{page.name} holds {found}"
        assert not re.search(r"20\d\d-\d\d-\d\dT\d\d:\d\d", text), f"{page.name} holds a time stamp"


def test_snakemake_report_includes_the_figures(study, tmp_path):
    snakemake(study, "--report", str(tmp_path / "report.html"))
    report = (tmp_path / "report.html").read_text()
    for caption in [
        "speedup vs loss",
        "exit gain",
        "oracle share",
        "headline",
        "layer timing",
        "robustness",
        "measured vs predicted",
    ]:
        assert caption in report


def test_rendered_pages_in_headless_chromium(study, tmp_path):
    """tools/screenshot_pages.py: every page opens, shows its figures and is not blank."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import screenshot_pages
    finally:
        sys.path.remove(str(REPO / "tools"))
    if screenshot_pages.find_chromium() is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    assert screenshot_pages.main([str(study / "results"), "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 8


def _with_folders(value, folders: dict[str, Path]):
    """``value`` with the placeholder names of ``folders`` replaced by their paths."""
    if isinstance(value, dict):
        return {k: _with_folders(v, folders) for k, v in value.items()}
    return str(folders[value]) if isinstance(value, str) and value in folders else value


@pytest.mark.parametrize(
    "change, messages",
    [
        ({"timing.iteratons": 5}, ["iteratons"]),
        ({"device": "tpu"}, ["tpu"]),
        (
            {
                "splits.fractions": {
                    "head_train": 0.0,
                    "policy_train": 0.5,
                    "policy_validation": 0.2,
                    "test": 0.5,
                }
            },
            ["sum to 1"],
        ),
        ({"splits.fractions": {"policy_train": 0.5, "test": 0.5}}, ["policy_validation"]),
        ({"networks.exit_resnet.training": {"exit_weights": [1.0, 1.0]}}, ["exit_weights"]),
        ({"networks.exit_resnet.training": {"epochs": 2}}, ["epochs"]),  # a budget in steps
        ({"runtime.retiming": True}, ["retiming"]),
        # an early-exit scheme on a network without exits, named with the fix
        (
            {"policies.schemes.early_exit": {"graph": "early_exit", "networks": ["small_cnn"]}},
            ["policies.schemes.early_exit", "small_cnn", "two exits or more"],
        ),
        (
            {
                "policies.schemes.network_selection": {
                    "graph": "network_selection",
                    "networks": ["exit_resnet"],
                }
            },
            ["policies.schemes.network_selection", "two networks or more"],
        ),
        # image folders: missing, or without class folders
        (
            {"data.dataset": "image_folder", "data.image_folder": {"eval": "MISSING"}},
            ["data.image_folder.eval", "MISSING", "does not exist"],
        ),
        (
            {"data.dataset": "image_folder", "data.image_folder": {"eval": "FLAT"}},
            ["data.image_folder.eval", "FLAT", "holds no class folders"],
        ),
        (
            {
                "data.dataset": "image_folder",
                "data.image_folder": {"eval": "FOLDERS", "train": "MISSING"},
            },
            ["data.image_folder.train", "MISSING", "does not exist"],
        ),
    ],
    ids=[
        "unknown-key",
        "device",
        "fractions",
        "no-validation-split",
        "exit-weights",
        "epochs",
        "removed-key",
        "early-exit-without-exits",
        "selection-of-one",
        "missing-folder",
        "no-class-folders",
        "missing-train-folder",
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, change, messages):
    from PIL import Image

    folders = {
        "MISSING": tmp_path / "missing",
        "FLAT": tmp_path / "flat",
        "FOLDERS": tmp_path / "folders",
    }
    folders["FLAT"].mkdir()
    Image.new("L", (28, 28)).save(folders["FLAT"] / "0.png")  # images, but no class folders
    for c in range(2):
        (folders["FOLDERS"] / f"class{c}").mkdir(parents=True)
        Image.new("L", (28, 28), 80 * c).save(folders["FOLDERS"] / f"class{c}" / "0.png")
    config = write_config(tmp_path / "config.yaml", **_with_folders(change, folders))
    result = snakemake(tmp_path, config=config, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    for message in messages:
        assert _with_folders(message, folders) in text, text[-2000:]
    assert not (tmp_path / "results").exists()


def test_missing_dataset_is_a_clear_error(tmp_path):
    config = write_config(tmp_path / "config.yaml", **{"data.source": str(tmp_path / "nowhere")})
    result = snakemake(tmp_path, config=config, check=False)
    assert result.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in result.stdout + result.stderr
    assert not list((tmp_path / "results" / "data").rglob("*-ubyte"))


def test_a_minimal_config_plans_every_job(tmp_path):
    """The schema gives every key the rules read: a config of the study, the data and two
    networks with one scheme plans the whole study (a dry run parses every rule's params)."""
    minimal = {
        "study": "minimal",
        "device": "cpu",
        "data": {"dataset": "fashion_mnist", "limit_train": 600, "limit_eval": 300},
        "networks": {"linear": {"arch": "linear"}, "exit_resnet": {"arch": "exit_resnet"}},
        "policies": {
            "schemes": {
                "ns": {"graph": "network_selection", "networks": ["linear", "exit_resnet"]},
                "ee": {"graph": "early_exit", "networks": ["exit_resnet"]},
            }
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(minimal))
    planned = planned_rules(snakemake(tmp_path, "--dry-run"))
    for rule, count in [
        ("train_network", 2),
        ("extract_predictions", 2),
        ("time_costs", 2),
        ("fit_policies", 2),
        ("robustness", 2),
        ("measure_runtime", 2),
    ]:
        assert planned.count(rule) == count, planned
    assert set(NOTEBOOK_RULES.values()) <= set(planned) and "index" in planned
    assert not (tmp_path / "results").exists()


def test_interrupted_extraction_is_redone(study, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(study, workdir, ignore=shutil.ignore_patterns("predictions", "logs"))
    log = workdir / "results" / "logs" / "extract_predictions" / "exit_resnet.log"
    target = "results/predictions/exit_resnet/manifest.json"
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(REPO / "profiles" / "default"),
        "--cores",
        "1",
        target,
        "--configfile",
        str(workdir / "config.yaml"),
    ]
    process = subprocess.Popen(
        command,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not log.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workdir / target).exists(), "a killed extraction left a manifest behind"
    snakemake(workdir, "--unlock")  # a SIGKILL (unlike Ctrl-C) leaves Snakemake's lock behind
    assert planned_rules(snakemake(workdir, target, "--dry-run")) == ["extract_predictions"]
    snakemake(workdir, target)
    assert json.loads((workdir / target).read_text())["num_examples"] == 300
    assert not list((workdir / "results" / "predictions").rglob("*.partial"))


def test_slurm_profile_plans_the_study_without_a_cluster(tmp_path):
    """A dry run with the SLURM profile plans every job (no cluster is contacted)."""
    write_config(tmp_path / "config.yaml", device="cuda")
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        "--dry-run",
        "--quiet",
        "host",  # the jobs' resources shown, whatever the profiles keep quiet
        "--configfile",
        str(tmp_path / "config.yaml"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    planned = planned_rules(result)
    assert planned.count("extract_predictions") == 3 and planned.count("fit_policies") == 3
    assert planned.count("time_costs") == 2 and planned.count("robustness") == 3
    assert (
        "gpu=1" in result.stdout + result.stderr and "mem_mb=16000" in result.stdout + result.stderr
    )


def test_sharded_extraction_through_the_workflow(study, tmp_path):
    """extraction.shards: 3 runs three shard jobs and a merge whose tables equal one job's."""
    workdir = tmp_path / "sharded"
    shutil.copytree(
        study, workdir, ignore=shutil.ignore_patterns("predictions", "logs", ".snakemake")
    )
    config = write_config(
        workdir / "config.yaml", **{"extraction.batch_size": 128, "extraction.shards": 3}
    )
    target = "results/predictions/exit_resnet/manifest.json"
    planned = planned_rules(snakemake(workdir, target, "--dry-run", config=config))
    assert sorted(planned) == ["extract_predictions"] * 3 + ["merge_predictions"]
    snakemake(workdir, target, config=config)
    assert sorted(
        p.name for p in (workdir / "results/predictions/exit_resnet/shards").iterdir()
    ) == sorted(f"{i}.{ext}" for i in range(3) for ext in ("npy", "parquet", "json"))
    sharded = pd.read_parquet(workdir / "results/predictions/exit_resnet/predictions.parquet")
    whole = pd.read_parquet(study / "results/predictions/exit_resnet/predictions.parquet")
    pd.testing.assert_frame_equal(sharded, whole, atol=1e-5)
    np.testing.assert_allclose(
        np.load(workdir / "results/predictions/exit_resnet/probs.npy"),
        np.load(study / "results/predictions/exit_resnet/probs.npy"),
        atol=1e-5,
    )


# --- the family the policies are fitted on ----------------------------------------------------


def test_a_broken_family_stops_the_run_before_fitting(study, tmp_path):
    """fit_policies checks the family first: (a) a network at chance (exit_resnet trained one
    step) stops the run, naming every accuracy and the fix; (b) with
    policies.allow_near_chance, the reference (that same exit_resnet) is less accurate than
    cheaper members: the run stops, naming them and the fix."""
    workdir = tmp_path / "broken"
    shutil.copytree(
        study, workdir, ignore=shutil.ignore_patterns("notebooks", "figures", "runtime")
    )
    points = workdir / "results" / "policies" / "network_selection" / "points.parquet"
    target = str(points.relative_to(workdir))
    steps = {"steps": 1, "exit_weights": [0.3, 0.3, 1.0]}
    config = write_config(workdir / "config.yaml", **{"networks.exit_resnet.training": steps})
    planned = planned_rules(snakemake(workdir, target, "--dry-run", config=config))
    assert sorted(planned) == sorted(
        ["train_network", "extract_predictions", "fit_policies", "time_costs", "time_costs"]
    )

    chance = snakemake(workdir, target, config=config, check=False)
    text = chance.stdout + chance.stderr
    assert chance.returncode != 0 and not points.exists()
    assert "exit_resnet answer at or near chance" in text, text[-3000:]
    assert re.search(
        r"linear \d+\.\d%, small_cnn \d+\.\d%, exit_resnet \d+\.\d%; chance 10\.0%", text
    )
    assert "training.steps" in text and "policies.allow_near_chance: true" in text

    config = write_config(
        workdir / "config.yaml",
        **{"networks.exit_resnet.training": steps, "policies.allow_near_chance": True},
    )
    assert planned_rules(snakemake(workdir, target, "--dry-run", config=config)) == ["fit_policies"]
    beaten = snakemake(workdir, target, config=config, check=False)
    text = beaten.stdout + beaten.stderr
    assert beaten.returncode != 0 and not points.exists()
    found = re.search(
        r"the reference exit_resnet \((\d+\.\d)% top-1 on policy_train\) is less accurate "
        r"than (linear|small_cnn) \((\d+\.\d)%\)",
        text,
    )
    assert found and float(found.group(1)) < float(found.group(3)), text[-3000:]
    assert "policies.reference" in text and "networks.<name>.training.steps" in text


def test_training_extraction_and_splits_are_repeatable(study, tmp_path):
    """Two cold runs (the study's, and one here in another folder) give bit-identical splits,
    weights and probabilities: everything upstream of timing is seeded."""
    import torch

    workdir = tmp_path / "again"
    workdir.mkdir()
    shutil.copy(study / "config.yaml", workdir / "config.yaml")
    targets = [
        "results/splits/eval_splits.parquet",
        *[f"results/networks/{n}/model.pt" for n in NETWORKS],
        *[f"results/predictions/{n}/probs.npy" for n in NETWORKS],
    ]
    snakemake(workdir, *targets)
    for target in targets:
        first, second = study / target, workdir / target
        if target.endswith(".pt"):
            a, b = (torch.load(p, weights_only=True) for p in (first, second))
            assert a["spec"] == b["spec"]
            assert a["state_dict"].keys() == b["state_dict"].keys()
            assert all(
                torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]
            ), target
        elif target.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(first), pd.read_parquet(second))
        assert first.read_bytes() == second.read_bytes(), target
    # tools/compare_runs.py's check finds the same files, and finds them identical
    files = identical_files(study / "results", workdir / "results")
    assert sorted("results/" + p for p in files["path"]) == sorted(targets)
    assert files["identical"].all()
    curves = [
        pd.read_csv(d / "results/networks/exit_resnet/training_curve.csv") for d in (study, workdir)
    ]
    pd.testing.assert_frame_equal(
        curves[0].drop(columns="seconds"), curves[1].drop(columns="seconds")
    )


# --- the default recipe on a small class-folder dataset ---------------------------------------

RECIPE_SCALE = 10
"""The default recipe's steps, divided by this for the test (see below)."""


def write_glyph_folders(
    root: Path, per_class: int, seed: int, classes: int = 10, size: int = 32
) -> Path:
    """``root/class<k>/<i>.{png,jpg}``: RGB images of class ``k``'s own 5x5 glyph (drawn at 3x, a
    random position within 3 pixels of the centre, a random contrast) on noise: a pattern a CNN
    learns, and pixels alone less well. The glyphs are the same for every ``seed``."""
    from PIL import Image

    shapes, pick = [], np.random.default_rng(1234)
    while len(shapes) < classes:  # distinct glyphs of at least 8 pixels
        glyph = pick.random((5, 5)) < 0.5
        if glyph.sum() >= 8 and all((glyph == other).mean() <= 0.7 for other in shapes):
            shapes.append(glyph)
    rng = np.random.default_rng(seed)
    for label, glyph in enumerate(shapes):
        folder = root / f"class{label:02d}"
        folder.mkdir(parents=True)
        drawn = np.kron(glyph, np.ones((3, 3)))
        for i in range(per_class):
            pixels = rng.normal(0.2, 0.15, (size, size))
            y, x = (size - 15) // 2 + rng.integers(-3, 4, 2)
            pixels[y : y + 15, x : x + 15] += 0.6 * drawn * rng.uniform(0.7, 1.0)
            rgb = np.clip(np.stack([pixels] * 3, -1) * 255, 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(folder / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    return root


def test_the_default_recipe_trains_a_family_whose_accuracy_rises_with_cost(tmp_path):
    """config.yaml's networks and training section, trained by the workflow's train_network
    jobs on 10 classes x 100 generated images (28x28 grayscale through the image folder's
    transforms), rank as their costs do on held-out images: linear < small_cnn < exit_resnet,
    the reference well above chance.

    The only override: every network's steps divided by RECIPE_SCALE (the same factor for all,
    to keep the test within minutes on 2 cores). What makes the recipe work on 1,000 images is
    that its budget is in optimizer steps: the default's 600-860 steps are 150-215 epochs of
    these 800 training images (4 steps an epoch, batches of 256), and a tenth of them still 15
    epochs or more, where the "4 epochs" the default budget means on Fashion-MNIST would be 16
    steps here."""
    import torch
    from torch.utils.data import DataLoader

    from adaptive_inference.data import load_split
    from adaptive_inference.networks import load_network
    from adaptive_inference.training import evaluate

    default = yaml.safe_load((REPO / "config.yaml").read_text())
    train = write_glyph_folders(tmp_path / "images" / "train", per_class=100, seed=0)
    held_out = write_glyph_folders(tmp_path / "images" / "eval", per_class=30, seed=1)
    data = {
        "dataset": "image_folder",
        "root": "results/data",
        "image_folder": {
            "train": str(train),
            "eval": str(held_out),
            "transform": {"grayscale": True, "resize": 28, "mean": [0.5], "std": [0.25]},
        },
    }
    steps = {}
    changes = {"data": data, "device": "cpu"}
    for name, entry in default["networks"].items():
        steps[name] = entry.get("training", {}).get("steps", default["training"]["steps"])
        changes[f"networks.{name}.training"] = {
            **entry.get("training", {}),
            "steps": steps[name] // RECIPE_SCALE,
        }
    workdir = tmp_path / "study"
    workdir.mkdir()
    config = write_config(workdir / "config.yaml", base=REPO / "config.yaml", **changes)
    models = [f"results/networks/{name}/model.pt" for name in default["networks"]]
    snakemake(workdir, *models, config=config)

    # 1,000 images, 200 held out: the default's budget is 150 epochs or more of the rest
    batches_per_epoch = -(-800 // default["training"]["batch_size"])
    assert batches_per_epoch == 4 and min(steps.values()) / batches_per_epoch >= 150
    dataset = load_split({**data, "limit_eval": None}, None, train=False)
    batches = list(DataLoader(dataset, batch_size=100))
    images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    accuracy = {}
    for name in default["networks"]:
        curve = pd.read_csv(workdir / "results" / "networks" / name / "training_curve.csv")
        assert curve["step"].iloc[-1] == steps[name] // RECIPE_SCALE
        assert curve["epoch"].iloc[-1] == pytest.approx(curve["step"].iloc[-1] / batches_per_epoch)
        assert curve["epoch"].iloc[-1] >= 15  # many epochs of a small set, from a budget in steps
        model = load_network(workdir / "results" / "networks" / name / "model.pt")
        accuracy[name] = evaluate(model, images, labels)[-1]
    assert len(labels) == 300 and labels.bincount().tolist() == [30] * 10
    assert accuracy["linear"] < accuracy["small_cnn"] < accuracy["exit_resnet"], accuracy
    assert accuracy["exit_resnet"] >= 0.9 and min(accuracy.values()) > 0.2, accuracy  # chance: 0.1
