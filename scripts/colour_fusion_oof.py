"""Out of fold: does fusing the colour check's probabilities into the network's raise accuracy?

For each fold run of a contiguous cross-validation (``all-tf protocol``), the colour check
(:class:`all_tf.inference.colour_check.ColourCheck`) is fitted on the run's training and
validation images and its class probabilities on the test fold are combined with the
network's (``predictions_tta.csv``, or ``predictions.csv`` with ``--no-tta``): arithmetic
mean and normalised geometric mean. The test folds are pooled (an image tested twice counts
once, as in ``all-tf protocol``) and scored with block-bootstrap CIs. Prints a Markdown table.

This is a measurement, not a released path: the released models use the colour check only
to abstain (``uncertain``), never to change a class.

Example:
    .venv/bin/python scripts/colour_fusion_oof.py results/cv_mnv3_A --data-dir ../shared/data/all4
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

import all_tf  # noqa: F401  (before TensorFlow: quiets its cuInit error without a GPU)


@click.command()
@click.argument("protocol_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="all4 root.")
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Fuse the test-time-augmented network probabilities.")
@click.option("--n-boot", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Bootstrap draws for each confidence interval.")
def main(protocol_dir, data_dir, tta, n_boot):
    """Score network, colour check and their fusions pooled over PROTOCOL_DIR's fold runs."""
    from all_tf.data import Split
    from all_tf.evaluation.crossval import (
        block_bootstrap_ci,
        block_ids,
        image_key,
        oof_metrics,
        read_predictions,
    )
    from all_tf.evaluation.predictions import PREDICTIONS_FILE
    from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE
    from all_tf.inference.colour_check import ColourCheck, colour_histogram
    from all_tf.io import read_image

    runs = sorted(r for r in (protocol_dir / "runs").glob("*_contiguous_f*")
                  if (r / "metrics.json").exists())
    if not runs:
        raise click.ClickException(f"{protocol_dir}: no finished contiguous fold runs in runs/")
    root = Path(data_dir)
    histograms: dict[str, np.ndarray] = {}

    def histogram(key: str) -> np.ndarray:
        if key not in histograms:
            histograms[key] = colour_histogram(read_image(root / key))
        return histograms[key]

    ys, net, colour, numbers, keys = [], [], [], [], []
    for run in runs:
        split = Split.load(run / "split.json", root=data_dir)
        fit = split.train + split.val
        check = ColourCheck.fit(np.stack([histogram(image_key(r.path)) for r in fit]),
                                np.array([r.label for r in fit]), n_classes=4)
        test = read_predictions(run, TTA_PREDICTIONS_FILE if tta else PREDICTIONS_FILE)["test"]
        run_keys = [image_key(p) for p in test["path"]]
        colour.append(check.predict_proba(np.stack([histogram(k) for k in run_keys])))
        ys.append(test["y"])
        net.append(test["p"])
        numbers.append(test["number"])
        keys += run_keys
        click.echo(f"{run.name}: {len(run_keys)} test images", err=True)
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    y, net, colour = (np.concatenate(a)[keep] for a in (ys, net, colour))
    blocks = block_ids(y, np.concatenate(numbers)[keep], 36)
    geometric = np.sqrt(net * colour)
    rows = {"network" + (" + TTA" if tta else ""): net,
            "colour check (logistic regression on colour histograms)": colour,
            "mean of the two": (net + colour) / 2,
            "geometric mean of the two": geometric / geometric.sum(axis=1, keepdims=True)}
    click.echo("| probabilities | images | balanced acc. [95 % CI] | macro F1 | ECE | errors "
               "flagged (< 0.7) | recall Benign / Early / Pre / Pro |\n"
               "| --- | --- | --- | --- | --- | --- | --- |")
    for name, p in rows.items():
        m = oof_metrics(y, p)
        lo, hi = block_bootstrap_ci(y, p, blocks, n_boot=n_boot)["balanced_accuracy"]
        recall = " / ".join(f"{100 * v:.1f}" for v in m["recall"].values())
        flagged = "–" if m["errors_flagged"] is None else f"{100 * m['errors_flagged']:.1f}"
        click.echo(f"| {name} | {m['n']} | {100 * m['balanced_accuracy']:.1f} "
                   f"[{100 * lo:.1f}, {100 * hi:.1f}] | {100 * m['macro_f1']:.1f} | "
                   f"{100 * m['ece']:.1f} | {flagged} | {recall} |")


if __name__ == "__main__":
    main()
