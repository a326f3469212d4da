"""The suite's own order: the longest files first (tests/conftest.py), so that `make test`,
which spreads whole files over the cores, starts them side by side."""

import subprocess
import sys

from conftest import REPO, SLOW_FILES


def test_the_longest_files_exist_and_are_collected_first():
    for name in SLOW_FILES:
        assert (REPO / "tests" / name).is_file(), f"tests/conftest.py names a missing file {name}"
    # given in the wrong order, behind a short file
    given = ["tests/test_graph.py", *(f"tests/{name}" for name in reversed(SLOW_FILES))]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", *given],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files = [line.split("::")[0] for line in collected.splitlines() if "::" in line]
    in_order = list(dict.fromkeys(files))
    assert in_order == [*(f"tests/{name}" for name in SLOW_FILES), "tests/test_graph.py"]
