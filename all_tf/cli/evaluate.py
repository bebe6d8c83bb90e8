"""``all-tf evaluate``: how a model does on a labelled batch of one's own.

Label a few hundred fields of a new batch into class folders (``Benign``, ``Early``, ``Pre``,
``Pro`` or the Kaggle names), then score the released model (or any model ``all-tf predict``
takes) on them: balanced accuracy with block-bootstrap CIs, per-class recall, ECE, the
confusion matrix, what the ``ok`` / ``uncertain`` / ``rejected`` statuses caught, and what each
confidence threshold would buy. The output folder gets ``predictions.csv`` (the predict rows,
resumable through ``predictions.csv.partial``), ``evaluation.json`` and ``evaluation.md``
(also printed).

Example:
    $ all-tf evaluate --data-dir my_batch -o eval_light
    $ all-tf evaluate --model paper --data-dir my_batch -o eval_paper
"""

from __future__ import annotations

import json

import click

from all_tf.cli.options import (
    data_dir_option,
    model_option,
    open_backend,
    output_dir_option,
    prediction_options,
)

PREDICTIONS = "predictions.csv"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@data_dir_option(required=True)
@output_dir_option(required=True)
@model_option()
@prediction_options
@click.option("--block-size", type=click.IntRange(1), default=36, show_default=True,
              help="Consecutive file numbers per bootstrap block (1: single images).")
def main(data_dir, output_dir, model, config_path, threshold, block_size, batch_size, threads,
         progress):
    """Score a model on the labelled class folders of --data-dir.

    Writes predictions.csv (the rows of all-tf predict), evaluation.json and evaluation.md
    (printed too): balanced accuracy with block-bootstrap CIs, recall per class, ECE, the
    confusion matrix, what the ok / uncertain / rejected statuses caught, and the threshold
    that flags 90 % of the errors.

    \b
    Example:
        all-tf evaluate --data-dir my_batch -o eval_light
        all-tf evaluate --model paper --data-dir my_batch -o eval_paper
    """
    from all_tf.data import scan_dataset
    from all_tf.evaluation.labelled_batch import report_markdown, score_rows
    from all_tf.inference.predictor import predict_to_file
    from all_tf.io import atomic_write_text

    try:
        scan = scan_dataset(data_dir, verify="none")
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    records = scan.records
    for folder in scan.unknown_dirs:
        click.echo(f"not a class folder, left out: {folder}", err=True)
    for path, reason in scan.skipped:
        click.echo(f"skipped: {path}: {reason}", err=True)
    if not records:
        raise click.ClickException(f"{data_dir}: no images in class folders (Benign, Early, "
                                   "Pre, Pro, or the Kaggle names)")
    from all_tf.models.released import DEFAULT_MODEL

    name = model or DEFAULT_MODEL
    backend, _ = open_backend(model, (), config_path, threads)
    threshold = backend.threshold if threshold is None else threshold
    output_dir.mkdir(parents=True, exist_ok=True)
    made_with = {"model": backend.path, "config": config_path, "threshold": threshold}
    rows = _finished_rows(output_dir, made_with, {r.path for r in records})
    if rows is not None:
        click.echo(f"reusing {output_dir / PREDICTIONS} (same model, config, threshold and "
                   "images)", err=True)
    else:
        rows = predict_to_file(backend, [r.path for r in records], output_dir / PREDICTIONS,
                               batch_size=batch_size, progress=progress, threshold=threshold,
                               config_path=config_path, echo=lambda m: click.echo(m, err=True))
    try:
        result = score_rows(rows, records, threshold, block_size=block_size)
    except ValueError as e:
        raise click.ClickException(f"{data_dir}: {e}") from None
    result.update(made_with, data_dir=str(data_dir))
    result["unknown_dirs"], result["skipped"] = scan.unknown_dirs, [list(s) for s in scan.skipped]
    atomic_write_text(output_dir / "evaluation.json", json.dumps(result, indent=2))
    report = report_markdown(result, f"{name} on {data_dir}")
    atomic_write_text(output_dir / "evaluation.md", report)
    click.echo(report)
    unreadable = list(result["unreadable"].items())
    for file, error in unreadable[:5]:
        click.echo(f"unreadable: {file}: {error}", err=True)
    if len(unreadable) > 5:
        click.echo(f"... and {len(unreadable) - 5} more unreadable (evaluation.json)", err=True)


def _finished_rows(output_dir, made_with: dict, files: set[str]) -> list[dict] | None:
    """The rows of an earlier finished run in ``output_dir`` made with the same model, config
    and threshold on the same files, without unreadable ones; else None."""
    import csv

    try:
        previous = json.loads((output_dir / "evaluation.json").read_text())
        with (output_dir / PREDICTIONS).open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return None
    if any(previous.get(k) != v for k, v in made_with.items()):
        return None
    if {r["file"] for r in rows} != files or any(r["error"] for r in rows):
        return None
    return rows


if __name__ == "__main__":
    main()
