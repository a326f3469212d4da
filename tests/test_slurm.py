"""The study on a real SLURM cluster: Snakemake's SLURM executor with profiles/slurm.

A one-node cluster on this machine (tools/slurm_local.sh: slurmctld, slurmd and munged from
Debian's packages, private to this test: its own state directory and ports) runs the tiny study's
policy table of one scheme, the scheme with the fewest networks (early exit): every rule up to the
policies (data, splits, training, extraction, timing, policy fit; 9 jobs as of this writing). The
whole tiny study (about 30 jobs) would take about 10 minutes on 2 cores: each SLURM job pays for
two Snakemake start-ups (the batch job's and its srun step's) beside its own work, and for the
executor's status checks. The notebook, robustness and runtime rules are not run here.

One run, with a fault:
1. a local run (profiles/default) of the same targets, as the reference;
2. the SLURM run; once the training job's script runs, `scancel` kills it: Snakemake must report
   it failed, with its logs, and leave nothing half-written;
3. the SLURM run again (the training job now also asks for a GPU, a stand-in one the node offers)
   completes the study;
then the outputs are compared with the local run's, and every job's allocation is read back from
the scheduler (`scontrol show job`) and compared with what Snakemake and the profile asked for.

What "identical" means here (see test_outputs_equal_the_local_run): everything upstream of
timing (data, splits, weights, predictions) bit for bit; the timing tables are measured, so only
their shape; the policy table in every column that no measured cost enters, for the operating
points that the costs do not move. Where the SLURM run differs, a second local run tells
whether the workflow reproduces that file at all; if not, the file is compared for its shape only
and the test says so (xfail).

No accounting database: the executor is told to query job states with squeue
(--slurm-status-command squeue, see profiles/slurm/config.yaml). Where the cluster cannot start
(not root and SLURM not installed, or no apt-get), the tests are skipped with the script's reason;
REQUIRE_SLURM=1 (set by .ci/run) turns that skip into a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SCRIPT = REPO / "tools" / "slurm_local.sh"
SLURM_PROFILE = REPO / "profiles" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
POLICY_TABLE = "results/policies/{scheme}/points.parquet"
# Executor settings for a cluster without accounting, and quick status checks for short jobs
# (the plugin's default first check is after 40 s).
SLURM_ARGS = [
    # each job's block (rule, log, outputs, threads, resources), which profiles/default hides:
    # the test reads what each job asked for there (first: --quiet takes the values that follow)
    "--quiet",
    "host",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
]
RUN_TIMEOUT = 900  # seconds, per Snakemake run

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]


# --- the cluster ------------------------------------------------------------------------------


@dataclass
class Cluster:
    env: dict[str, str]
    node: str
    cpus: int
    memory_mb: int

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -d`: every key=value of the job."""
        text = self.run("scontrol", "show", "job", "-d", job_id).stdout
        return dict(re.findall(r"(\S+?)=(\S*)", text))


def free_port_pair() -> int:
    """A port p with p and p + 1 free (slurmctld, slurmd)."""
    for port in range(6817, 7000, 2):
        try:
            for p in (port, port + 1):
                with socket.socket() as probe:
                    probe.bind(("", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for SLURM in 6817-6999")


def processes_of(state: Path) -> list[str]:
    """The command lines of the processes that name the cluster's state directory."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state) in command:
            found.append(command)
    return found


def unavailable(reason: str):
    if os.environ.get("REQUIRE_SLURM") == "1":
        pytest.fail(f"REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A private one-node cluster (own state directory and ports), stopped at the end."""
    if shutil.which("dpkg-query") is None:
        unavailable("tools/slurm_local.sh needs a Debian system (dpkg, apt-get)")
    # Not under pytest's temporary folders, which later pytest sessions prune: the daemons keep
    # their pid files here until the end.
    state = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    env = {
        **os.environ,
        "SLURM_LOCAL_DIR": str(state),
        "SLURM_LOCAL_PORT": str(free_port_pair()),
        "SLURM_LOCAL_GPUS": "1",  # one stand-in GPU where the machine has none
    }

    def give_up(reason: str):
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(state, ignore_errors=True)
        unavailable(reason)

    try:
        start = subprocess.run(
            [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900
        )
    except subprocess.TimeoutExpired:
        give_up("the local SLURM cluster did not start within 15 minutes")
    if start.returncode != 0:
        give_up(f"the local SLURM cluster did not start: {start.stderr.strip()[-1500:]}")
    # `export SLURM_CONF=... PATH=<state>/bin:$PATH`: the clients' config, and bin/srun for jobs
    exports = re.search(r"export SLURM_CONF=(\S+) PATH=(\S+):\$PATH", start.stdout)
    assert exports, start.stdout
    env["SLURM_CONF"] = exports[1]
    env["PATH"] = f"{exports[2]}:{env['PATH']}"
    try:
        node = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %c %m"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        yield Cluster(env=env, node=node[0], cpus=int(node[1]), memory_mb=int(node[2]))
    finally:
        stop = subprocess.run(
            [str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=300
        )
        assert stop.returncode == 0, stop.stderr
        assert not processes_of(state), f"processes left behind: {processes_of(state)}"
        shutil.rmtree(state, ignore_errors=True)


# --- Snakemake and its log --------------------------------------------------------------------


@dataclass
class Job:
    """One job as Snakemake's log shows it."""

    rule: str
    jobid: str
    fields: dict[str, str] = field(default_factory=dict)
    slurm_id: str | None = None
    slurm_log: str | None = None

    @property
    def threads(self) -> int:
        return int(self.fields.get("threads", 1))  # Snakemake prints threads only above 1

    @property
    def resources(self) -> dict[str, str]:
        items = self.fields.get("resources", "").split(", ")
        return dict(item.split("=", 1) for item in items if "=" in item)

    def paths(self, key: str) -> list[str]:
        return [p for p in self.fields.get(key, "").split(", ") if p]


def parse_jobs(text: str) -> dict[str, Job]:
    """The jobs of one Snakemake run, by Snakemake job id: rule, fields, SLURM job and log."""
    jobs: dict[str, Job] = {}
    lines = without_printed_logs(text).splitlines()
    for i, line in enumerate(lines):
        start = re.fullmatch(r"(?:local)?rule (\w+):", line.rstrip())
        if start:
            fields = {}
            for entry in lines[i + 1 :]:
                if not entry.startswith("    "):
                    break
                key, _, value = entry.strip().partition(": ")
                fields[key] = value
            job = Job(rule=start[1], jobid=fields.get("jobid", ""), fields=fields)
            job.fields["kind"] = line.split()[0]
            jobs[job.jobid] = job
    for jobid, slurm_id, log in re.findall(
        r"Job (\d+) has been submitted with SLURM jobid (\S+) \(log: (.+?)\)\.", text
    ):
        if jobid in jobs:  # (a run still going may not have printed the job's block yet)
            jobs[jobid].slurm_id, jobs[jobid].slurm_log = slurm_id, log
    return jobs


def without_printed_logs(text: str) -> str:
    """``text`` without the log files Snakemake prints after a failed job ("Logfile <path>:"
    between two equal rulers): a SLURM job's log holds its job step's own Snakemake output,
    whose blocks ("localrule train_network:", jobid 0) are not jobs of this run."""
    return re.sub(r"^Logfile [^\n]*:\n(=+)\n.*?^\1$\n?", "", text, flags=re.S | re.M)


def study_command(workdir: Path, profile: list[Path], *args: str, config: Path) -> list[str]:
    profiles = [arg for p in profile for arg in ("--profile", str(p))]
    return [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *profiles,
        *args,
        "--configfile",
        str(config),
    ]


def policy_targets(config: dict) -> list[str]:
    """The policy table of the scheme with the fewest networks (the first such)."""
    schemes = config["policies"]["schemes"]
    scheme = min(schemes, key=lambda name: len(schemes[name]["networks"]))
    return [POLICY_TABLE.format(scheme=scheme)]


def profile_resources(profiles: list[Path]) -> tuple[dict, dict]:
    """default-resources and set-resources as the profiles (later ones win per key) give them."""
    default, per_rule = {}, {}
    for profile in profiles:
        settings = yaml.safe_load((profile / "config.yaml").read_text())
        if "default-resources" in settings:
            default = as_mapping(settings["default-resources"])
        if "set-resources" in settings:
            per_rule = {rule: as_mapping(v) for rule, v in settings["set-resources"].items()}
    return default, per_rule


def as_mapping(resources) -> dict:
    if isinstance(resources, dict):
        return dict(resources)
    return dict(item.split("=", 1) for item in resources)  # the list form: ["mem_mb=1000", ...]


def fit_memory(profile_dir: Path, cluster: Cluster, extra: dict | None = None) -> Path:
    """A profile laid over profiles/slurm: its memory requests scaled down to fit this node
    (where the profile asks more than the node has), plus ``extra`` set-resources."""
    default, per_rule = profile_resources([SLURM_PROFILE])
    asked = [int(default.get("mem_mb", 0))] + [int(r.get("mem_mb", 0)) for r in per_rule.values()]
    scale = min(1.0, cluster.memory_mb / max(asked))
    scaled = lambda values: {  # noqa: E731
        k: int(int(v) * scale) if k == "mem_mb" else v for k, v in values.items()
    }
    per_rule = {rule: scaled(values) for rule, values in per_rule.items()}
    for rule, values in (extra or {}).items():
        per_rule.setdefault(rule, {}).update(values)
    profile_dir.mkdir(parents=True, exist_ok=True)
    (profile_dir / "config.yaml").write_text(
        yaml.safe_dump({"default-resources": scaled(default), "set-resources": per_rule})
    )
    return profile_dir


# --- the runs ---------------------------------------------------------------------------------


@dataclass
class Study:
    local: Path
    run_local_again: Callable[[], Path]
    slurm: Path
    targets: list[str]
    failed: subprocess.CompletedProcess
    rerun: subprocess.CompletedProcess
    failed_jobs: dict[str, Job]
    rerun_jobs: dict[str, Job]
    victim: Job
    victim_state_after_failure: dict
    partial_after_failure: list[Path]
    outputs_after_failure: list[str]
    profiles: dict[str, list[Path]]
    seconds: dict[str, float]
    _local_again: Path | None = None
    unreproducible: list[str] = field(default_factory=list)

    @property
    def local_again(self) -> Path:
        """A second local run, made on first use."""
        if self._local_again is None:
            self._local_again = self.run_local_again()
        return self._local_again


def planned_rules(text: str) -> list[str]:
    """The rules in the "Job stats" table Snakemake prints before it starts."""
    table = re.search(r"Job stats:\n.*?\n-+ +-+\n(.*?)\ntotal", text, re.S)
    return [line.split()[0] for line in table[1].splitlines()] if table else []


def wait_for_victim(process, output: Path, workdir: Path, timeout: float) -> Job:
    """A training job (the first job with a log where the run trains nothing), once its
    script runs: its log is there (the script opens it first), its outputs are not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        text = output.read_text()
        planned = planned_rules(text)
        if planned:
            training = any(rule.startswith("train") for rule in planned)
            for job in parse_jobs(text).values():
                if not (job.slurm_id and job.paths("log")):
                    continue
                if training and not job.rule.startswith("train"):
                    continue
                started = (workdir / job.paths("log")[0]).exists()
                done = any((workdir / p).exists() for p in job.paths("output"))
                if started and not done:
                    return job
        time.sleep(0.1)
    raise AssertionError(f"no job to kill came up:\n{output.read_text()}")


@pytest.fixture(scope="module")
def study(cluster, tmp_path_factory) -> Study:
    base = tmp_path_factory.mktemp("study")
    config = yaml.safe_load(TINY.read_text())
    targets = policy_targets(config)
    cores = str(min(2, cluster.cpus))  # the same threads in both runs (cores: all would differ)
    seconds = {}

    # The local reference (and, only should the SLURM run differ from it, a second local run:
    # see matches_local). It runs beside the SLURM run, whose node mostly waits on Snakemake's
    # status checks and start-ups.
    def start_local(name: str):
        workdir = base / name
        workdir.mkdir()
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        command = study_command(
            workdir,
            [REPO / "profiles" / "default"],
            "--cores",
            cores,
            *targets,
            config=workdir / "config.yaml",
        )
        log = open(base / f"{name}-run.log", "w")  # closed by finish_local
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        return name, workdir, process, log, time.monotonic()

    def finish_local(started) -> Path:
        name, workdir, process, log, began = started
        try:
            process.wait(timeout=RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
        text = (base / f"{name}-run.log").read_text()
        assert process.returncode == 0, f"the local run failed:\n{text}"
        seconds[name] = time.monotonic() - began
        return workdir

    local_run = start_local("local")
    try:
        slurm_runs = run_slurm(base, cluster, config, targets, cores, seconds)
    finally:
        local = finish_local(local_run)
    print(f"wall time (s): {json.dumps({k: round(v) for k, v in seconds.items()})}")
    return Study(
        local=local,
        run_local_again=lambda: finish_local(start_local("local-again")),
        targets=targets,
        seconds=seconds,
        **slurm_runs,
    )


def run_slurm(
    base: Path, cluster: Cluster, config: dict, targets: list[str], cores: str, seconds: dict
) -> dict:
    """The SLURM run, its fault, and the re-run (see the module's doc)."""
    slurm = base / "slurm"
    slurm.mkdir()
    (slurm / "config.yaml").write_text(yaml.safe_dump(config))
    profiles = [SLURM_PROFILE, fit_memory(base / "fit-memory", cluster)]
    command = study_command(
        slurm, profiles, "--cores", cores, *SLURM_ARGS, *targets, config=slurm / "config.yaml"
    )
    output = base / "slurm-run.log"
    began = time.monotonic()
    with open(output, "w") as handle:
        process = subprocess.Popen(
            command, cwd=slurm, env=cluster.env, stdout=handle, stderr=subprocess.STDOUT, text=True
        )
        try:
            victim = wait_for_victim(process, output, slurm, timeout=RUN_TIMEOUT)
            cluster.run("scancel", victim.slurm_id)
            process.wait(timeout=RUN_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    failed = subprocess.CompletedProcess(command, process.returncode, output.read_text(), "")
    failed_jobs = parse_jobs(failed.stdout)
    victim = failed_jobs[victim.jobid]
    victim_state = cluster.job(victim.slurm_id)
    partial = list((slurm / "results").rglob("*.partial"))
    outputs = [p for p in victim.paths("output") if (slurm / p).exists()]
    for output in outputs:  # kept for comparison: the re-run replaces them
        (base / "after-failure" / output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(slurm / output, base / "after-failure" / output)
    seconds["slurm_failed"] = time.monotonic() - began

    # The re-run: the killed job's rule also asks for a GPU (the node's stand-in), so that one
    # job shows how a gpu resource reaches the scheduler.
    rerun_profiles = [
        SLURM_PROFILE,
        fit_memory(base / "fit-memory-gpu", cluster, {victim.rule: {"gpu": 1}}),
    ]
    command = study_command(
        slurm, rerun_profiles, "--cores", cores, *SLURM_ARGS, *targets, config=slurm / "config.yaml"
    )
    began = time.monotonic()
    rerun = subprocess.run(
        command,
        cwd=slurm,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    seconds["slurm_rerun"] = time.monotonic() - began
    return dict(
        slurm=slurm,
        failed=failed,
        rerun=rerun,
        failed_jobs=failed_jobs,
        rerun_jobs=parse_jobs(rerun.stdout),
        victim=victim,
        victim_state_after_failure=victim_state,
        partial_after_failure=partial,
        outputs_after_failure=outputs,
        profiles={"failed": profiles, "rerun": rerun_profiles},
    )


# --- the tests --------------------------------------------------------------------------------


def test_the_killed_job_is_reported_and_leaves_nothing_half_written(study, cluster):
    victim, text = study.victim, study.failed.stdout
    state = study.victim_state_after_failure
    assert state["JobState"] == "CANCELLED", state
    assert study.failed.returncode != 0, text
    error = text[text.index(f"Error in rule {victim.rule}:") :]
    error = error[: error.index("\n\n") if "\n\n" in error else None]
    assert "CANCELLED" in error and f"external_jobid: {victim.slurm_id}" in error, error
    # both logs named: the rule's and SLURM's
    for log in [*victim.paths("log"), victim.slurm_log]:
        assert log in error, f"{log} not in\n{error}"
    assert Path(victim.slurm_log).exists()
    # No temporary file is left, and an output the job had written before it was killed is
    # complete (the same as the local run's); Snakemake removes them anyway.
    assert not study.partial_after_failure
    for output in study.outputs_after_failure:
        matches_local(study, output, study.slurm.parent / "after-failure" / output)


def test_the_rerun_completes_the_study(study):
    assert study.rerun.returncode == 0, study.rerun.stdout
    assert "(100%) done" in study.rerun.stdout
    assert study.victim.rule in {job.rule for job in study.rerun_jobs.values()}
    for target in study.targets:
        assert (study.slurm / target).is_file()
    for output in study.victim.paths("output"):
        assert (study.slurm / output).is_file()
    assert not list((study.slurm / "results").rglob("*.partial"))


def test_every_job_went_through_slurm(study, cluster):
    """Each job: submitted with sbatch, run by slurmd on the node (the batch and the srun step),
    reported back to Snakemake; no job ran on the submitting side."""
    runs = [(study.failed.stdout, study.failed_jobs), (study.rerun.stdout, study.rerun_jobs)]
    rules = set()
    for text, jobs in runs:
        assert jobs
        for job in jobs.values():
            rules.add(job.rule)
            assert job.fields["kind"] == "rule", f"{job.rule} ran locally"
            assert job.slurm_id, f"{job.rule} (job {job.jobid}) was not submitted to SLURM"
            state = cluster.job(job.slurm_id)
            assert state["BatchHost"] == cluster.node
            assert state["Comment"].startswith(f"rule_{job.rule}")
            if job is study.victim:
                continue
            assert state["JobState"] == "COMPLETED", (job.rule, state["JobState"])
            assert state["ExitCode"] == "0:0"
            # the job's own Snakemake (in the srun step) ran the rule; the main one saw it end
            assert f"(Rule: {job.rule})" in Path(job.slurm_log).read_text(), job.slurm_log
            if text is study.rerun.stdout:
                assert f"Finished jobid: {job.jobid} (Rule: {job.rule})" in text
    assert len(rules) >= 5, rules  # the study's rules, not a job or two


def test_jobs_get_the_profiles_resources(study, cluster):
    """What each job asked for (its threads and resources as Snakemake printed them, and the
    profile's values) is what SLURM allocated: CPUs (and the cores they are bound to), memory,
    time limit, GPUs."""
    checked_gpu, threads = False, set()
    for run, jobs in [("failed", study.failed_jobs), ("rerun", study.rerun_jobs)]:
        # the profiles in Snakemake's order, the workflow profile (profiles/default) last
        default, per_rule = profile_resources([*study.profiles[run], REPO / "profiles" / "default"])
        for job in jobs.values():
            asked = job.resources
            profile = {**default, **per_rule.get(job.rule, {})}
            # the profile's memory and runtime are what Snakemake asked for ...
            assert int(asked["mem_mb"]) == int(profile["mem_mb"]), (job.rule, asked)
            assert int(asked["runtime"]) == int(profile["runtime"]), (job.rule, asked)
            # ... and what SLURM allocated
            state = cluster.job(job.slurm_id)
            assert int(state["NumCPUs"]) == job.threads, (job.rule, state["NumCPUs"], job.threads)
            assert count_ids(state["CPU_IDs"]) == job.threads, (job.rule, state["CPU_IDs"])
            assert state["MinMemoryNode"] == f"{asked['mem_mb']}M", (job.rule, state)
            assert state["Mem"] == asked["mem_mb"], (job.rule, state)  # allocated on the node
            assert f"mem={asked['mem_mb']}M" in state["TRES"]
            hours, minutes = divmod(int(asked["runtime"]), 60)
            assert state["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", state["TimeLimit"]
            # GPUs: asked for (TresPerJob) and allocated on the node (JOB_GRES), or none
            gpus = int(asked.get("gpu", 0))
            if gpus:
                assert state.get("TresPerJob") == f"gres:gpu:{gpus}", state
                assert state["JOB_GRES"] == f"gpu:{gpus}", state
                checked_gpu = True
            else:
                assert "gpu" not in state.get("TresPerJob", ""), state
                assert state["JOB_GRES"] == "(null)", state
            threads.add(job.threads)
    assert checked_gpu, "no job asked for a GPU"
    assert max(threads) == min(2, cluster.cpus), threads  # multi-threaded jobs were checked too


def count_ids(ids: str) -> int:
    """How many CPUs a SLURM id list names ("0-1,4": 3)."""
    count = 0
    for part in ids.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


# Columns of the policy table into which a measured cost enters: costs and speedups, the
# reference's time, and the training objective (loss + lambda * time).
COST_COLUMNS = re.compile(r"(^|_)(ms|speedup)(_|$)|^train_objective$")
TIMED_KEYS = re.compile(r"second|_ms$|time")


def same_frames(local: pd.DataFrame, slurm: pd.DataFrame, what: str):
    pd.testing.assert_frame_equal(local, slurm, check_exact=True, obj=what)


def assert_same_saved(a: Path, b: Path, name: str, shape_only: bool = False) -> None:
    """Two files written by torch.save (a network: spec and state dict; the prepared data:
    tensors) hold the same keys and equal tensors (or, ``shape_only``, tensors of one shape)."""
    import torch

    def same(x, y, where: str) -> None:
        if isinstance(x, dict):
            assert isinstance(y, dict) and x.keys() == y.keys(), where
            for key in x:
                same(x[key], y[key], f"{where}[{key!r}]")
        elif isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.shape == y.shape, where
            assert shape_only or torch.equal(x, y), where
        else:
            assert shape_only or x == y, where

    same(torch.load(a, weights_only=False), torch.load(b, weights_only=False), name)


def compare(a: Path, b: Path, name: str, shape_only: bool = False) -> str | None:
    """Compare one result file of two runs as its kind allows (see
    test_outputs_equal_the_local_run); say how: "exact", "shape", "policy", or None (present).
    ``shape_only``: columns, keys and shapes only."""
    if "/policies/" in f"/{name}":
        # the number of operating points on a cost-driven sweep moves with the costs
        if name.endswith("points.parquet"):
            compare_points(pd.read_parquet(a), pd.read_parquet(b), name, shape_only)
            return "policy"
        return None
    if name.endswith(".parquet"):
        ta, tb = pd.read_parquet(a), pd.read_parquet(b)
        assert list(ta.columns) == list(tb.columns) and len(ta) == len(tb), name
    elif name.endswith(".json"):
        assert json.loads(a.read_text()).keys() == json.loads(b.read_text()).keys(), name
    if shape_only or "/timing/" in f"/{name}" or "/costs/" in f"/{name}":
        if name.endswith(".npy"):
            assert np.load(a).shape == np.load(b).shape, name
        elif name.endswith(".pt"):
            assert_same_saved(a, b, name, shape_only=True)
        elif name.endswith(".csv"):
            assert list(pd.read_csv(a).columns) == list(pd.read_csv(b).columns), name
        return "shape"
    if name.endswith(".npy"):
        np.testing.assert_array_equal(np.load(a), np.load(b), err_msg=name)
    elif name.endswith(".parquet"):
        same_frames(pd.read_parquet(a), pd.read_parquet(b), name)
    elif name.endswith(".pt"):
        assert_same_saved(a, b, name)
    elif name.endswith(".csv"):
        ca, cb = pd.read_csv(a), pd.read_csv(b)
        untimed = [c for c in ca.columns if not TIMED_KEYS.search(c)]
        same_frames(ca[untimed], cb[untimed], name)
    elif name.endswith(".json"):
        ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
        untimed = lambda d: {k: v for k, v in d.items() if not TIMED_KEYS.search(k)}  # noqa: E731
        assert untimed(ja) == untimed(jb), name
    else:
        assert a.read_bytes() == b.read_bytes(), name
    return "exact"


def matches_local(study: Study, name: str, other: Path) -> str | None:
    """Compare ``other`` (the SLURM run's file) with the local run's. Where they differ, a second
    local run says whose doing it is: if two local runs differ too, the workflow does not
    reproduce the file, and it is compared for its shape only (the test then ends as xfail)."""
    try:
        return compare(study.local / name, other, name)
    except AssertionError:
        try:
            compare(study.local / name, study.local_again / name, name)
        except AssertionError:
            study.unreproducible.append(name)
            return compare(study.local / name, other, name, shape_only=True)
        raise  # two local runs agree: the SLURM run differs


def test_outputs_equal_the_local_run(study):
    """The SLURM run's results against the local run's, file by file (those in both), as far as
    the workflow reproduces them (see matches_local: a file that two local runs do not agree on
    is compared for its shape only, and the test ends as xfail, naming it):

    - identical bit for bit (same code, same threads, same seeds): the prepared data, the splits,
      the weights, the predictions (probs.npy, predictions.parquet), the training curves and the
      manifests but for their timed entries (seconds, images per second);
    - measured, so only present with the same shape: the timing tables;
    - the policy tables (points.parquet): the same operating points (methods, losses, variants,
      the same number of points each) and reference; for the points fixed by the predictions
      alone (confidence thresholds, single networks) every column no cost enters (accuracies,
      losses and their bootstrap intervals). The learned and myopic policies sweep a lambda grid
      scaled by the measured costs and the oracle takes the cheapest right answer: their points
      move with the timing, as they would between two local runs. The other policy files are
      only present.
    """

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in (root / "results").rglob("*")
            if p.is_file() and not {"logs", "benchmarks"} & set(p.relative_to(root).parts)
        }

    local, slurm = files(study.local), files(study.slurm)
    assert local == slurm, local ^ slurm
    compared = {"exact": [], "shape": [], "policy": [], None: []}
    for name in sorted(local):
        compared[matches_local(study, name, study.slurm / name)].append(name)
    print(json.dumps({str(k): v for k, v in compared.items()}, indent=1))
    assert compared["shape"] and compared["policy"], compared
    if study.unreproducible:
        # Not SLURM's doing: tell, and compare those files for their shape only.
        pytest.xfail(
            f"two local runs of the workflow differ in {study.unreproducible}: the "
            "SLURM run was compared with them for shape only; everything else matched"
        )
    kinds = {Path(n).parts[1] for n in compared["exact"]}
    assert {"splits", "networks", "predictions"} <= kinds, compared


def compare_points(local: pd.DataFrame, slurm: pd.DataFrame, name: str, shape_only: bool):
    """The policy tables: the same columns, kinds of operating point and reference; the points
    fixed by the predictions alone (confidence thresholds, single networks) equal in every column
    no cost enters. (How many points a lambda sweep keeps depends on the costs.)"""
    assert list(local.columns) == list(slurm.columns), name
    point = ["method", "train_loss", "variant", "budget_name"]
    kinds = lambda t: set(t[point].itertuples(index=False))  # noqa: E731
    assert kinds(local) == kinds(slurm), (name, kinds(local) ^ kinds(slurm))
    assert set(local["reference"]) == set(slurm["reference"]), name
    if shape_only:
        return
    fixed = lambda t: t[t["budget_name"].eq("threshold") | t["method"].eq("single")]  # noqa: E731
    untimed = [c for c in local.columns if not COST_COLUMNS.search(c) and c != "point_id"]
    key = ["method", "train_loss", "variant", "budget_name", "budget"]
    a = fixed(local)[untimed].sort_values(key).reset_index(drop=True)
    b = fixed(slurm)[untimed].sort_values(key).reset_index(drop=True)
    assert len(a) > 0, f"{name}: no operating point free of costs"
    same_frames(a, b, f"{name}, cost-free points")


def test_sigterm_while_writing_leaves_no_partial_file(tmp_path):
    """What SLURM does to a cancelled job (SIGTERM, then SIGKILL after KillWait), to a job
    script (its body inside job_log, as every workflow script's) in the middle of an atomic
    write. No cluster needed: the signal is the same."""
    script = (
        "import sys, time\n"
        "from adaptive_inference.io import atomic_path\n"
        "from adaptive_inference.joblog import job_log\n"
        "real = sys.stdout\n"
        "with job_log(sys.argv[2]), atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    print('writing', file=real, flush=True)\n"
        "    time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "out.parquet"), str(tmp_path / "job.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "writing"
        process.terminate()  # SIGTERM
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 143
    assert not (tmp_path / "out.parquet").exists()
    assert not list(tmp_path.glob("*.partial")), "a .partial file is left behind"
    assert "terminated (exit 143)" in (tmp_path / "job.log").read_text()
