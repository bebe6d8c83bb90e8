"""Rebuild a released model's out-of-fold record from its weights, for pooling.

A released model is one fold's run of the contiguous cross-validation (its ``split.json`` says
which). This scores the release on that split's validation and test parts, single view and
with the 8-view test-time augmentation, and writes the files that ``all-tf protocol`` pools
into ``<output-dir>/runs/<run id>/``: ``config.json``, ``split.json``, ``metrics.json`` (the
recomputed test metrics, with the release's epoch counts), ``predictions.csv`` and
``predictions_tta.csv``. Rerunning ``all-tf protocol`` with the same config and output
directory then records that fold instead of training it again.

A float16-parts release runs in float32 from float16-rounded weights, so its probabilities
differ slightly from the original run's; the script prints both test accuracies.

Example:
    .venv/bin/python scripts/released_oof.py saved_models/efficientnetv2s_cbam_all4 \\
        --data-dir ../shared/data/all4 -o results/cv_v2s_cbam
"""

from __future__ import annotations

import json
import shutil
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
@click.option("--seed", default=None, type=int,
              help="Seed in the run id [default: the config's split seed].")
@click.option("--batch-size", default=32, show_default=True, type=int)
def main(release, data_dir, output_dir, seed, batch_size):
    """Write the out-of-fold record of RELEASE (a saved_models/ folder)."""
    import keras

    from all_tf.config import Config
    from all_tf.evaluation.metrics import compute_metrics
    from all_tf.evaluation.predictions import (
        PREDICTIONS_FILE,
        eval_outputs,
        per_image,
        predict_split,
        write_predictions,
    )
    from all_tf.evaluation.runs import load_split
    from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE
    from all_tf.inference.tta import tta_probabilities
    from all_tf.io import atomic_write_text
    from all_tf.models.released import materialize_keras

    cfg = Config.load(release / "config.json")
    if data_dir:
        cfg = cfg.override({"data_dir": str(data_dir)})
    if cfg.split.kind != "contiguous" or cfg.split.fold is None:
        raise click.ClickException(f"{release}: not a fold of the contiguous split "
                                   f"(split {cfg.split.kind}, fold {cfg.split.fold})")
    seed = cfg.split.seed if seed is None else seed
    run_id = f"{cfg.model.name}_contiguous_f{cfg.split.fold}_s{seed}"
    run_dir = output_dir / "runs" / run_id
    if (run_dir / "config.json").exists():
        raise click.ClickException(f"{run_dir} already holds a run; remove it first")
    split = load_split(release, cfg.data_dir)
    model = keras.models.load_model(materialize_keras(release), compile=False)

    single, tta = {}, {}
    for part in ("val", "test"):
        records = getattr(split, part)
        click.echo(f"{part}: {len(records)} images")
        single[part] = (records, *predict_split(model, records, cfg, batch_size,
                                                return_index=True))
        outputs, labels, index = eval_outputs(
            lambda x: tta_probabilities(model, x, batch_size), records, cfg, batch_size)
        tta[part] = (records, *per_image(labels, index, outputs))

    run_dir.mkdir(parents=True)
    write_predictions(run_dir / PREDICTIONS_FILE, single)
    write_predictions(run_dir / TTA_PREDICTIONS_FILE, tta)
    shutil.copy2(release / "split.json", run_dir / "split.json")
    stored = json.loads((release / "metrics.json").read_text())
    _, y_true, probs, _ = single["test"]
    metrics = compute_metrics(y_true, probs, threshold=cfg.uncertainty_threshold)
    for key in ("epochs_trained", "train_seconds_last_session", "n_train", "n_val", "n_test"):
        if key in stored:
            metrics[key] = stored[key]
    metrics["source"] = f"recomputed from the release {release.name}"
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    cfg.save(run_dir / "config.json")  # last: a run directory with a config is complete
    click.echo(f"{run_dir}: test accuracy {metrics['accuracy']:.4f} recomputed, "
               f"{stored['accuracy']:.4f} stored with the release")


if __name__ == "__main__":
    main()
