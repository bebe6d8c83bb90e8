"""``python -m all_tf.calibrate``: fit a run's temperature and input gate, stored with it.

From the run's own split: the softmax temperature on the validation part (written to
``config.json`` as ``temperature``), the input bounds on the training images, the Mahalanobis
feature distance on their pooled features with its threshold at the 99th percentile of the
validation part times 3 (``gate.json`` + ``ood.npz``). ``predict`` and ``export`` then apply them.

Example:
    $ python -m all_tf.calibrate runs/mnv3_contiguous_f4
"""

from __future__ import annotations

import json
from pathlib import Path

import click

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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="Dataset root (default: the data_dir stored in the run's config).")
@click.option("--quantile", type=click.FloatRange(0.5, 1.0), default=GATE_QUANTILE,
              show_default=True,
              help="Feature-distance threshold: 3 times this quantile of the validation "
                   "images' scores.")
def main(run_dir, data_dir, quantile):
    """Fit the temperature and input gate of RUN_DIR (a finished run) and store them there."""
    from all_tf.evaluation.runs import RunDirError

    try:
        summary = calibrate_run(run_dir, data_dir, quantile)
    except (RunDirError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
