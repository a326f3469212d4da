"""Copy Snakemake and its dependencies (not PuLP: the GPU check uses the greedy scheduler) from
this environment into ``build/device-site``, for a GPU machine that has PyTorch but no Snakemake
and no network: ``PYTHONPATH=src:build/device-site`` there. Compiled parts need the same Python
minor version on both machines.

    .venv/bin/python benchmarks/make_device_site.py [--python-version 3.12]

With ``--python-version``, the compiled distributions come from that Python's binary wheels
(``pip download``, from the package registries) instead of this environment.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib.metadata import distribution, requires
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "build" / "device-site"
ROOTS = ("snakemake", "tqdm")
SKIP = {"pulp"}


def closure(roots) -> set[str]:
    seen, stack = set(), list(roots)
    while stack:
        name = stack.pop().lower().replace("_", "-")
        if name in seen or name in SKIP:
            continue
        try:
            needs = requires(name) or []
        except Exception:  # noqa: BLE001 - optional back-ports absent from this Python
            continue
        seen.add(name)
        stack += [re.split(r"[ ;<>=!\[~(]", r)[0] for r in needs if "extra ==" not in r]
    return seen


def compiled(dist) -> bool:
    return any(str(f).endswith(".so") for f in dist.files or [])


def unpack_wheel(name: str, version: str, python: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                python,
                "-d",
                folder,
                f"{name}=={version}",
            ],
            check=True,
        )
        for wheel in Path(folder).glob("*.whl"):
            zipfile.ZipFile(wheel).extractall(TARGET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python-version", help="the GPU machine's Python (e.g. 3.12)")
    args = parser.parse_args()
    shutil.rmtree(TARGET, ignore_errors=True)
    for name in sorted(closure(ROOTS)):
        dist = distribution(name)
        if args.python_version and compiled(dist):
            unpack_wheel(name, dist.version, args.python_version)
            continue
        for file in dist.files or []:
            source = Path(dist.locate_file(file)).resolve()
            if (
                source.is_file()
                and "__pycache__" not in str(file)
                and not str(file).startswith("..")
            ):
                (TARGET / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, TARGET / file)
    size = sum(p.stat().st_size for p in TARGET.rglob("*") if p.is_file())
    print(f"{TARGET}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
