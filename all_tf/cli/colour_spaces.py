"""One model trained on RGB, HSV, LAB and HED input -> metrics and time per image (Table 4).

Runs go to ``<output-dir>/runs/<model>_<space>_<split>_s<seed>/``; each finished run is timed
(``timing.json`` in its directory: preprocessing ms/image with decoding excluded, inference
ms/image at batch 1 and batched) and its row appended to ``<output-dir>/results.csv``.
``summary.md`` / ``summary.csv`` give mean ± sd per colour space. Rerunning resumes.

Examples:
    all-tf colour-spaces --quick -o results/colour_quick
    all-tf colour-spaces --data-dir ../shared/data/all4 -o results/colour_spaces \\
        --model efficientnetv2s_cbam --seeds 42,43,44
"""

from __future__ import annotations

from pathlib import Path

import click

from all_tf.cli.options import base_config, csv_list, fail, training_options
from all_tf.config import SPLIT_KINDS

SPACES = "rgb,hsv,lab,hed"


@click.command()
@training_options
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default results/colour_spaces, or results/colour_quick).")
@click.option("--model", help="Model name [default: efficientnetv2s_cbam; with --quick: "
                              "mobilenetv3small].")
@click.option("--spaces", default=SPACES, show_default=True, callback=csv_list(),
              help="Comma-separated colour spaces.")
@click.option("--split", "split_kind", type=click.Choice(SPLIT_KINDS), default="70:30",
              show_default=True, help="Group-aware split kind.")
@click.option("--seeds", callback=csv_list(int),
              help="Comma-separated seeds [default: 42,43,44; with --quick: 42].")
@click.option("--timing-images", default=32, show_default=True,
              help="Images used to time preprocessing and inference.")
def main(quick, config_file, data_dir, image_size, epochs, batch_size, mixed_precision, verbose,
         output_dir, model, spaces, split_kind, seeds, timing_images):
    """Compare input colour spaces: accuracy and speed (the paper's Table 4)."""
    from all_tf.experiments.protocol import RunSpec, run_specs, split_tag, write_summary
    from all_tf.experiments.timing import measure_run_timing

    base = base_config(quick, config_file, data_dir, image_size, epochs, batch_size,
                       mixed_precision)
    output_dir = output_dir or Path("results/colour_quick" if quick else "results/colour_spaces")
    model = model or ("mobilenetv3small" if quick else "efficientnetv2s_cbam")
    seeds = seeds or ([42] if quick else [42, 43, 44])
    specs = []
    try:
        for space in spaces:
            for seed in seeds:
                cfg = base.override({"model.name": model, "split.seed": seed,
                                     "split.kind": split_kind, "preprocess.colour_space": space})
                specs.append(RunSpec(f"{model}_{space}_{split_tag(split_kind)}_s{seed}", cfg))
    except ValueError as e:
        fail(e)

    def timing(spec, run_dir):
        return measure_run_timing(run_dir, n_images=timing_images)

    try:
        run_specs(specs, output_dir, after_run=timing, verbose=verbose, echo=click.echo)
    except ValueError as e:
        fail(e)
    summary = write_summary(
        output_dir, "Colour spaces (Table 4)", group_by=("colour_space", "model", "split"),
        by="split", label_keys=("colour_space", "model"),
        intro=f"Data: `{base.data_dir}`; {base.preprocess.image_size} px, "
              f"{base.train.epochs} epochs, seeds {', '.join(map(str, seeds))}.")
    _append_timing_table(output_dir, summary)
    click.echo(f"results: {output_dir / 'results.csv'}; summary: {output_dir / 'summary.md'}")


def _append_timing_table(output_dir: Path, summary):
    """Add a timing table (mean over runs, from results.csv) to summary.md."""
    import os

    import numpy as np

    from all_tf.evaluation.results_csv import read_rows
    from all_tf.io import atomic_write_text

    rows = read_rows(output_dir / "results.csv")
    keys = ("preprocess_ms", "inference_ms_batch1", "inference_ms_batched")
    lines = ["", "## Time per image (ms, median over images, mean over runs)", "",
             "| colour space | preprocessing | inference, batch 1 | inference, batched |",
             "|---|---|---|---|"]
    for space in dict.fromkeys(r["colour_space"] for r in rows):
        vals = []
        for k in keys:
            v = [float(r[k]) for r in rows if r["colour_space"] == space and r.get(k)]
            vals.append(f"{np.mean(v):.2f}" if v else "–")
        lines.append(f"| {space} | " + " | ".join(vals) + " |")
    lines.append("")
    lines.append("Preprocessing excludes decoding; measured on this machine "
                 f"({os.cpu_count()} CPUs), so compare rows, not machines.")
    path = output_dir / "summary.md"
    atomic_write_text(path, path.read_text() + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
