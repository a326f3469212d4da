"""Two runs side by side (adaptive_inference.reproducibility, tools/compare_runs.py), on results
folders written here in the study's layout."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from adaptive_inference.layout import Layout
from adaptive_inference.reproducibility import (
    deterministic_files,
    identical_files,
    job_seconds,
    learned_speedups,
    machine,
    relative_difference,
    runtime_ratios,
    speedup_differences,
)

REPO = Path(__file__).resolve().parents[1]
NETWORKS = ("linear", "exit_resnet")


def headline_rows(scheme: str, speedups: list[float]) -> list[dict]:
    """``speedup_at_loss.csv`` rows: the learned policy chosen on validation at 0.5 / 1 / 2
    points with ``speedups``, and rows the comparison must ignore (another method, the test
    envelope, a policy trained on top-5)."""
    rows = []
    for level, speedup in zip((0.5, 1.0, 2.0), speedups):
        base = {"scheme": scheme, "max_loss": level, "top1_loss": level / 2, "metric": "top1"}
        rows += [
            {**base, "method": "learned", "train_loss": "top1", "choice": "validation",
             "speedup": speedup},
            {**base, "method": "learned", "train_loss": "top1", "choice": "test envelope",
             "speedup": 99.0},
            {**base, "method": "learned", "train_loss": "top5", "choice": "validation",
             "speedup": 98.0},
            {**base, "method": "myopic", "train_loss": "top1", "choice": "validation",
             "speedup": 97.0},
        ]  # fmt: skip
    return rows


def write_run(root: Path, speedups: dict[str, list[float]], ratios: dict[str, list[float]]):
    """A results folder with the deterministic files, each scheme's headline and runtime table
    (``ratios``: measured / predicted at batch 1 then rebatched, three budgets each) and two
    benchmark files."""
    layout = Layout(str(root))
    Path(layout.splits).parent.mkdir(parents=True)
    pd.DataFrame({"example": range(10), "split": ["test"] * 10}).to_parquet(layout.splits)
    for i, net in enumerate(NETWORKS):
        Path(layout.network(net)).parent.mkdir(parents=True)
        generator = torch.Generator().manual_seed(i)
        torch.save({"w": torch.randn(4, 4, generator=generator)}, layout.network(net))
        Path(layout.predictions(net, "probs.npy")).parent.mkdir(parents=True)
        np.save(layout.predictions(net, "probs.npy"), np.full((10, 3), i, np.float32))
    for scheme, values in speedups.items():
        path = Path(layout.policies(scheme, "speedup_at_loss.csv"))
        path.parent.mkdir(parents=True)
        pd.DataFrame(headline_rows(scheme, values)).to_csv(path, index=False)
    for scheme, values in ratios.items():
        rows = [
            {"scheme": scheme, "mode": mode, "label": "reference", "max_loss": np.nan,
             "point_id": np.nan, "predicted_speedup": 1.0, "measured_speedup": 1.0,
             "ratio": 1.0}
            for mode in ("batch1", "batched")
        ]  # fmt: skip
        for k, ratio in enumerate(values):
            rows.append(
                {
                    "scheme": scheme,
                    "mode": ("batch1", "batched")[k // 3],
                    "label": f"≤ {(0.5, 1.0, 2.0)[k % 3]} pts",
                    "max_loss": (0.5, 1.0, 2.0)[k % 3],
                    "point_id": float(10 + k % 3),
                    "predicted_speedup": 2.0,
                    "measured_speedup": 2.0 * ratio,
                    "ratio": ratio,
                }
            )
        path = Path(layout.runtime(scheme, "speedups.parquet"))
        path.parent.mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(path)
    for (rule, name), seconds in {("train_network", "exit_resnet"): 140.5, ("time_costs",
                                  "latency"): 11.0}.items():  # fmt: skip
        path = Path(layout.benchmark(rule, name))
        path.parent.mkdir(parents=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:02:20\t1000.0\n")
    return root


SPEEDUPS = {"early_exit": [1.3, 1.4, 1.6], "combined": [3.0, 3.8, 4.7]}
RATIOS = {"early_exit": [1.0, 0.95, 1.05, 0.98, 1.02, 1.0]}


@pytest.fixture
def first(tmp_path) -> Path:
    return write_run(tmp_path / "first", SPEEDUPS, RATIOS)


def test_the_deterministic_files_are_the_splits_weights_and_probabilities(first):
    assert deterministic_files(first) == [
        "splits/eval_splits.parquet",
        *[f"networks/{n}/model.pt" for n in sorted(NETWORKS)],
        *[f"predictions/{n}/probs.npy" for n in sorted(NETWORKS)],
    ]


def test_a_copy_is_identical_and_a_changed_or_missing_file_is_named(first, tmp_path):
    second = tmp_path / "second"
    shutil.copytree(first, second)
    assert identical_files(first, second)["identical"].all()

    probs = second / "predictions/linear/probs.npy"
    data = bytearray(probs.read_bytes())
    data[-1] ^= 1  # one bit of the last probability
    probs.write_bytes(bytes(data))
    (second / "networks/exit_resnet/model.pt").unlink()
    table = identical_files(first, second).set_index("path")
    assert not table.loc["predictions/linear/probs.npy", "identical"]
    assert table.loc["predictions/linear/probs.npy", "in_second"]
    assert not table.loc["networks/exit_resnet/model.pt", "identical"]
    assert not table.loc["networks/exit_resnet/model.pt", "in_second"]
    assert table["identical"].sum() == len(table) - 2


def test_learned_speedups_are_the_validation_choice_of_the_learned_policy(first):
    table = learned_speedups(first)
    assert sorted(table["scheme"].unique()) == ["combined", "early_exit"]
    early = table[table["scheme"] == "early_exit"].sort_values("max_loss")
    assert early["speedup"].tolist() == SPEEDUPS["early_exit"]
    assert early["top1_loss"].tolist() == [0.25, 0.5, 1.0]


def test_a_folder_without_policies_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="speedup_at_loss.csv"):
        learned_speedups(tmp_path)


def test_relative_difference_is_against_the_smaller():
    assert relative_difference([2.0, 2.3], [2.3, 2.0]) == pytest.approx([0.15, 0.15])


def test_speedup_differences_flag_what_moved_beyond_the_tolerance(first, tmp_path):
    moved = {"early_exit": [1.3 * 1.15, 1.4 * 1.05, 1.6], "combined": [3.0, 3.8, 4.7 / 1.2]}
    second = write_run(tmp_path / "second", moved, RATIOS)
    table = speedup_differences(first, second, tolerance=0.1).set_index(["scheme", "max_loss"])
    assert table.loc[("early_exit", 0.5), "difference"] == pytest.approx(0.15)
    assert table.loc[("early_exit", 1.0), "difference"] == pytest.approx(0.05)
    assert table.loc[("combined", 2.0), "difference"] == pytest.approx(0.2)
    failing = set(table.index[~table["within"]])
    assert failing == {("early_exit", 0.5), ("combined", 2.0)}
    loose = speedup_differences(first, second, tolerance=0.25)
    assert loose["within"].all()


def test_a_budget_missing_in_one_run_is_not_within(first, tmp_path):
    second = write_run(tmp_path / "second", {"early_exit": SPEEDUPS["early_exit"]}, RATIOS)
    table = speedup_differences(first, second)
    assert (~table["within"]).sum() == 3  # combined's three budgets
    assert table[table["scheme"] == "combined"]["second"].isna().all()


def test_runtime_ratios_leave_out_the_reference_and_apply_the_band(first):
    table = runtime_ratios(first, band=0.04)
    assert len(table) == 6 and table["max_loss"].notna().all()
    assert table["ratio"].tolist() == pytest.approx(RATIOS["early_exit"])
    assert table["within"].tolist() == [True, False, False, True, True, True]
    assert runtime_ratios(first, band=0.1)["within"].all()


def test_job_seconds_by_rule_and_name(first):
    seconds = job_seconds(first)
    assert seconds.to_dict() == {"time_costs/latency": 11.0, "train_network/exit_resnet": 140.5}


def compare_runs(*argv: str) -> int:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import compare_runs as tool
    finally:
        sys.path.remove(str(REPO / "tools"))
    return tool.main([str(a) for a in argv])


def test_the_tool_passes_a_copy_and_fails_what_differs(first, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    assert compare_runs(first, copy) == 0
    assert "every check passed" in capsys.readouterr().out

    apart = write_run(tmp_path / "apart", SPEEDUPS, {"early_exit": [1.0, 1.2, 1, 1, 1, 1]})
    (apart / "networks/linear/model.pt").write_bytes(b"other weights")
    assert compare_runs(first, apart) == 1
    out = capsys.readouterr().out
    assert "networks/linear/model.pt: differs" in out
    assert "second run: 5 of 6 points" in out
    assert "failed: files, ratios" in out
    assert compare_runs(first, apart, "--band", "0.25") == 1  # the weights still differ
    assert "failed: files\n" in capsys.readouterr().out


def describe_machine(
    results: Path, device: str, trained: dict[str, str], *, older: bool = False
) -> None:
    """The joint timing job's record and each network's training curve, as the workflow writes
    them; ``older``: a run from before the curve's ``computed_in`` column, whose
    ``train_network`` log alone says it (as ``train_network.py`` words it)."""
    layout = Layout(str(results))
    costs = Path(layout.costs("latency", "json"))
    costs.parent.mkdir(parents=True, exist_ok=True)
    env = {"device_name": device, "threads": 1, "torch_version": torch.__version__}
    costs.write_text(json.dumps({"setting": "latency", "environment": env}))
    for net, dtype in trained.items():
        curve = Path(layout.network(net, "training_curve.csv"))
        curve.parent.mkdir(parents=True, exist_ok=True)
        rows = pd.DataFrame({"step": [350, 700], "train_loss": [0.6, 0.4]})
        rows.assign(**({} if older else {"computed_in": dtype})).to_csv(curve, index=False)
        log = Path(layout.log("train_network", net))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(
            f"2026-12-03 21:13:40,275 training {net}: {{'arch': '{net}'}} on 55000 examples "
            f"(5000 held out), TrainConfig(precision='auto'), computing in torch.{dtype}\n"
            "training:  50%|#####     | 350/700\n"
            if older
            else "2026-12-03 21:13:40,275 training\n"
        )


@pytest.mark.parametrize("older", [False, True], ids=["curve", "older run's log"])
def test_machine_names_the_device_and_each_networks_arithmetic(first, older):
    assert machine(first) == {
        "device": "unknown", "threads": "unknown", "torch": "unknown", "trained in": "unknown"
    }  # fmt: skip
    describe_machine(
        first, "AMD EPYC", {"linear": "float32", "exit_resnet": "bfloat16"}, older=older
    )
    assert machine(first) == {
        "device": "AMD EPYC",
        "threads": "1",
        "torch": torch.__version__,
        "trained in": "exit_resnet bfloat16, linear float32",
    }
    Path(Layout(str(first)).log("train_network", "small_cnn")).write_text("no such words\n")
    assert machine(first)["trained in"] == (
        "exit_resnet bfloat16, linear float32, small_cnn unknown"
    )


def test_the_tool_says_when_the_runs_ran_on_other_machines_or_arithmetic(first, tmp_path, capsys):
    second = tmp_path / "second"
    shutil.copytree(first, second)
    for run in (first, second):
        describe_machine(run, "AMD EPYC", {"linear": "float32", "exit_resnet": "float32"})
    assert compare_runs(first, second) == 0
    out = capsys.readouterr().out
    assert "first: device AMD EPYC; threads 1;" in out
    assert "trained in exit_resnet float32, linear float32" in out
    assert "differ in machine or arithmetic" not in out

    describe_machine(second, "Intel(R) Xeon(R) Platinum 8480+", {"exit_resnet": "bfloat16"})
    compare_runs(first, second)
    out = capsys.readouterr().out
    assert "second: device Intel(R) Xeon(R) Platinum 8480+;" in out
    assert "trained in exit_resnet bfloat16, linear float32" in out
    assert "the runs differ in machine or arithmetic" in out
