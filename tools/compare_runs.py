"""Two finished runs of a study side by side: are they the same study, and how far apart are
their numbers?

    .venv/bin/python tools/compare_runs.py FIRST/results SECOND/results [--tolerance 0.1]
        [--band 0.1] [--metric top1] [--jobs 8]

Prints (:mod:`adaptive_inference.reproducibility`):

0. what each run ran on (the timing job's device, threads and torch) and the arithmetic each
   network trained in, and whether the two differ (then the files of 1 may differ too);
1. the files two runs on the same machine and thread count must give bit for bit (splits,
   every network's ``model.pt`` and ``probs.npy``), and any that differ or are missing;
2. the learned policy's test speedups at the operating points chosen on validation, side by
   side, with their difference relative to the smaller (at most ``--tolerance``);
3. each run's measured/predicted speedups from ``measure_runtime`` (within ``--band`` of 1);
4. the ``--jobs`` slowest jobs of the first run beside the second's: how fast the host was.

Exit status 1 if a check fails (a file differs or is missing, a speedup moved by more than the
tolerance, a ratio is outside the band), 0 otherwise. Run two cold studies from fresh clones of
one commit (``make study`` in each), then compare their ``results/`` folders.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from adaptive_inference.reproducibility import (
    identical_files,
    job_seconds,
    machine,
    runtime_ratios,
    speedup_differences,
)


def _machines(runs: dict[str, str]) -> None:
    described = {name: machine(results) for name, results in runs.items()}
    print("0. what the runs ran on:")
    for name, facts in described.items():
        print(f"   {name}: " + "; ".join(f"{key} {value}" for key, value in facts.items()))
    first, second = described.values()
    if first != second:
        print(
            "   the runs differ in machine or arithmetic: their weights and predictions may differ"
            " (in the last bits on another CPU, more in other arithmetic), and their speedups"
            " with the machines' costs"
        )
    print()


def _files(first: str, second: str) -> bool:
    files = identical_files(first, second)
    ok = bool(len(files)) and bool(files["identical"].all())
    print(f"1. bit-identical files: {int(files['identical'].sum())} of {len(files)}")
    if not len(files):
        print("   none found: are these results/ folders?")
    for row in files[~files["identical"]].itertuples():
        where = (
            "differs"
            if row.in_first and row.in_second
            else f"missing in the {'second' if row.in_first else 'first'} run"
        )
        print(f"   {row.path}: {where}")
    return ok


def _speedups(first: str, second: str, metric: str, tolerance: float) -> bool:
    table = speedup_differences(first, second, metric=metric, tolerance=tolerance)
    print(
        f"\n2. learned speedups (chosen on validation, {metric}), within {tolerance:.0%} of each "
        f"other: {int(table['within'].sum())} of {len(table)}"
    )
    shown = table.assign(difference=(100 * table["difference"]).round(1))
    columns = ["scheme", "max_loss", "first", "second", "difference", "within"]
    print(shown[columns].rename(columns={"difference": "difference_%"}).to_string(index=False))
    return bool(len(table)) and bool(table["within"].all())


def _ratios(runs: dict[str, str], band: float) -> bool:
    ok = True
    print(f"\n3. measured / predicted speedup (measure_runtime), within ±{band:.0%}:")
    for name, results in runs.items():
        table = runtime_ratios(results, band=band)
        if table.empty:
            print(f"   {name} run: no runtime measurement")
            continue
        ok &= bool(table["within"].all())
        wide = table.pivot_table(
            index=["scheme", "mode"], columns="max_loss", values="ratio", sort=False
        ).round(3)
        print(f"   {name} run: {int(table['within'].sum())} of {len(table)} points")
        print(wide.to_string())
    return ok


def _jobs(runs: dict[str, str], count: int) -> None:
    seconds = pd.DataFrame({name: job_seconds(results) for name, results in runs.items()})
    if seconds.empty:
        return
    slowest = seconds.sort_values(seconds.columns[0], ascending=False).head(count)
    print(f"\n4. the slowest jobs (s; from results/benchmarks):\n{slowest.round(1).to_string()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", help="the first run's results/ folder")
    parser.add_argument("second", help="the second run's results/ folder")
    parser.add_argument("--tolerance", type=float, default=0.1, help="learned speedups")
    parser.add_argument("--band", type=float, default=0.1, help="measured / predicted")
    parser.add_argument("--metric", default="top1")
    parser.add_argument("--jobs", type=int, default=8, help="slowest jobs shown")
    args = parser.parse_args(argv)
    runs = {"first": args.first, "second": args.second}
    _machines(runs)
    checks = [
        _files(args.first, args.second),
        _speedups(args.first, args.second, args.metric, args.tolerance),
        _ratios(runs, args.band),
    ]
    _jobs(runs, args.jobs)
    failed = [name for name, ok in zip(("files", "speedups", "ratios"), checks) if not ok]
    print(f"\n{'failed: ' + ', '.join(failed) if failed else 'every check passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
