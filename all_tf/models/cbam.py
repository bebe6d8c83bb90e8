"""Convolutional Block Attention Module (Woo et al., ECCV 2018) as a Keras 3 layer.

Channel attention then spatial attention, each a sigmoid gate multiplied into the features:

* channel: a shared two-layer MLP (``Dense(hidden, relu)``, ``Dense(C)``, implemented as 1x1
  convolutions on the (B, 1, 1, C) pooled maps) applied to the global average- and max-pooled
  features, the two results added, sigmoid -> gate (B, 1, 1, C);
* spatial: ``Conv2D(1, kernel_size)`` over the concatenated channel-mean and channel-max maps,
  sigmoid -> gate (B, H, W, 1).

Only TFLite builtin ops with int8 kernels are used (MEAN, REDUCE_MAX, CONV_2D, ADD, LOGISTIC,
MUL, CONCATENATION; every reduction keeps its dims, so no RESHAPE/EXPAND_DIMS), so a model
containing CBAM converts to full int8 and runs under the XNNPACK delegate.

Example:
    >>> import numpy as np
    >>> from all_tf.models import CBAM
    >>> layer = CBAM()
    >>> y = layer(np.ones((2, 8, 8, 32), "float32"))
    >>> tuple(y.shape), layer.hidden_units
    ((2, 8, 8, 32), 8)
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="all_tf")
class CBAM(layers.Layer):
    """CBAM attention for channels-last feature maps (B, H, W, C) -> same shape.

    Args:
        reduction: channel reduction ratio r of the MLP (paper: 16).
        kernel_size: side of the spatial-attention convolution (paper: 7).
        min_hidden: floor on the MLP's hidden units. The hidden width is
            ``min(C, max(min_hidden, C // reduction))``: with r = 16 an early 24-channel
            EfficientNetV2 stage would otherwise get a 1-unit bottleneck.
        **kwargs: standard layer arguments (name, dtype policy, ...).

    Under a mixed policy (``mixed_bfloat16``/``mixed_float16``) everything runs in the
    compute dtype except the average pools, which are accumulated in float32 (a float16 sum
    over 56x56 positions or 1280 channels could overflow or lose precision); the sigmoid gates
    are in (0, 1) in any dtype.
    """

    def __init__(self, reduction: int = 16, kernel_size: int = 7, min_hidden: int = 8, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"CBAM reduction must be >= 1, got {reduction}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM kernel_size must be a positive odd number, got {kernel_size}")
        if min_hidden < 1:
            raise ValueError(f"CBAM min_hidden must be >= 1, got {min_hidden}")
        self.reduction = int(reduction)
        self.kernel_size = int(kernel_size)
        self.min_hidden = int(min_hidden)
        self.hidden_units = None

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"CBAM expects (B, H, W, C) with known C, got {input_shape}")
        channels = int(input_shape[-1])
        self.hidden_units = min(channels, max(self.min_hidden, channels // self.reduction))
        self.mlp_hidden = layers.Conv2D(
            self.hidden_units, 1, activation="relu", dtype=self.dtype_policy, name="mlp_hidden"
        )
        self.mlp_out = layers.Conv2D(channels, 1, dtype=self.dtype_policy, name="mlp_out")
        self.mlp_hidden.build((None, 1, 1, channels))
        self.mlp_out.build((None, 1, 1, self.hidden_units))
        self.spatial_conv = layers.Conv2D(
            1, self.kernel_size, padding="same", dtype=self.dtype_policy, name="spatial_conv"
        )
        self.spatial_conv.build((None, None, None, 2))

    def _mean(self, x, axis, keepdims=False):
        if self.compute_dtype in ("float16", "bfloat16"):
            mean = ops.mean(ops.cast(x, "float32"), axis=axis, keepdims=keepdims)
            return ops.cast(mean, x.dtype)
        return ops.mean(x, axis=axis, keepdims=keepdims)

    def attention_maps(self, inputs):
        """The two gates, both in (0, 1).

        Args:
            inputs: features (B, H, W, C).

        Returns:
            ``(channel_gate, spatial_gate)`` with shapes (B, 1, 1, C) and (B, H, W, 1); the
            spatial gate is computed on the channel-refined features, as in the paper.
        """
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        channel_gate = self._channel_gate(inputs)
        spatial_gate = self._spatial_gate(inputs * channel_gate)
        return channel_gate, spatial_gate

    def _channel_gate(self, x):
        avg = self._mean(x, axis=(1, 2), keepdims=True)  # (B, 1, 1, C)
        mx = ops.max(x, axis=(1, 2), keepdims=True)
        logits = self.mlp_out(self.mlp_hidden(avg)) + self.mlp_out(self.mlp_hidden(mx))
        return ops.sigmoid(logits)  # (B, 1, 1, C)

    def _spatial_gate(self, x):
        avg = self._mean(x, axis=-1, keepdims=True)  # (B, H, W, 1)
        mx = ops.max(x, axis=-1, keepdims=True)
        return ops.sigmoid(self.spatial_conv(ops.concatenate([avg, mx], axis=-1)))

    def call(self, inputs, return_attention: bool = False):
        channel_gate = self._channel_gate(inputs)
        refined = inputs * channel_gate
        spatial_gate = self._spatial_gate(refined)
        outputs = refined * spatial_gate
        if return_attention:
            return outputs, channel_gate, spatial_gate
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction=self.reduction, kernel_size=self.kernel_size, min_hidden=self.min_hidden
        )
        return config
