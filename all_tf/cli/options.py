"""Click options and helpers used by several commands, so each is spelled and documented once.

Example:
    >>> import click
    >>> @click.command()
    ... @data_dir_option()
    ... def cmd(data_dir):
    ...     click.echo(data_dir)
"""

from __future__ import annotations

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


def keras_verbose_option(**kwargs):
    """--verbose/-v: Keras training output, the same level for every training command."""
    return click.option("--verbose", "-v", type=click.IntRange(0, 2), default=2,
                        show_default=True,
                        help="Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.",
                        **kwargs)


def timing_threads_option(**kwargs):
    """--timing-threads: the TFLite thread counts a speed measurement times (repeatable);
    ``--threads`` is the thread count of the commands that predict."""
    return click.option("--timing-threads", multiple=True, type=click.IntRange(1),
                        default=(1, 2), show_default=True,
                        help="TFLite thread counts to time (repeat the option).", **kwargs)


def seed_option(**kwargs):
    return click.option("--seed", type=int, default=None,
                        help="Random seed for the split, initial weights and shuffling.", **kwargs)


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


def config_from_file(config_file: Path):
    """A config JSON as the start of a new run: every setting but the fitted Reinhard target.

    A run's config holds the Reinhard target fitted on *its* training part; every new run fits
    its own, so another fold's or seed's test images never shape it.
    """
    from all_tf.config import Config

    cfg = Config.load(config_file)
    cfg.preprocess.reinhard_target = None
    return cfg


def base_config(quick: bool, config_file: Path | None, data_dir: Path | None,
                image_size: int | None, epochs: int | None, batch_size: int | None,
                mixed_precision: bool | None):
    """The ``quick`` or ``paper`` preset (or a config file), then the command-line overrides.

    Raises:
        click.UsageError: no ``--data-dir`` without ``--quick``, or settings the config refuses.
    """
    from all_tf.config import Config

    cfg = config_from_file(config_file) if config_file is not None \
        else Config.preset("quick" if quick else "paper")
    if data_dir is None and not cfg.data_dir:
        if not quick:
            raise click.UsageError("--data-dir is required without --quick")
        data_dir = SAMPLE_ALL4_DIR
    try:
        return cfg.override({"data_dir": None if data_dir is None else str(data_dir),
                             "preprocess.image_size": image_size, "train.epochs": epochs,
                             "train.batch_size": batch_size,
                             "train.mixed_precision": mixed_precision})
    except (TypeError, ValueError) as e:
        raise click.UsageError(f"invalid settings: {e}") from None


def training_options(f):
    """--quick, --config, --data-dir, --image-size, --epochs, --batch-size, --mixed-precision,
    --verbose."""
    options = [
        click.option("--quick", is_flag=True,
                     help="The quick preset (tiny: a smoke test), one seed, the shipped sample "
                          "by default."),
        click.option("--config", "config_file",
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Base config JSON (instead of the preset)."),
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Dataset root with one folder per class (default with --quick: "
                          "the shipped sample)."),
        click.option("--image-size", type=int, help="Input size in pixels (overrides)."),
        click.option("--epochs", type=int, help="Training epochs (overrides)."),
        click.option("--batch-size", type=int, help="Batch size (overrides)."),
        click.option("--mixed-precision/--no-mixed-precision", default=None,
                     help="bfloat16 mixed precision (overrides)."),
        keras_verbose_option(),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def prediction_options(f):
    """--config, --threshold, --batch-size, --threads, --progress: the commands that predict."""
    options = [
        click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
                     help="Config JSON overriding the one stored with the model."),
        click.option("--threshold", type=click.FloatRange(0, 1),
                     help="Uncertainty threshold (default: the one stored with the model)."),
        click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
                     help="Images per model call."),
        click.option("--threads", type=click.IntRange(1), help="TFLite interpreter threads."),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Progress bar on standard error."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def model_option(**kwargs):
    """--model/-m: a released model's name or a model path, for the commands that predict."""
    return click.option(
        "--model", "-m", "model",
        help="A released model (light: MobileNetV3-Small) or a path: .keras file, run "
             "directory, SavedModel folder or .tflite file [default: light].", **kwargs)


def open_backend(model: str | None, inputs: tuple[str, ...], config_path, threads):
    """``(backend, inputs)`` of :func:`all_tf.inference.predictor.load_backend` for a command
    line's --model and inputs, or a Click error naming the model and the reason; a note on
    stderr where the model's gate cannot apply its feature distance."""
    from all_tf.inference.predictor import load_backend, resolve_model

    try:
        model, inputs = resolve_model(model, inputs)
        backend = load_backend(model, config_path, threads)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except ImportError as e:  # the LiteRT interpreter is an optional extra
        raise click.ClickException(f"{model}: {e}; install all_tf[edge] to run .tflite files "
                                   "(pip install -e '.[edge]')") from None
    if backend.unchecked:
        click.echo(f"note: {backend.unchecked}", err=True)
    return backend, inputs


def fail(e: Exception):
    """Turn a clear ValueError from the package into a Click error (exit code 1)."""
    raise click.ClickException(str(e)) from None
