"""The measures every evaluation here reports (the MeVer paper's AUC and balanced accuracy),
and the curves the model card draws: used by ``deepfake-eval``, training's validation, the
ensemble rule and the robustness evaluation. numpy only."""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5


def roc_auc(labels, scores) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half). None if one class is absent."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def balanced_accuracy(labels, scores, threshold: float = THRESHOLD) -> float | None:
    """Mean of the true-positive rate on fakes and the true-negative rate on reals."""
    y = np.asarray(labels, dtype=bool)
    pred = np.asarray(scores, dtype=float) >= threshold
    if y.all() or (~y).all():
        return None
    return float(((pred & y).sum() / y.sum() + (~pred & ~y).sum() / (~y).sum()) / 2)


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = np.array([((s >= t) & y).sum() / max(1, y.sum()) for t in thresholds])
    fpr = np.array([((s >= t) & ~y).sum() / max(1, (~y).sum()) for t in thresholds])
    return fpr, tpr


def reliability(labels, scores, bins: int = 10) -> list[tuple[float, float, int]]:
    """Per score bin: (mean score, fraction of fakes, count), for bins holding items."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    idx = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append((float(s[m].mean()), float(y[m].mean()), int(m.sum())))
    return out
