"""Crop mode: an image's probabilities are the mean of its nucleus crops' probabilities.

Metrics are always computed per image, on these aggregated probabilities.

Example:
    >>> import numpy as np
    >>> from all_tf.evaluation.crops import aggregate_crop_probabilities
    >>> p = np.array([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])
    >>> aggregate_crop_probabilities(p, np.array([0, 0, 1]), 2).round(2).tolist()
    [[0.6, 0.4], [0.1, 0.9]]
"""

from __future__ import annotations

import numpy as np

from all_tf.inference.uncertainty import check_probabilities


def aggregate_crop_probabilities(crop_probs, image_index, n_images: int) -> np.ndarray:
    """Average crop probabilities per image.

    Args:
        crop_probs: float array (M, C), the probabilities of M crops.
        image_index: int array (M,), the image (0 .. n_images-1) each crop comes from.
        n_images: number of images.

    Returns:
        float64 array (n_images, C); row i is the mean of image i's crops (still sums to 1).

    Raises:
        ValueError: shapes disagree, an index is out of range, or an image has no crops
            (the message names the first such image index).
    """
    crop_probs = check_probabilities(crop_probs, "crop_probs")
    image_index = np.asarray(image_index)
    if image_index.shape != (len(crop_probs),):
        raise ValueError(
            f"image_index must have shape ({len(crop_probs)},), got {image_index.shape}"
        )
    if image_index.size and not np.issubdtype(image_index.dtype, np.integer):
        raise ValueError(f"image_index must be integers, got dtype {image_index.dtype}")
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    image_index = image_index.astype(np.int64)
    if image_index.size and (image_index.min() < 0 or image_index.max() >= n_images):
        bad = image_index[(image_index < 0) | (image_index >= n_images)][0]
        raise ValueError(f"image_index {bad} out of range for n_images={n_images}")
    counts = np.bincount(image_index, minlength=n_images)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise ValueError(
            f"image {missing[0]} has no crops ({missing.size} image(s) without crops); "
            "use the whole image as its single crop (segmentation fallback)"
        )
    sums = np.zeros((n_images, crop_probs.shape[1]), dtype=np.float64)
    np.add.at(sums, image_index, crop_probs)
    return sums / counts[:, None]
