"""Preprocessing: scaling, CLAHE, Reinhard normalisation, colour spaces, augmentation.

``preprocess_image`` is the single function that turns a decoded RGB uint8 image into the
model input; training, evaluation, export and predict all call it with the run's
``PreprocessConfig``. The augmentation names are loaded lazily, so importing this package
does not import Keras/TensorFlow.
"""

from all_tf.preprocessing.colour_spaces import COLOUR_SPACE_RANGES, to_colour_space
from all_tf.preprocessing.intensity import check_rgb_uint8, clahe, scale_to_unit
from all_tf.preprocessing.pipeline import preprocess_image, validate_preprocess_config
from all_tf.preprocessing.reinhard import fit_reinhard_target, reinhard_normalize
from all_tf.preprocessing.resize import resize_to

__all__ = [
    "COLOUR_SPACE_RANGES",
    "RandomRot90",
    "build_augmentation",
    "check_rgb_uint8",
    "clahe",
    "fit_reinhard_target",
    "preprocess_image",
    "reinhard_normalize",
    "resize_to",
    "scale_to_unit",
    "to_colour_space",
    "validate_preprocess_config",
]

_LAZY = {"RandomRot90", "build_augmentation"}


def __getattr__(name):
    if name in _LAZY:
        from all_tf.preprocessing import augmentation

        return getattr(augmentation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
