"""Resizing a field to the model's input size.

Example:
    >>> import numpy as np
    >>> resize_to(np.zeros((100, 80, 3), np.uint8), 64).shape
    (64, 64, 3)
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_to(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (H, W, C) to (size, size, C): area averaging when shrinking, else bilinear.

    The aspect ratio is not kept (the datasets are square fields).
    """
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if size < h and size < w else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)
