"""Reinhard colour normalisation in OpenCV 8-bit LAB.

Reinhard et al. (2001) move each channel's mean and standard deviation to a target's. Here
the channels are OpenCV's 8-bit LAB (L scaled to [0, 255], a and b offset by 128), and the
target is the average of per-image statistics over a set of images (the training set), so
each image is moved to a *typical* training image, not to the pooled pixel distribution
(whose spread would include the between-image stain variation that normalisation removes).

Example:
    >>> import numpy as np
    >>> from all_tf.preprocessing import fit_reinhard_target, reinhard_normalize
    >>> rng = np.random.default_rng(0)
    >>> imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    >>> target = fit_reinhard_target(imgs)
    >>> sorted(target)
    ['mean', 'std']
    >>> reinhard_normalize(imgs[0], target).dtype
    dtype('uint8')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from all_tf.preprocessing.intensity import check_rgb_uint8

if TYPE_CHECKING:
    from all_tf.config import PreprocessConfig

_MIN_STD = 1.0  # LAB units; keeps flat channels (e.g. a blank field) from blowing up


def lab_stats(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float64, shape (3,)) of an 8-bit LAB image."""
    mean, std = cv2.meanStdDev(lab)
    return mean.ravel(), std.ravel()


def lab_before_reinhard(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """``rgb`` as Reinhard sees it in :func:`all_tf.preprocessing.preprocess_image`: resized,
    label corner filled (``cfg.mask_label_corner``), 8-bit OpenCV LAB, CLAHE on L
    (``cfg.clahe``); uint8 (S, S, 3)."""
    from all_tf.preprocessing.intensity import clahe_lab_inplace
    from all_tf.preprocessing.resize import resize_and_mask

    lab = cv2.cvtColor(resize_and_mask(rgb, cfg), cv2.COLOR_RGB2LAB)
    if cfg.clahe:
        clahe_lab_inplace(lab, cfg.clahe_clip_limit, cfg.clahe_tile_grid)
    return lab


def fit_reinhard_target(
    images: Iterable[np.ndarray], cfg: PreprocessConfig | None = None
) -> dict[str, list[float]]:
    """Average per-image LAB statistics of ``images``.

    Args:
        images: RGB uint8 (H, W, 3) arrays, e.g. the training images.
        cfg: when given, each image first gets the steps that precede Reinhard in
            :func:`all_tf.preprocessing.preprocess_image` (:func:`lab_before_reinhard`), so
            the target describes images at the stage where they are normalised.

    Returns:
        ``{"mean": [L, a, b], "std": [L, a, b]}`` in OpenCV 8-bit LAB units (0-255).

    Raises:
        ValueError: no images, or an image is not uint8 (H, W, 3).
    """
    means, stds = [], []
    for i, rgb in enumerate(images):
        check_rgb_uint8(rgb, f"image {i}")
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB) if cfg is None else lab_before_reinhard(rgb, cfg)
        m, s = lab_stats(lab)
        means.append(m)
        stds.append(s)
    if not means:
        raise ValueError("fit_reinhard_target: no images given")
    return {
        "mean": [round(float(v), 4) for v in np.mean(means, axis=0)],
        "std": [round(float(v), 4) for v in np.mean(stds, axis=0)],
    }


def check_target(target: dict) -> tuple[np.ndarray, np.ndarray]:
    """Validate a Reinhard target dict; return (mean, std) as float32 arrays of shape (3,)."""
    try:
        mean = np.asarray(target["mean"], np.float32)
        std = np.asarray(target["std"], np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"Reinhard target must be {{'mean': [3], 'std': [3]}}, got {target!r}"
        ) from e
    if (
        mean.shape != (3,)
        or std.shape != (3,)
        or not (np.isfinite(mean).all() and np.isfinite(std).all())
    ):
        raise ValueError(
            f"Reinhard target must hold 3 finite means and 3 finite stds, got {target!r}"
        )
    if (std <= 0).any():
        raise ValueError(f"Reinhard target stds must be positive, got {std.tolist()}")
    return mean, std


def reinhard_lab(lab: np.ndarray, target: dict) -> np.ndarray:
    """Reinhard-normalise an 8-bit LAB image (H, W, 3) uint8; returns uint8 LAB."""
    t_mean, t_std = check_target(target)
    mean, std = lab_stats(lab)
    scale = t_std / np.maximum(std, _MIN_STD).astype(np.float32)
    offset = t_mean - mean.astype(np.float32) * scale
    # one fused multiply-add per channel: (x - m) / s * ts + tm == x * scale + offset
    out = lab.astype(np.float32) * scale + offset
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def reinhard_normalize(rgb: np.ndarray, target: dict) -> np.ndarray:
    """Move the LAB mean and std of ``rgb`` (uint8 (H, W, 3)) to ``target``; returns uint8 RGB.

    Values that fall outside the 8-bit LAB range or the RGB gamut are clipped, so the
    statistics of the result match the target only approximately for extreme images.
    """
    check_rgb_uint8(rgb, "reinhard input")
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    return cv2.cvtColor(reinhard_lab(lab, target), cv2.COLOR_LAB2RGB)
