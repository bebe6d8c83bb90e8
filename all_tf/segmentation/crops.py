"""Square crops around segmented nuclei, largest first.

Example:
    >>> import numpy as np
    >>> from all_tf.segmentation import nucleus_crops
    >>> rgb = np.zeros((100, 100, 3), np.uint8)
    >>> mask = np.zeros((100, 100), bool); mask[40:60, 30:50] = True
    >>> r = nucleus_crops(rgb, mask, size=32, margin=4)
    >>> r.crops.shape, r.boxes.tolist(), r.fallback
    ((1, 32, 32, 3), [[36, 26, 64, 54]], False)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class CropResult:
    """Crops of one image.

    Attributes:
        crops: uint8 (K, size, size, 3), K >= 1.
        boxes: int64 (K, 4), each (y0, x0, y1, x1) in pixels of the input image, end exclusive.
        fallback: True when no nucleus was found and the whole image is the single crop.
    """

    crops: np.ndarray
    boxes: np.ndarray
    fallback: bool


def _square_box(y0: int, x0: int, y1: int, x1: int, margin: int, h: int, w: int):
    """Square box around (y0, x0, y1, x1) plus ``margin``, shifted to lie inside the image.

    The side is clamped to the image, so for a non-square image a box may stay rectangular.
    """
    side = max(y1 - y0, x1 - x0) + 2 * margin
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0

    def span(centre: float, length: int) -> tuple[int, int]:
        s = min(side, length)
        start = int(round(centre - s / 2.0))
        start = min(max(start, 0), length - s)
        return start, start + s

    ys, ye = span(cy, h)
    xs, xe = span(cx, w)
    return ys, xs, ye, xe


def _resize(patch: np.ndarray, size: int) -> np.ndarray:
    h, w = patch.shape[:2]
    if (h, w) == (size, size):
        return patch.copy()
    interp = cv2.INTER_AREA if size < h and size < w else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def nucleus_crops(
    rgb: np.ndarray,
    mask: np.ndarray,
    size: int = 224,
    margin: int = 8,
    max_crops: int | None = None,
) -> CropResult:
    """One square crop per 8-connected nucleus of ``mask``, largest nucleus first.

    Each box is the nucleus bounding box grown by ``margin`` px on every side, made square
    (the longer side) so that resizing does not distort the cell, and shifted to lie inside
    the image. Crops are resized to ``size`` x ``size``.

    Args:
        rgb: uint8 (H, W, 3).
        mask: bool (H, W), e.g. from :func:`all_tf.segmentation.segment_nuclei`.
        size: output side in px.
        margin: px added around each nucleus.
        max_crops: keep at most this many (the largest); None keeps all.

    Returns:
        :class:`CropResult`; with no nucleus, the whole image resized and ``fallback=True``.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"nucleus_crops expects uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    if max_crops is not None and max_crops < 1:
        raise ValueError(f"max_crops must be >= 1 or None, got {max_crops}")
    h, w = mask.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    if n <= 1:
        return CropResult(_resize(rgb, size)[None], np.array([[0, 0, h, w]], np.int64), True)
    comps = stats[1:]
    order = np.argsort(-comps[:, cv2.CC_STAT_AREA], kind="stable")
    if max_crops is not None:
        order = order[:max_crops]
    crops, boxes = [], []
    for i in order:
        x, y, bw, bh = (int(v) for v in comps[i, :4])
        y0, x0, y1, x1 = _square_box(y, x, y + bh, x + bw, margin, h, w)
        crops.append(_resize(rgb[y0:y1, x0:x1], size))
        boxes.append((y0, x0, y1, x1))
    return CropResult(np.stack(crops), np.asarray(boxes, np.int64), False)
