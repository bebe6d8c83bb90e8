"""Mask clean-up and the full nucleus segmentation of one image.

Example:
    >>> import numpy as np
    >>> from all_tf.config import SegmentationConfig
    >>> from all_tf.segmentation import segment_nuclei
    >>> rgb = np.full((64, 64, 3), (240, 200, 200), np.uint8)  # pink background
    >>> rgb[20:40, 20:40] = (110, 40, 150)  # a purple square "nucleus"
    >>> int(segment_nuclei(rgb, SegmentationConfig()).sum()) > 300
    True
    >>> from all_tf.segmentation import count_objects, merge_lobes
    >>> lobes = np.zeros((60, 80), bool)
    >>> lobes[20:40, 10:36] = lobes[20:40, 40:66] = True  # two lobes 4 px apart
    >>> count_objects(lobes), count_objects(merge_lobes(lobes, 0.5))
    (2, 1)
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


def count_objects(mask: np.ndarray) -> int:
    """Number of 8-connected components of a bool mask (the nuclei the gate counts)."""
    return cv2.connectedComponents(np.asarray(mask).astype(np.uint8), connectivity=8)[0] - 1


def merge_radius(mask: np.ndarray, fraction: float) -> int:
    """``round(fraction * sqrt(A / pi))`` px, A the area of the largest 8-connected component
    (its equivalent radius: the nucleus scale of the image); 0 with fewer than 2 components."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(
        np.asarray(mask).astype(np.uint8), connectivity=8)
    if n <= 2 or fraction <= 0:
        return 0
    return int(round(fraction * np.sqrt(stats[1:, cv2.CC_STAT_AREA].max() / np.pi)))


def merge_lobes(mask: np.ndarray, fraction: float, bridge: np.ndarray | None = None
                ) -> np.ndarray:
    """Join the fragments (lobes) of one nucleus into one 8-connected object.

    The reach is a morphological closing by a disk of radius :func:`merge_radius`
    (``fraction`` of the largest component's equivalent radius, so it follows the
    magnification): components at most about two radii apart are joined.

    Args:
        mask: bool (H, W) cleaned nucleus mask.
        fraction: closing radius over the largest nucleus's equivalent radius; 0: unchanged.
        bridge: None: the closing's fill joins them (gaps and concavities filled). A bool
            (H, W) mask (the raw colour threshold): only its pixels inside the closing are
            added, and only where they touch ``mask``, so two components merge only when
            nucleus-coloured pixels connect them within the reach (the chromatin thread
            between lobes that the opening cut), and the nucleus pixels barely change.

    Returns:
        bool (H, W), a superset of ``mask``.
    """
    mask = np.asarray(mask, bool)
    radius = merge_radius(mask, fraction)
    if radius < 1:
        return mask.copy()
    closed = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, disk(radius)) > 0
    if bridge is None:
        return closed | mask
    grown = mask | (closed & np.asarray(bridge, bool))
    n, labels = cv2.connectedComponents(grown.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[labels[mask]] = True  # grown components holding nucleus pixels
    keep[0] = False
    return keep[labels]


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
    """Nucleus mask of a smear image: colour threshold, :func:`clean_mask`, then
    :func:`merge_lobes`.

    Args:
        rgb: RGB (H, W, 3), uint8 or float in [0, 1].
        cfg: ``method`` ``"multiotsu"`` (three-class Otsu on the purple index, upper
            threshold: the default, far better on segwbc, see
            :func:`all_tf.segmentation.pi_mask`), ``"otsu"`` (two-class Otsu, the paper's),
            ``"fixed"`` (PI > ``threshold``) or ``"rgb"``
            (:func:`all_tf.segmentation.rgb_threshold_mask`); the clean-up settings
            ``opening_radius``, ``min_object_px``, ``smooth_sigma``; and ``merge_lobes`` /
            ``merge_bridge`` (0 keeps the fragments of a nucleus apart).

    Returns:
        bool (H, W), True on nuclei.
    """
    cfg = cfg or SegmentationConfig()
    raw = raw_nucleus_mask(rgb, cfg)
    mask = clean_mask(raw, cfg.opening_radius, cfg.min_object_px, cfg.smooth_sigma)
    if cfg.merge_lobes > 0:
        mask = merge_lobes(mask, cfg.merge_lobes, raw if cfg.merge_bridge == "colour" else None)
    return mask
