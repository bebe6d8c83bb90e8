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
@click.option("--colour-check/--no-colour-check", default=True, show_default=True,
              help="Fit the colour check: answers whose class a logistic regression on the "
                   "field's colour histograms does not share are marked uncertain.")
@click.option("--only-colour-check", is_flag=True,
              help="Add the colour check to RUN_DIR's existing gate (a run or a saved_models/ "
                   "release) and change nothing else.")
@click.pass_context
def main(ctx, run_dir, data_dir, quantile, colour_check, only_colour_check):
    """Fit the temperature and input gate of RUN_DIR (a finished run) and store them there."""
    if only_colour_check:
        flags = {"quantile": "--quantile", "colour_check": "--colour-check/--no-colour-check"}
        given = [flag for name, flag in flags.items()
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(
                f"--only-colour-check keeps the stored gate; {' and '.join(given)} would "
                "change it (leave out --only-colour-check to refit the whole gate)")
    from all_tf.evaluation.runs import RunDirError
    from all_tf.experiments.calibration import add_colour_check, calibrate_run

    try:
        summary = add_colour_check(run_dir, data_dir) if only_colour_check else \
            calibrate_run(run_dir, data_dir, quantile, colour_check=colour_check)
    except (RunDirError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
