"""Training-only augmentation built from Keras preprocessing layers.

Every layer is a no-op when called with ``training=False``; Keras passes that flag through a
``keras.Sequential`` and a model's ``fit``/``predict``. Images are float32 in [0, 1] (after
:func:`all_tf.preprocessing.preprocess_image`), batched (B, H, W, C) or single (H, W, C).

Example:
    >>> import numpy as np
    >>> from all_tf.config import AugmentConfig
    >>> from all_tf.preprocessing import build_augmentation
    >>> aug = build_augmentation(AugmentConfig(), seed=0)
    >>> x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    >>> bool(np.array_equal(np.asarray(aug(x, training=False)), x))
    True
"""

from __future__ import annotations

import keras
from keras import ops

from all_tf.config import AugmentConfig


@keras.saving.register_keras_serializable(package="all_tf")
class RandomRot90(keras.layers.Layer):
    """Rotate each image by k * 90 degrees, k uniform in {0, 1, 2, 3}; exact (no resampling).

    Needs square images (H == W) so the batch keeps one shape. Identity when
    ``training=False``.

    Args:
        seed: integer seed for the layer's ``keras.random.SeedGenerator``.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=True):
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if not training:
            return inputs
        single = len(inputs.shape) == 3
        x = ops.expand_dims(inputs, 0) if single else inputs
        h, w = x.shape[1], x.shape[2]
        if h is not None and w is not None and h != w:
            raise ValueError(f"RandomRot90 needs square images, got {h}x{w}")
        k = keras.random.randint((ops.shape(x)[0], 1, 1, 1), 0, 4, seed=self.seed_generator)
        # rot90 by k (counter-clockwise, as np.rot90) = transpose if k is odd, then flip rows
        # for k in {1, 2} and columns for k in {2, 3}.
        x = ops.where(k % 2 == 1, ops.transpose(x, (0, 2, 1, 3)), x)
        x = ops.where((k == 1) | (k == 2), ops.flip(x, axis=1), x)
        x = ops.where(k >= 2, ops.flip(x, axis=2), x)
        return ops.squeeze(x, 0) if single else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="all_tf")
class RandomHEDJitter(keras.layers.Layer):
    """Stain augmentation in HED optical-density space (Tellez et al. 2019, "Quantifying the
    effects of data augmentation and stain color normalization").

    Each image's RGB is turned into haematoxylin, eosin and DAB densities (Ruifrok & Johnston's
    matrix); every density channel is scaled by ``alpha ~ U(1 - factor, 1 + factor)`` and
    shifted by ``beta ~ U(-factor, factor)``, and the result turned back into RGB. It models a
    new slide batch stained darker, paler or with another haematoxylin/eosin balance. Input and
    output are RGB float in [0, 1]; identity when ``training=False``.

    Args:
        factor: jitter strength in [0, 1] (Tellez: 0.05 "light", 0.2 "strong").
        seed: integer seed for the layer's ``keras.random.SeedGenerator``.
    """

    def __init__(self, factor: float = 0.05, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= factor <= 1:
            raise ValueError(f"HED jitter factor must be in [0, 1], got {factor}")
        self.factor = float(factor)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        from skimage.color import hed_from_rgb, rgb_from_hed

        self._to_hed = hed_from_rgb.astype("float32")
        self._to_rgb = rgb_from_hed.astype("float32")

    def call(self, inputs, training=True):
        inputs = ops.convert_to_tensor(inputs, dtype=self.compute_dtype)
        if not training or self.factor == 0:
            return inputs
        single = len(inputs.shape) == 3
        x = ops.cast(ops.expand_dims(inputs, 0) if single else inputs, "float32")
        n = ops.shape(x)[0]
        od = -ops.log(ops.clip(x, 1.0 / 255.0, 1.0))  # optical density, >= 0
        hed = ops.einsum("bhwc,cd->bhwd", od, self._to_hed)
        alpha = keras.random.uniform((n, 1, 1, 3), 1 - self.factor, 1 + self.factor,
                                     seed=self.seed_generator)
        beta = keras.random.uniform((n, 1, 1, 3), -self.factor, self.factor,
                                    seed=self.seed_generator)
        od = ops.einsum("bhwd,dc->bhwc", hed * alpha + beta, self._to_rgb)
        x = ops.clip(ops.exp(-od), 0.0, 1.0)
        x = ops.cast(x, self.compute_dtype)
        return ops.squeeze(x, 0) if single else x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


def build_augmentation(cfg: AugmentConfig, seed: int | None = None) -> keras.Sequential:
    """Augmentation pipeline from ``cfg``; each layer gets its own seed derived from ``seed``.

    Layers, in order: ``RandomFlip`` (horizontal and vertical) if ``cfg.flips``;
    :class:`RandomRot90` if ``cfg.rot90``; ``RandomBrightness`` and ``RandomContrast`` with
    factor ``cfg.colour_jitter`` on value range (0, 1), outputs clipped to [0, 1], if
    ``cfg.colour_jitter > 0``; :class:`RandomHEDJitter` with ``cfg.hed_jitter`` if it is > 0
    (RGB colour space only); ``RandomZoom`` by up to ``cfg.zoom`` in or out (aspect kept,
    borders reflected) if it is > 0; ``RandAugment`` (value range (0, 1)) if
    ``cfg.rand_augment``.
    Flips and 90-degree rotations are exact symmetries of a smear field. Colour jitter acts on
    whatever channels the colour space has (for ``hsv`` it also shifts hue), so keep it small.

    Returns:
        ``keras.Sequential`` mapping float32 [0, 1] images to the same shape and range.
    """
    if not 0 <= cfg.colour_jitter <= 1:
        raise ValueError(f"colour_jitter must be in [0, 1], got {cfg.colour_jitter}")

    def layer_seed(i: int) -> int | None:
        return None if seed is None else seed + 1000 * i

    layers = []
    if cfg.flips:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=layer_seed(0)))
    if cfg.rot90:
        layers.append(RandomRot90(seed=layer_seed(1), name="random_rot90"))
    if cfg.colour_jitter > 0:
        layers.append(
            keras.layers.RandomBrightness(cfg.colour_jitter, value_range=(0, 1), seed=layer_seed(2))
        )
        layers.append(
            keras.layers.RandomContrast(cfg.colour_jitter, value_range=(0, 1), seed=layer_seed(3))
        )
    if cfg.hed_jitter > 0:
        layers.append(RandomHEDJitter(cfg.hed_jitter, seed=layer_seed(5), name="hed_jitter"))
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode="reflect",
                                              seed=layer_seed(6), name="random_zoom"))
    if cfg.rand_augment:
        layers.append(keras.layers.RandAugment(value_range=(0, 1), seed=layer_seed(4)))
    layers.append(keras.layers.Identity(name="augment_out"))  # a Sequential may not be empty
    return keras.Sequential(layers, name="augmentation")
