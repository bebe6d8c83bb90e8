"""Calibrating a finished run: its softmax temperature and its input gate, stored with it.

From the run's own split: the softmax temperature on the validation part (written to
``config.json`` as ``temperature``), the input bounds on the training images, the Mahalanobis
feature distance on their pooled features with its threshold at the 99th percentile of the
validation part times 3 (``gate.json`` + ``ood.npz``), and the colour check on the training and
validation images (``gate.json``). ``predict`` and ``export`` then apply them.

Example:
    >>> from all_tf.experiments.calibration import calibrate_run
    >>> summary = calibrate_run("runs/mnv3_contiguous_f4")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from all_tf.inference.analysis import OOD_QUANTILE as GATE_QUANTILE


def calibrate_run(run_dir: str | Path, data_dir: str | None = None,
                  quantile: float = GATE_QUANTILE, batch_size: int = 32,
                  colour_check: bool = True) -> dict:
    """Fit and store the temperature and the gate of ``run_dir`` (with a colour check unless
    ``colour_check`` is False); return a summary.

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
    gate = fit_gate(train, val, quantile, colour_check=colour_check)
    gate.save(run_dir)
    cfg.temperature = temperature
    cfg.save(run_dir / "config.json")
    return {
        "temperature": temperature,
        "val_ece_before": expected_calibration_error(val.probabilities, val.labels),
        "val_ece_after": expected_calibration_error(
            apply_temperature(val.probabilities, temperature), val.labels),
        "ood_threshold": gate.distance.threshold,
        "colour_check": gate.colour is not None,
        "bounds": gate.bounds,
        "n_train": len(train.labels),
        "n_val": len(val.labels),
    }


def add_colour_check(folder: str | Path, data_dir: str | None = None) -> dict:
    """Fit the colour check of a calibrated run or a release on its split's training and
    validation images and store it in its ``gate.json``, leaving the temperature, the input
    bounds and the feature distance as they are (``SHA256SUMS`` is rewritten where present).

    Raises:
        all_tf.evaluation.runs.RunDirError: the folder lacks ``config.json`` or ``split.json``.
        ValueError: the folder has no ``gate.json``, or an image of the split cannot be read.
    """
    import numpy as np

    from all_tf import CLASS_NAMES
    from all_tf.evaluation.runs import load_split
    from all_tf.inference import Gate
    from all_tf.inference.colour_check import ColourCheck, colour_histogram
    from all_tf.inference.gate import GATE_FILE
    from all_tf.io import ImageReadError, atomic_write_text, read_image

    folder = Path(folder)
    gate = Gate.load(folder)
    if gate is None:
        raise ValueError(f"{folder}: no gate.json (run python -m all_tf.calibrate first)")
    split = load_split(folder, data_dir)
    records = list(split.train) + list(split.val)
    histograms = []
    for r in records:
        try:
            histograms.append(colour_histogram(read_image(r.path)))
        except ImageReadError as e:
            raise ValueError(f"{r.path}: {e}") from None
    labels = np.array([r.label for r in records])
    gate.colour = ColourCheck.fit(np.stack(histograms), labels, n_classes=len(CLASS_NAMES))
    atomic_write_text(folder / GATE_FILE, json.dumps(gate.to_dict(), indent=2))
    if (folder / "SHA256SUMS").is_file():
        from all_tf.models.released import write_checksums

        write_checksums(folder)
    agree = float(np.mean(gate.colour.classes(np.stack(histograms)) == labels))
    return {"colour_check": str(folder / "gate.json"), "n_fit": len(records),
            "fit_accuracy": agree}
