"""How long Snakemake takes to find nothing to do on a finished study (a no-op dry run).

    .venv/bin/python benchmarks/bench_noop.py [--repeats 5] [--directory .]

Runs ``snakemake -n`` (the default profile) ``--repeats`` times in the study's directory and
prints each wall time, their median and minimum, and, from one run with ``-X importtime``, the
slowest imports of the workflow's start-up. Target: a median of at most 2 s on the reference
2-core machine. Run it on a quiet machine, after a finished ``make study``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run(directory: Path, extra: list[str]) -> tuple[float, str]:
    command = [
        sys.executable,
        *extra,
        "-m",
        "snakemake",
        "-n",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(directory),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=directory)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--directory", default=str(REPO), help="the finished study's folder")
    args = parser.parse_args()
    directory = Path(args.directory).resolve()
    times = []
    for _ in range(args.repeats):
        seconds, output = dry_run(directory, [])
        times.append(seconds)
        if "Nothing to be done" not in output:
            print(
                "warning: the study is not finished (the dry run plans jobs); times include "
                "planning them"
            )
    print("no-op dry run (s):", " ".join(f"{t:.2f}" for t in times))
    print(f"median {statistics.median(times):.2f} s, min {min(times):.2f} s (target <= 2 s)")
    _, output = dry_run(directory, ["-X", "importtime"])
    imports = []
    for line in output.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and len(match.group(3)) <= 2:  # top-level imports
            imports.append((int(match.group(2)) / 1e6, match.group(4)))
    print("slowest top-level imports (s):")
    for seconds, name in sorted(imports, reverse=True)[:8]:
        print(f"  {seconds:.2f}  {name}")


if __name__ == "__main__":
    main()
