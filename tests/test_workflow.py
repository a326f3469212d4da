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
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
NETWORKS = ["linear", "small_cnn", "exit_resnet"]

pytestmark = pytest.mark.e2e


def snakemake(workdir: Path, *args: str, config: Path | None = None, check: bool = True):
    command = [
        *SNAKEMAKE,
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--profile", str(REPO / "profiles" / "default"),
        "--cores", "2",
        *args,  # before --configfile, which takes every value that follows it
        "--configfile", str(config or workdir / "config.yaml"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout}\n{result.stderr}")
    return result


def planned_rules(result) -> list[str]:
    """The rules a dry run would run, one entry per job."""
    text = result.stdout + result.stderr
    return [
        line.split()[1].rstrip(":")
        for line in text.splitlines()
        if line.startswith(("rule ", "localrule ")) and line.rstrip().endswith(":")
    ]


def write_config(path: Path, **changes) -> Path:
    config = yaml.safe_load(TINY.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The tiny study, run once from nothing."""
    workdir = tmp_path_factory.mktemp("study")
    write_config(workdir / "config.yaml")
    snakemake(workdir)
    return workdir


def test_outputs_of_the_study(study):
    results = study / "results"
    splits = pd.read_parquet(results / "splits" / "eval_splits.parquet")
    assert len(splits) == 300 and set(splits["split"]) == {"policy_train", "test"}
    for network in NETWORKS:
        manifest = json.loads((results / "predictions" / network / "manifest.json").read_text())
        exits = manifest["network_exits"]
        probs = np.load(results / "predictions" / network / "probs.npy")
        assert probs.shape == (len(exits), 300, 10)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
        table = pd.read_parquet(results / "predictions" / network / "predictions.parquet")
        assert len(table) == 300 * len(exits)
        assert (table.loc[table["exit"] == 0, "label"].to_numpy() == splits["label"].to_numpy()).all()
        summary = json.loads((results / "timing" / network / "summary.json").read_text())
        assert {row["setting"] for row in summary["summary"]} == {"latency", "throughput"}
        assert summary["environment"]["threads"] == 1
        timed_exits = pd.read_parquet(results / "timing" / network / "exits.parquet")
        assert len(timed_exits) == 2 * len(exits)
        assert (results / "networks" / network / "training_curve.png").stat().st_size > 0
        assert (results / "logs" / "train_network" / f"{network}.log").exists()
    assert json.loads((results / "predictions" / "exit_resnet" / "manifest.json").read_text())[
        "network_exits"
    ] == ["stage1", "stage2", "final"]


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
    from adaptive_inference.sweep import load_policies

    results = study / "results"
    decision = json.loads((results / "timing" / "policy_decision.json").read_text())
    assert decision["settings"]["latency"]["per_example_ms"] > 0
    for scheme in SCHEMES:
        points = pd.read_parquet(results / "policies" / scheme / "points.parquet")
        assert set(points["scheme"]) == {scheme}
        assert {"learned", "myopic", "uniform", "oracle", "single"} <= set(points["method"])
        (reference,) = set(points["reference"])  # the configured reference's full network
        assert reference in {"exit_resnet", "exit_resnet/final"}
        nodes = pd.read_parquet(results / "policies" / scheme / "nodes.parquet")
        fractions = nodes.groupby("point_id")["stop_fraction"].sum()
        np.testing.assert_allclose(fractions, 1.0, atol=1e-9)
        saved, policies = load_policies(results / "policies" / scheme / "policies.pkl")
        assert set(saved["point_id"]) == set(policies)
        headline = pd.read_csv(results / "policies" / scheme / "speedup_at_loss.csv")
        assert set(headline["max_loss"]) == {0.5, 1.0, 2.0}


def test_runtime_gives_the_simulated_answers_and_measures_speedups(study):
    """The policies run for real at every operating point: the simulated answer for every test
    example in both modes, speedups measured beside the reference alone."""
    results = study / "results"
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
        assert (results / "logs" / "measure_runtime" / f"{scheme}.log").exists()


def test_runtime_option_reruns_only_the_measurements(study, tmp_path):
    changed = write_config(tmp_path / "changed.yaml", **{"runtime.repeats": 2})
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert sorted(planned) == sorted(["all", "notebook_runtime"] + ["measure_runtime"] * 3)


def test_lambda_grid_reruns_only_policies_and_their_notebooks(study, tmp_path):
    changed = write_config(tmp_path / "changed.yaml", **{"policies.lambdas": {"count": 5, "refine": 0}})
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert sorted(planned) == sorted(["all"] + ["fit_policies", "measure_runtime"] * 3 + POLICY_NOTEBOOKS)


def test_second_run_does_nothing(study):
    assert planned_rules(snakemake(study, "--dry-run")) == []


def test_timing_batch_size_reruns_only_timing(study, tmp_path):
    changed = write_config(tmp_path / "changed.yaml", **{"timing.batch_sizes": {"latency": 1, "throughput": 4}})
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    # the policies trade against the timing tables, so they follow; extraction and training do not
    assert sorted(set(planned)) == sorted(
        ["all", "fit_policies", "time_network", "time_policy_decision", "measure_runtime",
         *NOTEBOOK_RULES.values()]
    )
    assert planned.count("time_network") == 3


def test_network_training_change_reruns_that_network_only(study, tmp_path):
    changed = write_config(tmp_path / "changed.yaml", **{"networks.linear.training": {"epochs": 2}})
    planned = planned_rules(snakemake(study, "--dry-run", config=changed))
    assert sorted(planned) == sorted(
        ["all", "train_network", "plot_training_curve", "extract_predictions", "time_network"]
        + ["fit_policies", "measure_runtime"] * 2  # the schemes that use the linear network
        # and the notebooks that read them or the networks; not early exit (exit_resnet only)
        + [rule for rule in NOTEBOOK_RULES.values() if rule != "notebook_early_exit"]
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
    for part in ["Snakefile", "workflow", "notebooks", "profiles", "envs", "src/adaptive_inference/figures.py"]:
        source, target = REPO / part, copy / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    template = copy / "notebooks" / "2_early_exit.ipynb"
    template.write_text(template.read_text().replace("# Early exit", "# Early exit, edited", 1))
    command = [*SNAKEMAKE, "--snakefile", str(copy / "Snakefile"), "--directory", str(study),
               "--profile", str(REPO / "profiles" / "default"), "--cores", "2", "--dry-run",
               # the copy's paths differ from the study's record: only modification times count
               "--rerun-triggers", "mtime", "--configfile", str(study / "config.yaml")]
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
        assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"], name
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
    pages = [results / "index.html", *(results / "notebooks").glob("*.html"),
             *(results / "notebooks").glob("*.ipynb")]
    assert len(pages) == 15
    for page in pages:
        text = page.read_text()
        found = [path for path in machine if path in text]
        assert not found, f"{page.name} holds {found}"
        assert not re.search(r"20\d\d-\d\d-\d\dT\d\d:\d\d", text), f"{page.name} holds a time stamp"


def test_snakemake_report_includes_the_figures(study, tmp_path):
    snakemake(study, "--report", str(tmp_path / "report.html"))
    report = (tmp_path / "report.html").read_text()
    for caption in ["speedup vs loss", "exit gain", "oracle share", "headline", "layer timing"]:
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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"timing.iteratons": 5}, "iteratons"),
        ({"device": "tpu"}, "tpu"),
        ({"splits.fractions": {"head_train": 0.0, "policy_train": 0.7, "test": 0.5}}, "sum to 1"),
        ({"networks.exit_resnet.training": {"exit_weights": [1.0, 1.0]}}, "exit_weights"),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path, change, message):
    config = write_config(tmp_path / "config.yaml", **change)
    result = snakemake(tmp_path, config=config, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_missing_dataset_is_a_clear_error(tmp_path):
    config = write_config(tmp_path / "config.yaml", **{"data.source": str(tmp_path / "nowhere")})
    result = snakemake(tmp_path, config=config, check=False)
    assert result.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in result.stdout + result.stderr
    assert not list((tmp_path / "results" / "data").rglob("*-ubyte"))


def test_interrupted_extraction_is_redone(study, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(study, workdir, ignore=shutil.ignore_patterns("predictions", "logs"))
    log = workdir / "results" / "logs" / "extract_predictions" / "exit_resnet.log"
    target = "results/predictions/exit_resnet/manifest.json"
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--profile", str(REPO / "profiles" / "default"), "--cores", "1", target,
               "--configfile", str(workdir / "config.yaml")]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not log.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (workdir / target).exists(), "a killed extraction left a manifest behind"
    snakemake(workdir, "--unlock")  # a SIGKILL (unlike Ctrl-C) leaves Snakemake's lock behind
    rerun = snakemake(workdir, target)
    assert "extract_predictions" in rerun.stdout + rerun.stderr
    assert json.loads((workdir / target).read_text())["num_examples"] == 300
    assert not list((workdir / "results" / "predictions").rglob("*.partial"))


def test_slurm_profile_plans_the_study_without_a_cluster(tmp_path):
    """A dry run with the SLURM profile plans every job (no cluster is contacted)."""
    write_config(tmp_path / "config.yaml", device="cuda")
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "--profile", str(REPO / "profiles" / "slurm"), "--dry-run",
               "--configfile", str(tmp_path / "config.yaml")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    planned = planned_rules(result)
    assert planned.count("extract_predictions") == 3 and planned.count("fit_policies") == 3
    assert "gpu=1" in result.stdout + result.stderr and "mem_mb=16000" in result.stdout + result.stderr


def test_sharded_extraction_through_the_workflow(study, tmp_path):
    """extraction.shards: 3 runs three shard jobs and a merge whose tables equal one job's."""
    workdir = tmp_path / "sharded"
    shutil.copytree(study, workdir, ignore=shutil.ignore_patterns("predictions", "logs", ".snakemake"))
    config = write_config(workdir / "config.yaml", **{"extraction.batch_size": 128, "extraction.shards": 3})
    target = "results/predictions/exit_resnet/manifest.json"
    planned = planned_rules(snakemake(workdir, target, "--dry-run", config=config))
    assert sorted(planned) == ["extract_predictions"] + ["extract_shard"] * 3
    snakemake(workdir, target, config=config)
    sharded = pd.read_parquet(workdir / "results/predictions/exit_resnet/predictions.parquet")
    whole = pd.read_parquet(study / "results/predictions/exit_resnet/predictions.parquet")
    pd.testing.assert_frame_equal(sharded, whole, atol=1e-5)
    np.testing.assert_allclose(
        np.load(workdir / "results/predictions/exit_resnet/probs.npy"),
        np.load(study / "results/predictions/exit_resnet/probs.npy"),
        atol=1e-5,
    )
