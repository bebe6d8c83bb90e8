"""Classifying image files with a .keras, SavedModel or TFLite model: the ``predict`` job.

Every image is decoded with :func:`all_tf.io.read_image` and preprocessed on the host with the
settings stored with the model (the run's ``config.json`` for ``.keras``;
``assets.extra/all_tf_export.json`` for a SavedModel; the ``.json`` beside a ``.tflite`` file),
so all three backends see the same pixels. Runs trained on nucleus crops get their crops'
probabilities averaged per image. The columns of a row are :data:`COLUMNS` (see
``all-tf predict --help`` and the README's output schema).

Example:
    >>> from all_tf.inference.predictor import load_backend, predict_files, resolve_model
    >>> model, inputs = resolve_model(None, ("all_tf/sample_data/all4",))
    >>> rows = predict_files(load_backend(model), inputs)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.config import Config

PROB_COLUMNS = [f"p_{name}" for name in CLASS_NAMES]
COLUMNS = ["file", "status", "class", "confidence", "uncertain", *PROB_COLUMNS, "ood_score",
           "colour_class", "nuclei", "error"]


@dataclass
class Backend:
    """A loaded model: ``predict(x)`` maps float32 (N, S, S, 3) to probabilities (N, 4).

    ``features_fn`` (Keras models only) maps the same input to ``(probabilities, pooled
    features)``; ``gate`` is the model's stored input gate, or None; ``graph_temperature`` is
    the temperature a SavedModel's graph applies (from its export metadata; ``config``, which
    ``--config`` may replace, gives the one applied to the result).
    """

    kind: str
    path: str
    config: Config
    threshold: float
    value_range: tuple[float, float]
    predict_fn: object
    gate: object = None
    features_fn: object = None
    graph_temperature: float = 1.0

    @property
    def unchecked(self) -> str | None:
        """What the model's stored gate cannot check with this backend, or None."""
        if self.gate is None or self.gate.threshold is not None:
            return None
        why = ("this TFLite file has no feature-distance output (int8 weights, or exported "
               "without a calibrated distance)") if self.kind == "tflite" \
            else "the gate has no feature-distance threshold"
        return (f"{self.path}: {why}; inputs unlike the training fields are caught only by "
                "the gate's input checks")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities (N, 4), one row per input."""
        probs, _ = self.predict_with_features(x)
        return self.calibrate(probs)

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """Apply the model's temperature to probabilities (N, 4) from :meth:`predict_with_features`."""
        from all_tf.inference.uncertainty import apply_temperature

        if self.config.temperature == 1.0:
            return probs
        return apply_temperature(probs, self.config.temperature).astype(np.float32)

    def predict_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Model probabilities (N, 4) and the feature distance (N,) or None.

        The probabilities are the model's own, before the temperature (apply it with
        :meth:`calibrate`, after averaging views). The SavedModel's ``predict_pixels`` returns
        them scaled, ``p = softmax(log(raw) / T)``; ``raw`` is recovered as ``p ** T``
        renormalised. The SavedModel computes the feature distance in its graph, and so do
        the TFLite files exported with an ``ood_score`` output.
        """
        from all_tf.inference.model_files import check_input_range

        x = np.asarray(x, np.float32)
        if len(x) == 0:
            return np.zeros((0, len(CLASS_NAMES)), np.float32), None
        check_input_range(x, self.value_range, name=f"{self.kind} input")
        ood = None
        if self.kind == "savedmodel":
            scaled, ood = self.predict_fn(x)
            raw = np.power(np.asarray(scaled, np.float64), self.graph_temperature)
            probs = raw / np.maximum(raw.sum(axis=1, keepdims=True), 1e-30)
        elif self.kind == "tflite" and self.predict_fn.ood is not None:
            probs, ood = self.predict_fn.predict_with_ood(x)
        elif self.features_fn is not None and self.gate is not None \
                and self.gate.distance is not None:
            probs, feats = self.features_fn(x)
            ood = self.gate.distance.score(feats)
        else:
            probs = self.predict_fn(x)
        return np.asarray(probs, np.float32), ood


def _threshold(cfg: Config, meta: dict, config) -> float:
    """The uncertainty threshold: a ``--config`` file's when it sets one, else the export's."""
    # cfg always holds a threshold (the default when the file is silent): ask the file
    if config is not None \
            and json.loads(Path(config).read_text()).get("uncertainty_threshold") is not None:
        return float(cfg.uncertainty_threshold)
    return float(meta["uncertainty_threshold"])


def load_backend(model: str | os.PathLike, config: str | os.PathLike | None = None,
                 threads: int | None = None) -> Backend:
    """Open ``model`` with the backend its path implies.

    ``*.tflite`` -> LiteRT interpreter; a folder with ``saved_model.pb`` (or TF Serving's
    ``<name>/<version>/`` layout, highest version) -> ``tf.saved_model.load``; a ``.keras``
    file or a run directory -> Keras.

    Raises:
        FileNotFoundError, ValueError: the path is not a model, or its metadata is missing.
    """
    from all_tf.inference.model_files import DEFAULT_THRESHOLD, config_from_metadata, read_metadata

    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    if path.suffix == ".tflite":
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{path}: metadata {meta_path.name} not found beside it "
                                    "(written by python -m all_tf.export)")
        meta = read_metadata(meta_path)
        if meta.get("variant") == "edge":
            raise ValueError(f"{path}: an edge file (RGB uint8 in, preprocessing in its graph) "
                             "is for apps; predict feeds preprocessed pixels: use another "
                             ".tflite file, a SavedModel or the .keras model")
        cfg = config_from_metadata(meta)
        if config is not None:
            cfg = Config.load(config)
        return Backend("tflite", str(path), cfg, _threshold(cfg, meta, config),
                       tuple(meta["input"]["value_range"]), _tflite_fn(path, threads),
                       gate=_gate_from_metadata(meta))
    if path.is_dir() and not (path / "checkpoints").is_dir() and path.suffix != ".keras":
        from all_tf.inference.model_files import METADATA_FILE, find_saved_model

        saved = find_saved_model(path)
        meta = read_metadata(saved / "assets.extra" / METADATA_FILE)
        cfg = Config.load(config) if config is not None else config_from_metadata(meta)
        return Backend("savedmodel", str(saved), cfg, _threshold(cfg, meta, config),
                       tuple(meta["input"]["value_range"]), _saved_model_fn(saved),
                       gate=_gate_from_metadata(meta),
                       graph_temperature=float(meta.get("temperature", 1.0)))
    from all_tf.inference.model_files import (
        config_for_model,
        input_range,
        load_keras_model,
        resolve_source,
        to_float32,
    )

    src = resolve_source(path, config)
    # float32 like every export (a model trained under mixed bfloat16 keeps that policy in its
    # .keras file; bfloat16 is slower on CPUs without bfloat16 instructions)
    keras_model = to_float32(load_keras_model(src.model_path))
    cfg = config_for_model(src.config, keras_model, from_file=src.config_path is not None)
    threshold = cfg.uncertainty_threshold if cfg.uncertainty_threshold is not None else DEFAULT_THRESHOLD

    def keras_fn(x):
        return keras_model.predict(x, batch_size=16, verbose=0)

    from all_tf.inference import Gate

    folder = src.run_dir or src.model_path.parent
    gate = Gate.load(folder)
    features_fn = None
    if gate is not None:
        from all_tf.inference.analysis import probabilities_and_features

        features_fn = probabilities_and_features(keras_model)
    return Backend("keras", str(src.model_path), cfg, threshold, tuple(input_range(keras_model)),
                   keras_fn, gate=gate, features_fn=features_fn)


def _gate_from_metadata(meta: dict):
    """The input checks described in export metadata; the feature distance is computed in the
    model's graph (the SavedModel's and the float TFLite files' ``ood_score`` output)."""
    from all_tf.inference import Gate

    doc = meta.get("gate")
    if not doc:
        return None
    from all_tf.inference.gate import colour_check_from

    return Gate(doc["bounds"], None, ood_threshold=(doc.get("ood") or {}).get("threshold"),
                colour=colour_check_from(doc, "export metadata"))


def _saved_model_fn(path: Path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["predict_pixels"]

    def predict(x):
        out = fn(pixels=tf.constant(x))
        ood = out["ood_score"].numpy() if "ood_score" in out else None
        return out["probabilities"].numpy(), ood

    predict.loaded = loaded  # keep the trackable alive with the function
    return predict


def _tflite_fn(path: Path, threads: int | None):
    from all_tf.inference.tflite_runner import TFLiteRunner

    return TFLiteRunner(str(path), threads)


def nuclei_boxes(mask: np.ndarray) -> np.ndarray:
    """Bounding boxes (K, 4) as (y0, x0, y1, x1) of the 8-connected components of ``mask``."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    s = stats[1:]
    return np.stack([s[:, 1], s[:, 0], s[:, 1] + s[:, 3], s[:, 0] + s[:, 2]], axis=1) if n > 1 \
        else np.zeros((0, 4), np.int64)


def draw_overlay(rgb: np.ndarray, boxes: np.ndarray, label: str) -> np.ndarray:
    """RGB uint8 copy of ``rgb`` with green nucleus boxes and ``label`` on a dark band at the top."""
    import cv2

    out = rgb.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 224))
    for y0, x0, y1, x1 in boxes:
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), (0, 255, 0), thick)
    scale = max(0.35, min(h, w) / 448)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(out, (0, 0), (min(w, tw + 6), th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, label, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                cv2.LINE_AA)
    return out


def _model_inputs(rgb: np.ndarray, cfg: Config, mask: np.ndarray) -> np.ndarray:
    from all_tf.data.inputs import inputs_for_image

    x = inputs_for_image(rgb, cfg, mask=mask)
    if cfg.tta and cfg.preprocess.input_mode != "crops":  # 8 views averaged like crops
        from all_tf.inference.tta import dihedral_views

        return dihedral_views(x)
    return x


def overlay_file_names(files) -> dict[str, str]:
    """The overlay PNG name (without ``.png``) of each file: its stem, or where two inputs share
    a stem, the stem and 8 hex digits of the path's SHA-1, so a name never depends on which
    files a resumed run still had to do.

    Example:
        >>> overlay_file_names(["a/x.png", "b/y.png"])
        {'a/x.png': 'x', 'b/y.png': 'y'}
    """
    import hashlib
    from collections import Counter

    files = list(files)
    stems = Counter(Path(f).stem for f in files)
    return {f: Path(f).stem if stems[Path(f).stem] == 1 else
            f"{Path(f).stem}_{hashlib.sha1(str(f).encode()).hexdigest()[:8]}" for f in files}


def predict_files(backend: Backend, items, overlay_dir: str | os.PathLike | None = None,
                  batch_size: int = 16, progress: bool = True,
                  threshold: float | None = None) -> list[dict]:
    """Rows (see the module docstring) for every image in ``items`` (files, folders, globs)."""
    return list(iter_predictions(backend, items, overlay_dir, batch_size, progress, threshold))


def iter_predictions(backend: Backend, items, overlay_dir: str | os.PathLike | None = None,
                     batch_size: int = 16, progress: bool = True,
                     threshold: float | None = None,
                     overlay_names: dict[str, str] | None = None) -> Iterator[dict]:
    """Like :func:`predict_files`, yielding rows in input order as each batch is done.

    A file that cannot be read or processed becomes a row with status ``error`` and the reason;
    the others go on. ``overlay_names``: file -> overlay name (default
    :func:`overlay_file_names` of these files; a resumed run passes those of all its inputs).
    """
    from tqdm import tqdm

    from all_tf.data import collect_inputs
    from all_tf.inference import image_statistics
    from all_tf.io import ImageReadError, atomic_write_bytes, read_image
    from all_tf.segmentation import segment_nuclei

    cfg = backend.config
    threshold = backend.threshold if threshold is None else float(threshold)
    files = [p for p, _ in collect_inputs(items, labelled=False)]
    rows: list[dict] = []  # done or pending, not yet yielded
    pending: list[tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict | None, int | None]] = []
    gate = backend.gate
    if overlay_dir is not None and overlay_names is None:
        overlay_names = overlay_file_names(files)

    def flush():
        if not pending:
            return
        x = np.concatenate([p[1] for p in pending])
        try:
            probs, ood_scores = backend.predict_with_features(x)
        except Exception as e:
            if len(pending) == 1:
                row = pending[0][0]
                row["error"] = f"{row['file']}: {type(e).__name__}: {e}"
                row["status"] = "error"
                pending.clear()
                return
            # one image at a time, so that the failure is reported on its own file's row
            batch = pending[:]
            for item in batch:
                pending[:] = [item]
                flush()
            return
        start = 0
        for row, xi, rgb, boxes, stats, colour in pending:
            p = backend.calibrate(probs[start:start + len(xi)].mean(axis=0, keepdims=True))[0]
            ood = None
            if ood_scores is not None:  # with tta: the unrotated view, as the gate was fitted
                block = ood_scores[start:start + len(xi)]
                ood = float(block[0] if cfg.tta else np.mean(block))
                row["ood_score"] = round(ood, 4)
            start += len(xi)
            k = int(np.argmax(p))
            status = gate.status(stats, ood, float(p[k]), threshold, k, colour) \
                if gate is not None else ("uncertain" if p[k] < threshold else "ok")
            row.update({"status": status, "confidence": round(float(p[k]), 6),
                        "uncertain": bool(p[k] < threshold or (colour is not None
                                                               and colour != k))})
            if colour is not None:
                row["colour_class"] = CLASS_NAMES[colour]
            if not status.startswith("rejected"):
                row["class"] = CLASS_NAMES[k]
            row.update({c: round(float(v), 6) for c, v in zip(PROB_COLUMNS, p, strict=True)})
            if overlay_dir is not None:
                import cv2

                label = status.replace("rejected:", "rejected: ") if status.startswith(
                    "rejected") else f"{CLASS_NAMES[k]} {p[k]:.2f}" + (
                    " (uncertain)" if status == "uncertain" else "")
                name = overlay_names[row["file"]]
                try:  # the prediction stands; only the picture is missing
                    ok, png = cv2.imencode(".png", cv2.cvtColor(
                        draw_overlay(rgb, boxes, label), cv2.COLOR_RGB2BGR))
                    if not ok:
                        raise ValueError("PNG encoding failed")
                    atomic_write_bytes(Path(overlay_dir) / f"{name}.png", png.tobytes())
                except (OSError, ValueError, cv2.error) as e:
                    row["error"] = f"{row['file']}: overlay {name}.png not written: {e}"
        pending.clear()

    for path in tqdm(files, desc="predict", unit="img", disable=not progress, file=sys.stderr):
        row = {c: "" for c in COLUMNS}
        row["file"] = path
        rows.append(row)
        try:
            rgb = read_image(path)
            mask = segment_nuclei(rgb, cfg.segmentation)
            boxes = nuclei_boxes(mask)
            row["nuclei"] = int(len(boxes))
            # crop runs with the label corner hidden segment the filled field, as in training
            crops_masked = cfg.preprocess.input_mode == "crops" and cfg.preprocess.mask_label_corner
            x = _model_inputs(rgb, cfg, None if crops_masked else mask)
            stats = image_statistics(rgb, cfg.segmentation) if gate is not None else None
            colour = gate.colour_class(rgb) if gate is not None else None
        except (ImageReadError, ValueError, OSError) as e:
            row["error"] = str(e) if str(path) in str(e) else f"{path}: {e}"
            row["status"] = "error"
            continue
        except Exception as e:  # anything else in segmentation or preprocessing
            row["error"] = f"{path}: {type(e).__name__}: {e}"
            row["status"] = "error"
            continue
        pending.append((row, x, rgb if overlay_dir is not None else None, boxes, stats, colour))
        if sum(len(p[1]) for p in pending) >= batch_size:
            flush()
            yield from rows
            rows.clear()
    flush()
    yield from rows


class RowWriter:
    """Writes rows to a text stream one at a time, as CSV or as one JSON list, flushing each.

    Use as a context manager: leaving it closes the JSON list (also after an exception, so a
    partial output is still valid JSON).

    Example:
        >>> import io
        >>> buf = io.StringIO()
        >>> with RowWriter(buf, "csv") as out:
        ...     out.write({"file": "a.png", "status": "ok"})
        >>> buf.getvalue().splitlines()[1].split(",")[:2]
        ['a.png', 'ok']
    """

    def __init__(self, stream, fmt: str):
        if fmt not in ("csv", "json"):
            raise ValueError(f"format must be 'csv' or 'json', got {fmt!r}")
        self.stream, self.fmt, self.count = stream, fmt, 0
        if fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n",
                                       restval="")
            self._csv.writeheader()
        else:
            stream.write("[")
        stream.flush()

    def write(self, row: dict) -> None:
        if self.fmt == "csv":
            self._csv.writerow(row)
        else:
            text = json.dumps(row, indent=1).replace("\n", "\n ")
            self.stream.write(("," if self.count else "") + "\n " + text)
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
            self.stream.flush()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_rows(rows: list[dict], fmt: str, stream) -> None:
    """Write rows as CSV (header + one line per image) or a JSON list."""
    with RowWriter(stream, fmt) as out:
        for row in rows:
            out.write(row)


def predict_to_file(backend: Backend, inputs, output: str | os.PathLike, *,
                    overlays: str | os.PathLike | None = None, batch_size: int = 16,
                    progress: bool = True, threshold: float | None = None, fmt: str = "csv",
                    config_path: str | os.PathLike | None = None, echo=print) -> list[dict]:
    """Predict ``inputs`` into ``output`` (CSV or JSON), resumably; return the rows.

    Rows go to ``<output>.partial`` as each batch finishes and to ``output``, in input order,
    once all are done; a rerun with the same model, config and threshold keeps the finished
    rows of the partial file (:class:`all_tf.inference.partial_rows.PartialRows`) and predicts
    only the others. ``echo`` gets the resume and interruption messages.
    """
    import io

    from all_tf.data import collect_inputs
    from all_tf.inference.partial_rows import PartialRows
    from all_tf.io import atomic_write_text

    output = Path(output)
    threshold = backend.threshold if threshold is None else threshold
    # listed once here; the files still to do are passed on as paths
    order = {p: k for k, (p, _) in enumerate(collect_inputs(inputs, labelled=False))}
    partial = PartialRows(output.with_name(output.name + ".partial"), backend.path, config_path,
                          threshold)
    kept = [r for r in partial.load() if r["file"] in order and not r["error"]]
    if kept:
        echo(f"resuming: {len(kept)} images already done in {partial.path}")
    done = {r["file"] for r in kept}
    rows = list(kept)
    try:
        with partial.start(kept):
            for row in iter_predictions(backend, [p for p in order if p not in done], overlays,
                                        batch_size, progress, threshold,
                                        overlay_names=overlay_file_names(order)):
                partial.write(row)
                rows.append(row)
    except BaseException:
        echo(f"stopped after {len(rows)} images; rerun the same command to resume from "
             f"{partial.path}")
        raise
    if rows:
        rows.sort(key=lambda r: order.get(r["file"], len(order)))
        buf = io.StringIO()
        write_rows(rows, fmt, buf)
        atomic_write_text(output, buf.getvalue())
    partial.path.unlink()
    return rows


def resolve_model(model: str | None, inputs: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The model path and the image inputs of a command line.

    ``--model`` may be a released model's short name (``light``) or a path (a release folder
    such as ``saved_models/mobilenetv3small_all4``, checksums verified, is opened like a
    released model); without it the default released model is used, unless the first input is
    itself a model (a ``.keras`` or ``.tflite`` file, a run directory, a release or a
    SavedModel folder: the older ``MODEL INPUTS...`` form).
    """
    from all_tf.models.released import (
        DEFAULT_MODEL,
        RELEASED,
        is_release,
        release_keras_file,
        released_model_path,
    )

    if model is None and len(inputs) > 1 and _is_model(Path(inputs[0])):
        model, inputs = inputs[0], inputs[1:]
    model = model or DEFAULT_MODEL
    if model in RELEASED or model in RELEASED.values():
        # model.keras, or for a float16-parts release the .keras file rebuilt into the cache
        return str(released_model_path(model)), inputs
    if is_release(model):  # a release folder given by its path (saved_models/<name>)
        return str(release_keras_file(model)), inputs
    if not Path(model).exists():
        raise FileNotFoundError(f"{model}: no such model file or folder, and not a released "
                                f"model (released: {', '.join(sorted(RELEASED))})")
    return model, inputs


def _is_model(path: Path) -> bool:
    if path.suffix in (".keras", ".tflite"):
        return path.is_file()
    from all_tf.models.released import is_release

    return path.is_dir() and ((path / "checkpoints" / "best.keras").is_file() or is_release(path)
                              or (path / "saved_model.pb").is_file()
                              or any(path.glob("[0-9]*/saved_model.pb")))
