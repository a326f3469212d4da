"""The errors a study's data can raise, each naming the problem and the fix.

They live here, not in the module of one dataset, so that every dataset module (and the checks
run before any job) can raise and catch them without importing each other.
"""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """The data a study needs is not where the config says, with the fix in the message."""


class CorruptImageError(OSError):
    """An image file that cannot be decoded, with its path and the fix."""
