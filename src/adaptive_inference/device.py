"""Where and how the study computes: devices, loaders, compute options, determinism, allocator
settings and the record of the environment a measurement ran in.

Every job that trains, extracts or times goes through these helpers, so a device name, a
``compute`` section or a seed means the same thing in each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import random
import sys
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

# glibc's mallopt parameter numbers (malloc.h) and the values pinned by pin_malloc_thresholds.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD_BYTES = 1 << 30
# glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems).
MMAP_THRESHOLD_BYTES = 32 << 20


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device: cuda is set in the config but no CUDA GPU is visible; use auto or cpu"
        )
    return torch.device(name)


PRECISIONS = ("auto", "float32", "bfloat16")
"""Values of ``training.precision`` (:func:`autocast_dtype`)."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with
    AMX tiles (Sapphire Rapids and later), where a training step of the default family's
    exit_resnet runs 1.45-1.63x faster in bfloat16 autocast than in float32
    (``benchmarks/bench_training.py``)."""
    if device.type == "cuda":  # Ampere and later; older GPUs only emulate it, slowly
        return torch.cuda.is_bf16_supported(including_emulation=False)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return device.type == "cpu" and amx is not None and bool(amx())


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype training's forward and backward run in under ``torch.autocast`` (weights and the
    optimizer stay float32), or None for plain float32.

    ``auto`` is bfloat16 where the device computes it natively (:func:`native_bfloat16`) and
    float32 elsewhere; ``bfloat16`` on a device without it is an error rather than a slow run.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"training precision {precision!r} is not one of {PRECISIONS}")
    if precision == "float32":
        return None
    native = native_bfloat16(device)
    if precision == "bfloat16" and not native:
        raise RuntimeError(
            f"training.precision: bfloat16 is set but this {device.type} does not compute "
            "bfloat16 natively (no AMX on a CPU, or a GPU without bfloat16): it would train "
            "several times slower. Set training.precision to auto or float32."
        )
    return torch.bfloat16 if native else None


def make_loader(
    dataset: Dataset, batch_size: int, *, device: torch.device, num_workers: int = 0
) -> DataLoader:
    """A sequential loader that keeps the device busy: worker processes, and pinned memory when
    the target is a GPU."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def compute_options(compute: Mapping[str, Any]) -> dict[str, Any]:
    """``dtype`` and ``channels_last`` from a validated ``compute`` section (the schema holds
    the defaults)."""
    return {
        "dtype": getattr(torch, compute["dtype"]),
        "channels_last": bool(compute["channels_last"]),
    }


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def apply_compute(compute: Mapping[str, Any]) -> None:
    """Process-wide settings of a ``compute`` section (cuDNN's kernel search)."""
    torch.backends.cudnn.benchmark = bool(compute["cudnn_benchmark"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators and ask torch for deterministic
    kernels, so that building and training a network twice on the same machine and thread count
    gives the same bits.

    On a GPU, the few kernels that have no deterministic implementation (adaptive average
    pooling's backward, for one) only warn: such runs are repeatable up to those kernels.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    # Deterministic mode also fills every new tensor with NaN by default, a guard for kernels
    # that read memory they never wrote; none of the study's does (two trainings give the same
    # bits without it, tests/test_training.py), and the fill cost 8% of exit_resnet's training
    # step on 2 CPU cores (0.141 against 0.130 s, interleaved in one process).
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def pin_malloc_thresholds() -> bool:
    """Fix glibc's malloc trim and mmap thresholds; return whether it applied.

    glibc adapts its mmap threshold to the sizes freed so far, so that large activations are
    sometimes mmap-ed (and zero-filled by the kernel on every pass) and sometimes served from the
    heap; batch-256 CPU timings vary about 2x with that state. Pinning both thresholds makes the
    allocator's behaviour the same for every measurement, and keeps a training step's
    activations on the heap instead of mapping and zero-filling them anew (training and
    extraction pin it too: ``benchmarks/bench_malloc.py``). A no-op returning False without
    glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trimmed = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return bool(trimmed and mapped)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(
    device: torch.device,
    *,
    dtype: torch.dtype,
    batch_sizes: Mapping[str, Any],
    malloc_pinned: bool | None = None,
    channels_last: bool,
) -> dict[str, Any]:
    """What the measurements depend on (no dates or times, so that outputs stay reproducible)."""
    cuda = device.type == "cuda"
    return {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "torch_version": torch.__version__,
        # the installed distribution's version: importing torchvision for it would cost every
        # job a second (its ops import torch._dynamo)
        "torchvision_version": version("torchvision"),
        "cuda_version": torch.version.cuda if cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "dtype": str(dtype).removeprefix("torch."),
        "channels_last": channels_last,
        "threads": torch.get_num_threads(),
        "batch_sizes": dict(batch_sizes),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "malloc_pinned": malloc_pinned,
        "python_version": platform.python_version(),
    }
