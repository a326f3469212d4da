"""An offline stand-in for the paper's setup: generated ImageNet-style folders and random weights
saved where torchvision's weights API looks for them.

* :func:`write_class_folders` / :func:`write_flat_folder` write small JPEGs in the two layouts of
  ILSVRC2012's validation set; the flat one comes with the official ground-truth file, a devkit
  ``data/meta.mat`` and a synset file, over 1,000 made-up wnids listed in a shuffled id order (so
  that the id -> wnid -> class index mapping is exercised, not the identity).
* :func:`save_random_weights` saves a randomly initialised torchvision model's state_dict under the
  file name of its weights' URL in ``$TORCH_HOME/hub/checkpoints/``: the real
  ``models.get_model(name, weights=...)`` then loads it with no network (GoogLeNet's file holds the
  auxiliary heads, as the real one does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import models

NUM_SYNSETS = 1000


def synsets(seed: int = 0) -> list[str]:
    """1,000 made-up wnids in a shuffled ILSVRC2012_ID order (id 1 first)."""
    wnids = [f"n{10000000 + 7 * i:08d}" for i in range(NUM_SYNSETS)]
    order = np.random.default_rng(seed).permutation(NUM_SYNSETS)
    return [wnids[i] for i in order]


def class_index(wnid: str) -> int:
    """torchvision's class index of a made-up wnid: its rank among the sorted wnids."""
    return sorted(synsets()).index(wnid)


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> None:
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 40, size=(size[1], size[0], 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=85)


def write_class_folders(root: Path, wnids: list[str], per_class: int, seed: int = 0) -> Path:
    """``root/<wnid>/<wnid>_<i>.JPEG`` images of varying sizes."""
    rng = np.random.default_rng(seed)
    for wnid in wnids:
        for i in range(per_class):
            size = (int(rng.integers(160, 320)), int(rng.integers(160, 320)))
            _jpeg(root / wnid / f"{wnid}_{i}.JPEG", rng, size)
    return root


def write_devkit(root: Path, ids: list[int]) -> Path:
    """An ``ILSVRC2012_devkit_t12`` folder: ``data/meta.mat`` (the synsets, with a non-leaf one
    that must be ignored) and the ground truth of ``ids``."""
    import scipy.io

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    fields = [
        ("ILSVRC2012_ID", "O"),
        ("WNID", "O"),
        ("words", "O"),
        ("gloss", "O"),
        ("num_children", "O"),
    ]
    wnids = synsets()
    records = np.array(
        [(i + 1, w, f"class {w}", "", 0) for i, w in enumerate(wnids)]
        + [(1001, "n99999999", "entity", "", 5)],
        dtype=fields,
    )
    scipy.io.savemat(data / "meta.mat", {"synsets": records})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def write_flat_folder(
    root: Path, count: int, seed: int = 0, classes: int = 3
) -> dict[str, Path | list[str]]:
    """The official flat layout: ``ILSVRC2012_val_%08d.JPEG`` files, a devkit and a synset file.

    Returns the paths and the wnid of each image (in file order).
    """
    rng = np.random.default_rng(seed)
    wnids = synsets()
    ids = [int(rng.integers(1, classes + 1)) * 97 for _ in range(count)]  # a few ids, far apart
    images = root / "val"
    for n in range(count):
        _jpeg(images / f"ILSVRC2012_val_{n + 1:08d}.JPEG", rng, (200, 180))
    devkit = write_devkit(root / "ILSVRC2012_devkit_t12", ids)
    synset_file = root / "synsets.txt"
    synset_file.write_text("".join(f"{w} words\n" for w in wnids))
    return {
        "eval": images,
        "devkit": devkit,
        "synsets": synset_file,
        "wnids": [wnids[i - 1] for i in ids],
    }


def _builder_kwargs(model: str) -> dict:
    # GoogLeNet's pre-trained file holds the auxiliary heads; build them so the state_dict does.
    return {"aux_logits": True, "init_weights": False} if model == "googlenet" else {}


def save_random_weights(torch_home: Path, model: str, weights: str, seed: int = 0) -> Path:
    """A random state_dict under torchvision's expected file name for ``weights``."""
    enum = models.get_weight(weights)
    torch.manual_seed(seed)
    network = models.get_model(
        model, weights=None, num_classes=len(enum.meta["categories"]), **_builder_kwargs(model)
    )
    path = Path(torch_home) / "hub" / "checkpoints" / os.path.basename(enum.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), path)
    return path
