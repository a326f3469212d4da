"""Training the networks of the default family, and exit heads on frozen backbones.

Recipe (measured on 2 CPU threads to put the deep network on top of the family within minutes):
SGD with Nesterov momentum, weight decay, a OneCycle learning-rate schedule, and a weighted sum of
the exits' cross-entropy losses; model and inputs in channels-last memory format.

With ``freeze_backbone=True`` only the exit heads learn and the backbone stays as it is (batch-norm
statistics included): the mechanism for heads added to pre-trained networks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from adaptive_inference.io import atomic_path
from adaptive_inference.models import MultiExitNetwork, build_network


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (the ``training`` config section, per network)."""

    epochs: int = 4
    batch_size: int = 256
    max_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    exit_weights: Sequence[float] | None = None
    seed: int = 0
    channels_last: bool = True
    eval_batch_size: int = 1024

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "TrainConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in section.items() if k in known})


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


def _tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images and labels of an in-memory dataset (``TensorDataset``) or of any dataset."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        return tensors[0], tensors[1]
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        index = torch.as_tensor(dataset.indices)
        return tuple(t[index] for t in dataset.dataset.tensors[:2])
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.as_tensor(labels)


def _memory_format(cfg: TrainConfig) -> torch.memory_format:
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


@torch.inference_mode()
def evaluate(
    model: MultiExitNetwork,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Top-1 accuracy of every exit."""
    model.eval()
    correct = torch.zeros(model.num_exits)
    fmt = torch.channels_last if images.dim() == 4 else torch.contiguous_format
    for index in _batches(len(labels), batch_size, None):
        outputs = model(images[index].to(device).contiguous(memory_format=fmt))
        for k, logits in enumerate(outputs):
            correct[k] += (logits.argmax(1).cpu() == labels[index]).sum()
    return (correct / len(labels)).tolist()


def train(
    model: MultiExitNetwork,
    train_set: Dataset,
    cfg: TrainConfig,
    *,
    val_set: Dataset | None = None,
    freeze_backbone: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """Train ``model`` in place; return the training curve (one row per epoch).

    The loss is ``sum_k w_k * CE(exit_k)`` with ``w = cfg.exit_weights`` (all ones if unset).
    """
    weights = list(cfg.exit_weights or [1.0] * model.num_exits)
    if len(weights) != model.num_exits:
        raise ValueError(
            f"exit_weights has {len(weights)} values but the network has {model.num_exits} exits"
        )
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    images, labels = _tensors(train_set)
    val = _tensors(val_set) if val_set is not None and len(val_set) else None
    fmt = _memory_format(cfg)
    device = torch.device(device)
    model.to(device=device, memory_format=fmt)

    if freeze_backbone:
        model.stages.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=cfg.max_lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    steps = len(_batches(len(labels), cfg.batch_size, None))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.max_lr, epochs=cfg.epochs, steps_per_epoch=steps
    )
    criterion = nn.CrossEntropyLoss()
    rows = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        if freeze_backbone:
            model.stages.eval()
        start = time.perf_counter()
        total_loss, total_correct, seen = 0.0, 0, 0
        bar = tqdm(
            _batches(len(labels), cfg.batch_size, generator),
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not progress,
            mininterval=2.0,
        )
        for index in bar:
            x = images[index].to(device, non_blocking=True)
            x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
            y = labels[index].to(device, non_blocking=True)
            outputs = model(x)
            loss = sum(w * criterion(out, y) for w, out in zip(weights, outputs))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(y)
            total_correct += int((outputs[-1].argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{total_correct / seen:.3f}", refresh=False)
        row: dict[str, Any] = {
            "epoch": epoch,
            "lr_end": schedule.get_last_lr()[0],
            "train_loss": total_loss / seen,
            "train_accuracy": total_correct / seen,
            "seconds": time.perf_counter() - start,
        }
        if val is not None:
            accuracies = evaluate(model, *val, cfg.eval_batch_size, device=device)
            for name, acc in zip(model.exit_names, accuracies):
                row[f"val_accuracy_{name}"] = acc
        rows.append(row)
    model.eval()
    return pd.DataFrame(rows)


def save_network(model: MultiExitNetwork, spec: Mapping[str, Any], path: Path | str) -> None:
    """Save weights with the spec that rebuilds the network (see :func:`load_network`).

    A pre-trained backbone (``arch: torchvision``) is not copied: only the exit heads are saved,
    and loading rebuilds the backbone from its weights (cached in ``$TORCH_HOME``).
    """
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if spec["arch"] == "torchvision":
        state = {k: v for k, v in state.items() if k.startswith("heads.")}
    with atomic_path(path) as tmp:
        torch.save({"spec": dict(spec), "state_dict": state}, tmp)


def load_network(
    path: Path | str, map_location: str | torch.device = "cpu", *, with_spec: bool = False
):
    """Rebuild a network saved by :func:`save_network`, in eval mode (and its spec if asked)."""
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    spec = checkpoint["spec"]
    model = build_network(**spec)
    if spec["arch"] == "torchvision":
        missing = model.load_state_dict(checkpoint["state_dict"], strict=False).missing_keys
        heads = [k for k in missing if k.startswith("heads.")]
        if heads:
            raise ValueError(f"{path} lacks the exit heads' weights {heads}; re-run train_network.")
    else:
        model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    return (model, spec) if with_spec else model


def plot_training_curve(curve: pd.DataFrame, path: Path | str, title: str = "") -> None:
    """Training loss and validation accuracy of every exit per epoch, saved as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    if curve.empty:  # a pre-trained network without intermediate exits: nothing was trained
        fig.text(0.5, 0.5, "pre-trained network used as is: no exit heads to train", ha="center")
    ax_loss.plot(curve["epoch"], curve["train_loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss (weighted exit CE)")
    if "train_accuracy" in curve:
        ax_acc.plot(curve["epoch"], curve["train_accuracy"] * 100, marker="o", label="train (final exit)")
    for column in [c for c in curve.columns if c.startswith("val_accuracy_")]:
        label = f"validation ({column.removeprefix('val_accuracy_')})"
        ax_acc.plot(curve["epoch"], curve[column] * 100, marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)")
    if not curve.empty:
        ax_acc.legend(fontsize="small")
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
