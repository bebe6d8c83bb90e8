"""How each class's fields change across the contiguous folds (capture order).

For every class and every test fold of the contiguous split it prints the median over fields of
the largest segmented nucleus's area (% of the field: a scale-free cell size), the median
number of nucleus objects a field, and the median lightness of the field (LAB L*, 0-100,
label corner masked). A fold whose values stand apart is a batch that the other folds'
training data does not show: what scale or stain augmentation has to cover.

Example:
    .venv/bin/python scripts/fold_drift.py \\
        --config saved_models/mobilenetv3small_all4/config.json \\
        --data-dir ../shared/data/all4 --every 3
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click
import numpy as np


def field_statistics(rgb: np.ndarray, seg_cfg) -> tuple[float, int, float]:
    """(largest nucleus area in % of the field, nucleus objects, median L* 0-100) of a field."""
    import cv2

    from all_tf.preprocessing.label_corner import mask_label_corner
    from all_tf.segmentation import segment_nuclei

    mask = segment_nuclei(rgb, seg_cfg).astype(np.uint8)
    # 8-connected objects, as the gate counts nuclei (segmentation.count_objects)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    largest = 100.0 * sizes.max() / mask.size if sizes.size else 0.0
    lightness = cv2.cvtColor(mask_label_corner(rgb), cv2.COLOR_RGB2LAB)[..., 0]
    return largest, int(sizes.size), float(np.median(lightness)) * 100.0 / 255.0


@click.command()
@click.option("--config", "config_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Config whose split (contiguous, its folds and embargo) and segmentation "
                   "settings are used.")
@click.option("--data-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset root with one folder per class.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1),
              help="Measure every n-th test image of a fold (in file-number order).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table to this Markdown file.")
def main(config_file, data_dir, every, output):
    """Print per class and contiguous fold: nucleus size, nuclei a field, field lightness."""
    from all_tf import CLASS_NAMES
    from all_tf.config import Config
    from all_tf.data import assign_groups, make_split, scan_dataset
    from all_tf.io import read_image

    cfg = Config.load(config_file)
    if cfg.split.kind != "contiguous":
        raise click.UsageError(f"{config_file}: split.kind is {cfg.split.kind!r}, "
                               "not 'contiguous'")
    records = assign_groups(scan_dataset(data_dir).records)
    lines = ["| class | fold | fields | largest nucleus, % of field | nuclei a field | "
             "lightness L* |", "|---|---|---|---|---|---|"]
    for fold in range(cfg.split.n_folds):
        split = make_split(records, dataclasses.replace(cfg.split, fold=fold))
        for label, name in enumerate(CLASS_NAMES):
            test = sorted((r for r in split.test if r.label == label), key=lambda r: r.path)
            stats = []
            for record in test[::every]:
                try:
                    stats.append(field_statistics(read_image(record.path), cfg.segmentation))
                except ValueError as e:  # unreadable file: say which and go on
                    click.echo(f"skipped {record.path}: {e}", err=True)
            if not stats:
                continue
            area, count, light = np.median(np.array(stats), axis=0)
            lines.append(f"| {name} | {fold} | {len(stats)} | {area:.2f} | {count:.0f} | "
                         f"{light:.1f} |")
            click.echo(lines[-1])
    if output is not None:
        output.write_text("\n".join(lines) + "\n")
        click.echo(f"table: {output}")


if __name__ == "__main__":
    main()
