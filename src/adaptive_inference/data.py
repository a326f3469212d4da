"""Datasets of the study: Fashion-MNIST (the embedded default) and generic image folders.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package (gzip'd IDX files under
``/usr/share/datasets/fashion-mnist``). :func:`prepare_fashion_mnist` unpacks those files into the
layout torchvision's :class:`~torchvision.datasets.FashionMNIST` reads
(``<root>/FashionMNIST/raw/<name>``); where they are absent, torchvision's own download is used if
allowed, and otherwise a :class:`DatasetNotFoundError` says how to get them.

A generic class-folder dataset (torchvision :class:`~torchvision.datasets.ImageFolder`) with
configurable transforms serves any other image data. ImageNet (the paper's setup) is read from an
index of its images (:mod:`adaptive_inference.imagenet`), each network with its own weights'
transforms.

Every dataset here yields ``(image_tensor, label)`` pairs; the example id of an item is its index.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from adaptive_inference.errors import DatasetNotFoundError
from adaptive_inference.imagenet import ImageTable
from adaptive_inference.io import atomic_path
from adaptive_inference.layout import (
    FASHION_MNIST_FILES,
    fashion_mnist_prepared,
    fashion_mnist_raw,
)

if TYPE_CHECKING:
    from torchvision import datasets, transforms

# torchvision is imported where its datasets and transforms are used: the default study's jobs
# after prepare_data read the prepared tensors and should not pay its import (over a second).

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Mean and standard deviation of Fashion-MNIST's training pixels (in [0, 1]).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


def prepare_fashion_mnist(
    root: Path | str, source: Path | str | None, download: bool
) -> list[Path]:
    """Put Fashion-MNIST's raw IDX files into ``<root>/FashionMNIST/raw``, decode each split once
    into ``<root>/FashionMNIST/prepared/`` (what :func:`fashion_mnist` reads) and return the paths.

    Args:
        root: the folder torchvision's ``FashionMNIST(root)`` will read.
        source: a folder holding the four ``*-ubyte.gz`` files (Debian's package puts them in
            ``/usr/share/datasets/fashion-mnist``); ``None`` skips it.
        download: fall back on torchvision's download when ``source`` lacks the files.
    """
    raw = _unpack_fashion_mnist(Path(root), source, download)
    return raw + [_decode_fashion_mnist(Path(root), train) for train in (True, False)]


def _unpack_fashion_mnist(root: Path, source: Path | str | None, download: bool) -> list[Path]:
    targets = [Path(path) for path in fashion_mnist_raw(str(root))]
    if all(t.exists() for t in targets):
        return targets
    gz = [Path(source) / f"{name}.gz" for name in FASHION_MNIST_FILES] if source else []
    if gz and all(p.exists() for p in gz):
        targets[0].parent.mkdir(parents=True, exist_ok=True)
        for src, dst in zip(gz, targets):
            with gzip.open(src, "rb") as fin, atomic_path(dst) as tmp, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        return targets
    if download:
        from torchvision import datasets

        try:
            datasets.FashionMNIST(root, train=True, download=True)
            datasets.FashionMNIST(root, train=False, download=True)
        except Exception as error:  # noqa: BLE001 - re-raised with the fix
            raise DatasetNotFoundError(
                _fashion_mnist_help(source, f"the download failed: {error}")
            ) from error
        return targets
    raise DatasetNotFoundError(_fashion_mnist_help(source, "downloads are disabled"))


def _decode_fashion_mnist(root: Path, train: bool) -> Path:
    """Decode a split's IDX files through torchvision's ``FashionMNIST`` once, for every job."""
    from torchvision import datasets

    path = Path(fashion_mnist_prepared(str(root), train))
    if not path.exists():
        ds = datasets.FashionMNIST(root, train=train, download=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save({"images": ds.data, "labels": ds.targets.long()}, tmp)
    return path


def _fashion_mnist_help(source: Path | str | None, why: str) -> str:
    return (
        f"Fashion-MNIST not found: no {', '.join(n + '.gz' for n in FASHION_MNIST_FILES)} in "
        f"{source} and {why}. Install Debian's package (`sudo apt-get install "
        "dataset-fashion-mnist`, files land in /usr/share/datasets/fashion-mnist), or set "
        "`data.source` in the config to a folder holding those four files, or allow "
        "`data.download: true` on a machine with network."
    )


def fashion_mnist(root: Path | str, train: bool) -> TensorDataset:
    """Fashion-MNIST as normalised float tensors (N, 1, 28, 28) with int64 labels.

    Reads the split :func:`prepare_fashion_mnist` decoded (a tensor file: the jobs that read the
    data neither decode the IDX files again nor import torchvision, over a second each).
    """
    path = Path(fashion_mnist_prepared(str(root), train))
    if not path.exists():
        raise DatasetNotFoundError(
            f"Fashion-MNIST is not prepared under {root}: {path} is missing. Run the workflow's "
            "`prepare_data` rule (or `prepare_fashion_mnist`) first."
        )
    split = torch.load(path, weights_only=True)
    images = split["images"].float().div_(255.0).sub_(FASHION_MNIST_MEAN).div_(FASHION_MNIST_STD)
    return TensorDataset(images.unsqueeze(1).contiguous(), split["labels"])


def build_transform(spec: Mapping[str, Any]) -> transforms.Compose:
    """Image transforms from config: ``resize``, ``center_crop``, ``grayscale``, ``mean``,
    ``std``."""
    from torchvision import transforms

    steps: list[Any] = []
    if spec.get("grayscale"):
        steps.append(transforms.Grayscale(num_output_channels=1))
    if spec.get("resize"):
        steps.append(transforms.Resize(spec["resize"]))
    if spec.get("center_crop"):
        steps.append(transforms.CenterCrop(spec["center_crop"]))
    steps.append(transforms.ToTensor())
    if spec.get("mean") is not None and spec.get("std") is not None:
        steps.append(transforms.Normalize(spec["mean"], spec["std"]))
    return transforms.Compose(steps)


def image_folder(root: Path | str, transform_spec: Mapping[str, Any]) -> datasets.ImageFolder:
    """A class-folder dataset (``root/<class>/<image>``) with transforms from config."""
    from torchvision import datasets

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} does not exist: point `data.image_folder` at a folder with one "
            "sub-folder of images per class."
        )
    try:
        return datasets.ImageFolder(root, transform=build_transform(transform_spec))
    except FileNotFoundError as error:
        raise DatasetNotFoundError(
            f"{root} is not a class-folder dataset ({error}); expected {root}/<class>/<image>."
        ) from error


def imagenet_index_path(root: Path | str, which: str) -> Path:
    """Where the index of ImageNet's ``eval`` or ``train`` images is written (under
    ``data.root``)."""
    return Path(root) / "imagenet" / f"{which}_index.parquet"


def load_split(
    data_cfg: Mapping[str, Any], root: Path | str, train: bool, transform: Any = None
) -> Dataset:
    """The training set (``train=True``) or the evaluation set of the configured dataset.

    ``data_cfg["limit_train"]`` / ``["limit_eval"]``, when set, keep only that many examples
    (the first ones; for quick runs and tests). ``transform`` is a network's own preprocessing
    (ImageNet: its weights' transforms); other datasets bring theirs.
    """
    dataset = _load_full_split(data_cfg, root, train, transform)
    limit = data_cfg.get("limit_train" if train else "limit_eval")
    if limit is None or limit >= len(dataset):
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:limit] for t in dataset.tensors))
    return Subset(dataset, range(limit))


def _load_full_split(
    data_cfg: Mapping[str, Any], root: Path | str, train: bool, transform: Any
) -> Dataset:
    name = data_cfg["dataset"]
    if name == "fashion_mnist":
        return fashion_mnist(root, train=train)
    if name == "imagenet":
        which = "train" if train else "eval"
        path = imagenet_index_path(root, which)
        if not path.exists():
            raise DatasetNotFoundError(
                f"ImageNet's {which} index {path} is missing: run the workflow's `prepare_data` "
                f"rule (it lists and checks the images of data.imagenet.{which})."
            )
        return ImageTable(pd.read_parquet(path), data_cfg["imagenet"][which], transform)
    if name == "image_folder":
        folders = data_cfg["image_folder"]
        folder = folders["train"] if train else folders["eval"]
        if folder is None:
            raise DatasetNotFoundError(
                f"data.image_folder.{'train' if train else 'eval'} is not set in the config."
            )
        return image_folder(folder, folders["transform"])
    raise ValueError(f"unknown dataset {name!r}; choose fashion_mnist, image_folder or imagenet")


def labels_of(dataset: Dataset) -> torch.Tensor:
    """All labels of a dataset without loading its images."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if hasattr(dataset, "targets"):  # ImageFolder, the ImageNet index's ImageTable
        return torch.as_tensor(dataset.targets, dtype=torch.long)
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.long)


def input_shape(dataset: Dataset) -> tuple[int, ...]:
    """The (C, H, W) shape of the dataset's first image."""
    return tuple(dataset[0][0].shape)


def num_classes(dataset: Dataset) -> int:
    if isinstance(dataset, Subset):
        return num_classes(dataset.dataset)
    if hasattr(dataset, "classes") and hasattr(dataset, "class_to_idx"):  # ImageFolder
        return len(dataset.classes)
    return int(labels_of(dataset).max()) + 1
