"""SavedModel export for TensorFlow Serving: encoded image bytes in, class probabilities out.

Layout: ``<out>/<model_name>/<version>/`` (``saved_model.pb``, ``variables/``,
``assets.extra/all_tf_export.json``), the layout TF Serving's ``--model_base_path`` expects;
the highest numeric version is served. A version is written to a hidden temporary folder and
renamed into place, so a running server never loads half a model.

Signatures (input and output names are stable):

``serving_default``
    ``image_bytes``: tf.string [N], each an encoded JPEG, PNG, GIF or BMP. TF Serving's REST API
    carries them base64-encoded as ``{"b64": "..."}`` and decodes them to bytes before the graph.
    Inside the graph: header check (format, 16 px <= side, at most 64 megapixels, as
    :func:`all_tf.io.decode_image`), decoding, grayscale -> RGB, alpha composited on white,
    resizing and the run's preprocessing (:mod:`all_tf.export.graph_preprocessing`).
``predict_pixels``
    ``pixels``: float32 [N, S, S, 3], already preprocessed, values in [0, 1]; values outside
    [0, 1] are refused (catches (x - 128) / 128 inputs).

Both return ``probabilities`` float32 [N, 4] (order ``all_tf.CLASS_NAMES``, after the
model's stored temperature), ``class_id`` int64 [N], ``class_name`` string [N], ``confidence``
float32 [N] (max probability), ``uncertain`` bool [N] (``confidence < threshold``, the threshold
stored with the model) and ``status`` string [N]: ``ok``, ``uncertain`` or
``rejected:<reason>`` (then ``class_id`` is -1 and ``class_name`` empty). A model exported
with a gate (``gate.json`` beside it) also returns
``ood_score`` float32 [N]; ``serving_default`` then rejects by the input checks (exposure,
saturation, focus, stain) and the feature distance, ``predict_pixels`` by the distance only.
A gate with a colour check (:mod:`all_tf.inference.colour_check`) adds ``colour_class_id``
int64 [N] to ``serving_default``, whose ``uncertain`` and ``status`` then also mark the
images where it names another class (``predict_pixels`` has no raw image to check). A bad image fails
the request with an InvalidArgumentError that names its index and the reason (a truncated file:
the decoder's own message, without the index).

For runs trained on nucleus crops (``input_mode="crops"``) segmentation cannot run in the
graph: both signatures then take pixels of crops; the client segments and averages.

Example:
    >>> from all_tf.export.serving import export_saved_model  # doctest: +SKIP
    >>> path = export_saved_model(model, cfg, "export/serving", model_name="all_tf")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import tensorflow as tf

from all_tf import CLASS_NAMES
from all_tf.config import Config
from all_tf.export.graph_preprocessing import preprocess_graph
from all_tf.inference.colour_check import HIST_BINS
from all_tf.inference.model_files import (
    DEFAULT_THRESHOLD,
    METADATA_FILE,
    config_for_model,
    export_metadata,
    input_range,
    to_float32,
)
from all_tf.io import MAX_PIXELS, MIN_SIDE_PX

_PNG = b"\x89PNG\r\n\x1a\n"
_RANGE_TOLERANCE = 1e-4


def _u32_be(b: tf.Tensor, i: int) -> tf.Tensor:
    return b[i] * 16777216 + b[i + 1] * 65536 + b[i + 2] * 256 + b[i + 3]


def _i32_le(b: tf.Tensor, i: int) -> tf.Tensor:
    v = b[i] + b[i + 1] * 256 + b[i + 2] * 65536 + b[i + 3] * 16777216
    return tf.where(v >= 2**31, v - 2**32, v)


def _header_size(data: tf.Tensor, kind: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 read from the header, without decoding the pixels."""
    head = tf.strings.substr(tf.strings.join([data, tf.constant(b"\0" * 32)]), 0, 32)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
    png = tf.stack([_u32_be(b, 20), _u32_be(b, 16)])
    gif = tf.stack([b[8] + b[9] * 256, b[6] + b[7] * 256])
    bmp = tf.stack([tf.abs(_i32_le(b, 22)), _i32_le(b, 18)])
    return tf.switch_case(
        kind,
        [
            lambda: tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64),
            lambda: png,
            lambda: gif,
            lambda: bmp,
        ],
    )


def decode_checked(data: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """Decode one encoded image to RGB uint8 (H, W, 3) in the graph, or fail clearly.

    Mirrors :func:`all_tf.io.decode_image`: empty, unknown format, smaller than 16 px a side or
    larger than 64 megapixels -> InvalidArgumentError naming the batch index and the reason
    (the size is read from the header, so a huge image is refused before it is decoded); a
    truncated file fails in the decoder, whose message does not name the index; EXIF
    orientation is not applied;
    grayscale -> RGB; alpha composited on white.
    """
    magic = {
        "jpeg": tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"),
        "png": tf.equal(tf.strings.substr(data, 0, 8), _PNG),
        "gif": tf.equal(tf.strings.substr(data, 0, 4), b"GIF8"),
        "bmp": tf.equal(tf.strings.substr(data, 0, 2), b"BM"),
    }
    known = tf.reduce_any(tf.stack(list(magic.values())))
    checks = [
        tf.debugging.Assert(
            tf.strings.length(data) > 0, ["image", index, "is empty (0 bytes)"]
        ),
        tf.debugging.Assert(
            known, ["image", index, "is not a JPEG, PNG, GIF or BMP image; first bytes:",
                    tf.strings.substr(data, 0, 8)]
        ),
    ]
    with tf.control_dependencies(checks):
        kind = tf.argmax(tf.cast(tf.stack(list(magic.values())), tf.int32), output_type=tf.int32)
        hw = _header_size(data, kind)
    size_checks = [
        tf.debugging.Assert(
            tf.reduce_min(hw) >= MIN_SIDE_PX,
            ["image", index, "is too small (height, width):", hw,
             f"need >= {MIN_SIDE_PX} px a side"],
        ),
        tf.debugging.Assert(
            hw[0] * hw[1] <= MAX_PIXELS,
            ["image", index, "is too large (height, width):", hw,
             f"more than {MAX_PIXELS} pixels"],
        ),
    ]
    with tf.control_dependencies(size_checks):
        # JPEG with the accurate integer IDCT, as libjpeg's default used by OpenCV and PIL
        # (TF's default INTEGER_FAST shifts pixels by a few levels).
        img = tf.cond(
            tf.equal(kind, 0),
            lambda: tf.io.decode_jpeg(data, channels=0, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False),
        )
    return to_rgb(img)


def to_rgb(img: tf.Tensor) -> tf.Tensor:
    """uint8 (H, W, C), C in 1..4 -> RGB uint8 (H, W, 3): gray replicated, alpha on white."""
    c = tf.shape(img)[-1]

    def composite(colour, alpha):
        a = tf.cast(alpha, tf.float32) / 255.0
        out = tf.cast(colour, tf.float32) * a + 255.0 * (1.0 - a)
        return tf.cast(tf.round(out), tf.uint8)

    branches = [
        lambda: tf.tile(img[..., :1], [1, 1, 3]),
        lambda: composite(tf.tile(img[..., :1], [1, 1, 3]), img[..., 1:2]),
        lambda: img[..., :3],
        lambda: composite(img[..., :3], img[..., 3:4]),
    ]
    out = tf.switch_case(tf.clip_by_value(c - 1, 0, 3), branches)
    return tf.ensure_shape(out, [None, None, 3])


def _outputs(probs: tf.Tensor, threshold: float, temperature: float = 1.0,
             reason: tf.Tensor | None = None, ood_score: tf.Tensor | None = None,
             ood_threshold: float | None = None,
             colour_class: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
    from all_tf.export.graph_gate import status_graph

    probs = tf.cast(probs, tf.float32)
    if temperature != 1.0:
        probs = tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-12)) / temperature, axis=1)
    class_id = tf.argmax(probs, axis=1, output_type=tf.int64)
    confidence = tf.reduce_max(probs, axis=1)
    if reason is None:
        reason = tf.fill(tf.shape(confidence), "")
    disagrees = None if colour_class is None else colour_class != class_id
    status = status_graph(confidence, threshold, reason, ood_score, ood_threshold, disagrees)
    rejected = tf.strings.regex_full_match(status, "rejected:.*")
    out = {
        "probabilities": probs,
        "class_id": tf.where(rejected, tf.constant(-1, tf.int64), class_id),
        "class_name": tf.where(rejected, "", tf.gather(tf.constant(list(CLASS_NAMES)), class_id)),
        "confidence": confidence,
        "uncertain": confidence < threshold if disagrees is None
        else (confidence < threshold) | disagrees,
        "status": status,
    }
    if ood_score is not None:
        out["ood_score"] = ood_score
    if colour_class is not None:
        out["colour_class_id"] = colour_class
    return out


def check_pixel_range(pixels: tf.Tensor, lo: float = 0.0, hi: float = 1.0) -> tf.Tensor:
    """Assert in-graph that ``pixels`` lie in [lo, hi]; returns ``pixels``."""
    lo_ok = tf.debugging.assert_greater_equal(
        pixels, tf.constant(lo - _RANGE_TOLERANCE, pixels.dtype),
        message=f"pixels must be in [{lo}, {hi}] (the model's input range); a negative value "
                "suggests (x - 128) / 128 scaling instead of x / 255",
    )
    hi_ok = tf.debugging.assert_less_equal(
        pixels, tf.constant(hi + _RANGE_TOLERANCE, pixels.dtype),
        message=f"pixels must be in [{lo}, {hi}] (the model's input range); a value above 1 "
                "suggests raw 0-255 pixels",
    )
    with tf.control_dependencies([lo_ok, hi_ok]):
        return tf.identity(pixels)


def next_version(model_dir: Path) -> int:
    """1 + the highest numeric version folder in ``model_dir`` (1 when there is none)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_saved_model(
    model,
    cfg: Config,
    out_dir: str | os.PathLike,
    model_name: str = "all_tf",
    version: int | None = None,
    threshold: float | None = None,
    source: str | None = None,
    gate=None,
) -> Path:
    """Write the model as a TF Serving SavedModel; return the version folder.

    Args:
        model: a Keras all_tf model (float32 [N, S, S, 3] in [0, 1] -> softmax [N, 4]);
            mixed-precision models are converted to float32 first.
        cfg: the run's Config (its ``preprocess`` section becomes the in-graph preprocessing).
        out_dir: base folder; the model goes to ``out_dir/model_name/version``.
        model_name: TF Serving model name (``MODEL_NAME`` of the docker image).
        version: version number; default: one above the highest present.
        threshold: uncertainty threshold; default ``cfg.uncertainty_threshold``.
        source: where the model came from, recorded in the metadata.
        gate: the model's :class:`all_tf.inference.Gate`, or None; with it both signatures
            add ``status`` (and ``ood_score``), ``serving_default`` applying the input checks
            in the graph (:mod:`all_tf.export.graph_gate`).

    Raises:
        FileExistsError: the version folder already exists.
        ValueError: the model's input size disagrees with the config.
    """
    import keras

    model = to_float32(model)
    cfg = config_for_model(cfg, model)
    if threshold is None:
        threshold = cfg.uncertainty_threshold
    threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"uncertainty threshold must be in [0, 1], got {threshold}")
    size = cfg.preprocess.image_size
    lo, hi = input_range(model)
    model_dir = Path(out_dir) / model_name
    version = next_version(model_dir) if version is None else int(version)
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final}: version {version} already exists; choose another")

    n_classes = len(CLASS_NAMES)
    temperature = float(cfg.temperature)
    distance = gate.distance if gate is not None else None
    if distance is not None:
        from all_tf.export.graph_gate import mahalanobis_graph
        from all_tf.models import probabilities_and_features_model

        net = probabilities_and_features_model(model)
        n_features = int(distance.means.shape[1])
    else:
        net = model

    def run_model(pixels):
        """(probabilities, OOD score or None); an empty batch is answered without the model:
        TF's conv kernels mis-shape N = 0."""
        if distance is None:
            return tf.cond(
                tf.shape(pixels)[0] > 0,
                lambda: tf.cast(net(pixels, training=False), tf.float32),
                lambda: tf.zeros([0, n_classes], tf.float32),
            ), None

        def both():
            p, f = net(pixels, training=False)
            return tf.cast(p, tf.float32), tf.reshape(tf.cast(f, tf.float32), [-1, n_features])

        probs, feats = tf.cond(
            tf.shape(pixels)[0] > 0, both,
            lambda: (tf.zeros([0, n_classes], tf.float32), tf.zeros([0, n_features], tf.float32)))
        return probs, mahalanobis_graph(feats, distance.means, distance.precision)

    ood_threshold = None if distance is None else distance.threshold
    colour = gate.colour if gate is not None else None

    def predict_pixels(pixels):
        pixels = check_pixel_range(pixels, lo, hi)
        probs, ood = run_model(pixels)
        return _outputs(probs, threshold, temperature, None, ood, ood_threshold)

    def serve_bytes(image_bytes):
        from all_tf.export.graph_gate import (
            GRAPH_STATISTICS,
            colour_class_graph,
            colour_histogram_graph,
            gate_reason_graph,
            gate_statistics_graph,
        )

        n_stats = len(GRAPH_STATISTICS)
        n_bins = 3 * HIST_BINS
        n = tf.shape(image_bytes)[0]

        def one(args):
            rgb = decode_checked(args[0], args[1])
            stats = gate_statistics_graph(rgb) if gate is not None else tf.zeros([n_stats])
            hist = colour_histogram_graph(rgb) if colour is not None else tf.zeros([n_bins])
            return preprocess_graph(rgb, cfg.preprocess), stats, hist

        pixels, stats, hists = tf.map_fn(
            one, (image_bytes, tf.range(n)),
            fn_output_signature=(tf.TensorSpec([size, size, 3], tf.float32),
                                 tf.TensorSpec([n_stats], tf.float32),
                                 tf.TensorSpec([n_bins], tf.float32)),
        )
        reason = gate_reason_graph(stats, gate.bounds) if gate is not None else None
        colour_class = colour_class_graph(hists, colour) if colour is not None else None
        if cfg.tta:  # mean over the 8 flips and 90-degree rotations, as predict does
            views = [tf.image.rot90(im, k) for im in (pixels, tf.image.flip_left_right(pixels))
                     for k in range(4)]
            probs, ood = run_model(tf.concat(views, axis=0))
            probs = tf.reduce_mean(tf.reshape(probs, [8, n, n_classes]), axis=0)
            if ood is not None:  # the unrotated view's distance, as the gate was fitted
                ood = ood[:n]
        else:
            probs, ood = run_model(pixels)
        return _outputs(probs, threshold, temperature, reason, ood, ood_threshold, colour_class)

    pixel_spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")]
    archive = keras.export.ExportArchive()
    archive.track(net)
    if cfg.preprocess.input_mode == "crops":
        archive.add_endpoint("serving_default", predict_pixels, input_signature=pixel_spec)
    else:
        archive.add_endpoint(
            "serving_default", serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
    archive.add_endpoint("predict_pixels", predict_pixels, input_signature=pixel_spec)

    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(str(tmp), verbose=False)
        meta = export_metadata(
            cfg, threshold,
            signatures={
                "serving_default": {
                    "inputs": {"pixels" if cfg.preprocess.input_mode == "crops" else "image_bytes":
                               "float32 [N,S,S,3] crops" if cfg.preprocess.input_mode == "crops"
                               else "string [N] encoded JPEG/PNG/GIF/BMP"},
                },
                "predict_pixels": {"inputs": {"pixels": f"float32 [N,{size},{size},3] in [{lo}, {hi}]"}},
                "outputs": ["probabilities", "class_id", "class_name", "confidence", "uncertain",
                            "status"] + (["ood_score"] if distance is not None else [])
                           + (["colour_class_id (serving_default)"] if colour is not None
                              else []),
            },
            input={"layout": "NHWC", "dtype": "float32", "value_range": [lo, hi],
                   "shape": [None, size, size, 3]},
            source=source,
            gate=None if gate is None else gate.to_dict(),
        )
        extra = tmp / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
