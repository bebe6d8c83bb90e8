"""Rebuild a released model's out-of-fold record from its weights, for pooling.

A released model is one fold's run of the contiguous cross-validation (its ``split.json`` says
which). This scores the release on that split's validation and test parts, single view and
with the 8-view test-time augmentation, and writes the files that ``all-tf protocol`` pools
into ``<output-dir>/runs/<run id>/``: ``config.json``, ``split.json``, ``metrics.json`` (the
recomputed test metrics, with the release's epoch counts), ``predictions.csv`` and
``predictions_tta.csv``. Rerunning ``all-tf protocol`` with the same config and output
directory then records that fold instead of training it again.

A float16-parts release runs in float32 from float16-rounded weights, so its probabilities
differ slightly from the original run's (a ``.keras`` release keeps its training run's dtype
policy); the script prints both test accuracies.

Example:
    .venv/bin/python scripts/released_oof.py saved_models/efficientnetv2s_cbam_all4 \\
        --data-dir ../shared/data/all4 -o results/cv_v2s_cbam
"""

from __future__ import annotations

from pathlib import Path

import click

import all_tf  # noqa: F401  (before TensorFlow: quiets its cuInit error without a GPU)


@click.command()
@click.argument("release", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="Dataset root (default: the data_dir in the release's config).")
@click.option("--output-dir", "-o", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Protocol directory; the record goes to runs/<run id>/.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Prediction batch size.")
def main(release, data_dir, output_dir, batch_size):
    """Write the out-of-fold record of RELEASE (a saved_models/ folder)."""
    from all_tf.evaluation.fold_records import score_parts, write_fold_record
    from all_tf.evaluation.runs import RunDirError, load_metrics, load_split
    from all_tf.experiments.rejection import release_runs
    from all_tf.models.released import ReleasedModelError, load_release

    try:
        ((run_id, _),) = release_runs([release]).items()
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    run_dir = output_dir / "runs" / run_id
    if (run_dir / "config.json").exists():
        raise click.ClickException(f"{run_dir} already holds a run; remove it first")
    try:
        model, cfg = load_release(release)
        if data_dir:
            cfg = cfg.override({"data_dir": str(data_dir)})
        stored = load_metrics(release)
        split = load_split(release, cfg.data_dir)
    except (RunDirError, ReleasedModelError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"val: {len(split.val)} images, test: {len(split.test)} images")
    try:
        single, tta = score_parts(lambda part, x: model, split, cfg, batch_size)
    except ValueError as e:
        raise click.ClickException(f"{release}: {e}") from None

    kept = ("epochs_trained", "train_seconds_last_session", "n_train", "n_val", "n_test")
    metrics = write_fold_record(run_dir, cfg, release / "split.json", single, tta,
                                source=f"recomputed from the release {release.name}",
                                extra={k: stored[k] for k in kept if k in stored})
    click.echo(f"{run_dir}: test accuracy {metrics['accuracy']:.4f} recomputed, "
               f"{stored.get('accuracy', float('nan')):.4f} stored with the release")


if __name__ == "__main__":
    main()
