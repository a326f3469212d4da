"""Training the networks of the default family.

Recipe (measured on 2 CPU threads to put the deep network on top of the family within minutes):
SGD with Nesterov momentum, weight decay, a OneCycle learning-rate schedule, and a weighted sum of
the exits' cross-entropy losses; model and inputs in channels-last memory format; the forward
and backward passes in bfloat16 under ``torch.autocast`` where the device computes it natively
(``precision: auto``: on a CPU with AMX, exit_resnet's recipe trained in 92 s against 150 s, to
92.05% against 92.16% top-1; ``benchmarks/bench_training.py --accuracy``).

The budget is a number of optimizer **steps**, not of epochs: a recipe written in epochs for
55,000 images under-trains on 1,000 (a few steps per epoch), while a budget in steps trains a
small dataset for as many updates as a large one (many epochs of it). The training curve has
:data:`CURVE_POINTS` rows, evenly spaced in steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from adaptive_inference.device import autocast_dtype, memory_format
from adaptive_inference.models import MultiExitNetwork

CURVE_POINTS = 10
"""Rows of a training curve: the held-out accuracies after each tenth of the steps."""
EVAL_BATCH_SIZE = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run: a network's merged ``training`` config section
    (the schema holds the defaults). ``exit_weights`` None weighs every exit 1; ``precision``
    (:func:`~adaptive_inference.device.autocast_dtype`) is float32 unless asked, ``auto`` in the
    study's config."""

    steps: int
    batch_size: int
    max_lr: float
    momentum: float
    weight_decay: float
    seed: int
    channels_last: bool
    exit_weights: Sequence[float] | None = None
    precision: str = "float32"

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> TrainConfig:
        """From a training section; a key the run needs and the section lacks is an error."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in section and n != "exit_weights"]
        if missing:
            raise ValueError(f"the training section lacks {missing}")
        return cls(**{n: section[n] for n in names if n in section})


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


@torch.inference_mode()
def evaluate(
    model: MultiExitNetwork,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = EVAL_BATCH_SIZE,
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
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """Train ``model`` in place for ``cfg.steps`` optimizer steps; return the training curve.

    The loss is ``sum_k w_k * CE(exit_k)`` with ``w = cfg.exit_weights`` (all ones if unset).
    Batches are drawn epoch after epoch from a generator seeded with ``cfg.seed``, so a run is
    repeatable given the network's initial weights (seed the global generator before building
    it: :func:`~adaptive_inference.device.seed_everything`). The curve has one row per
    :data:`CURVE_POINTS`-th of the steps: ``step``, ``epoch`` (fractional), ``lr_end``, the
    training loss and accuracy (final exit) since the previous row, ``seconds``,
    ``computed_in`` (the arithmetic of the passes: ``float32``, or ``bfloat16`` under autocast)
    and, with a ``val_set``, the held-out accuracy of every exit (``val_accuracy_<exit>``).
    """
    weights = list(cfg.exit_weights or [1.0] * model.num_exits)
    if len(weights) != model.num_exits:
        raise ValueError(
            f"exit_weights has {len(weights)} values but the network has {model.num_exits} exits"
        )
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    generator = torch.Generator().manual_seed(cfg.seed)
    images, labels = _tensors(train_set)
    val = _tensors(val_set) if val_set is not None and len(val_set) else None
    fmt = memory_format(cfg.channels_last)
    device = torch.device(device)
    model.to(device=device, memory_format=fmt)
    autocast = autocast_dtype(cfg.precision, device)
    computed_in = str(autocast or torch.float32).removeprefix("torch.")
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.max_lr,
        momentum=cfg.momentum,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.max_lr, total_steps=cfg.steps
    )
    criterion = nn.CrossEntropyLoss()
    per_epoch = math.ceil(len(labels) / cfg.batch_size)
    checkpoints = {math.ceil(cfg.steps * (i + 1) / CURVE_POINTS) for i in range(CURVE_POINTS)}
    rows, step = [], 0
    total_loss, total_correct, seen, start = 0.0, 0, 0, time.perf_counter()
    model.train()
    with tqdm(total=cfg.steps, desc="training", disable=not progress, mininterval=2.0) as bar:
        while step < cfg.steps:
            for index in _batches(len(labels), cfg.batch_size, generator):
                x = images[index].to(device, non_blocking=True)
                x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
                y = labels[index].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    outputs = model(x)
                    loss = sum(w * criterion(out, y) for w, out in zip(weights, outputs))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                total_loss += float(loss.detach()) * len(y)
                total_correct += int((outputs[-1].argmax(1) == y).sum())
                seen += len(y)
                bar.update()
                if step in checkpoints:
                    row: dict[str, Any] = {
                        "step": step,
                        "epoch": step / per_epoch,
                        "lr_end": schedule.get_last_lr()[0],
                        "train_loss": total_loss / seen,
                        "train_accuracy": total_correct / seen,
                        "seconds": time.perf_counter() - start,
                        "computed_in": computed_in,
                    }
                    if val is not None:
                        accuracies = evaluate(model, *val, device=device)
                        model.train()
                        for name, acc in zip(model.exit_names, accuracies):
                            row[f"val_accuracy_{name}"] = acc
                    rows.append(row)
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}", refresh=False)
                    total_loss, total_correct, seen, start = 0.0, 0, 0, time.perf_counter()
                if step == cfg.steps:
                    break
    model.eval()
    return pd.DataFrame(rows)
