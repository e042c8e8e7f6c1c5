"""Train/validation splits by group (never by row), shared by training, calibration and evaluation."""

from __future__ import annotations

import numpy as np

VAL_FRACTION = 0.15
SEED = 0


def split_by_group(groups, val_fraction: float = VAL_FRACTION, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val) such that no group is on both sides."""
    groups = np.asarray(groups, dtype=str)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    val_groups = set(rng.choice(uniq, int(round(len(uniq) * val_fraction)), replace=False).tolist())
    is_val = np.array([g in val_groups for g in groups], dtype=bool)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def balanced_subset(labels, idx: np.ndarray, n: int | None, seed: int = SEED) -> np.ndarray:
    """At most ``n`` of ``idx``, half of each class (all of ``idx`` when ``n`` is None)."""
    labels = np.asarray(labels)
    if n is None or n >= len(idx):
        return idx
    rng = np.random.default_rng(seed + 1)
    parts = [rng.choice(idx[labels[idx] == c], min(n // 2, int((labels[idx] == c).sum())), replace=False)
             for c in (0, 1)]
    return np.sort(np.concatenate(parts))
