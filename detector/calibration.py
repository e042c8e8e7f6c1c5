"""Per-member calibration: Platt scaling of a member's fake logit on a validation split.

A member's raw sigmoid output is a ranking, not a probability: MesoNet on DFDC faces,
for example, says 0.3 for most fakes. ``p = sigmoid(a * logit + b)`` with (a, b) fitted
by maximum likelihood on held-out faces makes the members' outputs comparable before
they are averaged and before the verdict bands are applied. Fitting is a 2-parameter
logistic regression (Newton's method with a little L2 for separable sets), no sklearn.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel


class Platt(BaseModel):
    method: str = "platt"
    a: float = 1.0
    b: float = 0.0
    n: int = 0
    fitted_on: str = ""

    def apply(self, logits: np.ndarray) -> np.ndarray:
        return sigmoid(self.a * np.asarray(logits, np.float64) + self.b)


def sigmoid(x) -> np.ndarray:
    """The logistic function in float64, without overflow for extreme logits."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -500, 500)))


def logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return np.log(p / (1 - p))


def fit_logistic(X, targets, sample_weight=None, l2: float = 1e-3, iters: int = 100) -> np.ndarray:
    """Weighted maximum-likelihood logistic regression by Newton's method: the weights
    (one per column of ``X``) and the bias last. ``targets`` may be soft (in [0, 1]);
    the L2 penalty is on the weights, not the bias."""
    X = np.asarray(X, np.float64)
    if X.ndim == 1:
        X = X[:, None]
    t = np.asarray(targets, np.float64)
    sw = np.ones(len(t)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    Xb = np.concatenate([X, np.ones((len(X), 1))], 1)
    k = Xb.shape[1]
    pen = l2 * np.r_[np.ones(k - 1), 0.0]
    w = np.zeros(k)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(Xb @ w)))
        grad = Xb.T @ (sw * (p - t)) + pen * w
        H = (Xb * (sw * p * (1 - p))[:, None]).T @ Xb + np.diag(pen) + 1e-9 * np.eye(k)
        step = np.linalg.solve(H, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def fit_platt(logits, labels, l2: float = 1e-3, iters: int = 100) -> Platt:
    """Maximum-likelihood (a, b) for P(fake) = sigmoid(a * logit + b)."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    if len(x) != len(y) or len(np.unique(y)) < 2:
        raise ValueError("calibration needs real and fake examples")
    # Platt's smoothed targets keep the fit finite on a separable set.
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = fit_logistic(x, t, l2=l2, iters=iters)
    return Platt(a=float(a), b=float(b), n=int(len(x)))


def expected_calibration_error(labels, probs, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width bins, weighted by bin size."""
    y = np.asarray(labels, np.float64)
    p = np.asarray(probs, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            err += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    return float(err)
