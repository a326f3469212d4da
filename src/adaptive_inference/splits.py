"""Stratified, seeded splits of the evaluation set, written once and reused by every rule.

The evaluation set (Fashion-MNIST's test set, ImageNet's validation set) is divided into:

* ``head_train``: examples on which exit heads of pre-trained networks are trained (0 by default:
  the default family trains its heads with the network, on the training set);
* ``policy_train``: examples on which the policies are learned;
* ``policy_validation``: examples on which the operating points are chosen (never the test
  split's);
* ``test``: examples on which every reported number is measured.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

SPLITS = ("head_train", "policy_train", "policy_validation", "test")
POLICY_SPLITS = SPLITS[1:]
"""The splits a resplit shuffles (head_train stays: exit heads were trained on it)."""


def make_splits(labels: np.ndarray, fractions: Mapping[str, float], seed: int) -> pd.DataFrame:
    """Assign each example of the evaluation set to one split, stratified by class.

    Args:
        labels: the class of each example; the example id is its position.
        fractions: the share of each split in ``SPLITS``; they must sum to 1.
        seed: the seed of the shuffle.

    Returns:
        A table with ``example_id``, ``label`` and ``split`` (categorical), sorted by id.
    """
    # scikit-learn is imported here, not with the module: every torch job imports this module
    # (for ids_of) and would pay its second-long import for nothing.
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; the splits are {SPLITS}")
    shares = {name: float(fractions.get(name, 0.0)) for name in SPLITS}
    if any(v < 0 for v in shares.values()) or not np.isclose(sum(shares.values()), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {shares}")
    if min(shares[name] for name in POLICY_SPLITS) <= 0:
        raise ValueError("the policy_train, policy_validation and test splits must be non-empty")

    ids = np.arange(len(labels))
    assignment = np.empty(len(labels), dtype=object)
    remaining = ids
    for name in SPLITS[:-1]:
        # a count of the whole set (not a share of what remains, whose floating-point ratio
        # can floor one example short)
        count = int(round(shares[name] * len(labels)))
        if count <= 0:
            continue
        taken, remaining = train_test_split(
            remaining,
            train_size=count,
            stratify=labels[remaining],
            random_state=seed,
        )
        assignment[taken] = name
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


def resplit(splits: pd.DataFrame, fractions: Mapping[str, float], seed: int) -> pd.DataFrame:
    """``splits`` with the examples of policy_train, policy_validation and test dealt again
    (stratified, ``seed``) in the proportions of ``fractions``; head_train stays as it is."""
    pool = splits["split"].isin(POLICY_SPLITS).to_numpy()
    total = sum(float(fractions[name]) for name in POLICY_SPLITS)
    shares = {name: float(fractions[name]) / total for name in POLICY_SPLITS}
    dealt = make_splits(splits["label"].to_numpy()[pool], {"head_train": 0.0, **shares}, seed)
    out = splits.copy()
    out.loc[pool, "split"] = dealt["split"].to_numpy()
    return out
