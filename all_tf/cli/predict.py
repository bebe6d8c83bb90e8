"""``all-tf predict`` (or ``python -m all_tf.predict``): classify images with a .keras,
SavedModel or TFLite model (:mod:`all_tf.inference.predictor`).

Inputs are image files, folders (searched recursively) or glob patterns. Every image is
decoded with :func:`all_tf.io.read_image` and preprocessed on the host with
:func:`all_tf.preprocessing.preprocess_image` and the settings stored with the model (the run's
``config.json`` for ``.keras``; ``assets.extra/all_tf_export.json`` for a SavedModel; the
``.json`` beside a ``.tflite`` file), so all three backends see the same pixels. Runs trained on
nucleus crops get their crops' probabilities averaged per image.

Each image becomes one row: ``file``; ``status``: ``ok``, ``uncertain`` (confidence below the
model's threshold, or the model's colour check names another class), ``rejected:<reason>`` (the input is not a smear field the model knows:
see :mod:`all_tf.inference.gate`; only models stored with a ``gate.json`` have a gate) or
``error`` (the file could not be read or processed); ``class`` (empty when rejected or
error); ``confidence`` (max probability after the model's stored temperature, and over the 8
flips and rotations of the field for models stored with ``tta``);
``uncertain`` (also when the gate's colour check, :mod:`all_tf.inference.colour_check`,
names another class); ``p_<class>`` for the four classes; ``ood_score`` (Mahalanobis feature
distance of the field, or mean over its crops; ``.keras`` models and SavedModels with a gate:
a ``.tflite`` file outputs no features, so it has no ``out_of_distribution`` check); ``colour_class`` (the
colour check's class, models whose gate has one); ``nuclei`` (connected components of
:func:`all_tf.segmentation.segment_nuclei` at the image's own resolution; the gate counts
at 224 px, so the two can differ) and ``error`` (empty, or why the file was skipped:
a bad file never stops the others). Rows are written as each batch finishes; with
``--output`` they go to ``<output>.partial`` (:mod:`all_tf.inference.partial_rows`) until every
input is done, and rerunning an interrupted command predicts only the images it had not done.

Example:
    $ python -m all_tf.predict all_tf/sample_data/all4 -o preds.csv       # the released model
    $ python -m all_tf.predict --model runs/v2s/checkpoints/best.keras smears/ -o preds.csv
    $ python -m all_tf.predict --model export/tflite/all_tf_int8.tflite "smears/*.png" --format json
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from all_tf.cli.options import model_option, open_backend, prediction_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True)
@model_option()
@prediction_options
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write rows here (default: standard output).")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]),
              help="Output format (default: from --output's suffix, else csv).")
@click.option("--overlays", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for overlay PNGs: nucleus boxes and the predicted label.")
def main(inputs, model, config_path, output, fmt, overlays, threshold, batch_size, threads,
         progress):
    """Classify INPUTS (images, folders or globs) with the released model or --model.

    --model is a released model's name, a .keras file or run directory, a SavedModel folder
    (or TF Serving's <name>/<version>/ layout) or a .tflite file with its .json metadata
    beside it. The older form "predict MODEL INPUTS..." still works.
    """
    backend, inputs = open_backend(model, inputs, config_path, threads)
    if overlays is not None:
        overlays.mkdir(parents=True, exist_ok=True)
    fmt = fmt or ("json" if output is not None and output.suffix.lower() == ".json" else "csv")
    threshold = backend.threshold if threshold is None else threshold
    if output is None:
        count, errors = _predict_to_stdout(backend, inputs, overlays, batch_size, progress,
                                           threshold, fmt)
    else:
        from all_tf.inference.predictor import predict_to_file

        rows = predict_to_file(backend, inputs, output, overlays=overlays,
                               batch_size=batch_size, progress=progress, threshold=threshold,
                               fmt=fmt, config_path=config_path,
                               echo=lambda m: click.echo(m, err=True))
        count, errors = len(rows), sum(bool(r["error"]) for r in rows)
    if count == 0:
        from all_tf.io import IMAGE_EXTENSIONS

        raise click.ClickException(f"no images found in {', '.join(inputs)} (image files end in "
                                   f"{' '.join(IMAGE_EXTENSIONS)})")
    click.echo(f"{count} images, {errors} errors ({backend.kind} backend: {backend.path})",
               err=True)
    if errors == count:
        sys.exit(1)


def _predict_to_stdout(backend, inputs, overlays, batch_size, progress, threshold, fmt):
    from all_tf.inference.predictor import RowWriter, iter_predictions

    count = errors = 0
    with RowWriter(sys.stdout, fmt) as out:
        for row in iter_predictions(backend, inputs, overlays, batch_size, progress, threshold):
            out.write(row)
            count += 1
            errors += bool(row["error"])
    return count, errors


if __name__ == "__main__":
    main()
