"""TFLite export: float32, float16, dynamic-range int8 and full int8, with labels and metadata.

Every ``.tflite`` file takes one preprocessed image, NHWC [1, S, S, 3], the output of
:func:`all_tf.preprocessing.preprocess_image` (values in [0, 1]), and returns the 4 class
probabilities. A model with a feature-distance gate also returns ``ood_score`` [1] from the
``float32`` and ``float16`` files: the Mahalanobis distance of its pooled features, computed
in the graph. The int8-weight variants leave it out: the gate was fitted on float32 features,
which int8 weights move enough to change the distance several-fold. Preprocessing (resize, CLAHE, Reinhard, colour space) stays on the host: CLAHE's
histograms have no TFLite builtin op.

Beside the files: ``labels.txt`` (one class name a line, in output order) and, per file,
``<file>.json`` recording the input layout, dtype, value range and quantisation parameters,
the class names, the uncertainty threshold and the preprocessing config.

Variants:

``float32``  no optimisation.
``float16``  weights stored as float16, computed in float32.
``dynamic_int8``  weights int8, activations float (dynamic-range quantisation); float I/O.
``int8``  everything int8, calibrated on real training images through the same preprocessing;
          int8 input and output. The calibration set gets one extra copy of its first image with
          one pixel at 0 and one at 1, so the input scale covers exactly [0, 1]: the input
          quantisation is then scale 1/255, zero point -128, i.e. q = round(255 x) - 128.
``int16x8``  int8 weights, int16 activations (same calibration), float I/O. Much closer to
          float than full int8 when activations have wide ranges, but XNNPACK does not run
          it: LiteRT's reference kernels are tens of times slower. Not exported by default.

Conversion runs here; running the files is left to :mod:`all_tf.export.verify`, in another
process (calibration and the LiteRT interpreter in one process have aborted).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.config import Config
from all_tf.inference.model_files import (
    DEFAULT_THRESHOLD,
    config_for_model,
    export_metadata,
    input_range,
    to_float32,
)
from all_tf.io import atomic_write_bytes, atomic_write_text

VARIANTS = ("float32", "float16", "dynamic_int8", "int8", "int16x8")
DEFAULT_VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
OOD_OUTPUT_NAME = "ood_score"
# the distance was fitted on float32 features; int8 weights move the features enough to
# change it several-fold (see docs/deployment.md), float16 weights by a few percent
OOD_VARIANTS = ("float32", "float16")


def calibration_set(
    images: Iterable[np.ndarray], cfg: Config, count: int = 100, pin_range: bool = True
) -> np.ndarray:
    """Preprocessed calibration inputs float32 (K, S, S, 3).

    Args:
        images: RGB uint8 images (training images, not test ones).
        cfg: the run's config; each image becomes the inputs the model sees of it
            (:func:`all_tf.data.inputs.inputs_for_image`: the preprocessed field, or in crop
            mode its preprocessed nucleus crops), so int8 ranges are calibrated on model inputs.
        count: at most this many images are used.
        pin_range: append a copy of the first input with one pixel at 0 and one at 1 (see the
            module docstring).

    Raises:
        ValueError: no images.
    """
    from all_tf.data.inputs import inputs_for_image

    xs: list[np.ndarray] = []
    for rgb in images:
        xs.extend(inputs_for_image(rgb, cfg)[: count - len(xs)])
        if len(xs) >= count:
            break
    if not xs:
        raise ValueError("full-int8 calibration needs at least one training image")
    if pin_range:
        pinned = xs[0].copy()
        pinned[0, 0] = 0.0
        pinned[-1, -1] = 1.0
        xs.append(pinned)
    return np.stack(xs).astype(np.float32)


def _saved_model_for_conversion(model, size: int, workdir: str, distance=None) -> str:
    """A single-image SavedModel to convert; with ``distance`` (a fitted
    :class:`all_tf.inference.gate.FeatureDistance`) it also returns ``ood_score``."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    if distance is None:
        archive.track(model)

        def endpoint(pixels):
            return {OUTPUT_NAME: tf.cast(model(pixels, training=False), tf.float32)}
    else:
        from all_tf.export.graph_gate import mahalanobis_graph
        from all_tf.models import probabilities_and_features_model

        net = probabilities_and_features_model(model)
        archive.track(net)
        n_features = int(distance.means.shape[1])

        def endpoint(pixels):
            probs, features = net(pixels, training=False)
            features = tf.reshape(tf.cast(features, tf.float32), [-1, n_features])
            return {OUTPUT_NAME: tf.cast(probs, tf.float32),
                    OOD_OUTPUT_NAME: mahalanobis_graph(features, distance.means,
                                                       distance.precision)}
    archive.add_endpoint(
        SIGNATURE, endpoint,
        input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=INPUT_NAME)],
    )
    path = os.path.join(workdir, "saved_model" if distance is None else "saved_model_ood")
    archive.write_out(path, verbose=False)
    return path


def convert(saved_model_dir: str, variant: str, calibration: np.ndarray | None = None) -> bytes:
    """Convert a single-image SavedModel to one TFLite variant; returns the flatbuffer."""
    import tensorflow as tf

    if variant not in VARIANTS:
        raise ValueError(f"TFLite variant must be one of {VARIANTS}, got {variant!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in ("int8", "int16x8"):
        if calibration is None or len(calibration) == 0:
            raise ValueError(f"{variant} conversion needs calibration images")

        def representative():
            for x in calibration:
                yield [x[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        if variant == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def gate_metadata(gate, ood_output: bool = False) -> dict | None:
    """The input gate's checks as TFLite metadata (an app applies them), and with
    ``ood_output`` the threshold of the file's ``ood_score`` output."""
    if gate is None:
        return None
    ood = None
    if ood_output:
        ood = {"method": "mahalanobis_min_class", "output": OOD_OUTPUT_NAME,
               "threshold": gate.distance.threshold,
               "how": f"status rejected:out_of_distribution when {OOD_OUTPUT_NAME} > threshold "
                      "(after the input checks pass)"}
    return {**gate.to_dict(), "ood": ood,
            "how": "statistics of the decoded RGB image resized to gate_size x gate_size "
                   "(all_tf.inference.gate.image_statistics); the first check [statistic, "
                   "0 = below low / 1 = above high, reason] that fails gives status "
                   "rejected:<reason>"}


def io_details(flatbuffer: bytes) -> dict:
    """Input/output tensor dtype, shape and quantisation, read from the flatbuffer itself:
    ``{"input": ..., "output": ...}``, the signature's first input and its ``probabilities``
    output (else the graph's first), plus ``"ood_output"`` where the signature has
    ``ood_score``.

    Reads the schema (no interpreter), so it is safe in the converting process.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    dtypes = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def describe(index):
        t = graph.tensors[index]
        q = t.quantization
        scale = list(q.scale) if q is not None and q.scale is not None else []
        zero = list(q.zeroPoint) if q is not None and q.zeroPoint is not None else []
        return {
            "name": t.name.decode() if isinstance(t.name, bytes) else t.name,
            "shape": [int(d) for d in t.shape],
            "dtype": dtypes.get(t.type, str(t.type)),
            "quantization": {"scale": float(scale[0]), "zero_point": int(zero[0])} if scale else None,
        }

    outputs = {}
    for signature in model.signatureDefs or []:
        for tensor_map in signature.outputs or []:
            name = tensor_map.name.decode() if isinstance(tensor_map.name, bytes) \
                else tensor_map.name
            outputs[name] = tensor_map.tensorIndex
    out = {"input": describe(graph.inputs[0]),
           "output": describe(outputs.get(OUTPUT_NAME, graph.outputs[0]))}
    if OOD_OUTPUT_NAME in outputs:
        out["ood_output"] = describe(outputs[OOD_OUTPUT_NAME])
    return out


def export_tflite(
    model,
    cfg: Config,
    out_dir: str | os.PathLike,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    calibration: np.ndarray | None = None,
    model_name: str = "all_tf",
    threshold: float | None = None,
    source: str | None = None,
    gate=None,
) -> list[Path]:
    """Write ``<out_dir>/<model_name>_<variant>.tflite`` (+ ``.json``) and ``labels.txt``.

    Args:
        model: Keras all_tf model (converted to float32 first if mixed precision).
        cfg: the run's config.
        out_dir: output folder.
        variants: any of :data:`VARIANTS`.
        calibration: float32 (K, S, S, 3) from :func:`calibration_set`, needed for ``int8``
            and ``int16x8``.
        model_name: file name prefix.
        threshold: uncertainty threshold; default ``cfg.uncertainty_threshold``.
        source: recorded in the metadata.
        gate: the model's :class:`all_tf.inference.Gate`; its input checks (statistics,
            bounds, order) go into the metadata so an app can apply the same gate, and a
            calibrated feature distance becomes the ``ood_score`` output of the variants in
            :data:`OOD_VARIANTS`.

    Returns:
        The ``.tflite`` paths, in the order of ``variants``.
    """
    model = to_float32(model)
    cfg = config_for_model(cfg, model)
    if threshold is None:
        threshold = cfg.uncertainty_threshold
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    size = cfg.preprocess.image_size
    lo, hi = input_range(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "labels.txt", "".join(f"{name}\n" for name in CLASS_NAMES))
    paths = []
    distance = gate.distance if gate is not None else None
    if distance is not None and distance.threshold is None:
        distance = None  # not calibrated: no threshold to compare the score with
    with tempfile.TemporaryDirectory(prefix="all_tf_tflite_") as work:
        saved: dict[bool, str] = {}
        for variant in variants:
            with_ood = distance is not None and variant in OOD_VARIANTS
            if with_ood not in saved:
                saved[with_ood] = _saved_model_for_conversion(
                    model, size, work, distance if with_ood else None)
            flat = convert(saved[with_ood], variant,
                           calibration if variant in ("int8", "int16x8") else None)
            path = out_dir / f"{model_name}_{variant}.tflite"
            atomic_write_bytes(path, flat)
            details = io_details(flat)
            q = details["input"]["quantization"]
            if q:
                feed = (f"q = clip(round(x / {q['scale']:.10g}) {q['zero_point']:+d}, -128, 127) "
                        f"with x the preprocessed pixel in [{lo}, {hi}]")
            else:
                feed = f"x = the preprocessed pixel in [{lo}, {hi}] as float32"
            out_q = details["output"]["quantization"]
            meta = export_metadata(
                cfg, threshold,
                variant=variant,
                file=path.name,
                labels_file="labels.txt",
                size_bytes=len(flat),
                signature=SIGNATURE,
                input={**details["input"], "signature_name": INPUT_NAME, "layout": "NHWC",
                       "value_range": [lo, hi], "feed": feed},
                output={**details["output"], "signature_name": OUTPUT_NAME,
                        "meaning": "softmax probabilities in class_names order",
                        "read": (f"p = (q {-out_q['zero_point']:+d}) * {out_q['scale']:.10g}"
                                 if out_q else "p = value")},
                calibration_images=(int(len(calibration)) if variant in ("int8", "int16x8")
                                    else None),
                source=source,
                gate=gate_metadata(gate, ood_output="ood_output" in details),
            )
            if "ood_output" in details:
                meta["ood_output"] = {
                    **details["ood_output"], "signature_name": OOD_OUTPUT_NAME,
                    "meaning": "Mahalanobis distance of the pooled features to the nearest "
                               "class mean; above gate.ood.threshold: out of distribution"}
            atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
            paths.append(path)
    return paths
