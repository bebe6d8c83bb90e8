"""Calibrating a finished run: its softmax temperature and its input gate, stored with it.

From the run's own split: the softmax temperature on the validation part (written to
``config.json`` as ``temperature``), the input bounds on the training images, the Mahalanobis
feature distance on their pooled features with its threshold at the 99th percentile of the
validation part times 3 (``gate.json`` + ``ood.npz``). ``predict`` and ``export`` then apply them.

Example:
    >>> from all_tf.experiments.calibration import calibrate_run
    >>> summary = calibrate_run("runs/mnv3_contiguous_f4")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from all_tf.inference.analysis import OOD_QUANTILE as GATE_QUANTILE


def calibrate_run(run_dir: str | Path, data_dir: str | None = None,
                  quantile: float = GATE_QUANTILE, batch_size: int = 32) -> dict:
    """Fit and store the temperature and the gate of ``run_dir``; return a summary.

    Raises:
        all_tf.evaluation.runs.RunDirError: the run lacks a file.
        ValueError: the run uses nucleus crops (the gate works on whole fields).
    """
    from all_tf.evaluation.calibration import (
        apply_temperature,
        expected_calibration_error,
        fit_temperature,
    )
    from all_tf.evaluation.runs import load_config, load_model, load_split
    from all_tf.inference.analysis import analyse_records, fit_gate, probabilities_and_features

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if cfg.preprocess.input_mode != "image":
        raise ValueError(f"{run_dir}: the gate needs a whole-field model (input_mode 'image')")
    split = load_split(run_dir, data_dir or cfg.data_dir)
    fn = probabilities_and_features(load_model(run_dir))
    train = analyse_records(split.train, cfg, fn, batch_size)
    val = analyse_records(split.val, cfg, fn, batch_size)
    temperature = fit_temperature(val.probabilities, val.labels)
    gate = fit_gate(train, val, quantile)
    gate.save(run_dir)
    cfg.temperature = temperature
    cfg.save(run_dir / "config.json")
    return {
        "temperature": temperature,
        "val_ece_before": expected_calibration_error(val.probabilities, val.labels),
        "val_ece_after": expected_calibration_error(
            apply_temperature(val.probabilities, temperature), val.labels),
        "ood_threshold": gate.distance.threshold,
        "bounds": gate.bounds,
        "n_train": len(train.labels),
        "n_val": len(val.labels),
    }
