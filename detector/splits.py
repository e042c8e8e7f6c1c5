"""Splits by group (never by row), shared by training, calibration and evaluation.

Four sides: ``train`` (fits the weights), ``val`` (picks the checkpoint), ``calibration``
(fits Platt scaling, the ensemble's weights and the verdict threshold) and ``test``
(only reported). A group (``original_video`` for DFDC: a fake and its source video)
goes to a side by a hash of its name, so the assignment does not depend on which
other rows are present: a subset, a later data release or another tool reading the
same label file puts every group on the same side.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED = 0
SIDES = ("train", "val", "calibration", "test")
# Shares of the groups on each side but train (which gets the rest).
FRACTIONS = {"val": 0.10, "calibration": 0.10, "test": 0.15}


def group_unit(group: str, seed: int = SEED) -> float:
    """A group's stable position in [0, 1)."""
    h = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0 ** 64


def side_of(group: str, fractions: dict[str, float] | None = None, seed: int = SEED) -> str:
    f = FRACTIONS if fractions is None else fractions
    u = group_unit(group, seed)
    edge = 0.0
    for side in ("test", "calibration", "val"):  # test first: a larger val never moves a test group
        edge += f.get(side, 0.0)
        if u < edge:
            return side
    return "train"


def split_by_group(groups, fractions: dict[str, float] | None = None, seed: int = SEED) -> dict[str, np.ndarray]:
    """Row indices per side; no group on two sides."""
    f = FRACTIONS if fractions is None else fractions
    if sum(f.values()) >= 1.0:
        raise ValueError(f"split fractions {f} leave nothing to train on")
    groups = np.asarray(groups, dtype=str)
    uniq, inverse = np.unique(groups, return_inverse=True)
    side = np.asarray([side_of(g, f, seed) for g in uniq])[inverse]
    return {s: np.flatnonzero(side == s) for s in SIDES}


def balanced_subset(labels, idx: np.ndarray, n: int | None, seed: int = SEED) -> np.ndarray:
    """At most ``n`` of ``idx``, half of each class (all of ``idx`` when ``n`` is None)."""
    labels = np.asarray(labels)
    if n is None or n >= len(idx):
        return idx
    rng = np.random.default_rng(seed + 1)
    parts = [rng.choice(idx[labels[idx] == c], min(n // 2, int((labels[idx] == c).sum())), replace=False)
             for c in (0, 1)]
    return np.sort(np.concatenate(parts))
