"""Shared fixtures: a small real Fashion-MNIST subset and tiny trained networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from adaptive_inference import data

REPO = Path(__file__).resolve().parents[1]

# The end-to-end files, longest first: together most of the suite's time. `make test` spreads
# whole files over the cores (pytest-xdist --dist loadfile --no-loadscope-reorder) and gives a
# worker its next file when it is almost done with the last, so these run first, side by side,
# and the short files fill in behind them: started last, a long file would run alone at the end.
SLOW_FILES = ("test_workflow.py", "test_imagenet_workflow.py", "test_slurm.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of SLOW_FILES first, in that order; every file keeps its own order."""
    rank = {name: position for position, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))


def fashion_mnist_source() -> Path:
    return data.DEBIAN_FASHION_MNIST


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    """Fashion-MNIST unpacked from Debian's package into a temporary root."""
    source = fashion_mnist_source()
    if not (source / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            "Fashion-MNIST is missing: `make test` installs Debian's dataset-fashion-mnist; "
            "run `sudo apt-get install dataset-fashion-mnist`."
        )
    root = tmp_path_factory.mktemp("fashion")
    data.prepare_fashion_mnist(root, source, download=False)
    return root


@pytest.fixture(scope="session")
def small_eval_set(fashion_root) -> TensorDataset:
    """The first 600 images of Fashion-MNIST's test set."""
    images, labels = data.fashion_mnist(fashion_root, train=False).tensors
    return TensorDataset(images[:600], labels[:600])


@pytest.fixture(scope="session")
def small_train_set(fashion_root) -> TensorDataset:
    images, labels = data.fashion_mnist(fashion_root, train=True).tensors
    return TensorDataset(images[:2000], labels[:2000])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
