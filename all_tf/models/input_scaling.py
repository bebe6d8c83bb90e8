"""A registered input layer that maps the pipeline's [0, 1] RGB to what a backbone expects.

Putting the scaling inside the model keeps every ``.keras`` file self-contained: callers always
feed float32 RGB in [0, 1] (``all_tf.preprocessing.preprocess_image``), and the expected input
range travels in the layer config (``expected_input_range(model)`` reads it back).

Modes, with x in [0, 1] (the keras.applications ``preprocess_input`` conventions):

=================  ==============================================  ==========================
mode               output                                          used by
=================  ==============================================  ==========================
``efficientnetv2`` ``255 x / 128 - 1``  (in [-1, 0.992])             EfficientNetV2-S
``tf``             ``2 x - 1``  (in [-1, 1])                         MobileNetV3, InceptionV3
``torch``          ``(x - mean) / std``, ImageNet RGB mean/std       EfficientNetV2-B0, DenseNet
``caffe``          BGR order, ``255 x - mean_bgr``                   ResNet50, VGG16
``raw255``         ``255 x``                                         backbones with built-in
                                                                    preprocessing
=================  ==============================================  ==========================
"""

from __future__ import annotations

import keras
from keras import layers, ops

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

SCALING_MODES = ("efficientnetv2", "tf", "torch", "caffe", "raw255")


def _scale_offset(mode: str) -> tuple[list[float], list[float]]:
    if mode == "efficientnetv2":
        return [255.0 / 128.0] * 3, [-1.0] * 3
    if mode == "tf":
        return [2.0] * 3, [-1.0] * 3
    if mode == "torch":
        scale = [1.0 / s for s in _IMAGENET_STD]
        return scale, [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD, strict=True)]
    if mode == "caffe":
        return [255.0] * 3, [-m for m in _CAFFE_MEAN_BGR]
    if mode == "raw255":
        return [255.0] * 3, [0.0] * 3
    raise ValueError(f"unknown input scaling mode {mode!r}; choose one of {SCALING_MODES}")


@keras.saving.register_keras_serializable(package="all_tf")
class InputScaling(layers.Layer):
    """Per-channel affine map from [0, 1] RGB (B, H, W, 3) to a backbone's input convention.

    Args:
        mode: one of ``SCALING_MODES`` (see the module docstring).
        input_range: the range the model's callers must feed, stored for
            ``expected_input_range``; always (0.0, 1.0) in all_tf.
        **kwargs: standard layer arguments. The dtype defaults to float32 whatever the global
            policy, so the scaling is exact under mixed precision (the next layer casts).
    """

    def __init__(self, mode: str, input_range=(0.0, 1.0), **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.scale, self.offset = _scale_offset(mode)
        self.mode = mode
        self.input_range = (float(input_range[0]), float(input_range[1]))

    def call(self, inputs):
        x = inputs
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)  # RGB -> BGR
        scale = ops.convert_to_tensor(self.scale, dtype=x.dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=x.dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, input_range=list(self.input_range))
        return config
