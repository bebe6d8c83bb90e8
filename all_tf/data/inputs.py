"""One decoded image -> the model's input batch, in whole-field or nucleus-crop mode.

The one place that decides what the model sees of an image: training (the tf.data pipeline),
evaluation, predict, Grad-CAM and the timing measurement all call it with the run's config.

Example:
    >>> from all_tf.config import Config
    >>> from all_tf.io import read_image
    >>> rgb = read_image("all_tf/sample_data/all4/Pro/WBC-Malignant-Pro-001.jpg")
    >>> inputs_for_image(rgb, Config.preset("quick")).shape
    (1, 64, 64, 3)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from all_tf.config import Config, PreprocessConfig
from all_tf.preprocessing import preprocess_image


def input_views(rgb: np.ndarray, cfg: Config, mask: np.ndarray | None = None,
                max_crops: int | None = None) -> list[np.ndarray]:
    """The RGB uint8 images the model sees of ``rgb``, before preprocessing.

    Args:
        rgb: uint8 (H, W, 3) RGB field.
        cfg: the run config (``preprocess.input_mode``, crop settings, ``segmentation``).
        mask: nucleus mask of ``rgb`` when the caller has it (crop mode); default: segmented
            here with ``cfg.segmentation``.
        max_crops: crop mode: keep at most this many crops, largest nucleus first (default
            ``cfg.preprocess.max_crops``).

    Returns:
        ``[rgb]`` in image mode; in crop mode the nucleus crops (S x S), or the whole field
        resized when no nucleus is found. With ``preprocess.mask_label_corner`` the crops come
        from the field with its label box filled (and no nucleus of ``mask`` inside the box),
        so no crop shows the label; preprocess them with :func:`view_preprocess_config`.
    """
    pre = cfg.preprocess
    if pre.input_mode != "crops":
        return [rgb]
    from all_tf.segmentation import nucleus_crops, segment_nuclei

    if pre.mask_label_corner:
        from all_tf.preprocessing.label_corner import label_box_mask, mask_label_corner

        rgb = mask_label_corner(rgb)
        if mask is not None:
            mask = mask & ~label_box_mask(mask.shape)
    if mask is None:
        mask = segment_nuclei(rgb, cfg.segmentation)
    crops = nucleus_crops(rgb, mask, size=pre.image_size, margin=pre.crop_margin,
                          max_crops=pre.max_crops if max_crops is None else max_crops)
    return list(crops.crops)


def view_preprocess_config(cfg: Config) -> PreprocessConfig:
    """The preprocessing for the views of :func:`input_views`: ``cfg.preprocess``, except that
    nucleus crops are not label-masked again (their field was, before cropping)."""
    pre = cfg.preprocess
    if pre.input_mode == "crops" and pre.mask_label_corner:
        return dataclasses.replace(pre, mask_label_corner=False)
    return pre


def inputs_for_image(rgb: np.ndarray, cfg: Config, mask: np.ndarray | None = None,
                     max_crops: int | None = None) -> np.ndarray:
    """Model inputs of one decoded image: float32 (N, S, S, 3), S = ``cfg.preprocess.image_size``.

    N is 1 in image mode and the number of nucleus crops in crop mode (see
    :func:`input_views` for ``mask`` and ``max_crops``); every view goes through
    :func:`all_tf.preprocessing.preprocess_image`.

    Raises:
        ValueError: ``rgb`` is not uint8 (H, W, 3), or preprocessing refused it.
    """
    views = input_views(rgb, cfg, mask=mask, max_crops=max_crops)
    pre = view_preprocess_config(cfg)
    x = np.stack([preprocess_image(v, pre) for v in views])
    return x.astype(np.float32, copy=False)
