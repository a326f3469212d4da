"""ImageNet's validation set (and an optional training subset) as an index of images and labels.

The paper's setup reads ILSVRC2012's validation images in one of two layouts:

* ``class_folders``: ``<eval>/<wnid>/<image>`` (what torchvision's ``ImageNet`` dataset and most
  preparation scripts leave behind);
* ``flat``: the 50,000 ``ILSVRC2012_val_*.JPEG`` files of the official archive in one folder, with
  the official ground-truth file (one ILSVRC2012_ID per image, in file-name order) and the devkit's
  ``meta.mat`` (or a text file of the synsets in ILSVRC2012_ID order) that maps those ids to wnids.

Labels are class indices in torchvision's order, the order of the pre-trained weights: the rank of
the class's wnid among the sorted wnids of the 1,000 classes. Where the synsets are known (devkit
or synset file), a class-folder set may hold a subset of the classes; without them, the folders
must be all the classes of the networks (their sorted order is the class index).

:func:`build_index` lists the images once, in a fixed order (the example ids), and decodes each one
(in parallel): an unreadable image is an error naming its path, or, with
``corrupt_images: skip``, is left out and counted. Every later step reads images through
:class:`ImageTable` from that index, each network with its own transforms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from adaptive_inference.errors import CorruptImageError, DatasetNotFoundError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
GROUND_TRUTH_FILE = "ILSVRC2012_validation_ground_truth.txt"
INDEX_COLUMNS = ["example_id", "file", "wnid", "label"]


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def synsets_in_id_order(devkit: str | Path | None, synsets: str | Path | None) -> list[str] | None:
    """The wnids of the classes in ILSVRC2012_ID order (id 1 first), or ``None`` if unknown.

    ``synsets`` is a text file of one wnid per line in id order; otherwise the devkit's
    ``data/meta.mat`` is read (its leaf synsets, ``num_children == 0``, are the 1,000 classes).
    """
    if synsets is not None:
        path = Path(synsets)
        if not path.is_file():
            raise DatasetNotFoundError(f"data.imagenet.synsets: {path} does not exist.")
        wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        return wnids
    if devkit is None:
        return None
    meta = Path(devkit) / "data" / "meta.mat"
    if not meta.is_file():
        raise DatasetNotFoundError(
            f"data.imagenet.devkit: {meta} does not exist; point `devkit` at the extracted "
            "ILSVRC2012_devkit_t12 folder (it holds data/meta.mat)."
        )
    import scipy.io

    records = scipy.io.loadmat(meta, squeeze_me=True)["synsets"]
    leaves = sorted(
        (int(r["ILSVRC2012_ID"]), str(r["WNID"])) for r in records if int(r["num_children"]) == 0
    )
    return [wnid for _, wnid in leaves]


def _ground_truth_ids(devkit: str | Path | None, ground_truth: str | Path | None) -> list[int]:
    if ground_truth:
        path = Path(ground_truth)
    elif devkit:
        path = Path(devkit) / "data" / GROUND_TRUTH_FILE
    else:
        raise DatasetNotFoundError(
            "data.imagenet.layout is flat but neither `ground_truth` nor `devkit` is set: give the "
            f"official {GROUND_TRUTH_FILE} (or the ILSVRC2012_devkit_t12 folder that holds it)."
        )
    if not path.is_file():
        raise DatasetNotFoundError(f"ImageNet ground-truth file {path} does not exist.")
    try:
        return [int(line) for line in path.read_text().split()]
    except ValueError as error:
        raise DatasetNotFoundError(
            f"{path} is not an ILSVRC2012 ground-truth file (one integer class id per line): "
            f"{error}"
        ) from None


def list_images(
    section: Mapping[str, Any], folder_key: str = "eval", num_classes: int | None = None
) -> pd.DataFrame:
    """The images of ``section[folder_key]`` with their wnid and class index, in a fixed order.

    Args:
        section: the config's ``data.imagenet`` section.
        folder_key: ``eval`` (the validation images, in ``section["layout"]``) or ``train`` (a
            class-folder training set, at most ``train_per_class`` images per class).
        num_classes: the networks' number of classes (checked against the folders when the
            synsets are unknown).
    """
    folder = section.get(folder_key)
    if not folder:
        raise DatasetNotFoundError(f"data.imagenet.{folder_key} is not set in the config.")
    root = Path(folder)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"ImageNet folder {root} (data.imagenet.{folder_key}) does not exist: download the "
            "ILSVRC2012 validation images and point the config at them (README, paper setup)."
        )
    synsets = synsets_in_id_order(section.get("devkit"), section.get("synsets"))
    layout = section.get("layout", "class_folders") if folder_key == "eval" else "class_folders"
    if layout == "flat":
        frame = _flat(root, section, synsets)
    else:
        per_class = section.get("train_per_class") if folder_key == "train" else None
        frame = _class_folders(root, per_class)
    class_index = _class_index(frame["wnid"].unique(), synsets, num_classes, root)
    frame["label"] = frame["wnid"].map(class_index).astype(np.int64)
    frame.insert(0, "example_id", np.arange(len(frame), dtype=np.int64))
    return frame[INDEX_COLUMNS]


def _class_folders(root: Path, per_class: int | None) -> pd.DataFrame:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        loose = _images_in(root)
        hint = (
            f" It holds {len(loose)} images directly: for the official flat validation folder set "
            "`data.imagenet.layout: flat` with the ground-truth file."
            if loose
            else ""
        )
        raise DatasetNotFoundError(
            f"{root} has no class folders; expected {root}/<wnid>/<image> "
            f"(layout class_folders).{hint}"
        )
    rows = []
    for wnid in classes:
        files = _images_in(root / wnid)[:per_class]
        if not files:
            raise DatasetNotFoundError(
                f"class folder {root / wnid} holds no images ({', '.join(IMAGE_EXTENSIONS)})."
            )
        rows += [(str(f.relative_to(root)), wnid) for f in files]
    return pd.DataFrame(rows, columns=["file", "wnid"])


def _flat(root: Path, section: Mapping[str, Any], synsets: list[str] | None) -> pd.DataFrame:
    files = _images_in(root)
    if not files:
        folders = [p.name for p in root.iterdir() if p.is_dir()]
        hint = (
            " It holds class folders: set `data.imagenet.layout: class_folders`." if folders else ""
        )
        raise DatasetNotFoundError(f"{root} holds no images (layout flat).{hint}")
    ids = _ground_truth_ids(section.get("devkit"), section.get("ground_truth"))
    if len(ids) != len(files):
        raise DatasetNotFoundError(
            f"the ground-truth file has {len(ids)} labels but {root} holds {len(files)} images; "
            "the flat layout needs every validation image and one label per image, in file-name "
            "order."
        )
    if synsets is None:
        raise DatasetNotFoundError(
            "data.imagenet.layout is flat: the ground truth's class ids need the devkit's "
            "data/meta.mat (`devkit`) or a synset file (`synsets`: one wnid per line, in "
            "ILSVRC2012_ID order) to become wnids."
        )
    bad = sorted({i for i in ids if not 1 <= i <= len(synsets)})
    if bad:
        raise DatasetNotFoundError(
            f"the ground truth holds class ids {bad[:5]} outside 1..{len(synsets)} (the synsets)."
        )
    return pd.DataFrame({"file": [f.name for f in files], "wnid": [synsets[i - 1] for i in ids]})


def _class_index(
    wnids: Sequence[str], synsets: list[str] | None, num_classes: int | None, root: Path
) -> dict[str, int]:
    if synsets is not None:
        order = {wnid: rank for rank, wnid in enumerate(sorted(synsets))}
        unknown = sorted(set(wnids) - set(order))
        if unknown:
            raise DatasetNotFoundError(
                f"{root} has classes {unknown[:5]} that are not among the synsets of the devkit / "
                "synset file."
            )
        if num_classes is not None and len(order) != num_classes:
            raise DatasetNotFoundError(
                f"the synsets list {len(order)} classes but the networks have {num_classes}."
            )
        return {wnid: order[wnid] for wnid in wnids}
    wnids = sorted(wnids)
    if num_classes is not None and len(wnids) != num_classes:
        raise DatasetNotFoundError(
            f"{root} has {len(wnids)} class folders but the networks predict {num_classes} "
            "classes, so the folders' order cannot be their class index. Use all the classes, or "
            "set `data.imagenet.devkit` (or `synsets`) so that each folder's wnid gives its index."
        )
    return {wnid: rank for rank, wnid in enumerate(wnids)}


def _check_image(path: str) -> str | None:
    """``None`` if the image decodes fully, else the reason it does not."""
    try:
        with Image.open(path) as image:
            image.convert("RGB").load()
    except Exception as error:  # noqa: BLE001 - any decoder failure makes the image unusable
        return f"{type(error).__name__}: {error}"
    return None


def find_corrupt(
    root: str | Path, files: Sequence[str], workers: int = 1, progress: bool = True
) -> dict[str, str]:
    """Decode every image (in ``workers`` processes); the unreadable ones and why."""
    paths = [str(Path(root) / f) for f in files]
    bar = {"total": len(paths), "desc": "decode", "disable": not progress, "mininterval": 2.0}
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            chunk = max(1, len(paths) // (workers * 16))
            reasons = list(tqdm(pool.map(_check_image, paths, chunksize=chunk), **bar))
    else:
        reasons = [_check_image(p) for p in tqdm(paths, **bar)]
    return {f: r for f, r in zip(files, reasons) if r is not None}


def build_index(
    section: Mapping[str, Any],
    folder_key: str = "eval",
    *,
    num_classes: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The index of one image set (:func:`list_images`) with the unreadable images handled.

    With ``section["corrupt_images"] == "error"`` (the default) an unreadable image raises
    :class:`CorruptImageError` naming every such path; with ``"skip"`` they are dropped (the example
    ids are renumbered) and listed in the returned summary.
    """
    frame = list_images(section, folder_key, num_classes)
    root = Path(section[folder_key])
    corrupt = find_corrupt(root, frame["file"].tolist(), workers, progress)
    if corrupt and section.get("corrupt_images", "error") != "skip":
        listed = "\n".join(f"  {root / f}: {why}" for f, why in list(corrupt.items())[:10])
        raise CorruptImageError(
            f"{len(corrupt)} of {len(frame)} images in {root} cannot be read:\n{listed}\nReplace "
            "them, or set `data.imagenet.corrupt_images: skip` to leave them out (they are then "
            "counted in the index's summary)."
        )
    if corrupt:
        frame = frame[~frame["file"].isin(corrupt)].reset_index(drop=True)
        frame["example_id"] = np.arange(len(frame), dtype=np.int64)
    summary = {
        "root": str(root),
        "layout": section.get("layout", "class_folders")
        if folder_key == "eval"
        else "class_folders",
        "num_images": len(frame),
        "num_classes_present": int(frame["wnid"].nunique()),
        "skipped_corrupt": len(corrupt),
        "corrupt": corrupt,
    }
    return frame, summary


class ImageTable(Dataset):
    """Images listed in an index table (:func:`build_index`), read with one network's transforms.

    Yields ``(image, label)``; the item's index is its ``example_id``. A file that cannot be read
    raises :class:`CorruptImageError` with its path.
    """

    def __init__(
        self, index: pd.DataFrame, root: str | Path, transform: Callable | None = None
    ) -> None:
        self.root = Path(root)
        self.files = index["file"].tolist()
        self.targets = index["label"].to_numpy(dtype=np.int64, copy=True)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path = self.root / self.files[i]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except Exception as error:  # noqa: BLE001 - re-raised with the path and the fix
            raise CorruptImageError(
                f"cannot read image {path}: {error}. It was readable when the index was built: "
                "check the disk, or re-run the workflow (the index rule decodes every image)."
            ) from error
        return (self.transform(image) if self.transform else image), int(self.targets[i])
