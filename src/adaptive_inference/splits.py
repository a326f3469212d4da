"""Stratified, seeded splits of the evaluation set, written once and reused by every rule.

The evaluation set (Fashion-MNIST's test set, ImageNet's validation set) is divided into:

* ``head_train``: examples on which exit heads of pre-trained networks are trained (0 by default:
  the default family trains its heads with the network, on the training set);
* ``policy_train``: examples on which the policies are learned;
* ``test``: examples on which every reported number is measured.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

SPLITS = ("head_train", "policy_train", "test")


def make_splits(labels: np.ndarray, fractions: Mapping[str, float], seed: int) -> pd.DataFrame:
    """Assign each example of the evaluation set to one split, stratified by class.

    Args:
        labels: the class of each example; the example id is its position.
        fractions: the share of each split in ``SPLITS``; they must sum to 1.
        seed: the seed of the shuffle.

    Returns:
        A table with ``example_id``, ``label`` and ``split`` (categorical), sorted by id.
    """
    labels = np.asarray(labels)
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; the splits are {SPLITS}")
    shares = {name: float(fractions.get(name, 0.0)) for name in SPLITS}
    if any(v < 0 for v in shares.values()) or not np.isclose(sum(shares.values()), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {shares}")
    if shares["test"] <= 0 or shares["policy_train"] <= 0:
        raise ValueError("the policy_train and test splits must both be non-empty")

    ids = np.arange(len(labels))
    assignment = np.empty(len(labels), dtype=object)
    remaining, remaining_share = ids, 1.0
    for name in SPLITS[:-1]:
        share = shares[name] / remaining_share
        if share <= 0:
            continue
        taken, remaining = train_test_split(
            remaining,
            train_size=share,
            stratify=labels[remaining],
            random_state=seed,
        )
        assignment[taken] = name
        remaining_share -= shares[name]
    assignment[remaining] = SPLITS[-1]
    return pd.DataFrame(
        {
            "example_id": ids.astype(np.int64),
            "label": labels.astype(np.int64),
            "split": pd.Categorical(assignment, categories=list(SPLITS)),
        }
    )


def ids_of(splits: pd.DataFrame, name: str) -> np.ndarray:
    """The example ids of one split, in increasing order."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; the splits are {SPLITS}")
    return splits.loc[splits["split"] == name, "example_id"].to_numpy()
