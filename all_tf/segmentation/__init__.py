"""Nucleus segmentation: purple index, thresholds, morphology, crops, watershed, overlays.

Example:
    >>> from all_tf.io import read_image
    >>> from all_tf.segmentation import segment_nuclei, nucleus_crops
    >>> rgb = read_image("all_tf/sample_data/all4/Pro/WBC-Malignant-Pro-001.jpg")
    >>> result = nucleus_crops(rgb, segment_nuclei(rgb), size=64, max_crops=4)
    >>> result.crops.shape[1:]
    (64, 64, 3)
"""

from all_tf.segmentation.crops import CropResult, nucleus_crops
from all_tf.segmentation.metrics import dice_iou
from all_tf.segmentation.morphology import (
    SEGMENTATION_METHODS,
    clean_mask,
    count_objects,
    merge_lobes,
    merge_radius,
    raw_nucleus_mask,
    remove_small_objects,
    segment_nuclei,
)
from all_tf.segmentation.purple_index import (
    PI_RANGE,
    RGB_TAUS,
    pi_mask,
    purple_index,
    rgb_threshold_mask,
)
from all_tf.segmentation.watershed import luma, overlay_ridges, watershed_nuclei

__all__ = [
    "PI_RANGE",
    "RGB_TAUS",
    "SEGMENTATION_METHODS",
    "CropResult",
    "clean_mask",
    "count_objects",
    "dice_iou",
    "luma",
    "merge_lobes",
    "merge_radius",
    "nucleus_crops",
    "overlay_ridges",
    "pi_mask",
    "purple_index",
    "raw_nucleus_mask",
    "remove_small_objects",
    "rgb_threshold_mask",
    "segment_nuclei",
    "watershed_nuclei",
]
