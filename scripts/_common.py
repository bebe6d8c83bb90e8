"""Options and helpers shared by the experiment scripts (not a command)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import all_tf  # noqa: E402,F401  (before TensorFlow: quiets its cuInit error without a GPU)

SAMPLE_ALL4 = REPO / "all_tf" / "sample_data" / "all4"
QUICK_IMAGE_SIZE = 64
QUICK_EPOCHS = 1


def csv_list(kind=str):
    """Click callback: "a,b,c" -> [a, b, c] (None stays None)."""

    def callback(ctx, param, value):
        if value is None:
            return None
        try:
            return [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError as e:
            raise click.BadParameter(str(e)) from None

    return callback


def base_config(
    quick: bool,
    config_file: Path | None,
    data_dir: Path | None,
    image_size: int | None,
    epochs: int | None,
    batch_size: int | None,
    mixed_precision: bool | None,
):
    """The preset (``quick`` or ``paper``) or a config file, then the command-line overrides."""
    from all_tf.config import Config

    if config_file is not None:
        cfg = Config.load(config_file)
        # A run's config holds the Reinhard target fitted on *its* training part; every run
        # of a script fits its own, so another seed's test images never shape it.
        cfg.preprocess.reinhard_target = None
    else:
        cfg = Config.preset("quick" if quick else "paper")
        if quick:
            cfg.preprocess.image_size = QUICK_IMAGE_SIZE
            cfg.train.epochs = QUICK_EPOCHS
    if data_dir is not None:
        cfg.data_dir = str(data_dir)
    elif not cfg.data_dir:
        if not quick:
            raise click.UsageError("--data-dir is required without --quick")
        cfg.data_dir = str(SAMPLE_ALL4)
    if image_size is not None:
        cfg.preprocess.image_size = image_size
    if epochs is not None:
        cfg.train.epochs = epochs
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    if mixed_precision is not None:
        cfg.train.mixed_precision = mixed_precision
    try:
        return Config.from_dict(cfg.to_dict())
    except (TypeError, ValueError) as e:
        raise click.UsageError(f"invalid settings: {e}") from None


def training_options(f):
    """--quick, --config, --data-dir, --image-size, --epochs, --batch-size, --mixed-precision."""
    options = [
        click.option(
            "--quick",
            is_flag=True,
            help=f"Tiny settings for a smoke test: {QUICK_IMAGE_SIZE} px, "
            f"{QUICK_EPOCHS} epoch, one seed, the shipped sample by default.",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Base config JSON (instead of the preset).",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            help="Dataset root with one folder per class (default with --quick: "
            "the shipped sample).",
        ),
        click.option("--image-size", type=int, help="Input size in pixels (overrides)."),
        click.option("--epochs", type=int, help="Training epochs (overrides)."),
        click.option("--batch-size", type=int, help="Batch size (overrides)."),
        click.option(
            "--mixed-precision/--no-mixed-precision",
            default=None,
            help="bfloat16 mixed precision (overrides).",
        ),
        click.option("--verbose", "-v", count=True, help="Keras progress output."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def fail(e: Exception):
    """Turn a clear ValueError from the package into a Click error (exit code 1)."""
    raise click.ClickException(str(e)) from None
