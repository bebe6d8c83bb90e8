"""Inference-time decisions that sit beside the classifier: the input gate and the
out-of-distribution score (see :mod:`all_tf.inference.gate`)."""

from all_tf.inference.gate import (
    CHECKS,
    GATE_SIZE,
    REASONS,
    FeatureDistance,
    Gate,
    fit_input_bounds,
    image_statistics,
    input_reason,
)

__all__ = [
    "CHECKS",
    "GATE_SIZE",
    "REASONS",
    "FeatureDistance",
    "Gate",
    "fit_input_bounds",
    "image_statistics",
    "input_reason",
]
