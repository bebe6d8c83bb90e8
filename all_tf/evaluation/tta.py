"""Test-time-augmented predictions of a finished run (``predictions_tta.csv``).

The views and their average are :mod:`all_tf.inference.tta`; this module scores a run's
validation and test parts with them, through the same loop as :mod:`.predictions`.
"""

from __future__ import annotations

from pathlib import Path

from all_tf.inference.tta import check_whole_field, tta_probabilities

TTA_PREDICTIONS_FILE = "predictions_tta.csv"


def write_tta_predictions(run_dir: str | Path, data_dir: str | None = None,
                          batch_size: int = 64) -> Path:
    """``predictions_tta.csv`` of a finished whole-field run (validation and test parts),
    cached: an existing file is kept.

    Raises:
        ValueError: a crop run, or a part none of whose images could be scored (nothing is
            written).
    """
    from all_tf.evaluation.predictions import eval_outputs, per_image, write_predictions
    from all_tf.evaluation.runs import load_config, load_model, load_split

    run_dir = Path(run_dir)
    out = run_dir / TTA_PREDICTIONS_FILE
    if out.exists():
        return out
    cfg = load_config(run_dir)
    try:
        check_whole_field(cfg)
    except ValueError as e:
        raise ValueError(f"{run_dir}: {e}") from None
    split = load_split(run_dir, data_dir or cfg.data_dir)
    model = load_model(run_dir)
    parts = {}
    for part in ("val", "test"):
        records = getattr(split, part)
        try:
            outputs, labels, index = eval_outputs(
                lambda x: tta_probabilities(model, x, batch_size), records, cfg, 32)
        except ValueError as e:  # no file is written without both parts
            raise ValueError(f"{run_dir}: {part} part: {e}") from None
        parts[part] = (records, *per_image(labels, index, outputs))
    write_predictions(out, parts)
    return out


__all__ = ["TTA_PREDICTIONS_FILE", "write_tta_predictions"]
