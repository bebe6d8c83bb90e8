"""``all-tf rejection``: the input gate on held-out folds and on inputs the model does not know.

The study itself is :mod:`all_tf.experiments.rejection`.

Example:
    all-tf rejection results/cv_mnv3_A --segwbc-dir <path to segwbc> \\
        --release saved_models/mobilenetv3small_all4
"""

from __future__ import annotations

from pathlib import Path

import click

from all_tf.cli.options import fail


@click.command()
@click.argument("protocol_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="all4 root (default: the data_dir stored in each run's config).")
@click.option("--segwbc-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="segwbc root (dataset1/, dataset2/); omitted: no segwbc row.")
@click.option("--release", "releases", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A released model that is one of the folds (its run folder, written by "
                   "scripts/released_oof.py, has no checkpoint). Repeatable.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Markdown table (default <protocol_dir>/rejection.md).")
def main(protocol_dir, data_dir, segwbc_dir, releases, output):
    """Measure the gate on every contiguous fold run in PROTOCOL_DIR.

    Fold results are cached in PROTOCOL_DIR/rejection/ as each finishes; rerun to continue.
    """
    from all_tf.experiments.rejection import rejection_study, release_runs

    try:
        text = rejection_study(protocol_dir, data_dir, segwbc_dir, release_runs(list(releases)),
                               output, echo=lambda m: click.echo(m, err=True))
    except ValueError as e:
        fail(e)
    click.echo(text)


if __name__ == "__main__":
    main()
