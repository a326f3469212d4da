"""Running a workflow script with its output and errors in the rule's log file."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path


@contextmanager
def job_log(path: Path | str) -> Iterator[logging.Logger]:
    """Send stdout, stderr (tqdm's progress too) and logging to ``path`` for the block.

    An exception is written to the log with its traceback, its message also to the real stderr
    (so it reaches the terminal), and re-raised so that the job fails. SIGTERM (a cancelled or
    timed-out cluster job, an interrupted run) becomes ``SystemExit(143)`` for the block, so that
    the outputs being written are cleaned up as for an exception
    (:func:`~adaptive_inference.io.atomic_path`) instead of leaving a ``.partial`` file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    real_stderr = sys.stderr
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with (
            open(path, "w", buffering=1) as handle,
            redirect_stdout(handle),
            redirect_stderr(handle),
        ):
            logging.basicConfig(
                stream=handle, level=logging.INFO, format="%(asctime)s %(message)s", force=True
            )
            logger = logging.getLogger("adaptive_inference")
            try:
                yield logger
            except Exception as error:
                traceback.print_exc(file=handle)
                print(f"{type(error).__name__}: {error}", file=real_stderr)
                raise
            except SystemExit as error:
                print(f"terminated (exit {error.code})", file=handle)
                raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def put_package_on_job_path() -> str:
    """Make the workflow's jobs import this very package, also in a conda env that lacks it.

    Called by the Snakefile: jobs inherit ``PYTHONPATH`` (this package's parent folder first),
    so a job run with ``--sm-env conda`` imports the checkout's code, not a stale install.
    """
    source = str(Path(__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != source]
    os.environ["PYTHONPATH"] = os.pathsep.join([source, *rest])
    return source
