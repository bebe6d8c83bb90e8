"""Intensity scaling and CLAHE on uint8 RGB images.

Example:
    >>> import numpy as np
    >>> from all_tf.preprocessing import scale_to_unit, clahe
    >>> rgb = np.full((32, 32, 3), 255, np.uint8)
    >>> float(scale_to_unit(rgb).max())
    1.0
    >>> clahe(rgb).shape
    (32, 32, 3)
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

_local = threading.local()  # cv2.CLAHE objects are stateful: one per thread and setting


def check_rgb_uint8(rgb: np.ndarray, name: str = "image") -> np.ndarray:
    """Raise ValueError unless ``rgb`` is a uint8 array of shape (H, W, 3); return it."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3), got {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{name}: empty image of shape {rgb.shape}")
    return rgb


def scale_to_unit(rgb: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1] (divide by 255), same shape."""
    if rgb.dtype != np.uint8:
        raise ValueError(f"scale_to_unit expects uint8, got {rgb.dtype}")
    return rgb.astype(np.float32) * np.float32(1.0 / 255.0)


def get_clahe(clip_limit: float = 2.0, tile_grid: int = 8) -> cv2.CLAHE:
    """A cached ``cv2.CLAHE`` for this thread and setting."""
    cache = getattr(_local, "clahe", None)
    if cache is None:
        cache = _local.clahe = {}
    key = (float(clip_limit), int(tile_grid))
    if key not in cache:
        cache[key] = cv2.createCLAHE(clipLimit=key[0], tileGridSize=(key[1], key[1]))
    return cache[key]


def clahe_lab_inplace(lab: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """CLAHE on the L channel of an OpenCV 8-bit LAB image (H, W, 3) uint8, in place."""
    lab[..., 0] = get_clahe(clip_limit, tile_grid).apply(np.ascontiguousarray(lab[..., 0]))
    return lab


def clahe(rgb: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of lightness only.

    The image goes to OpenCV 8-bit LAB, CLAHE (``clip_limit``, ``tile_grid`` x ``tile_grid``
    tiles) equalises L, and a and b (the colour) are kept, so hue is not shifted.

    Args:
        rgb: uint8 (H, W, 3).
        clip_limit: OpenCV clip limit (contrast amplification cap; 2.0 in the paper).
        tile_grid: tiles per side.

    Returns:
        uint8 (H, W, 3) RGB.
    """
    check_rgb_uint8(rgb, "clahe input")
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    clahe_lab_inplace(lab, clip_limit, tile_grid)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
