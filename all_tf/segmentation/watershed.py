"""Marker-controlled watershed that splits touching nuclei, and a ridge overlay.

Example:
    >>> import numpy as np
    >>> from all_tf.segmentation import watershed_nuclei
    >>> rgb = np.full((120, 160, 3), 230, np.uint8)
    >>> yy, xx = np.mgrid[:120, :160]
    >>> for cx in (55, 101):  # two dark disks of radius 25 overlapping by 4 px
    ...     rgb[(yy - 60) ** 2 + (xx - cx) ** 2 <= 25 ** 2] = 60
    >>> int(watershed_nuclei(rgb).max())
    2
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries, relabel_sequential, watershed

RIDGE_COLOUR = (255, 0, 0)


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma 0.299 R + 0.587 G + 0.114 B of uint8 RGB; float32 (H, W) in [0, 255]."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return rgb.astype(np.float32) @ weights


def watershed_nuclei(
    rgb: np.ndarray,
    peak_fraction: float = 0.5,
    min_marker_px: int = 127,
    marker_dilation: int = 2,
    blur_sigma: float = 2.0,
    mask: np.ndarray | None = None,
    per_component: bool = False,
) -> np.ndarray:
    """Label individual nuclei, splitting touching ones.

    1. luma grey, Gaussian blur (5 x 5 kernel, sigma ``blur_sigma``);
    2. foreground = grey below its Otsu threshold (nuclei are dark), unless ``mask`` is given;
    3. Euclidean distance transform D of the foreground;
    4. markers = connected regions where D > ``peak_fraction`` * max(D), keeping those of at
       least ``min_marker_px`` px, dilated by a disk of ``marker_dilation`` px;
    5. watershed of -D from the markers, restricted to the foreground.

    A higher ``peak_fraction`` gives smaller markers and splits more: two overlapping disks of
    radius R whose waist (the distance at the neck) is above ``peak_fraction * R`` share one
    marker and stay one label. Foreground components without a marker are dropped.

    With the paper's settings ``peak_fraction`` is relative to the *largest* object in the
    image, so a small nucleus beside a large one may get no marker and vanish. And a marker
    needs ``min_marker_px`` (127) px, so at 0.5 a round nucleus of radius under about 13 px
    (area about 500 px; most nuclei in 224 px all4 fields are smaller) never gets one: lower
    ``min_marker_px`` for such images. ``per_component=True`` (not in the paper) measures the
    fraction against each foreground component's own maximum distance instead.

    Args:
        rgb: uint8 (H, W, 3).
        peak_fraction: marker threshold as a fraction of max(D), in (0, 1).
        min_marker_px: smallest marker kept, px.
        marker_dilation: disk radius for growing markers, px (0: none).
        blur_sigma: Gaussian sigma before Otsu, px.
        mask: optional bool (H, W) foreground to use instead of Otsu on luma (e.g. from
            :func:`all_tf.segmentation.segment_nuclei`).
        per_component: peaks relative to each component's maximum distance, not the image's.

    Returns:
        int32 (H, W) labels: 0 background, 1..N nuclei.
    """
    if not 0 < peak_fraction < 1:
        raise ValueError(f"peak_fraction must be in (0, 1), got {peak_fraction}")
    grey = luma(rgb)
    if mask is None:
        blurred = cv2.GaussianBlur(grey, (5, 5), blur_sigma)
        if float(blurred.max()) - float(blurred.min()) < 1e-3:
            return np.zeros(grey.shape, np.int32)
        from skimage.filters import threshold_otsu

        foreground = blurred < threshold_otsu(blurred)
    else:
        foreground = np.asarray(mask, bool)
        if foreground.shape != grey.shape:
            raise ValueError(f"mask shape {foreground.shape} does not match image {grey.shape}")
    if not foreground.any():
        return np.zeros(grey.shape, np.int32)
    dist = ndi.distance_transform_edt(foreground)
    if per_component:
        n_comp, comps = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
        comp_max = ndi.maximum(dist, comps, index=np.arange(n_comp))
        peaks = dist > peak_fraction * np.asarray(comp_max)[comps]
        peaks &= foreground
    else:
        peaks = dist > peak_fraction * dist.max()
    n, markers, stats, _ = cv2.connectedComponentsWithStats(peaks.astype(np.uint8), connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_marker_px
    small[0] = True
    markers[small[markers]] = 0
    if marker_dilation > 0:
        kernel = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * marker_dilation + 1, 2 * marker_dilation + 1)
        )
        # grey dilation of the label image grows every marker; markers are far apart
        # (distinct D plateaus), so overlaps between neighbours are not a concern here.
        markers = cv2.dilate(markers.astype(np.float32), kernel).astype(np.int32)
        markers[~foreground] = 0
    if markers.max() == 0:
        return np.zeros(grey.shape, np.int32)
    labels = watershed(-dist, markers, mask=foreground)
    return relabel_sequential(labels)[0].astype(np.int32)  # 1..N after dropped markers


def overlay_ridges(rgb: np.ndarray, labels: np.ndarray, colour=RIDGE_COLOUR) -> np.ndarray:
    """Draw the boundaries of ``labels`` (between nuclei and around them) on a copy of ``rgb``.

    Args:
        rgb: uint8 (H, W, 3).
        labels: int (H, W) label image, 0 background.
        colour: RGB of the ridges, red by default.

    Returns:
        uint8 (H, W, 3).
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}")
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels shape {labels.shape} does not match image {rgb.shape[:2]}")
    out = rgb.copy()
    out[find_boundaries(labels, mode="inner")] = colour
    return out
