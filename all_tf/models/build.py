"""``build_model``: input scaling + backbone (+ CBAM) + classification head, one flat graph.

Every model takes float32 RGB (B, S, S, 3) in [0, 1] and returns float32 softmax
probabilities (B, num_classes), index i being ``all_tf.CLASS_NAMES[i]``.

Example:
    >>> from all_tf.models import build_model, expected_input_range
    >>> model = build_model("mobilenetv3small", image_size=32)
    >>> model.output_shape, expected_input_range(model)
    ((None, 4), (0.0, 1.0))
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from all_tf.models.backbones import (
    CBAM_PLACEMENTS,
    MODEL_NAMES,
    application_backbone,
    get_spec,
    insert_cbam,
)
from all_tf.models.input_scaling import InputScaling

log = logging.getLogger(__name__)

POOL_LAYER = "head_pool"
SCALING_LAYER = "input_scaling"


def build_model(
    name: str,
    num_classes: int = 4,
    image_size: int = 224,
    weights: str | os.PathLike | None = None,
    cbam_placement: str = "stages",
    dropout: float = 0.3,
    bn_momentum: float | None = 0.9,
    cbam_reduction: int = 16,
) -> keras.Model:
    """Build a classifier by name.

    Args:
        name: one of ``MODEL_NAMES``.
        num_classes: size of the softmax output.
        image_size: input side S in pixels (>= 32; >= 75 for InceptionV3).
        weights: None (from scratch), "imagenet" (keras.applications download; CBAM layers
            and the head start fresh), or a local file: a legacy ``.h5`` backbone file (e.g.
            keras.applications' ``*_notop.h5``; loaded by layer name), a ``.weights.h5``
            saved from the backbone or from a whole all_tf model (loaded by structure), or a
            ``.keras`` model (weights copied by layer name wherever the shapes match).
        cbam_placement: one of ``CBAM_PLACEMENTS``; used by the ``*_cbam`` names only.
        dropout: dropout rate before the final Dense layer.
        bn_momentum: momentum set on every BatchNormalization layer (None keeps the
            keras.applications values: 0.99, or 0.999 for MobileNetV3, which are too slow for
            from-scratch training: the moving statistics stay near their initial values).
        cbam_reduction: CBAM channel reduction ratio.

    Returns:
        A functional ``keras.Model`` named ``name``. Its first layer after the input is an
        ``InputScaling`` layer named ``"input_scaling"`` that records the expected input range.

    Raises:
        ValueError: unknown name or placement, an image size the backbone cannot take, or a
            weights file that does not fit (the message names the file).
    """
    spec = get_spec(name)
    if cbam_placement not in CBAM_PLACEMENTS:
        raise ValueError(f"cbam_placement must be one of {CBAM_PLACEMENTS}, got {cbam_placement!r}")
    if image_size < spec.min_size:
        raise ValueError(f"{name} needs image_size >= {spec.min_size} px, got {image_size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    weights_file = None
    if weights is not None and weights != "imagenet":
        weights_file = Path(weights)
        if not weights_file.is_file():
            raise ValueError(f"{weights_file}: weights file not found")

    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    scaled = InputScaling(spec.scaling, name=SCALING_LAYER)(inputs)
    backbone = application_backbone(
        spec, scaled, weights="imagenet" if weights == "imagenet" else None
    )
    if weights_file is not None and weights_file.suffix != ".keras":
        _load_h5_into_backbone(backbone, weights_file, name)
    features = backbone
    if spec.cbam:
        features = insert_cbam(backbone, cbam_placement, cbam_reduction)

    x = layers.GlobalAveragePooling2D(name=POOL_LAYER)(features.outputs[0])
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    model = keras.Model(features.inputs[0], outputs, name=name)

    if bn_momentum is not None:
        set_bn_momentum(model, bn_momentum)
    if weights_file is not None and weights_file.suffix == ".keras":
        _copy_weights_by_name(model, weights_file)
    return model


def build_from_config(cfg, num_classes: int | None = None) -> keras.Model:
    """``build_model`` from an ``all_tf.config.Config`` (model section + image size)."""
    from all_tf import CLASS_NAMES

    m = cfg.model
    return build_model(
        m.name,
        num_classes=num_classes or len(CLASS_NAMES),
        image_size=cfg.preprocess.image_size,
        weights=m.weights,
        cbam_placement=m.cbam_placement,
        dropout=m.dropout,
        bn_momentum=m.bn_momentum,
        cbam_reduction=m.cbam_reduction,
    )


def walk_layers(model: keras.Model):
    """Every layer of ``model``, depth first, nested models' layers included (not ``model``)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set ``momentum`` on every BatchNormalization layer (before compiling); returns the count."""
    count = 0
    for layer in walk_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def expected_input_range(model: keras.Model) -> tuple[float, float]:
    """The (min, max) input range ``model`` was built for: (0.0, 1.0) for all_tf models.

    Raises:
        ValueError: the model has no ``InputScaling`` layer (not built by ``build_model``).
    """
    for layer in walk_layers(model):
        if isinstance(layer, InputScaling):
            return layer.input_range
    raise ValueError(f"model {model.name!r} has no InputScaling layer; not an all_tf model")


def feature_extractor(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers that returns the pooled features (B, F) float.

    F is the channel count of the last feature map (1280 for EfficientNetV2-S/B0).
    """
    pooled = model.get_layer(POOL_LAYER).output
    return keras.Model(model.inputs[0], pooled, name=f"{model.name}_features")


def probabilities_and_features_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers that returns ``(probabilities (B, C), pooled
    features (B, F))``: what the feature-distance gate scores."""
    return keras.Model(model.inputs[0], [model.outputs[0], feature_extractor(model).outputs[0]])


def last_conv_layer_name(model: keras.Model) -> str:
    """Name of the layer whose 4-D output feeds the head's pooling: the Grad-CAM target.

    For ``efficientnetv2s_cbam`` this is ``top_activation`` (or ``top_cbam`` with the "final"
    placement); the graph is flat, so ``model.get_layer(name)`` finds it.
    """
    pooled_input = model.get_layer(POOL_LAYER).input
    for layer in model.layers:
        try:
            if layer.name != POOL_LAYER and layer.output is pooled_input:
                return layer.name
        except (AttributeError, ValueError):  # a layer without a single call in this graph
            continue
    raise ValueError(f"model {model.name!r}: no layer feeds {POOL_LAYER!r}")


def _weights_snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w.numpy(), copy=True) for w in model.weights]


def _load_h5_into_backbone(backbone: keras.Model, path: Path, name: str) -> None:
    before = _weights_snapshot(backbone)
    try:
        if path.name.endswith(".weights.h5"):
            backbone.load_weights(path)
        else:  # legacy HDF5 (keras.applications files): by layer name, skipping mismatches
            backbone.load_weights(path, by_name=True, skip_mismatch=True)
    except Exception as e:  # noqa: BLE001 - any failure means "this file does not fit"
        raise ValueError(
            f"{path}: cannot load into the {name} backbone ({type(e).__name__}: {e})"
        ) from e
    after = backbone.weights
    changed = sum(not np.array_equal(b, a.numpy()) for b, a in zip(before, after, strict=True))
    if changed == 0:
        raise ValueError(f"{path}: no weight of the {name} backbone matched this file")
    log.info("%s: loaded %d of %d backbone weight tensors", path, changed, len(after))


def _copy_weights_by_name(model: keras.Model, path: Path) -> None:
    try:
        source = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read as a .keras model ({type(e).__name__}: {e})") from e
    by_name = {layer.name: layer for layer in walk_layers(source)}
    copied = 0
    for layer in walk_layers(model):
        src = by_name.get(layer.name)
        if src is None or not layer.weights or len(src.weights) != len(layer.weights):
            continue
        if all(
            tuple(a.shape) == tuple(b.shape)
            for a, b in zip(src.weights, layer.weights, strict=True)
        ):
            layer.set_weights(src.get_weights())
            copied += 1
    if copied == 0:
        raise ValueError(f"{path}: no layer of this file matches {model.name} by name and shape")
    log.info("%s: copied weights of %d layers by name", path, copied)


__all__ = [
    "MODEL_NAMES",
    "build_model",
    "build_from_config",
    "expected_input_range",
    "feature_extractor",
    "last_conv_layer_name",
    "set_bn_momentum",
]
