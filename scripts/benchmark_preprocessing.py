"""Time ``preprocess_image`` per colour space (ms per image, single thread of this process).

Example:
    python scripts/benchmark_preprocessing.py --data-dir all_tf/sample_data/all4
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

REPO = Path(__file__).resolve().parents[1]


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=REPO / "all_tf" / "sample_data" / "all4",
    show_default=True,
    help="Folder searched recursively for .jpg/.png images.",
)
@click.option("--image-size", "size", default=224, show_default=True, help="Output side in px.")
@click.option("--repeats", default=5, show_default=True, help="Timed passes; the median is shown.")
@click.option(
    "--hed-percentiles",
    is_flag=True,
    help="Also print the 1st/50th/99th percentiles of each mapped HED channel.",
)
def main(data_dir, size, repeats, hed_percentiles):
    """Median ms/image of preprocess_image for each colour space, with and without CLAHE+Reinhard."""
    import cv2

    from all_tf.config import PreprocessConfig
    from all_tf.io import read_image
    from all_tf.preprocessing import fit_reinhard_target, preprocess_image

    cv2.setNumThreads(1)  # as in a tf.data worker; OpenCV's own threads would blur the figure
    paths = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not paths:
        raise click.ClickException(f"{data_dir}: no .jpg/.png images")
    images = [read_image(p) for p in paths]
    shapes = sorted({im.shape for im in images})
    target = fit_reinhard_target(images, PreprocessConfig(image_size=size))
    click.echo(f"{len(images)} images {shapes} -> {size}x{size}, median of {repeats} passes\n")
    click.echo("| colour space | CLAHE + Reinhard (ms/image) | neither (ms/image) |")
    click.echo("| --- | --- | --- |")
    for space in ("rgb", "hsv", "lab", "hed"):
        cells = []
        for on in (True, False):
            cfg = PreprocessConfig(
                image_size=size, colour_space=space, clahe=on, reinhard=on, reinhard_target=target
            )
            for im in images[:5]:
                preprocess_image(im, cfg)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for im in images:
                    preprocess_image(im, cfg)
                times.append((time.perf_counter() - t0) / len(images) * 1e3)
            cells.append(f"{np.median(times):.2f}")
        click.echo(f"| {space} | {cells[0]} | {cells[1]} |")
    if hed_percentiles:
        from all_tf.preprocessing import scale_to_unit, to_colour_space

        hed = np.stack([to_colour_space(scale_to_unit(im), "hed") for im in images])
        pct = np.percentile(hed.reshape(-1, 3), [1, 50, 99], axis=0)
        click.echo("\nHED channel percentiles 1/50/99 (no CLAHE/Reinhard):")
        for c, name in enumerate("HED"):
            click.echo(f"  {name}: " + " / ".join(f"{v:.3f}" for v in pct[:, c]))


if __name__ == "__main__":
    main()
