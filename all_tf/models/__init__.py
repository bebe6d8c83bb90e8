"""Models: the CBAM layer, EfficientNetV2 backbones with CBAM, baselines, ``build_model``.

Every model takes float32 RGB (B, S, S, 3) in [0, 1] and returns float32 softmax
probabilities (B, num_classes).
"""

from all_tf.models.backbones import CBAM_PLACEMENTS, MODEL_NAMES, cbam_insertion_points
from all_tf.models.build import (
    build_from_config,
    build_model,
    expected_input_range,
    feature_extractor,
    last_conv_layer_name,
    probabilities_and_features_model,
    set_bn_momentum,
)
from all_tf.models.cbam import CBAM
from all_tf.models.input_scaling import InputScaling

__all__ = [
    "CBAM",
    "CBAM_PLACEMENTS",
    "MODEL_NAMES",
    "InputScaling",
    "build_from_config",
    "build_model",
    "cbam_insertion_points",
    "expected_input_range",
    "feature_extractor",
    "probabilities_and_features_model",
    "last_conv_layer_name",
    "set_bn_momentum",
]
