"""In-graph twin of the input gate (:mod:`all_tf.inference.gate`) for the SavedModel.

The serving graph computes the same image statistics on the decoded image (resized to
``GATE_SIZE``): brightness, saturation, focus, stain (LAB a*, b*) and the hue of the nuclei,
alone and against the rest of the stained field; the nucleus count needs
connected components and the lobe merging of ``segment_nuclei`` (a closing whose radius
depends on the largest component), like the nucleus area, and both are left to the host
(``python -m all_tf.predict``). The feature
distance is computed from the model's pooled features. Small differences from the host
statistics (integer rounding in OpenCV's colour conversions) are far inside the fitted margins.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from all_tf.export.graph_gate import gate_statistics_graph
    >>> stats = gate_statistics_graph(tf.zeros([40, 60, 3], tf.uint8))
    >>> [round(float(v), 1) for v in stats.numpy()]
    [0.0, 0.0, 0.0, 128.0, 128.0, 128.0, 128.0, nan, nan]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from all_tf.export.graph_preprocessing import mask_label_corner_graph, resize_uint8, rgb_to_lab8
from all_tf.inference.colour_check import HIST_BINS, ColourCheck
from all_tf.inference.gate import (
    CHECKS,
    CONTRAST_SHARE,
    DOMINANT_SHARE,
    GATE_SIZE,
    MIN_CHROMA,
    MIN_CONTRAST,
)

GRAPH_STATISTICS = ("brightness", "saturation", "focus", "stain_a", "stain_b", "nucleus_a",
                    "nucleus_b", "nucleus_hue", "contrast_hue")
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)


def gate_statistics_graph(rgb: tf.Tensor) -> tf.Tensor:
    """float32 (9,) statistics (order :data:`GRAPH_STATISTICS`) of one uint8 (H, W, 3) image."""
    x = resize_uint8(rgb, GATE_SIZE)
    f = tf.cast(x, tf.float32)
    grey = tf.round(f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114)
    hi = tf.reduce_max(f, axis=-1)
    lo = tf.reduce_min(f, axis=-1)
    saturation = tf.where(hi > 0, tf.round(255.0 * (hi - lo) / tf.maximum(hi, 1.0)), 0.0)
    padded = tf.pad(grey[None, ..., None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
    lap = tf.nn.conv2d(padded, _LAPLACIAN[..., None, None], strides=1, padding="VALID")
    lab = tf.cast(rgb_to_lab8(x), tf.float32)
    n = GATE_SIZE * GATE_SIZE
    k = max(1, int(round(DOMINANT_SHARE * n)))
    k2 = min(n, k + max(1, int(round(CONTRAST_SHARE * n))))
    top = tf.math.top_k(tf.reshape(saturation, [-1]), k=k2).indices  # most saturated first
    ranked = tf.gather(tf.reshape(lab, [-1, 3]), top)
    dominant, rest = ranked[:k], ranked[k:]
    nucleus_a, nucleus_b = tf.reduce_mean(dominant[:, 1]), tf.reduce_mean(dominant[:, 2])
    hue = _hue(nucleus_a - 128.0, nucleus_b - 128.0)
    contrast = _hue(nucleus_a - tf.reduce_mean(rest[:, 1]),
                    nucleus_b - tf.reduce_mean(rest[:, 2]), MIN_CONTRAST)
    return tf.stack([
        tf.reduce_mean(grey),
        tf.reduce_mean(saturation),
        tf.math.reduce_variance(lap),
        tf.reduce_mean(lab[..., 1]),
        tf.reduce_mean(lab[..., 2]),
        nucleus_a,
        nucleus_b,
        hue,
        contrast,
    ])


def _hue(a: tf.Tensor, b: tf.Tensor, min_chroma: float = MIN_CHROMA) -> tf.Tensor:
    """Hue angle in degrees of a LAB (a*, b*) offset; NaN when it is shorter than min_chroma
    (as the host's ``_hue``)."""
    hue = tf.math.atan2(b, a) * (180.0 / np.pi)
    return tf.where(tf.sqrt(a * a + b * b) >= min_chroma, hue, np.nan)  # NaN: never fails


def gate_reason_graph(stats: tf.Tensor, bounds: dict) -> tf.Tensor:
    """string [N]: the first failing input check's reason per row of ``stats`` (N, 9), or "".

    A statistic without bounds (``contrast_hue`` in a gate fitted before it existed) is not
    checked."""
    reason = tf.fill(tf.shape(stats)[:1], "")
    for name, side, why in reversed(CHECKS):  # earlier checks overwrite later ones
        if name not in GRAPH_STATISTICS:
            continue
        limit = (bounds.get(name) or [None, None])[side]
        if limit is None:
            continue
        value = stats[:, GRAPH_STATISTICS.index(name)]
        failed = value < limit if side == 0 else value > limit
        reason = tf.where(failed, why, reason)
    return reason


def mahalanobis_graph(features: tf.Tensor, means: np.ndarray, precision: np.ndarray) -> tf.Tensor:
    """float32 [N]: min over classes of (f - mean)^T P (f - mean) for features (N, D)."""
    f = tf.cast(features, tf.float32)
    d = f[:, None, :] - tf.constant(means, tf.float32)[None]  # (N, C, D)
    dist = tf.einsum("ncd,de,nce->nc", d, tf.constant(precision, tf.float32), d)
    return tf.reduce_min(dist, axis=1)


def colour_histogram_graph(rgb: tf.Tensor, bins: int = HIST_BINS) -> tf.Tensor:
    """float32 (3 * bins,): in-graph :func:`all_tf.inference.colour_check.colour_histogram`
    of one uint8 (H, W, 3) image."""
    x = tf.reshape(tf.cast(mask_label_corner_graph(resize_uint8(rgb, GATE_SIZE)), tf.float32),
                   [-1, 3])
    n = float(GATE_SIZE * GATE_SIZE)
    return tf.concat([tf.cast(tf.histogram_fixed_width(x[:, c], [0.0, 256.0], nbins=bins),
                              tf.float32) / n for c in range(3)], axis=0)


def colour_class_graph(histograms: tf.Tensor, check: ColourCheck) -> tf.Tensor:
    """int64 [N]: the colour check's class for histograms float32 (N, D)."""
    x = (histograms - tf.constant(check.mean)) / tf.constant(check.scale)
    logits = tf.matmul(x, tf.constant(check.coef), transpose_b=True) + tf.constant(
        check.intercept)
    return tf.argmax(logits, axis=1, output_type=tf.int64)


def status_graph(confidence: tf.Tensor, threshold: float, reason: tf.Tensor,
                 ood_score: tf.Tensor | None = None, ood_threshold: float | None = None,
                 disagrees: tf.Tensor | None = None) -> tf.Tensor:
    """string [N]: ``ok``, ``uncertain`` or ``rejected:<reason>`` (as ``Gate.status``);
    ``disagrees`` bool [N]: the colour check names another class."""
    if ood_score is not None and ood_threshold is not None:
        reason = tf.where((reason == "") & (ood_score > ood_threshold), "out_of_distribution",
                          reason)
    uncertain = confidence < threshold
    if disagrees is not None:
        uncertain = uncertain | disagrees
    plain = tf.where(uncertain, "uncertain", "ok")
    return tf.where(reason == "", plain, tf.strings.join(["rejected:", reason]))
