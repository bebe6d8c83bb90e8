"""All figures as PNG: confusion matrices, parallel coordinates (Fig. 2), segmentation panels
(Figs. 4-7), colour spaces (Fig. 9), training curves and Grad-CAM overlays.

Sources, any combination:
  --protocol-dir  a protocol output (results.csv, runs/*): parallel coordinates of the mean
                  metrics per model and split, a confusion matrix per model and split (summed
                  over seeds), training curves and a Grad-CAM grid for each model's first run;
  --run-dir       single run directories: confusion matrix, training curves, Grad-CAM grid;
  --data-dir      a dataset root: a segmentation panel per class and a colour-space panel.
Existing PNGs are kept (rerun resumes); --force redraws.

Examples:
    all-tf figures --quick --protocol-dir results/protocol_quick -o results/figs_quick
    all-tf figures --protocol-dir results/protocol --data-dir ../shared/data/all4 \\
        -o docs/figures
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from all_tf.cli.options import SAMPLE_ALL4_DIR, fail


class Drawer:
    """Draws a figure unless its file exists (or ``force``); counts what it did."""

    def __init__(self, out: Path, force: bool):
        self.out, self.force, self.made, self.kept = out, force, [], []

    def __call__(self, name: str, fn, *args, **kwargs):
        path = self.out / name
        if path.exists() and not self.force:
            self.kept.append(path)
            return path
        fn(*args, path=path, **kwargs)
        self.made.append(path)
        return path


def run_figures(draw: Drawer, run_dir: Path, prefix: str, gradcam_per_class: int,
                gradcam_only: bool = False):
    from all_tf.evaluation import figures
    from all_tf.evaluation.gradcam import gradcam_for_run
    from all_tf.evaluation.runs import load_metrics

    if not gradcam_only:
        metrics = load_metrics(run_dir)
        draw(f"{prefix}_confusion.png", figures.plot_confusion_matrix,
             metrics["confusion_matrix"], metrics["class_names"],
             title=f"Confusion matrix: {prefix}")
        if (run_dir / "history.csv").exists():
            draw(f"{prefix}_curves.png", figures.plot_training_curves, run_dir / "history.csv",
                 title=f"Training curves: {prefix}")
    if gradcam_per_class > 0:
        path = draw.out / f"{prefix}_gradcam.png"
        if draw.force or not path.exists():
            items = gradcam_for_run(run_dir, per_class=gradcam_per_class)
            draw(path.name, figures.plot_gradcam_grid, items, ncols=2 * gradcam_per_class,
                 title=f"Grad-CAM (predicted class): {prefix}")
        else:
            draw.kept.append(path)


def protocol_figures(draw: Drawer, protocol_dir: Path, gradcam_per_class: int):
    import numpy as np

    from all_tf.evaluation import figures
    from all_tf.evaluation.metrics import MACRO_KEYS
    from all_tf.evaluation.results_csv import read_rows
    from all_tf.experiments.protocol import summarise

    rows = read_rows(protocol_dir / "results.csv")
    if not rows:
        raise ValueError(f"{protocol_dir}: no finished runs in results.csv")
    summary = summarise(rows, ("model", "head", "split"))
    metrics = ["accuracy", *MACRO_KEYS]
    for split in dict.fromkeys(s["split"] for s in summary):
        lines = [{"model": f"{s['model']} ({s['head']})", **{m: s[f"{m}_mean"] for m in metrics}}
                 for s in summary if s["split"] == split]
        tag = split.replace(":", "-")
        draw(f"parallel_{tag}.png", figures.plot_parallel_coordinates, lines, metrics,
             title=f"Standardised mean test metrics, {split} split")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["head"] == "softmax":
            groups.setdefault((r["model"], r["split"]), []).append(r)
    for (model, split), members in groups.items():
        tag = f"{model}_{split.replace(':', '-')}"
        cms, names = [], None
        for r in members:
            m = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
            cms.append(np.array(m["confusion_matrix"]))
            names = m["class_names"]
        draw(f"{tag}_confusion.png", figures.plot_confusion_matrix, sum(cms), names,
             title=f"{model}, {split}, {len(cms)} seed(s) summed")
        first = Path(members[0]["run_dir"])
        if (first / "history.csv").exists():
            draw(f"{tag}_curves.png", figures.plot_training_curves, first / "history.csv",
                 title=f"Training curves: {first.name}")
        run_figures(draw, first, first.name, gradcam_per_class, gradcam_only=True)


def data_figures(draw: Drawer, data_dir: Path, per_class: int):
    from all_tf import CLASS_NAMES
    from all_tf.data import scan_dataset
    from all_tf.evaluation import figures
    from all_tf.io import read_image

    scan = scan_dataset(data_dir)
    if not scan.records:
        raise ValueError(f"{data_dir}: no usable images found")
    first = None
    for label, name in enumerate(CLASS_NAMES):
        records = [r for r in scan.records if r.label == label][:per_class]
        if not records:
            continue
        images = [(Path(r.path).name, read_image(r.path)) for r in records]
        if first is None:
            first = images[0][1]
        draw(f"segmentation_{name}.png", figures.plot_segmentation_panel, images,
             title=f"Nucleus segmentation: {name}")
    if first is not None:
        draw("colour_spaces.png", figures.plot_colour_spaces, first)


@click.command()
@click.option("--protocol-dir", "protocol_dirs", multiple=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Protocol output directory (repeatable).")
@click.option("--run-dir", "run_dirs", multiple=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Run directory (repeatable).")
@click.option("--data-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Dataset root for the segmentation and colour-space panels "
                   "(default with --quick: the shipped sample).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Where the PNGs go (default results/figures or results/figures_quick).")
@click.option("--per-class", default=3, show_default=True,
              help="Images per class in the segmentation panels.")
@click.option("--gradcam-per-class", default=2, show_default=True,
              help="Grad-CAM images per class (0 disables).")
@click.option("--quick", is_flag=True, help="Use the shipped sample for the data panels.")
@click.option("--force", is_flag=True, help="Redraw existing figures.")
def main(protocol_dirs, run_dirs, data_dir, output_dir, per_class, gradcam_per_class, quick,
         force):
    """Draw the paper's figures from protocol outputs, run directories and a dataset."""
    if quick and data_dir is None:
        data_dir = SAMPLE_ALL4_DIR
    if not (protocol_dirs or run_dirs or data_dir):
        raise click.UsageError("give at least one of --protocol-dir, --run-dir, --data-dir")
    output_dir = output_dir or Path("results/figures_quick" if quick else "results/figures")
    draw = Drawer(output_dir, force)
    try:
        for p in protocol_dirs:
            protocol_figures(draw, p, gradcam_per_class)
        for r in run_dirs:
            run_figures(draw, r, r.name, gradcam_per_class)
        if data_dir is not None:
            data_figures(draw, data_dir, per_class)
    except ValueError as e:
        fail(e)
    click.echo(f"{len(draw.made)} figure(s) drawn, {len(draw.kept)} kept, in {output_dir}")


if __name__ == "__main__":
    main()
