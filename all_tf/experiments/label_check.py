"""The label check: a finished run scored with the burned-in label corner of its test images hidden.

all4 fields carry a scale-bar label in the bottom-right corner whose style depends on the
class (see the audit). The check reruns the run's own evaluation with
``preprocess.mask_label_corner`` switched on (the corner filled with the per-channel median
after resizing, exactly as a model trained with the mask sees it), so the drop from the
plain test accuracy measures how much the model reads the label. The protocol records it on
every softmax row and the audit reports it; both call :func:`label_masked_metrics`.

Example:
    >>> m = label_masked_metrics("results/protocol/runs/mobilenetv3small_70-30_s42")  # doctest: +SKIP
    >>> round(m["accuracy"], 3)  # doctest: +SKIP
    0.951
"""

from __future__ import annotations

import json
from pathlib import Path

from all_tf.io import cached_json

CACHE_NAME = "label_masked_metrics.json"


def label_masked_metrics(run_dir: str | Path, batch_size: int | None = None,
                         model=None) -> dict:
    """Test metrics of a finished run with the label corner of every test image hidden.

    Args:
        run_dir: a finished run directory (config.json, split.json, checkpoints).
        batch_size: evaluation batch size (default: the run's training batch size).
        model: the run's model when the caller has it loaded already (default: load it).

    Returns:
        A ``compute_metrics`` dict (fractions in [0, 1]); the run's own test metrics when it
        was trained with the mask. In crop mode the crops are cut from the masked field.
        Cached in ``<run_dir>/label_masked_metrics.json``.
    """
    from all_tf.evaluation.metrics import compute_metrics
    from all_tf.evaluation.predictions import predict_split
    from all_tf.evaluation.runs import load_config, load_model, load_split

    run_dir = Path(run_dir)

    def compute() -> dict:
        cfg = load_config(run_dir)
        if cfg.preprocess.mask_label_corner:
            return json.loads((run_dir / "metrics.json").read_text())
        split = load_split(run_dir, cfg.data_dir)
        loaded = model if model is not None else load_model(run_dir)
        cfg.preprocess.mask_label_corner = True
        y_true, probs = predict_split(loaded, split.test, cfg, batch_size or cfg.train.batch_size)
        return compute_metrics(y_true, probs, threshold=cfg.uncertainty_threshold)

    return cached_json(run_dir / CACHE_NAME, compute)


def label_masked_columns(metrics: dict) -> dict:
    """Results-CSV columns of :func:`label_masked_metrics`."""
    return {"label_masked_accuracy": metrics.get("accuracy"),
            "label_masked_f1": metrics.get("macro_f1")}
