"""Out of fold: does re-estimating BatchNorm statistics on a new batch help (AdaBN)?

AdaBN (Li et al. 2016, "Revisiting Batch Normalization for Practical Domain Adaptation")
replaces each BatchNormalization layer's moving mean and variance with those of the new
domain's images, unlabelled, before predicting them. Here a "new batch" is a part of each
contiguous fold run: every fold's best checkpoint is adapted on its test part (all four
classes' blocks together) and, separately, on its validation part, and re-scored, single view
and with the 8-view test-time augmentation.

The output folder has the layout of ``all-tf protocol``'s (``runs/<run id>/`` with
``predictions.csv``, ``predictions_tta.csv``, ``metrics.json``, ``split.json``,
``config.json``), so ``scripts/combine_oof.py`` scores it against the unadapted runs. Finished
runs are skipped on a rerun.

The adaptation pass holds a whole part (about 540 fields) in one training-mode forward pass:
MobileNetV3-Small at 128 px runs on a 24 GiB machine; EfficientNetV2-S + CBAM at 128 px
reached 20 GiB there and was stopped by the out-of-memory killer.

These are measurements, not a released path: no released model adapts its statistics.

Example:
    .venv/bin/python scripts/adapt_bn_oof.py results/cv_mnv3_A_fp32 \\
        --data-dir ../shared/data/all4 -o results/cv_mnv3_A_fp32_adabn
    .venv/bin/python scripts/combine_oof.py results/cv_mnv3_A_fp32 \\
        results/cv_mnv3_A_fp32_adabn --data-dir ../shared/data/all4
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

import all_tf  # noqa: F401  (before TensorFlow: quiets its cuInit error without a GPU)


def adapt_batchnorm(model, x: np.ndarray) -> int:
    """Set every BatchNormalization layer's moving statistics to those of ``x`` (AdaBN).

    One forward pass in training mode over all of ``x`` (N, S, S, 3) with momentum 0: each
    layer's statistics are those of its input given the already adapted layers before it.
    Weights are unchanged. Returns the number of layers adapted.
    """
    import keras

    # _flatten_layers also finds BatchNormalization inside custom layers and nested models
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


@click.command()
@click.argument("protocol_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="all4 root.")
@click.option("--output-dir", "-o", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Protocol-layout folder for the adapted predictions.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Prediction batch size (the adaptation pass takes a whole part at once).")
def main(protocol_dir, data_dir, output_dir, batch_size):
    """Re-score PROTOCOL_DIR's fold runs with BatchNorm statistics adapted on each part."""
    from all_tf.evaluation.fold_records import finished_fold_runs, score_parts, write_fold_record
    from all_tf.evaluation.runs import load_config, load_metrics, load_model, load_split

    try:
        runs = finished_fold_runs(protocol_dir, with_checkpoint=True)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    for run in runs:
        out = output_dir / "runs" / run.name
        if (out / "config.json").exists():
            click.echo(f"{run.name}: done earlier, skipped", err=True)
            continue
        cfg = load_config(run)

        def adapted(part, x, run=run):
            model = load_model(run)  # the stored statistics, adapted to this part only
            adapt_batchnorm(model, x)
            return model

        try:
            single, tta = score_parts(adapted, load_split(run, data_dir), cfg, batch_size)
        except ValueError as e:
            raise click.ClickException(f"{run}: {e}") from None
        metrics = write_fold_record(
            out, cfg, run / "split.json", single, tta,
            source=f"{run}: BatchNorm statistics adapted on each part (AdaBN)")
        before = load_metrics(run)["accuracy"]
        click.echo(f"{run.name}: test accuracy {before:.4f} -> {metrics['accuracy']:.4f} "
                   "adapted", err=True)


if __name__ == "__main__":
    main()
