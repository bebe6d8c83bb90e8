"""The one preprocessing function shared by training, evaluation, export and predict.

Example:
    >>> import numpy as np
    >>> from all_tf.config import PreprocessConfig
    >>> from all_tf.preprocessing import preprocess_image
    >>> rgb = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    >>> x = preprocess_image(rgb, PreprocessConfig(image_size=64, colour_space="hsv"))
    >>> x.shape, x.dtype, bool(0 <= x.min() and x.max() <= 1)
    ((64, 64, 3), dtype('float32'), True)
"""

from __future__ import annotations

import cv2
import numpy as np

from all_tf.config import PreprocessConfig
from all_tf.preprocessing.colour_spaces import to_colour_space
from all_tf.preprocessing.intensity import check_rgb_uint8, scale_to_unit
from all_tf.preprocessing.reinhard import check_target, lab_before_reinhard, reinhard_lab
from all_tf.preprocessing.resize import resize_and_mask


def preprocess_image(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """RGB uint8 image -> model input.

    Steps: resize to ``cfg.image_size``; the label corner filled with the median colour if
    ``cfg.mask_label_corner``; CLAHE on LAB lightness if ``cfg.clahe``
    (``clahe_clip_limit``, ``clahe_tile_grid``); Reinhard to ``cfg.reinhard_target`` if
    ``cfg.reinhard`` and a target is set (skipped when the target is None); conversion to
    ``cfg.colour_space`` with fixed ranges (see :mod:`all_tf.preprocessing.colour_spaces`).
    CLAHE and Reinhard share one 8-bit LAB round trip.

    Args:
        rgb: uint8 (H, W, 3) RGB.
        cfg: the run's preprocessing settings.

    Returns:
        float32 (S, S, 3) in [0, 1], S = ``cfg.image_size``.

    Raises:
        ValueError: ``rgb`` is not uint8 (H, W, 3), or the Reinhard target is malformed.
    """
    check_rgb_uint8(rgb, "preprocess_image input")
    use_reinhard = cfg.reinhard and cfg.reinhard_target is not None
    if cfg.clahe or use_reinhard:
        lab = lab_before_reinhard(rgb, cfg)
        if use_reinhard:
            lab = reinhard_lab(lab, cfg.reinhard_target)
        rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    else:
        rgb = resize_and_mask(rgb, cfg)
    return to_colour_space(scale_to_unit(rgb), cfg.colour_space)


def validate_preprocess_config(cfg: PreprocessConfig) -> None:
    """Raise ValueError early (before a long run) if ``cfg`` cannot be applied: a malformed
    Reinhard target (the other settings are checked when the config is made)."""
    if cfg.reinhard and cfg.reinhard_target is not None:
        check_target(cfg.reinhard_target)
