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
    """Resize uint8 (H, W, C) to (size, size, C): area averaging when both sides shrink, else
    bilinear.

    The aspect ratio is not kept (the datasets are square fields).
    """
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if size < h and size < w else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def resize_and_mask(rgb: np.ndarray, cfg) -> np.ndarray:
    """The steps of :func:`all_tf.preprocessing.preprocess_image` before its LAB round trip:
    uint8 (H, W, 3) resized to ``cfg.image_size``, the label corner filled if
    ``cfg.mask_label_corner``. ``cfg`` is a ``PreprocessConfig``."""
    from all_tf.preprocessing.label_corner import mask_label_corner

    rgb = resize_to(rgb, cfg.image_size)
    return mask_label_corner(rgb) if cfg.mask_label_corner else rgb
