"""all_tf: multistage B-ALL classification of peripheral blood smear images.

Stages, each in its own module, data flowing one way:
``data`` (scan, duplicates, splits, tf.data) -> ``preprocessing`` (scaling, CLAHE, Reinhard,
colour spaces, augmentation) and ``segmentation`` (purple index, morphology, crops, watershed)
-> ``models`` (EfficientNetV2-S + CBAM, baselines) -> ``train`` -> ``evaluation`` ->
``export`` / ``predict``.
"""

__version__ = "0.1.0"

CLASS_NAMES = ("Benign", "Early", "Pre", "Pro")
"""Canonical class order: index i of every probability vector is CLASS_NAMES[i]."""
