"""Overlap scores of binary masks.

Example:
    >>> import numpy as np
    >>> from all_tf.segmentation import dice_iou
    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> b = np.zeros((4, 4), bool); b[1:3] = True
    >>> dice_iou(a, b)
    (0.5, 0.3333333333333333)
"""

from __future__ import annotations

import numpy as np


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice 2|P&T|/(|P|+|T|) and IoU |P&T|/|P or T| of two bool masks of one shape.

    Both are 1.0 when both masks are empty.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    inter = int(np.count_nonzero(pred & truth))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return 1.0, 1.0
    return 2.0 * inter / total, inter / (total - inter)
