"""The default family's architectures as data: their names, default options and exits.

Torch-free on purpose: the workflow's config checks run while Snakemake parses the workflow (a
dry run included), and importing torch there would cost seconds. :mod:`adaptive_inference.models`
builds the networks from these defaults; nothing else restates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ARCHITECTURES = ("linear", "small_cnn", "exit_resnet")
"""The family the workflow trains itself."""

PRETRAINED = "torchvision"
"""The ``arch`` of torchvision's pre-trained classifiers (the paper's setup)."""

DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "linear": {},
    "small_cnn": {"widths": (16, 32)},
    "exit_resnet": {"widths": (32, 64, 128), "blocks_per_stage": 2},
}
"""Each architecture's options where the config leaves them out."""


def options_of(arch: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """An architecture's options: its defaults updated by the config's."""
    if arch not in DEFAULT_OPTIONS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return {**DEFAULT_OPTIONS[arch], **dict(options or {})}


def exit_count(arch: str, options: Mapping[str, Any] | None) -> int:
    """How many exits a network of the study has: one per stage of ``exit_resnet``, one for the
    other members of the family, one per exit point plus the classifier for a pre-trained one."""
    if arch == PRETRAINED:
        return len((options or {}).get("exits", [])) + 1
    if arch == "exit_resnet":
        return len(options_of(arch, options)["widths"])
    options_of(arch, options)  # an unknown architecture is an error
    return 1
