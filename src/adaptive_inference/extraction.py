"""Per-example predictions at every exit of a network over the evaluation set.

For each example and each exit, :func:`extract` keeps the class probabilities (a NumPy array of
shape ``(exits, examples, classes)``) and a tidy table with the label, the top-k classes, the sorted
top-k probabilities and the confidence features the policies use (max probability, margin between
the two most likely classes, entropy), plus whether the answer is right at top-1 and top-5.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from adaptive_inference.decision import confidence_features
from adaptive_inference.device import make_loader, memory_format
from adaptive_inference.io import read_json, write_json, write_npy, write_parquet
from adaptive_inference.models import MultiExitNetwork


@dataclass
class Extraction:
    """What :func:`extract` returns: probabilities, the tidy table, and a manifest."""

    probs: np.ndarray
    table: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)

    def write(
        self, probs_path: Path | str, table_path: Path | str, manifest_path: Path | str
    ) -> None:
        """Write the three files, the manifest last (its presence marks a complete extraction)."""
        write_npy(self.probs, probs_path)
        write_parquet(self.table, table_path)
        manifest = dict(
            self.manifest, files={"probs": Path(probs_path).name, "table": Path(table_path).name}
        )
        write_json(manifest, manifest_path)

    @classmethod
    def read(
        cls, probs_path: Path | str, table_path: Path | str, manifest_path: Path | str
    ) -> Extraction:
        """The three files written by :meth:`write`."""
        manifest = read_json(manifest_path)
        manifest.pop("files", None)
        return cls(np.load(probs_path), pd.read_parquet(table_path), manifest)


def shard(dataset: Dataset, index: int, count: int) -> tuple[Dataset, int]:
    """Shard ``index`` of ``count`` contiguous shards of ``dataset``, and its first example id."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} does not exist among {count} shards")
    n = len(dataset)
    start, stop = n * index // count, n * (index + 1) // count
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[start:stop] for t in dataset.tensors)), start
    return Subset(dataset, range(start, stop)), start


def merge_extractions(parts: Sequence[Extraction]) -> Extraction:
    """One extraction from the extractions of consecutive shards (in any order).

    The result equals an extraction of the whole dataset in one job: probabilities in example
    order, the table sorted by exit then example id, the manifest's counts summed.
    """
    if not parts:
        raise ValueError("no shard to merge")
    parts = sorted(parts, key=lambda part: part.manifest["first_id"])
    expected = 0
    for part in parts:
        if part.manifest["first_id"] != expected:
            raise ValueError(f"shards do not tile the dataset: expected one starting at {expected}")
        expected += part.manifest["num_examples"]
    probs = np.concatenate([part.probs for part in parts], axis=1)
    table = pd.concat([part.table for part in parts], ignore_index=True)
    table = table.sort_values(["exit", "example_id"], kind="stable", ignore_index=True)
    manifest = dict(parts[0].manifest)
    seconds = sum(part.manifest["seconds"] for part in parts)
    manifest.update(
        num_examples=expected,
        probs_shape=list(probs.shape),
        first_id=0,
        shards=len(parts),
        seconds=seconds,
        loop_seconds=sum(part.manifest["loop_seconds"] for part in parts),
        images_per_second=expected / seconds if seconds > 0 else None,
    )
    return Extraction(probs, table, manifest)


def _batches(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int):
    """(images, labels) batches in order. An in-memory dataset is sliced (views, no copies; its
    tensors pinned once when the target is a GPU); others go through a :class:`DataLoader`."""
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors[:2]
        if device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()
        for start in range(0, len(labels), batch_size):
            yield images[start : start + batch_size], labels[start : start + batch_size]
    else:
        yield from make_loader(dataset, batch_size, device=device, num_workers=num_workers)


class _HostBuffers:
    """Per-example outputs gathered on the host, example-major so that each batch's rows are one
    contiguous block: on a GPU, the copies are asynchronous into pinned memory and the device
    runs ahead of the host (one synchronisation at the end, none per batch)."""

    def __init__(
        self, n: int, exits: int, classes: int, k: int, probs_dtype: torch.dtype, pin: bool
    ):
        def empty(*shape, dtype=torch.float32):
            return torch.empty(shape, dtype=dtype, pin_memory=pin)

        self.probs = empty(n, exits, classes, dtype=probs_dtype)
        self.top_p = empty(n, exits, k)
        self.top_i = empty(n, exits, k, dtype=torch.int32)
        self.entropy = empty(n, exits)
        self.margin = empty(n, exits)
        self.labels = empty(n, dtype=torch.int64)

    def put(
        self, start: int, probs: torch.Tensor, feats: Mapping[str, torch.Tensor], labels
    ) -> None:
        stop = start + probs.shape[0]
        b, e = probs.shape[:2]
        self.probs[start:stop].copy_(probs.to(self.probs.dtype), non_blocking=True)
        self.top_p[start:stop].copy_(feats["top_p"].reshape(b, e, -1), non_blocking=True)
        self.top_i[start:stop].copy_(feats["top_i"].reshape(b, e, -1).int(), non_blocking=True)
        self.entropy[start:stop].copy_(feats["entropy"].reshape(b, e), non_blocking=True)
        self.margin[start:stop].copy_(feats["margin"].reshape(b, e), non_blocking=True)
        self.labels[start:stop].copy_(torch.as_tensor(labels), non_blocking=True)

    def exit_major(self, name: str) -> np.ndarray:
        """A buffer as a NumPy array with the exit first: (exits, examples, ...)."""
        return np.ascontiguousarray(np.swapaxes(getattr(self, name).numpy(), 0, 1))


@torch.inference_mode()
def extract(
    model: MultiExitNetwork,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    topk: int = 5,
    probs_dtype: str = "float32",
    dtype: str = "float32",
    channels_last: bool = True,
    progress: bool = True,
    first_id: int = 0,
) -> Extraction:
    """Run ``model`` over ``dataset`` (eval and inference mode) and keep every exit's answer.

    ``dtype`` is the precision of the weights and activations (``float32``, the paper's numbers,
    or ``bfloat16`` / ``float16``); probabilities are computed in float32 from the logits.
    ``first_id`` is the example id of the dataset's first item (a shard's offset, see
    :func:`shard`); ids run on from it.
    """
    device = torch.device(device)
    compute_dtype = getattr(torch, dtype)
    model = model.eval().to(device=device, dtype=compute_dtype)
    fmt = memory_format(channels_last)
    if channels_last:
        model = model.to(memory_format=fmt)
    n = len(dataset)
    if n == 0:
        raise ValueError("the evaluation set is empty")
    host: _HostBuffers | None = None
    start, position = time.perf_counter(), 0
    batches = _batches(dataset, batch_size, device, num_workers)
    total = -(-n // batch_size)
    for images, targets in tqdm(
        batches, total=total, desc="extract", disable=not progress, mininterval=2.0
    ):
        images = images.to(device, dtype=compute_dtype, non_blocking=True)
        if images.dim() == 4:
            images = images.contiguous(memory_format=fmt)
        outputs = model(images)
        probs = torch.stack(
            [out.float().softmax(1) for out in outputs], dim=1
        )  # (batch, exits, classes)
        feats = confidence_features(probs.flatten(0, 1), topk)
        if host is None:
            k = feats["top_p"].shape[1]
            host = _HostBuffers(
                n,
                probs.shape[1],
                probs.shape[2],
                k,
                getattr(torch, probs_dtype),
                device.type == "cuda",
            )
        host.put(position, probs, feats, targets)
        position += probs.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    loop_seconds = time.perf_counter() - start
    top_p = host.exit_major("top_p")
    feats_np = {
        "top_p": top_p,
        "top_i": host.exit_major("top_i"),
        "max_prob": top_p[..., 0],
        "margin": host.exit_major("margin"),
        "entropy": host.exit_major("entropy"),
    }
    probs_out = host.exit_major("probs")
    table = _tidy(model, host.labels.numpy(), feats_np, first_id)
    seconds = time.perf_counter() - start
    manifest = {
        "network_exits": list(model.exit_names),
        "num_examples": n,
        "first_id": first_id,
        "num_classes": int(probs_out.shape[2]),
        "probs_shape": list(probs_out.shape),
        "probs_dtype": probs_dtype,
        "topk": int(top_p.shape[2]),
        "columns": {c: str(t) for c, t in table.dtypes.items()},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": dtype,
        "channels_last": channels_last,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "num_workers": num_workers,
        "batch_size": batch_size,
        "seconds": seconds,
        "loop_seconds": loop_seconds,
        "images_per_second": n / seconds if seconds > 0 else None,
        "torch": torch.__version__,
    }
    return Extraction(probs_out, table, manifest)


def _tidy(
    model: MultiExitNetwork, labels: np.ndarray, feats: Mapping[str, np.ndarray], first_id: int = 0
) -> pd.DataFrame:
    """One row per (example, exit), example ids ascending within each exit."""
    exits, n, k = feats["top_i"].shape
    top_i = feats["top_i"].astype(np.int32)
    top_p = feats["top_p"].astype(np.float32)
    label = np.tile(labels, exits)
    flat_i = top_i.reshape(exits * n, k)
    columns: dict[str, Any] = {
        "example_id": np.tile(np.arange(first_id, first_id + n, dtype=np.int64), exits),
        "label": label,
        "exit": np.repeat(np.arange(exits, dtype=np.int16), n),
        "exit_name": pd.Categorical(
            np.repeat(np.asarray(model.exit_names), n), categories=list(model.exit_names)
        ),
        "prediction": flat_i[:, 0],
        "correct_top1": flat_i[:, 0] == label,
        "correct_top5": (flat_i[:, :5] == label[:, None]).any(1),
        "max_prob": feats["max_prob"].reshape(-1).astype(np.float32),
        "margin": feats["margin"].reshape(-1).astype(np.float32),
        "entropy": feats["entropy"].reshape(-1).astype(np.float32),
    }
    for j in range(k):
        columns[f"top{j + 1}_class"] = flat_i[:, j]
    for j in range(k):
        columns[f"top{j + 1}_prob"] = top_p.reshape(exits * n, k)[:, j]
    return pd.DataFrame(columns)
