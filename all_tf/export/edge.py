"""The edge TFLite file: decoded RGB uint8 in, preprocessing and model in one graph.

A phone app decodes the image, scales it to the model's input size S x S and hands the pixels
over as they are; everything else (label-corner mask, CLAHE, Reinhard, colour space, the model,
test-time augmentation and temperature when the config has them) runs inside the flatbuffer.
The file is converted with ``TFLITE_BUILTINS`` only -- no Flex (``SELECT_TF_OPS``) or custom
ops -- so the stock LiteRT runtime on Android runs it.

Input ``rgb``: uint8 [1, S, S, 3], RGB order, S = ``cfg.preprocess.image_size``. Scaling the
decoded image to S x S is the app's job; :func:`all_tf.preprocessing.resize_to` (OpenCV area
averaging when shrinking) is what the model saw in training, so an app should average
(box-filter) when it shrinks rather than sample nearest pixels.
Output ``probabilities``: float32 [1, 4] in ``all_tf.CLASS_NAMES`` order, after the stored
temperature and, when ``cfg.tta``, averaged over the 8 flips and 90-degree rotations -- the
numbers the SavedModel's ``serving_default`` returns for the same pixels. With a calibrated
feature-distance gate, output ``ood_score``: float32 [1], the Mahalanobis distance of the
unrotated view's pooled features (the weights are float32, so it is the host's). The gate's
input checks, computed on the decoded image at full size, are in the metadata, as for the other
TFLite files.

The preprocessing is :func:`all_tf.export.graph_preprocessing.preprocess_resized_graph`, the
SavedModel's own steps after its resize (built from TFLite builtin ops there), with
``float64=False`` since TFLite has no float64. What this adds or changes:

* Reinhard: the per-image mean and std in float32 from exact int32 sums of the pixels minus
  their integer mean (at most 362 x 362 px). The std then agrees with float64's to about 1 ulp,
  so a value lands on the other side of a rounding boundary only rarely: on all 2,701 all4
  images at 128 and at 224 px and 400 synthetic images, one 224 px image differed, in 501 of
  its 150,528 LAB values by one level; the rest were bit-exact.
* ``hsv``: the hue factor in float32 (at most 1.2e-7 from OpenCV's double on the shipped
  sample). LAB both ways, CLAHE and the label corner are bit-exact, as in the SavedModel.
* No resizing: the input is already S x S.
* Test-time augmentation and the temperature in the graph, and the check that the converted
  file holds builtin ops only.

The converter records ``min_runtime_version`` 2.10.0 for these files (LiteRT/TFLite runtimes
from 2.10 on); :func:`min_runtime_version` reads it and the metadata stores it.

Example:
    >>> from all_tf.export.edge import export_edge  # doctest: +SKIP
    >>> path = export_edge(model, cfg, "export/tflite")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import tensorflow as tf

from all_tf.config import Config, PreprocessConfig
from all_tf.export import graph_preprocessing as gp

EDGE_VARIANT = "edge"
EDGE_SUFFIX = "edge_uint8"
SIGNATURE = "serving_default"
INPUT_NAME = "rgb"
OUTPUT_NAME = "probabilities"
OOD_OUTPUT_NAME = "ood_score"


# ----------------------------------------------------------------------------- pipeline
def preprocess_edge(rgb: tf.Tensor, cfg: PreprocessConfig) -> tf.Tensor:
    """The model input of one image already at model size, with TFLite builtin ops only.

    Args:
        rgb: uint8 (S, S, 3), S = ``cfg.image_size`` (static).
        cfg: the run's preprocessing settings (read when the graph is built).

    Returns:
        float32 (S, S, 3) in [0, 1], as :func:`all_tf.preprocessing.preprocess_image` of an
        S x S image (see the module docstring for what is not bit-exact).
    """
    size = int(cfg.image_size)
    if tuple(rgb.shape) != (size, size, 3):
        raise ValueError(f"edge preprocessing takes ({size}, {size}, 3), got {tuple(rgb.shape)}")
    if cfg.input_mode != "image":
        raise ValueError("the edge file is for whole-field models (input_mode='image')")
    return gp.preprocess_resized_graph(tf.cast(rgb, tf.uint8), cfg, float64=False)


def edge_probabilities(model, rgb: tf.Tensor, cfg: Config, tta: bool | None = None) -> tf.Tensor:
    """Class probabilities float32 (1, C) of uint8 RGB (1, S, S, 3): the edge file's graph.

    Args:
        model: Keras all_tf model, float32.
        rgb: uint8 (1, S, S, 3).
        cfg: the run's config (preprocessing, temperature, tta).
        tta: average the 8 flips and 90-degree rotations; default ``cfg.tta``.
    """
    return edge_outputs(model, rgb, cfg, tta)[OUTPUT_NAME]


def edge_outputs(net, rgb: tf.Tensor, cfg: Config, tta: bool | None = None,
                 distance=None) -> dict[str, tf.Tensor]:
    """The edge file's outputs for uint8 RGB (1, S, S, 3): ``probabilities`` float32 (1, C)
    and, with ``distance``, ``ood_score`` float32 (1,) of the unrotated view.

    Args:
        net: the float32 Keras model, or with ``distance`` a model returning
            ``(probabilities, pooled features)``.
        distance: a calibrated :class:`all_tf.inference.gate.FeatureDistance`, or None.
    """
    tta = cfg.tta if tta is None else bool(tta)
    x = preprocess_edge(rgb[0], cfg.preprocess)[None]
    if tta:  # the views of serving_default, in the same order (the unrotated one first)
        x = tf.concat([tf.image.rot90(im, k) for im in (x, tf.image.flip_left_right(x))
                       for k in range(4)], axis=0)
    out = {}
    if distance is None:
        probs = tf.cast(net(x, training=False), tf.float32)
    else:
        from all_tf.export.graph_gate import mahalanobis_graph

        probs, features = net(x, training=False)
        probs = tf.cast(probs, tf.float32)
        features = tf.reshape(tf.cast(features, tf.float32), [tf.shape(x)[0], -1])
        out[OOD_OUTPUT_NAME] = mahalanobis_graph(features[:1], distance.means,
                                                 distance.precision)
    if tta:
        probs = tf.reduce_mean(probs, axis=0, keepdims=True)
    if float(cfg.temperature) != 1.0:
        probs = tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-12)) / float(cfg.temperature),
                              axis=1)
    return {OUTPUT_NAME: probs, **out}


def convert_edge(model, cfg: Config, tta: bool | None = None, distance=None) -> bytes:
    """The edge flatbuffer (``TFLITE_BUILTINS`` only) of a float32 Keras model; with a
    calibrated ``distance`` it also outputs ``ood_score``.

    Raises:
        ValueError: the graph needs an op that is not a TFLite builtin (the converter's error).
    """
    import keras

    from all_tf.inference.model_files import config_for_model, to_float32

    model = to_float32(model)
    cfg = config_for_model(cfg, model)
    size = int(cfg.preprocess.image_size)
    net = model
    if distance is not None:
        from all_tf.models import probabilities_and_features_model

        net = probabilities_and_features_model(model)
    with tempfile.TemporaryDirectory(prefix="all_tf_edge_") as work:
        archive = keras.export.ExportArchive()
        archive.track(net)
        archive.add_endpoint(
            SIGNATURE,
            lambda rgb: edge_outputs(net, rgb, cfg, tta, distance),
            input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8, name=INPUT_NAME)],
        )
        path = os.path.join(work, "saved_model")
        archive.write_out(path, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            flat = converter.convert()
        except Exception as e:  # ConverterError: an op without a builtin kernel
            raise ValueError(f"edge conversion failed: {str(e)[-2000:]}") from e
    bad = non_builtin_ops(flat)
    if bad:
        raise ValueError(f"edge flatbuffer has non-builtin ops: {bad}")
    return flat


def flatbuffer_ops(flatbuffer: bytes) -> Counter:
    """Operator name -> count over every subgraph, read from the schema (no interpreter).

    Builtins are named as in the schema (``CONV_2D``); custom ops (Flex ops among them,
    ``FlexBincount``...) by their custom code, prefixed ``CUSTOM:``.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for oc in model.operatorCodes:
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        if code == schema.BuiltinOperator.CUSTOM:
            custom = oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode
            codes.append(f"CUSTOM:{custom}")
        else:
            codes.append(names.get(code, str(code)))
    return Counter(codes[op.opcodeIndex] for g in model.subgraphs for op in (g.operators or []))


def min_runtime_version(flatbuffer: bytes) -> str | None:
    """The oldest TFLite/LiteRT runtime the converter says runs the file (its
    ``min_runtime_version`` metadata), or None."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    for md in model.metadata or []:
        name = md.name.decode() if isinstance(md.name, bytes) else md.name
        if name == "min_runtime_version":
            return bytes(model.buffers[md.buffer].data).rstrip(b"\0").decode()
    return None


def non_builtin_ops(flatbuffer: bytes) -> list[str]:
    """Sorted custom/Flex op names in a flatbuffer ([] for a builtins-only file)."""
    return sorted(name for name in flatbuffer_ops(flatbuffer) if name.startswith("CUSTOM:"))


def export_edge(model, cfg: Config, out_dir: str | os.PathLike, model_name: str = "all_tf",
                threshold: float | None = None, source: str | None = None, gate=None,
                tta: bool | None = None) -> Path:
    """Write ``<out_dir>/<model_name>_edge_uint8.tflite`` with its ``.json`` metadata.

    Args:
        model: Keras all_tf model (converted to float32 first if mixed precision).
        cfg: the run's config.
        out_dir: output folder (``labels.txt`` is written too).
        model_name: file name prefix.
        threshold: uncertainty threshold; default ``cfg.uncertainty_threshold``.
        source: recorded in the metadata.
        gate: the model's :class:`all_tf.inference.Gate`; its input checks go into the
            metadata (the graph does not apply them), and a calibrated feature distance
            becomes the ``ood_score`` output.
        tta: test-time augmentation in the graph; default ``cfg.tta``.

    Returns:
        The ``.tflite`` path.
    """
    from all_tf import CLASS_NAMES
    from all_tf.export.tflite import gate_metadata, io_details
    from all_tf.inference.model_files import (
        DEFAULT_THRESHOLD,
        config_for_model,
        export_metadata,
        to_float32,
    )
    from all_tf.io import atomic_write_bytes, atomic_write_text

    model = to_float32(model)
    cfg = config_for_model(cfg, model)
    tta = cfg.tta if tta is None else bool(tta)
    if threshold is None:
        threshold = cfg.uncertainty_threshold
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    distance = gate.distance if gate is not None else None
    if distance is not None and distance.threshold is None:
        distance = None
    flat = convert_edge(model, cfg, tta, distance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "labels.txt", "".join(f"{name}\n" for name in CLASS_NAMES))
    path = out_dir / f"{model_name}_{EDGE_SUFFIX}.tflite"
    atomic_write_bytes(path, flat)
    details = io_details(flat)
    size = cfg.preprocess.image_size
    meta = export_metadata(
        cfg, threshold,
        variant=EDGE_VARIANT,
        file=path.name,
        labels_file="labels.txt",
        size_bytes=len(flat),
        signature=SIGNATURE,
        ops="TFLITE_BUILTINS only",
        min_runtime_version=min_runtime_version(flat),
        tta_in_graph=tta,
        uncertainty_rule="probabilities = the output (the temperature and, when tta_in_graph, "
                         "the mean over the 8 flips and rotations are applied in the graph); "
                         "uncertain = max(probabilities) < uncertainty_threshold"
                         + (", or the class of gate.colour_check (see the .tflite files' "
                            "uncertainty_rule) differs from argmax(probabilities)"
                            if gate is not None and gate.colour is not None else ""),
        input={**details["input"], "signature_name": INPUT_NAME, "layout": "NHWC",
               "value_range": [0, 255],
               "feed": f"the decoded RGB image scaled to {size} x {size} (area averaging when "
                       "shrinking, as all_tf.preprocessing.resize_to), uint8, no "
                       "normalisation: preprocessing is in the graph"},
        output={**details["output"], "signature_name": OUTPUT_NAME,
                "meaning": "probabilities in class_names order, after the temperature"
                           + (" and averaged over the 8 flips and rotations" if tta else ""),
                "read": "p = value"},
        source=source,
        gate=gate_metadata(gate, ood_output="ood_output" in details),
    )
    if "ood_output" in details:
        meta["ood_output"] = {
            **details["ood_output"], "signature_name": OOD_OUTPUT_NAME,
            "meaning": "Mahalanobis distance of the unrotated view's pooled features to the "
                       "nearest class mean; above gate.ood.threshold: out of distribution"}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path
