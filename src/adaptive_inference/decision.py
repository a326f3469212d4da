"""The policy's own decision as a few tensor operations, and its measured cost.

A policy decides at a node from that node's logits: softmax, the sorted top-k probabilities, the
margin between the two most likely classes and the entropy, standardised, then one linear rule
per decision step (:class:`~adaptive_inference.policies.NodeRule`). This is what an adaptive
runtime computes after a stage, so its time is a real cost of the adaptive system: it is measured
here with the same timers as the networks (:func:`adaptive_inference.timing.time_forward`) and
paid at every node where a policy decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from adaptive_inference.extraction import confidence_features
from adaptive_inference.timing import time_forward


def decision_features(logits: torch.Tensor, topk: int) -> torch.Tensor:
    """Features of a batch of logits: ``top1..topk`` probabilities, margin, entropy (columns)."""
    f = confidence_features(logits.float().softmax(1), topk)
    return torch.cat([f["top_p"], f["margin"][:, None], f["entropy"][:, None]], dim=1)


class LinearDecision(nn.Module):
    """``((features - mean) / scale) @ coef + intercept > 0``: one linear decision step."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, coef: torch.Tensor, intercept: float, topk: int):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())
        self.register_buffer("coef", coef.float())
        self.intercept = float(intercept)
        self.topk = topk

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        x = (decision_features(logits, self.topk) - self.mean) / self.scale
        return x @ self.coef + self.intercept > 0


def time_decision(
    *,
    num_classes: int,
    topk: int,
    batch_size: int,
    warmup: int,
    iterations: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, Any]:
    """Median time (ms) of one decision on a batch of logits, and per example."""
    generator = torch.Generator().manual_seed(seed)
    features = topk + 2
    rule = LinearDecision(
        torch.randn(features, generator=generator),
        torch.rand(features, generator=generator) + 0.5,
        torch.randn(features, generator=generator),
        0.1,
        topk,
    ).to(device)
    logits = torch.randn(batch_size, num_classes, generator=generator).to(device)
    samples = time_forward(rule, logits, warmup=warmup, iterations=iterations, device=device)
    median = float(np.median(samples))
    q25, q75 = np.percentile(samples, [25, 75])
    return {
        "batch_size": batch_size,
        "num_classes": num_classes,
        "topk": topk,
        "median_ms": median,
        "iqr_ms": float(q75 - q25),
        "per_example_ms": median / batch_size,
        "iterations": iterations,
    }
