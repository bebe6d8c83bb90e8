"""Mask clean-up and the full nucleus segmentation of one image.

Example:
    >>> import numpy as np
    >>> from all_tf.config import SegmentationConfig
    >>> from all_tf.segmentation import segment_nuclei
    >>> rgb = np.full((64, 64, 3), (240, 200, 200), np.uint8)  # pink background
    >>> rgb[20:40, 20:40] = (110, 40, 150)  # a purple square "nucleus"
    >>> int(segment_nuclei(rgb, SegmentationConfig()).sum()) > 300
    True
"""

from __future__ import annotations

import cv2
import numpy as np

from all_tf.config import SegmentationConfig
from all_tf.segmentation.purple_index import pi_mask, rgb_threshold_mask

SEGMENTATION_METHODS = ("otsu", "multiotsu", "fixed", "rgb")


def disk(radius: int) -> np.ndarray:
    """Disk structuring element, uint8 (2r+1, 2r+1), as ``skimage.morphology.disk``."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def remove_small_objects(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Drop 8-connected components of fewer than ``min_px`` pixels; bool (H, W)."""
    if min_px <= 1 or not mask.any():
        return mask.astype(bool, copy=True)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_px
    keep[0] = False  # background
    return keep[labels]


def clean_mask(
    mask: np.ndarray, opening_radius: int = 3, min_object_px: int = 80, smooth_sigma: float = 1.0
) -> np.ndarray:
    """Morphological clean-up of a binary nucleus mask.

    1. opening (erosion then dilation) with a disk of ``opening_radius`` px: removes specks
       and thin bridges. The paper applies it twice; opening is idempotent, so once suffices.
    2. removal of 8-connected objects smaller than ``min_object_px`` px.
    3. Gaussian smoothing (sigma ``smooth_sigma`` px) of the 0/1 mask, re-thresholded at 0.5:
       smooths jagged outlines.

    Args:
        mask: bool or 0/1 array (H, W).

    Returns:
        bool (H, W).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    m = (mask > 0).astype(np.uint8)
    if opening_radius > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disk(opening_radius))
    m = remove_small_objects(m, min_object_px)
    if smooth_sigma > 0:
        smooth = cv2.GaussianBlur(m.astype(np.float32), (0, 0), smooth_sigma)
        m = smooth > 0.5
    return m.astype(bool, copy=False)


def raw_nucleus_mask(rgb: np.ndarray, cfg: SegmentationConfig) -> np.ndarray:
    """The colour-threshold mask of ``cfg.method`` before clean-up; bool (H, W)."""
    if cfg.method in ("otsu", "multiotsu"):
        return pi_mask(rgb, cfg.method)
    if cfg.method == "fixed":
        return pi_mask(rgb, "fixed", cfg.threshold)
    if cfg.method == "rgb":
        return rgb_threshold_mask(rgb)
    raise ValueError(
        f"segmentation method must be one of {SEGMENTATION_METHODS}, got {cfg.method!r}"
    )


def segment_nuclei(rgb: np.ndarray, cfg: SegmentationConfig | None = None) -> np.ndarray:
    """Nucleus mask of a smear image: colour threshold, then :func:`clean_mask`.

    Args:
        rgb: RGB (H, W, 3), uint8 or float in [0, 1].
        cfg: ``method`` ``"otsu"`` (Otsu on the purple index, the paper's and the default),
            ``"multiotsu"`` (three-class Otsu, upper threshold: far better on segwbc, see
            :func:`all_tf.segmentation.pi_mask`), ``"fixed"`` (PI > ``threshold``) or
            ``"rgb"`` (:func:`all_tf.segmentation.rgb_threshold_mask`), and the clean-up
            settings ``opening_radius``, ``min_object_px``, ``smooth_sigma``.

    Returns:
        bool (H, W), True on nuclei.
    """
    cfg = cfg or SegmentationConfig()
    raw = raw_nucleus_mask(rgb, cfg)
    return clean_mask(raw, cfg.opening_radius, cfg.min_object_px, cfg.smooth_sigma)
