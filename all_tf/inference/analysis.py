"""Per-image analysis for the gate: statistics, probabilities and pooled features.

Example:
    >>> from all_tf.models import build_model
    >>> from all_tf.config import Config
    >>> from all_tf.inference.analysis import analyse_images, probabilities_and_features
    >>> import numpy as np
    >>> cfg = Config(); cfg.preprocess.image_size = 32; cfg.preprocess.reinhard = False
    >>> fn = probabilities_and_features(build_model("mobilenetv3small", image_size=32))
    >>> out = analyse_images([np.full((40, 40, 3), 200, np.uint8)], cfg, fn)
    >>> out.probabilities.shape, out.features.shape[0], len(out.statistics)
    ((1, 4), 1, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from all_tf.config import Config
from all_tf.inference.colour_check import HIST_BINS, ColourCheck, colour_histogram
from all_tf.inference.gate import FeatureDistance, Gate, fit_input_bounds, image_statistics


@dataclass
class Analysis:
    """Rows for N images: ``statistics`` (N dicts), ``probabilities`` float32 (N, C),
    ``features`` float32 (N, D), ``labels`` int (N,) (-1 unknown), ``kept`` (N,) positions in
    the input that could be read, ``colours`` float32 (N, 3 * bins) the colour check's
    histograms."""

    statistics: list[dict]
    probabilities: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    kept: np.ndarray
    colours: np.ndarray


def probabilities_and_features(model) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``fn(x) -> (probabilities (N, C), pooled features (N, D))`` for a built all_tf model
    and float32 inputs x (N, S, S, 3) in [0, 1]."""
    from all_tf.models import probabilities_and_features_model

    both = probabilities_and_features_model(model)

    def fn(x):
        p, f = both.predict_on_batch(np.asarray(x, np.float32))
        return np.asarray(p, np.float32), np.asarray(f, np.float32).reshape(len(x), -1)

    return fn


def analyse_images(images: Iterable[np.ndarray], cfg: Config, fn, batch_size: int = 32,
                   labels: Iterable[int] | None = None) -> Analysis:
    """Statistics, probabilities and features of RGB uint8 images (whole-field models).

    With ``cfg.tta`` the probabilities are the mean over the 8 flips and rotations of each
    image, as ``predict`` computes them, and the features those of the unrotated view.
    """
    from all_tf.preprocessing import preprocess_image

    if cfg.tta:
        from all_tf.inference.tta import dihedral_views

        plain = fn

        def fn(x):
            n = len(x)
            p, f = plain(dihedral_views(x))
            return p.reshape(8, n, -1).mean(axis=0), f[:n]

    stats, colours, probs, feats, batch = [], [], [], [], []

    def flush():
        if batch:
            p, f = fn(np.stack(batch))
            probs.append(p)
            feats.append(f)
            batch.clear()

    images = list(images)
    for rgb in images:
        stats.append(image_statistics(rgb, cfg.segmentation))
        colours.append(colour_histogram(rgb))
        batch.append(preprocess_image(rgb, cfg.preprocess))
        if len(batch) == batch_size:
            flush()
    flush()
    n = len(images)
    y = np.full(n, -1) if labels is None else np.asarray(list(labels))
    return Analysis(stats, np.concatenate(probs) if probs else np.zeros((0, 4), np.float32),
                    np.concatenate(feats) if feats else np.zeros((0, 0), np.float32), y,
                    np.arange(n), np.stack(colours) if colours
                    else np.zeros((0, 3 * HIST_BINS), np.float32))


def analyse_records(records, cfg: Config, fn, batch_size: int = 32) -> Analysis:
    """:func:`analyse_images` of dataset records; unreadable files are left out."""
    from all_tf.io import ImageReadError, read_image

    images, labels, kept = [], [], []
    for k, r in enumerate(records):
        try:
            images.append(read_image(r.path))
        except ImageReadError:
            continue
        labels.append(r.label)
        kept.append(k)
    out = analyse_images(images, cfg, fn, batch_size, labels)
    out.kept = np.asarray(kept)
    return out


OOD_QUANTILE = 0.99
OOD_FACTOR = 3.0  # a new slide batch lies farther than the validation block (docs/results.md)


def fit_gate(train: Analysis, val: Analysis, quantile: float = OOD_QUANTILE,
             factor: float = OOD_FACTOR, colour_check: bool = True) -> Gate:
    """A gate whose input bounds come from ``train`` images and whose feature distance is
    fitted on ``train``, its threshold ``factor`` times the ``quantile`` of ``val`` scores;
    with ``colour_check``, a colour check fitted on ``train`` and ``val`` together (as the
    cross-validation measures it)."""
    distance = FeatureDistance.fit(train.features, train.labels)
    distance.calibrate(val.features, quantile, factor)
    colour = None
    if colour_check:
        colour = ColourCheck.fit(np.concatenate([train.colours, val.colours]),
                                 np.concatenate([train.labels, val.labels]),
                                 n_classes=train.probabilities.shape[1])
    return Gate(fit_input_bounds(train.statistics), distance, colour=colour)
