"""Scoring a trained model on a split: per-image probabilities, ``predictions.csv``, metrics.

One loop over the evaluation pipeline (:func:`eval_outputs`) serves the softmax head, the
hybrid head's features and every script that scores a run; crop mode gives one row per crop,
and :func:`per_image` averages a crop's rows into its image.

Example:
    >>> import numpy as np
    >>> y, p, kept = per_image(np.array([1, 1, 0]), np.array([4, 4, 7]),
    ...                        np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]]))
    >>> y.tolist(), p.round(2).tolist(), kept.tolist()
    ([1, 0], [[0.3, 0.7], [0.9, 0.1]], [4, 7])
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.io import atomic_write_text

PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"


def eval_outputs(fn: Callable, records, cfg, batch_size: int):
    """``fn`` applied to every batch of the evaluation pipeline of ``records``.

    Args:
        fn: maps a batch of model inputs (B, S, S, 3) to an array (B, ...).
        records: ``all_tf.data.ImageRecord`` list.
        cfg: the run's ``Config`` (preprocessing, input mode).

    Returns:
        ``(outputs, labels, index)``: (M, ...) float32, (M,) int and (M,) int, one row per
        image (image mode) or per crop (crop mode); ``index`` is the position in ``records``
        (unreadable files have no row).

    Raises:
        ValueError: no image of ``records`` could be read.
    """
    import keras

    from all_tf.data import make_eval_dataset

    outputs, labels, index = [], [], []
    for images, onehot, image_index in make_eval_dataset(records, cfg, batch_size=batch_size):
        outputs.append(np.asarray(keras.ops.convert_to_numpy(fn(images)), dtype=np.float32))
        labels.append(np.argmax(onehot.numpy(), axis=1))
        index.append(image_index.numpy())
    if not outputs:
        raise ValueError(f"none of the {len(records)} images could be read")
    return tuple(map(np.concatenate, (outputs, labels, index)))


def per_image(labels, index, probs):
    """Per-image ``(y_true, probs, kept)`` from per-row values (crop mode: mean over crops).

    ``kept`` holds the sorted distinct ``index`` values: row ``k`` of the result is image
    ``kept[k]``.
    """
    from all_tf.evaluation.crops import aggregate_crop_probabilities

    kept, inverse = np.unique(index, return_inverse=True)
    y_true = np.zeros(len(kept), dtype=int)
    y_true[inverse] = labels
    return y_true, aggregate_crop_probabilities(probs, inverse, len(kept)), kept


def predict_split(model, records, cfg, batch_size: int, *, return_index: bool = False):
    """Per-image (y_true, probabilities (N, C)) of ``model`` on ``records``.

    With ``return_index`` a third array gives, for each row, its position in ``records``.
    """
    outputs, labels, index = eval_outputs(lambda x: model(x, training=False), records, cfg,
                                          batch_size)
    y_true, probs, kept = per_image(labels, index, outputs)
    return (y_true, probs, kept) if return_index else (y_true, probs)


def write_predictions(path: str | os.PathLike, parts: dict) -> None:
    """Write per-image probabilities of several parts to one CSV.

    Args:
        path: output CSV (columns part, path, label, number, p_<class>...; written atomically).
        parts: ``{part: (records, y_true, probs (N, C), index into records)}``.
    """
    import csv
    import io

    from all_tf.data.splits import sequence_numbers

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["part", "path", "label", "number", *(f"p_{c}" for c in CLASS_NAMES)])
    # numbered over all parts at once, so a digit-less name ranks among every image of its class
    everyone = list({r.path: r for records, *_ in parts.values() for r in records}.values())
    number = dict(zip((r.path for r in everyone), sequence_numbers(everyone), strict=True))
    for part, (records, y_true, probs, index) in parts.items():
        for row, k in enumerate(index):
            writer.writerow([part, records[k].path, int(y_true[row]), number[records[k].path],
                             *(f"{p:.6g}" for p in probs[row])])
    atomic_write_text(path, buf.getvalue())


def evaluate_run(fitted, output_dir: str | os.PathLike) -> dict:
    """Score a fitted run on its validation and test parts and write its result files.

    Args:
        fitted: an ``all_tf.training.FittedRun`` (best weights loaded).
        output_dir: the run directory; gets ``predictions.csv`` (val + test) and
            ``metrics.json`` (test metrics, epochs, training time, part sizes).

    Returns:
        The test metrics (see :func:`all_tf.evaluation.compute_metrics`).
    """
    from all_tf.evaluation.metrics import compute_metrics
    from all_tf.training import RunError

    out = Path(output_dir)
    cfg, split = fitted.cfg, fitted.split
    predictions = {}
    for part in ("val", "test"):
        records = getattr(split, part)
        try:
            predictions[part] = (records, *predict_split(
                fitted.model, records, cfg, cfg.train.batch_size, return_index=True))
        except ValueError as e:
            raise RunError(f"{part} part: {e}") from None
    write_predictions(out / PREDICTIONS_FILE, predictions)
    _, y_true, probs, _ = predictions["test"]
    metrics = compute_metrics(y_true, probs, threshold=cfg.uncertainty_threshold)
    metrics["epochs_trained"] = fitted.epochs
    metrics["train_seconds_last_session"] = round(fitted.train_seconds, 1)
    metrics["n_train"], metrics["n_val"], metrics["n_test"] = (
        len(split.train), len(split.val), len(split.test))
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2))
    return metrics


def load_run_metrics(output_dir: str | os.PathLike) -> dict | None:
    """The stored test metrics of a finished run, or None while it has none."""
    path = Path(output_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else None
