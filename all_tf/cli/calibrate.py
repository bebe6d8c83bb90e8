"""``all-tf calibrate`` (or ``python -m all_tf.calibrate``): fit a run's temperature and
input gate, stored with it (:func:`all_tf.experiments.calibration.calibrate_run`).

Example:
    $ all-tf calibrate runs/mnv3_contiguous_f4
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from all_tf.inference.analysis import OOD_QUANTILE as GATE_QUANTILE


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
    from all_tf.experiments.calibration import calibrate_run

    try:
        summary = calibrate_run(run_dir, data_dir, quantile)
    except (RunDirError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
