"""Out of fold: what combining probabilities buys, pooled over contiguous test folds.

Reads the fold runs of one or more contiguous cross-validations (``all-tf protocol`` output
folders of the same folds, e.g. two runs of one recipe) and scores, pooled over the test folds
with block-bootstrap CIs:

* each folder's network (``predictions_tta.csv``, or ``predictions.csv`` with ``--no-tta``);
* with several folders, their ensemble (the mean of their probabilities per image);
* with ``--colour``, the colour check (:class:`all_tf.inference.colour_check.ColourCheck`,
  fitted on each fold's training and validation images) and its fusion with the network (or
  the ensemble): the arithmetic and the normalised geometric mean of the two.

An image tested by two folds counts once, as in ``all-tf protocol``; only images every folder
tested are scored. Prints which folds each folder holds, then a Markdown table.

These are measurements, not released paths: the released models are single networks, and use
the colour check only to abstain (``uncertain``), never to change a class.

Example:
    .venv/bin/python scripts/combine_oof.py results/cv_mnv3_A results/cv_mnv3_A_fp32 \\
        --data-dir ../shared/data/all4 --colour
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

import all_tf  # noqa: F401  (before TensorFlow: quiets its cuInit error without a GPU)


def _fold_runs(protocol_dir: Path) -> list[Path]:
    from all_tf.evaluation.fold_records import finished_fold_runs

    try:
        return finished_fold_runs(protocol_dir)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


@click.command()
@click.argument("protocol_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False),
              help="all4 root; needed only with --colour (the images' colour histograms).")
@click.option("--tta/--no-tta", default=True, show_default=True,
              help="Use the test-time-augmented network probabilities.")
@click.option("--colour/--no-colour", default=False, show_default=True,
              help="Also score the colour check and its fusion with the network(s).")
@click.option("--n-boot", default=1000, show_default=True, type=click.IntRange(min=10),
              help="Bootstrap draws for each confidence interval.")
def main(protocol_dirs, data_dir, tta, colour, n_boot):
    """Score networks, their ensemble and colour fusions pooled over PROTOCOL_DIRS' folds."""
    from all_tf import CLASS_NAMES
    from all_tf.evaluation.crossval import (
        block_bootstrap_ci,
        block_ids,
        image_key,
        oof_metrics,
        read_predictions,
    )
    from all_tf.evaluation.fold_records import fold_coverage
    from all_tf.evaluation.predictions import PREDICTIONS_FILE
    from all_tf.evaluation.runs import RunDirError, load_split
    from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE
    from all_tf.inference.colour_check import ColourCheck, colour_histogram
    from all_tf.io import read_image

    if colour and data_dir is None:
        raise click.UsageError("--colour needs --data-dir (the images' colour histograms)")
    name = TTA_PREDICTIONS_FILE if tta else PREDICTIONS_FILE
    label, number, probs = {}, {}, []  # image key -> label / file number; per folder: key -> p
    coverage = []
    for protocol_dir in protocol_dirs:
        p = {}
        runs = _fold_runs(protocol_dir)
        coverage.append(f"{protocol_dir}: {fold_coverage(runs)}")
        for run in runs:
            test = read_predictions(run, name)["test"]
            for path, y, n, row in zip(test["path"], test["y"], test["number"], test["p"],
                                       strict=True):
                key = image_key(path)
                p.setdefault(key, row)  # the first fold that tested it
                label[key], number[key] = int(y), int(n)
        probs.append(p)
    keys = sorted(set.intersection(*(set(p) for p in probs)))
    if not keys:
        raise click.ClickException(f"{', '.join(map(str, protocol_dirs))}: no test image "
                                   "that every folder tested")
    y = np.array([label[k] for k in keys])
    blocks = block_ids(y, [number[k] for k in keys], 36)
    suffix = " + TTA" if tta else ""
    rows = {f"network{suffix}, {d}": np.stack([p[k] for k in keys])
            for d, p in zip(protocol_dirs, probs, strict=True)}
    network = np.mean(list(rows.values()), axis=0)
    if len(protocol_dirs) > 1:
        rows[f"ensemble: mean of the {len(protocol_dirs)} networks{suffix}"] = network
    if colour:
        histograms: dict[str, np.ndarray] = {}

        def histogram(path: str) -> np.ndarray:
            key = image_key(path)
            if key not in histograms:
                histograms[key] = colour_histogram(read_image(path))
            return histograms[key]

        colour_p = {}
        for run in _fold_runs(protocol_dirs[0]):
            try:
                split = load_split(run, data_dir)
            except RunDirError as e:
                raise click.ClickException(str(e)) from None
            fit = split.train + split.val
            check = ColourCheck.fit(np.stack([histogram(r.path) for r in fit]),
                                    np.array([r.label for r in fit]), n_classes=len(CLASS_NAMES))
            probs_test = check.predict_proba(np.stack([histogram(r.path) for r in split.test]))
            for r, row in zip(split.test, probs_test, strict=True):
                colour_p.setdefault(image_key(r.path), row)
            click.echo(f"{run.name}: colour check fitted", err=True)
        c = np.stack([colour_p[k] for k in keys])
        geometric = np.sqrt(network * c)
        what = "ensemble" if len(protocol_dirs) > 1 else "network"
        rows["colour check (logistic regression on colour histograms)"] = c
        rows[f"{what} and colour check, mean"] = (network + c) / 2
        rows[f"{what} and colour check, geometric mean"] = \
            geometric / geometric.sum(axis=1, keepdims=True)
    click.echo(f"Pooled: {'; '.join(coverage)}.\n")
    click.echo("| probabilities | images | balanced acc. [95 % CI] | macro F1 | ECE | errors "
               "flagged (< 0.7) | recall Benign / Early / Pre / Pro |\n"
               "| --- | --- | --- | --- | --- | --- | --- |")
    for row_name, p in rows.items():
        m = oof_metrics(y, p)
        lo, hi = block_bootstrap_ci(y, p, blocks, n_boot=n_boot)["balanced_accuracy"]
        recall = " / ".join(f"{100 * v:.1f}" for v in m["recall"].values())
        flagged = "–" if m["errors_flagged"] is None else f"{100 * m['errors_flagged']:.1f}"
        click.echo(f"| {row_name} | {m['n']} | {100 * m['balanced_accuracy']:.1f} "
                   f"[{100 * lo:.1f}, {100 * hi:.1f}] | {100 * m['macro_f1']:.1f} | "
                   f"{100 * m['ece']:.1f} | {flagged} | {recall} |")


if __name__ == "__main__":
    main()
