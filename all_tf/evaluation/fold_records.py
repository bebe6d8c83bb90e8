"""Out-of-fold records of contiguous fold runs, found, rescored and written outside training.

``all-tf protocol -o DIR`` keeps one run directory per fold under
``DIR/runs/<model>_contiguous_f<fold>_s<seed>/``. A script that rescores a fold with something
other than its training run (a release's float32 weights, BatchNorm statistics adapted on the
test block) writes the same files there (``predictions.csv``, ``predictions_tta.csv``,
``split.json``, ``metrics.json`` and ``config.json`` last), so ``all-tf protocol`` and
``scripts/combine_oof.py`` pool it like a trained fold.

Example:
    >>> from all_tf.evaluation.fold_records import finished_fold_runs
    >>> runs = finished_fold_runs("results/cv_mnv3")  # doctest: +SKIP
    >>> [r.name for r in runs]  # doctest: +SKIP
    ['mobilenetv3small_contiguous_f0_s42', ..., 'mobilenetv3small_contiguous_f4_s42']
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from all_tf.evaluation.predictions import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    eval_outputs,
    per_image,
    write_predictions,
)
from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE
from all_tf.io import atomic_write_text

PARTS = ("val", "test")


def finished_fold_runs(protocol_dir: str | os.PathLike, *,
                       with_checkpoint: bool = False) -> list[Path]:
    """The finished contiguous fold runs of a protocol folder (``metrics.json`` and
    ``config.json`` present), sorted by name: the folds of one model and seed.

    Args:
        protocol_dir: an ``all-tf protocol`` output folder.
        with_checkpoint: keep only runs with ``checkpoints/best.keras`` (folds recorded from
            a release have none).

    Raises:
        ValueError: no such run in ``protocol_dir/runs``, or runs of several models or seeds
            (their folds are not one cross-validation).
    """
    protocol_dir = Path(protocol_dir)
    runs = sorted(r for r in (protocol_dir / "runs").glob("*_contiguous_f*")
                  if (r / METRICS_FILE).is_file() and (r / "config.json").is_file()
                  and (not with_checkpoint or (r / "checkpoints" / "best.keras").is_file()))
    if not runs:
        what = " with a checkpoints/best.keras" if with_checkpoint else ""
        raise ValueError(f"{protocol_dir}: no finished contiguous fold runs{what} in runs/")
    groups = sorted({re.sub(r"_contiguous_f\d+(?=_|$)", "_contiguous", r.name) for r in runs})
    if len(groups) > 1:
        raise ValueError(f"{protocol_dir}: runs of several models or seeds ({', '.join(groups)}); "
                         "pool one of them (a folder per model and seed)")
    return runs


def fold_coverage(runs: list[Path]) -> str:
    """Which folds ``runs`` (from :func:`finished_fold_runs`) hold, from their ``split.json``:
    ``"folds 0, 3, 4 of 5 (not a full cross-validation)"``, ``"all 5 folds"``, or
    ``"folds unknown"`` where a run has no readable split parameters."""
    folds, totals = set(), set()
    for run in runs:
        try:
            params = json.loads((run / "split.json").read_text())["params"]
            folds.add(int(params["fold"]))
            totals.add(int(params["n_folds"]))
        except (OSError, ValueError, KeyError, TypeError):
            return "folds unknown"
    if len(totals) != 1:
        return f"folds {', '.join(map(str, sorted(folds)))} of splits with different fold counts"
    n = totals.pop()
    if folds == set(range(n)):
        return f"all {n} folds"
    return f"folds {', '.join(map(str, sorted(folds)))} of {n} (not a full cross-validation)"


def score_parts(model_for_part: Callable, split, cfg, batch_size: int) -> tuple[dict, dict]:
    """Single-view and 8-view test-time-augmented probabilities on the validation and test parts.

    Args:
        model_for_part: ``(part, x) -> model``; ``part`` is ``"val"`` or ``"test"`` and ``x``
            that part's model inputs (M, S, S, 3) float32, for a model adapted to them.
        split: the run's ``Split``.
        cfg: the run's ``Config`` (preprocessing).
        batch_size: prediction batch size.

    Returns:
        ``(single, tta)``, each ``{part: (records, y_true (N,), probs (N, C), index (N,))}``
        as :func:`all_tf.evaluation.predictions.write_predictions` takes it.

    Raises:
        ValueError: no image of a part could be read, or a nucleus-crop run (the 8 views are
            of whole fields).
    """
    from all_tf.inference.tta import check_whole_field, tta_probabilities

    check_whole_field(cfg)

    single, tta = {}, {}
    for part in PARTS:
        records = getattr(split, part)
        x, labels, index = eval_outputs(lambda batch: batch, records, cfg, batch_size)
        model = model_for_part(part, x)
        # called like the training run's own evaluation (a bfloat16 model's graph-mode
        # predict differs from it by up to a few hundredths)
        probs = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                                for i in range(0, len(x), batch_size)]).astype(np.float32)
        single[part] = (records, *per_image(labels, index, probs))
        # a batch at a time: the 8 views of a whole part would take 8 times its memory
        views = np.concatenate([tta_probabilities(model, x[i:i + batch_size], batch_size)
                                for i in range(0, len(x), batch_size)])
        tta[part] = (records, *per_image(labels, index, views))
    return single, tta


def write_fold_record(run_dir: str | os.PathLike, cfg, split_file: str | os.PathLike,
                      single: dict, tta: dict, source: str,
                      extra: dict | None = None) -> dict:
    """Write a fold run's record in the protocol layout; ``config.json`` goes last.

    Args:
        run_dir: ``<protocol dir>/runs/<run id>`` (created).
        cfg: the ``Config`` saved as ``config.json``.
        split_file: the ``split.json`` copied beside it.
        single, tta: from :func:`score_parts`.
        source: where the predictions come from (``metrics.json``'s ``source``).
        extra: more ``metrics.json`` entries (epoch counts of the original run).

    Returns:
        The test metrics of the single-view predictions.
    """
    from all_tf.evaluation.metrics import compute_metrics

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(run_dir / PREDICTIONS_FILE, single)
    write_predictions(run_dir / TTA_PREDICTIONS_FILE, tta)
    shutil.copy2(split_file, run_dir / "split.json")
    _, y_true, probs, _ = single["test"]
    metrics = compute_metrics(y_true, probs, threshold=cfg.uncertainty_threshold)
    metrics.update(extra or {})
    metrics["source"] = source
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    cfg.save(run_dir / "config.json")  # last: a run directory with a config is complete
    return metrics


__all__ = ["PARTS", "finished_fold_runs", "score_parts", "write_fold_record"]
