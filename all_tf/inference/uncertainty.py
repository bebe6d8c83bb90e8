"""The prediction rule: softmax argmax, with low-confidence predictions marked uncertain, and
the temperature that calibrates the confidence.

Example:
    >>> import numpy as np
    >>> from all_tf.inference.uncertainty import predict_labels
    >>> cls, conf, unc = predict_labels(np.array([[0.9, 0.1], [0.6, 0.4]]), threshold=0.7)
    >>> cls.tolist(), unc.tolist()
    ([0, 0], [False, True])
"""

from __future__ import annotations

import numpy as np

from all_tf.config import UNCERTAINTY_THRESHOLD

_EPS = 1e-12


def check_probabilities(probs, name: str = "probs") -> np.ndarray:
    """Return ``probs`` as a float64 (N, C) array; raise ValueError if not finite or not 2-D."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, C) with C >= 2, got {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return probs


def predict_labels(probs, threshold: float = UNCERTAINTY_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the prediction rule to class probabilities.

    Args:
        probs: float array (N, C) of softmax probabilities (rows sum to 1).
        threshold: confidence in [0, 1] below which a prediction is marked uncertain.

    Returns:
        ``(class_id, confidence, uncertain)``: int64 (N,) argmax class (ties go to the lower
        index), float64 (N,) max probability, bool (N,) ``confidence < threshold``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    probs = check_probabilities(probs)
    class_id = probs.argmax(axis=1).astype(np.int64)
    confidence = probs[np.arange(len(probs)), class_id]
    return class_id, confidence, confidence < threshold


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Softmax probabilities (N, C) rescaled by ``temperature`` (> 0; > 1 softens)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = np.log(np.clip(check_probabilities(probs), _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)
