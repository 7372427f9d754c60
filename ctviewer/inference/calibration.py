"""Scores, temperature scaling and expected calibration error (numpy only)."""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def covid_score(outputs: np.ndarray, activation: str, positive: int) -> np.ndarray:
    """Model outputs (N, 2) -> one logit per slice for the positive class.

    For logits and softmax this is exactly log p(pos)/p(neg), so temperature
    scaling of it is textbook temperature scaling.  Two independent sigmoids
    (the notebook's head) are turned into the same log-odds form.
    """
    out = np.asarray(outputs, dtype=np.float64)
    neg = 1 - positive
    if activation == "linear":
        return out[:, positive] - out[:, neg]
    p = np.clip(out, _EPS, 1 - _EPS)
    if activation == "softmax":
        return np.log(p[:, positive]) - np.log(p[:, neg])
    if activation == "sigmoid":
        # p_pos / (p_pos + p_neg) as the class probability
        return np.log(p[:, positive]) - np.log(p[:, neg])
    raise ValueError(f"unknown activation {activation!r}")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T > 0 minimising the negative log-likelihood of sigmoid(score / T)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)

    def nll(log_t: float) -> float:
        p = np.clip(sigmoid(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(50.0)), method="bounded")
    return float(np.exp(res.x))


def expected_calibration_error(p: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of binary probabilities p = P(label == 1), equal-width bins over the
    confidence of the predicted class (the usual definition)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    pred = (p >= 0.5).astype(int)
    conf = np.where(pred == 1, p, 1 - p)
    correct = (pred == y).astype(float)
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0.5 else (conf >= lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)
