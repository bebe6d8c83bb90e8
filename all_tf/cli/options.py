"""Click options used by several commands, so each is spelled and documented once.

Example:
    >>> import click
    >>> @click.command()
    ... @data_dir_option()
    ... def cmd(data_dir):
    ...     click.echo(data_dir)
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from all_tf.data.scan import SAMPLE_ALL4_DIR  # noqa: F401  (re-exported)


def data_dir_option(default: Path | None = None, **kwargs):
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=default,
        show_default=default is not None,
        help="Dataset root with one folder per class (Benign, Early, Pre, Pro, or the Kaggle "
             "names, optionally under Original/).",
        **kwargs,
    )


def output_dir_option(default: str | None = None, **kwargs):
    return click.option(
        "--output-dir", "-o",
        type=click.Path(path_type=Path, file_okay=False),
        default=default,
        show_default=default is not None,
        help="Where results go; rerunning with the same directory resumes.",
        **kwargs,
    )


def seed_option(**kwargs):
    return click.option("--seed", type=int, default=None,
                        help="Random seed for the split, initial weights and shuffling.", **kwargs)


def verbose_option():
    def callback(ctx, param, value):
        logging.basicConfig(level=logging.DEBUG if value > 1 else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        return value

    return click.option("--verbose", "-v", count=True, callback=callback, expose_value=True,
                        help="More log output (-vv for debug).")
