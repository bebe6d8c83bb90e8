"""Confidence calibration: temperature scaling, expected calibration error, Brier score.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` fitted on held-out
data; it never changes the predicted class, only how confident the model says it is. The
models here end in a softmax, so ``log(p)`` stands in for the logits (they differ by a
per-image constant, which the softmax cancels).

Example:
    >>> import numpy as np
    >>> from all_tf.evaluation.calibration import apply_temperature, expected_calibration_error
    >>> p = np.array([[0.9, 0.1], [0.6, 0.4]])
    >>> apply_temperature(p, 1.0).round(3).tolist()
    [[0.9, 0.1], [0.6, 0.4]]
    >>> round(expected_calibration_error(p, np.array([0, 1]), n_bins=10), 3)
    0.35
"""

from __future__ import annotations

import numpy as np

from all_tf.inference.uncertainty import apply_temperature, check_probabilities  # noqa: F401

_EPS = 1e-12


def negative_log_likelihood(probs, y_true) -> float:
    """Mean negative log-likelihood (nats) of integer labels ``y_true`` (N,)."""
    probs = check_probabilities(probs)
    y_true = np.asarray(y_true, dtype=int)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], _EPS, 1.0))))


def fit_temperature(probs, y_true, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature in ``bounds`` that minimises the NLL of ``probs`` on ``y_true``.

    Args:
        probs: float (N, C) softmax probabilities of held-out images (the validation part).
        y_true: int (N,) labels.

    Returns:
        ``T`` (1.0 means already calibrated on this data).
    """
    from scipy.optimize import minimize_scalar

    probs = check_probabilities(probs)
    if len(probs) == 0:
        raise ValueError("cannot fit a temperature on 0 images")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(apply_temperature(probs, float(np.exp(log_t))),
                                              y_true),
        bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def expected_calibration_error(probs, y_true, n_bins: int = 15) -> float:
    """ECE of the top-class confidence: sum over equal-width confidence bins of
    ``|bin accuracy - bin mean confidence| * bin share``; in [0, 1].

    Bins are ``(k/n_bins, (k+1)/n_bins]`` (the first also takes 0).
    """
    probs = check_probabilities(probs)
    y_true = np.asarray(y_true, dtype=int)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        members = bins == b
        ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def brier_score(probs, y_true) -> float:
    """Multi-class Brier score: mean over images of ``sum_c (p_c - onehot_c)^2``; in [0, 2]."""
    probs = check_probabilities(probs)
    onehot = np.eye(probs.shape[1])[np.asarray(y_true, dtype=int)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
