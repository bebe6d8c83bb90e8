"""Backbones from keras.applications, with CBAM inserted into the flat functional graph.

Every backbone is built ``include_top=False`` on the output of an ``InputScaling`` layer, so
the final model is one flat functional graph (no nested sub-model): Grad-CAM can address any
layer by name and the TFLite converter sees plain ops.

CBAM placements for the EfficientNetV2 backbones (layer names as in keras.applications):

* ``"stages"``: after the last block of each of the 6 stages
  (V2-S: block1b, block2d, block3d, block4f, block5i, block6o; V2-B0: block1a, block2b,
  block3b, block4c, block5e, block6h);
* ``"every_block"``: after every MBConv/Fused-MBConv block (40 in V2-S, 21 in V2-B0);
* ``"final"``: after ``top_activation``, the final 1280-channel feature map;
* ``"none"``: no CBAM.

A block's output is the last layer carrying its ``blockNx_`` prefix: ``blockNx_add`` for
residual blocks, ``blockNx_project_bn``/``_project_activation`` for the first block of a stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras

from all_tf.config import CBAM_PLACEMENTS
from all_tf.models.cbam import CBAM


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one named model.

    Attributes:
        application: class name in ``keras.applications``.
        scaling: ``InputScaling`` mode mapping [0, 1] RGB to what the backbone expects.
        min_size: smallest input side in pixels the backbone accepts.
        cbam: whether CBAM is inserted (the ``*_cbam`` names).
        has_preprocessing_arg: the application takes ``include_preprocessing`` (set False,
            since ``InputScaling`` already does it).
    """

    application: str
    scaling: str
    min_size: int = 32
    cbam: bool = False
    has_preprocessing_arg: bool = False


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnetv2s_cbam": BackboneSpec(
        "EfficientNetV2S", "efficientnetv2", cbam=True, has_preprocessing_arg=True
    ),
    "efficientnetv2s": BackboneSpec(
        "EfficientNetV2S", "efficientnetv2", has_preprocessing_arg=True
    ),
    "efficientnetv2b0_cbam": BackboneSpec(
        "EfficientNetV2B0", "torch", cbam=True, has_preprocessing_arg=True
    ),
    "efficientnetv2b0": BackboneSpec("EfficientNetV2B0", "torch", has_preprocessing_arg=True),
    "mobilenetv3small": BackboneSpec("MobileNetV3Small", "tf", has_preprocessing_arg=True),
    "mobilenetv3large": BackboneSpec("MobileNetV3Large", "tf", has_preprocessing_arg=True),
    "resnet50": BackboneSpec("ResNet50", "caffe"),
    "densenet121": BackboneSpec("DenseNet121", "torch"),
    "vgg16": BackboneSpec("VGG16", "caffe"),
    "inceptionv3": BackboneSpec("InceptionV3", "tf", min_size=75),
}

MODEL_NAMES = tuple(BACKBONES)
"""Every name ``build_model`` accepts."""

_BLOCK_RE = re.compile(r"^block(\d+)([a-z]+)_")


def get_spec(name: str) -> BackboneSpec:
    """The spec of a model name; unknown names raise ValueError listing ``MODEL_NAMES``."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}"
        ) from None


def application_backbone(spec: BackboneSpec, input_tensor, weights=None) -> keras.Model:
    """The keras.applications backbone (``include_top=False``) built on ``input_tensor``.

    Args:
        spec: the backbone spec.
        input_tensor: a KerasTensor (B, S, S, 3) already scaled to the backbone's convention.
        weights: None or "imagenet" (passed to keras.applications).

    Returns:
        A functional model whose inputs are the source ``keras.Input`` of ``input_tensor``, so
        its layers form one flat graph with whatever produced ``input_tensor``.
    """
    constructor = getattr(keras.applications, spec.application)
    kwargs = {"include_top": False, "weights": weights, "input_tensor": input_tensor}
    if spec.has_preprocessing_arg:
        kwargs["include_preprocessing"] = False
    return constructor(**kwargs)


def block_outputs(model: keras.Model) -> dict[str, str]:
    """Map each EfficientNet block id (``"block2d"``) to the name of its output layer.

    Args:
        model: a functional model containing keras.applications EfficientNet(V2) blocks.

    Returns:
        Ordered ``{block_id: layer_name}`` following the model's topological layer order.
    """
    outputs: dict[str, str] = {}
    for layer in model.layers:
        m = _BLOCK_RE.match(layer.name)
        if m:
            outputs[f"block{m.group(1)}{m.group(2)}"] = layer.name
    return outputs


def cbam_insertion_points(model: keras.Model, placement: str) -> list[str]:
    """Names of the layers after which CBAM goes, for a placement.

    Args:
        model: the application backbone (EfficientNetV2 family for "stages"/"every_block").
        placement: one of ``CBAM_PLACEMENTS``.

    Returns:
        Layer names in graph order; empty for "none".
    """
    if placement not in CBAM_PLACEMENTS:
        raise ValueError(f"cbam_placement must be one of {CBAM_PLACEMENTS}, got {placement!r}")
    if placement == "none":
        return []
    if placement == "final":
        return [model.layers[-1].name]
    blocks = block_outputs(model)
    if not blocks:
        raise ValueError(
            f"placement {placement!r} needs an EfficientNet backbone; "
            f"{model.name} has no blockNx_ layers"
        )
    if placement == "every_block":
        return list(blocks.values())
    last_per_stage: dict[str, str] = {}
    for block_id, layer_name in blocks.items():
        last_per_stage[_BLOCK_RE.match(block_id + "_").group(1)] = layer_name
    return list(last_per_stage.values())


def _cbam_name(layer_name: str) -> str:
    m = _BLOCK_RE.match(layer_name)
    prefix = f"block{m.group(1)}{m.group(2)}" if m else layer_name.split("_")[0]
    return f"{prefix}_cbam"


def insert_cbam(model: keras.Model, placement: str, reduction: int = 16) -> keras.Model:
    """Rebuild ``model``'s functional graph with a CBAM layer after each insertion point.

    The layers are re-created from their configs and their weights copied, so every layer of
    the result belongs to this graph only: ``result.get_layer(name).output`` is a tensor of the
    result (what Grad-CAM and feature extraction need). The CBAM layers start from their
    initialisers.

    Args:
        model: a functional backbone (e.g. from ``application_backbone``).
        placement: one of ``CBAM_PLACEMENTS``.
        reduction: CBAM channel reduction ratio.

    Returns:
        A new functional model with the same input and output shapes.
    """
    points = set(cbam_insertion_points(model, placement))
    if not points:
        return model

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in points:
            out = CBAM(reduction=reduction, name=_cbam_name(layer.name))(out)
        return out

    rebuilt = keras.models.clone_model(model, call_function=call_function)
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt
