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
numbers the SavedModel's ``serving_default`` returns for the same pixels. The input gate is not
in the graph (its checks are in the metadata, as for the other TFLite files).

The preprocessing is :mod:`all_tf.export.graph_preprocessing` with the pieces that have no
TFLite builtin rewritten here (the same integer algorithms, OpenCV 4.x's 8-bit paths):

* 8-bit RGB <-> LAB: int32 instead of int64, floor division by powers of two instead of
  ``RightShift``; bit-exact with ``cv2.cvtColor`` on all 2^24 inputs, like the originals.
* CLAHE: per-tile histograms by ``unsorted_segment_sum`` instead of ``bincount``; bit-exact.
* Label corner: the median from per-channel histograms (``unsorted_segment_sum``, ``cumsum``)
  instead of ``boolean_mask`` + ``sort``; bit-exact.
* Reinhard: the per-image mean and std in float32 from exact int32 sums of the pixels minus
  their integer mean, instead of float64 (TFLite has no float64). The std then agrees with
  float64's to about 1 ulp, so a value lands on the other side of a rounding boundary only
  rarely: on all 2,701 all4 images at 128 and at 224 px and 400 synthetic images, one 224 px
  image differed, in 501 of its 150,528 LAB values by one level; the rest were bit-exact.
* Colour spaces: ``rgb`` and ``hed`` as in graph_preprocessing; ``hsv`` computes its hue
  factor in float32 instead of float64 (at most 1.2e-7 on the shipped sample); ``lab`` as in
  graph_preprocessing (exact CIE formulas, about 2e-3 from OpenCV's table).
* No resizing: the input is already S x S.

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

import numpy as np
import tensorflow as tf

from all_tf.config import Config, PreprocessConfig
from all_tf.export import graph_preprocessing as gp
from all_tf.preprocessing.label_corner import label_box_mask
from all_tf.preprocessing.reinhard import _MIN_STD, check_target

EDGE_VARIANT = "edge"
EDGE_SUFFIX = "edge_uint8"
SIGNATURE = "serving_default"
INPUT_NAME = "rgb"
OUTPUT_NAME = "probabilities"
_F32 = np.float32


# ----------------------------------------------------------------------------- 8-bit LAB
def _descale(x: tf.Tensor, n: int) -> tf.Tensor:
    # (x + 2^(n-1)) >> n; floor division by 2^n is the same for negative x too.
    return tf.math.floordiv(x + (1 << (n - 1)), 1 << n)


def _planes(x: tf.Tensor) -> list[tf.Tensor]:
    """(..., 3) -> three int32 (...) planes (one transpose; slicing the last axis is slow in
    LiteRT)."""
    x = tf.cast(x, tf.int32)
    perm = [x.shape.rank - 1] + list(range(x.shape.rank - 1))
    return tf.unstack(tf.transpose(x, perm), axis=0)


def _rgb_to_lab_planes(r: tf.Tensor, g: tf.Tensor, b: tf.Tensor) -> list[tf.Tensor]:
    """int32 R, G, B planes in [0, 255] -> OpenCV 8-bit L, a, b planes (int32 in [0, 255])."""
    t = gp._lab_tables()
    gamma = tf.constant(t["gamma_b"], tf.int32)
    r, g, b = (tf.gather(gamma, p) for p in (r, g, b))
    c = t["xyz_coeffs"]
    cbrt = tf.constant(t["cbrt_b"], tf.int32)
    fx, fy, fz = (
        tf.gather(cbrt, _descale(r * int(c[k, 0]) + g * int(c[k, 1]) + b * int(c[k, 2]), gp._LAB_SHIFT))
        for k in range(3)
    )
    shift2 = gp._LAB_SHIFT2
    lscale = (116 * 255 + 50) // 100
    lshift = -((16 * 255 * (1 << shift2) + 50) // 100)
    big = 128 * (1 << shift2)
    L = _descale(lscale * fy + lshift, shift2)
    a = _descale(500 * (fx - fy) + big, shift2)
    bb = _descale(200 * (fy - fz) + big, shift2)
    return [tf.clip_by_value(p, 0, 255) for p in (L, a, bb)]


def _lab_to_rgb_planes(L: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> list[tf.Tensor]:
    """int32 8-bit L, a, b planes -> R, G, B planes (int32 in [0, 255]), ``Lab2RGBinteger``.

    Every intermediate fits in int32 for 8-bit input (largest magnitude about 4.1e8).
    """
    t = gp._lab_tables()
    lut_base, min_ab = gp._LUT_BASE, gp._MIN_AB
    y = tf.gather(tf.constant(t["y_tab"], tf.int32), L)
    ify = tf.gather(tf.constant(t["fy_tab"], tf.int32), L)
    adiv = tf.math.floordiv(5 * a * 53687 + (1 << 7), 1 << 13) - 128 * lut_base // 500
    bdiv = tf.math.floordiv(b * 41943 + (1 << 4), 1 << 9) - 128 * lut_base // 200 + 1
    ab_to_xz = tf.constant(t["ab_to_xz"], tf.int32)
    x = tf.gather(ab_to_xz, ify + adiv - min_ab)
    z = tf.gather(ab_to_xz, ify - bdiv - min_ab)
    c = t["rgb_coeffs"]
    inv_gamma = tf.constant(t["inv_gamma_b"], tf.int32)
    out = []
    for k in range(3):
        v = _descale(int(c[k, 0]) * x + int(c[k, 1]) * y + int(c[k, 2]) * z, 14)
        out.append(tf.gather(inv_gamma, tf.clip_by_value(v, 0, gp._INV_GAMMA_TAB_SIZE - 1)))
    return [tf.clip_by_value(p, 0, 255) for p in out]


def rgb_to_lab8_edge(rgb: tf.Tensor) -> tf.Tensor:
    """RGB uint8 (..., 3) -> OpenCV 8-bit LAB uint8, int32 builtins only; bit-exact."""
    return tf.cast(tf.stack(_rgb_to_lab_planes(*_planes(rgb)), axis=-1), tf.uint8)


def lab8_to_rgb_edge(lab: tf.Tensor) -> tf.Tensor:
    """OpenCV 8-bit LAB uint8 (..., 3) -> RGB uint8, int32 builtins only; bit-exact."""
    return tf.cast(tf.stack(_lab_to_rgb_planes(*_planes(lab)), axis=-1), tf.uint8)


# ----------------------------------------------------------------------------- CLAHE
def clahe_uint8_edge(channel: tf.Tensor, clip_limit: float = 2.0, tile_grid: int = 8) -> tf.Tensor:
    """:func:`all_tf.export.graph_preprocessing.clahe_uint8` with builtin ops; bit-exact.

    Args:
        channel: uint8 (H, W), static shape.
        clip_limit: ``cv2.createCLAHE`` clip limit.
        tile_grid: tiles per side.

    Returns:
        uint8 (H, W).
    """
    return tf.cast(_clahe_plane(tf.cast(channel, tf.int32), clip_limit, tile_grid), tf.uint8)


def _clahe_plane(v: tf.Tensor, clip_limit: float, tile_grid: int) -> tf.Tensor:
    """CLAHE of an int32 (H, W) plane in [0, 255] (static shape) -> int32 (H, W)."""
    height, width = (int(d) for d in v.shape)
    plan = gp._clahe_plan(height, width, int(tile_grid))
    n_bins = int(tile_grid) * int(tile_grid) * 256
    pad_h, pad_w = plan["pad"]
    padded = tf.pad(v, [[0, pad_h], [0, pad_w]], mode="REFLECT") if pad_h or pad_w else v
    ids = tf.reshape(tf.constant(plan["tile_of_pixel"]) * 256 + padded, [-1])
    hist = tf.math.unsorted_segment_sum(tf.ones_like(ids), ids, n_bins)
    hist = tf.reshape(hist, [-1, 256])
    area = plan["area"]
    limit = max(int(clip_limit * area / 256), 1)
    excess = tf.reduce_sum(tf.maximum(hist - limit, 0), axis=1, keepdims=True)
    hist = tf.minimum(hist, limit)
    batch = tf.math.floordiv(excess, 256)
    residual = excess - batch * 256
    step = tf.maximum(tf.math.floordiv(256, tf.maximum(residual, 1)), 1)
    i = tf.range(256, dtype=tf.int32)[None, :]
    extra = tf.cast((residual > 0) & (tf.math.floormod(i, step) == 0)
                    & (tf.math.floordiv(i, step) < residual), tf.int32)
    hist = hist + batch + extra
    cdf = tf.cast(tf.cumsum(hist, axis=1), tf.float32)
    lut = tf.reshape(tf.clip_by_value(tf.round(cdf * _F32(255.0 / area)), 0.0, 255.0), [-1])
    a = tf.gather(lut, tf.constant(plan["i11"]) + v)
    b = tf.gather(lut, tf.constant(plan["i12"]) + v)
    c = tf.gather(lut, tf.constant(plan["i21"]) + v)
    d = tf.gather(lut, tf.constant(plan["i22"]) + v)
    xa, ya = tf.constant(plan["xa"]), tf.constant(plan["ya"])
    xa1, ya1 = 1.0 - xa, 1.0 - ya
    res = (a * xa1 + b * xa) * ya1 + (c * xa1 + d * xa) * ya
    return tf.cast(tf.clip_by_value(tf.round(res), 0.0, 255.0), tf.int32)


# ----------------------------------------------------------------------------- Reinhard
def reinhard_lab8_edge(lab: tf.Tensor, target: dict) -> tf.Tensor:
    """Reinhard-normalise 8-bit LAB uint8 (H, W, 3) (static shape) to ``target``; uint8 LAB."""
    return tf.cast(tf.stack(_reinhard_planes(_planes(lab), target), axis=-1), tf.uint8)


def _reinhard_planes(planes: list[tf.Tensor], target: dict) -> list[tf.Tensor]:
    """Reinhard on int32 L, a, b planes (H, W) in [0, 255] -> int32 planes, float32 only.

    Per plane, the mean and std come from exact int32 sums of ``x - m0`` (m0 = the integer
    mean), so only the last division and square root round in float32 (see the module
    docstring).
    """
    t_mean, t_std = check_target(target)
    n = int(np.prod(planes[0].shape))
    if n * 128 * 128 >= 2**31:
        raise ValueError(f"edge Reinhard sums overflow int32 above 362 x 362 px, got {n} px")
    out = []
    for k, x in enumerate(planes):
        m0 = tf.math.floordiv(tf.reduce_sum(x), n)  # exact
        d = x - m0
        d_mean = tf.cast(tf.reduce_sum(d), tf.float32) / _F32(n)  # in [0, 1)
        d_sq = tf.cast(tf.reduce_sum(d * d), tf.float32) / _F32(n)
        mean = tf.cast(m0, tf.float32) + d_mean
        std = tf.sqrt(tf.maximum(d_sq - d_mean * d_mean, 0.0))
        scale = _F32(t_std[k]) / tf.maximum(std, _F32(_MIN_STD))
        offset = _F32(t_mean[k]) - mean * scale
        y = tf.cast(x, tf.float32) * scale + offset
        out.append(tf.cast(tf.floor(tf.clip_by_value(y + 0.5, 0.0, 255.0)), tf.int32))
    return out


# ----------------------------------------------------------------------------- label corner
def mask_label_corner_edge(rgb: tf.Tensor) -> tf.Tensor:
    """:func:`all_tf.preprocessing.label_corner.mask_label_corner` for uint8 (S, S, 3) with
    a static shape; bit-exact.

    The per-channel median of the pixels outside the box is read from their histograms
    (one ``unsorted_segment_sum`` weighted by the constant outside mask, then ``cumsum``):
    the j-th smallest value is the number of levels whose cumulative count is <= j.
    """
    inside = label_box_mask(tuple(rgb.shape))
    n = int((~inside).sum())
    keep = np.broadcast_to((~inside)[..., None], rgb.shape).astype(np.int32)
    x = tf.cast(rgb, tf.int32)
    ids = tf.reshape(x + tf.constant([0, 256, 512], tf.int32), [-1])
    hist = tf.math.unsorted_segment_sum(tf.constant(keep.reshape(-1)), ids, 3 * 256)
    cdf = tf.cumsum(tf.reshape(hist, [3, 256]), axis=1)

    def ranked(j: int) -> tf.Tensor:  # (3,) the j-th smallest value per channel (0-based)
        return tf.reduce_sum(tf.cast(cdf <= j, tf.int32), axis=1)

    if n % 2:
        median = ranked(n // 2)
    else:
        median = tf.math.floordiv(ranked(n // 2 - 1) + ranked(n // 2), 2)
    keep_px = tf.constant((~inside).astype(np.int32)[..., None])  # (S, S, 1)
    return tf.cast(x * keep_px + median * (1 - keep_px), tf.uint8)


# ----------------------------------------------------------------------------- pipeline
def _rgb01_to_hsv_f32(rgb: tf.Tensor) -> tf.Tensor:
    eps = np.finfo(_F32).eps
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = tf.maximum(tf.maximum(r, g), b)
    diff = v - tf.minimum(tf.minimum(r, g), b)
    s = diff / (tf.abs(v) + eps)
    k = 60.0 / (diff + eps)
    h = tf.where(tf.equal(v, r), (g - b) * k,
                 tf.where(tf.equal(v, g), (b - r) * k + 120.0, (r - g) * k + 240.0))
    h = tf.where(h < 0, h + 360.0, h)
    return tf.stack([h, s, v], axis=-1)


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
    x = tf.cast(rgb, tf.uint8)
    if cfg.mask_label_corner:
        x = mask_label_corner_edge(x)
    planes = _planes(x)  # int32 R, G, B (S, S)
    use_reinhard = cfg.reinhard and cfg.reinhard_target is not None
    if cfg.clahe or use_reinhard:
        lab = _rgb_to_lab_planes(*planes)
        if cfg.clahe:
            lab[0] = _clahe_plane(lab[0], cfg.clahe_clip_limit, cfg.clahe_tile_grid)
        if use_reinhard:
            lab = _reinhard_planes(lab, cfg.reinhard_target)
        planes = _lab_to_rgb_planes(*lab)
    rgb01 = tf.stack([tf.cast(p, tf.float32) for p in planes], axis=-1) * _F32(1.0 / 255.0)
    if cfg.colour_space == "hsv":
        return gp._map_range(_rgb01_to_hsv_f32(rgb01), "hsv")
    return gp.to_colour_space_graph(rgb01, cfg.colour_space)


def edge_probabilities(model, rgb: tf.Tensor, cfg: Config, tta: bool | None = None) -> tf.Tensor:
    """Class probabilities float32 (1, C) of uint8 RGB (1, S, S, 3): the edge file's graph.

    Args:
        model: Keras all_tf model, float32.
        rgb: uint8 (1, S, S, 3).
        cfg: the run's config (preprocessing, temperature, tta).
        tta: average the 8 flips and 90-degree rotations; default ``cfg.tta``.
    """
    tta = cfg.tta if tta is None else bool(tta)
    x = preprocess_edge(rgb[0], cfg.preprocess)[None]
    if tta:  # the views of serving_default, in the same order
        x = tf.concat([tf.image.rot90(im, k) for im in (x, tf.image.flip_left_right(x))
                       for k in range(4)], axis=0)
    probs = tf.cast(model(x, training=False), tf.float32)
    if tta:
        probs = tf.reduce_mean(probs, axis=0, keepdims=True)
    if float(cfg.temperature) != 1.0:
        probs = tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-12)) / float(cfg.temperature),
                              axis=1)
    return probs


def convert_edge(model, cfg: Config, tta: bool | None = None) -> bytes:
    """The edge flatbuffer (``TFLITE_BUILTINS`` only) of a float32 Keras model.

    Raises:
        ValueError: the graph needs an op that is not a TFLite builtin (the converter's error).
    """
    import keras

    from all_tf.inference.model_files import config_for_model, to_float32

    model = to_float32(model)
    cfg = config_for_model(cfg, model)
    size = int(cfg.preprocess.image_size)
    with tempfile.TemporaryDirectory(prefix="all_tf_edge_") as work:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            SIGNATURE,
            lambda rgb: {OUTPUT_NAME: edge_probabilities(model, rgb, cfg, tta)},
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
            metadata (the graph does not apply them).
        tta: test-time augmentation in the graph; default ``cfg.tta``.

    Returns:
        The ``.tflite`` path.
    """
    from all_tf import CLASS_NAMES
    from all_tf.export.tflite import io_details
    from all_tf.inference.model_files import config_for_model, export_metadata, to_float32
    from all_tf.io import atomic_write_bytes, atomic_write_text

    model = to_float32(model)
    cfg = config_for_model(cfg, model)
    tta = cfg.tta if tta is None else bool(tta)
    threshold = cfg.uncertainty_threshold if threshold is None else float(threshold)
    flat = convert_edge(model, cfg, tta)
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
                         "uncertain = max(probabilities) < uncertainty_threshold",
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
        gate=None if gate is None else {
            **gate.to_dict(), "ood": None,
            "how": "statistics of the decoded RGB image resized to gate_size x gate_size "
                   "(all_tf.inference.gate.image_statistics); the first check [statistic, "
                   "0 = below low / 1 = above high, reason] that fails gives status "
                   "rejected:<reason>"},
    )
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path
