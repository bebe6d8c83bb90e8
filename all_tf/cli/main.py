"""``all-tf``: one command line for the whole toolkit.

Each command lives in its own module under :mod:`all_tf.cli` and is imported only when it
runs (or when ``--help`` lists it), so ``all-tf --help`` stays fast.

Example:
    >>> from click.testing import CliRunner
    >>> result = CliRunner().invoke(main, ["--help"])
    >>> "protocol" in result.output and "predict" in result.output
    True
"""

from __future__ import annotations

import importlib

import click

COMMANDS = {
    "train": ("all_tf.cli.train", "Train a classifier into a resumable run directory."),
    "predict": ("all_tf.cli.predict", "Classify images with a released or trained model."),
    "evaluate": ("all_tf.cli.evaluate", "Score a model on a labelled batch of one's own."),
    "export": ("all_tf.cli.export", "Export a model to a SavedModel (TF Serving) and TFLite."),
    "calibrate": ("all_tf.cli.calibrate", "Fit a run's temperature and input gate."),
    "demo": ("all_tf.cli.demo", "Classify the shipped sample with the released model."),
    "protocol": ("all_tf.cli.protocol", "Cross-validation / the paper's split protocol."),
    "audit": ("all_tf.cli.audit", "Audit a dataset: duplicates, leakage, shortcuts."),
    "figures": ("all_tf.cli.figures", "Figures of a protocol directory."),
    "duplicates": ("all_tf.cli.duplicates", "Find duplicate and overlapping images."),
    "colour-spaces": ("all_tf.cli.colour_spaces", "Colour-space study (RGB/HSV/LAB/HED)."),
    "rejection": ("all_tf.cli.rejection", "Measure the input gate on in- and out-of-distribution sets."),
    "release": ("all_tf.cli.release", "Turn a run into a release folder under saved_models/."),
}
"""Command name -> (module with a Click command ``main``, one-line help)."""


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        command = importlib.import_module(COMMANDS[name][0]).main
        command.short_help = COMMANDS[name][1]
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="all_tf")
def main():
    """all_tf: multistage B-ALL classification of blood smear images."""


if __name__ == "__main__":
    main()
