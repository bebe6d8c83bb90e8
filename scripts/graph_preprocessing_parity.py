"""Measure how far the in-graph preprocessing (SavedModel serving) is from the OpenCV pipeline.

For each colour space, every image goes through ``all_tf.preprocessing.preprocess_image``
(OpenCV, what training used) and ``all_tf.export.graph_preprocessing.preprocess_graph``
(TensorFlow ops, what the served SavedModel runs), with CLAHE and a Reinhard target fitted on
the same images; the table gives the largest and mean absolute difference of the [0, 1] model
inputs and the time per image of each path.

Example:
    python scripts/graph_preprocessing_parity.py --data ../shared/data/all4 --count 400
"""

from __future__ import annotations

import os
import time

import click
import numpy as np


@click.command()
@click.option("--data", default="all_tf/sample_data/all4", show_default=True,
              help="Dataset root, folder or glob of images.")
@click.option("--count", type=int, default=0, help="Random subset (seed 0); 0 = all.")
@click.option("--size", "sizes", type=int, multiple=True, default=(224,), show_default=True,
              help="Model input size (repeatable).")
@click.option("--spaces", default="rgb,hsv,lab,hed", show_default=True)
def main(data, count, sizes, spaces):
    """Print a Markdown table of in-graph vs OpenCV preprocessing differences."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from all_tf.config import PreprocessConfig
    from all_tf.export.common import collect_inputs
    from all_tf.export.graph_preprocessing import preprocess_graph
    from all_tf.io import read_image
    from all_tf.preprocessing import fit_reinhard_target, preprocess_image

    pairs = collect_inputs([data])
    if count and len(pairs) > count:
        idx = np.random.default_rng(0).permutation(len(pairs))[:count]
        pairs = [pairs[i] for i in sorted(idx)]
    images = [read_image(p) for p, _ in pairs]
    shapes = sorted({im.shape[:2] for im in images})
    click.echo(f"{len(images)} images from {data}, sizes {shapes[:4]}{' ...' if len(shapes) > 4 else ''}")
    click.echo("\n| size | colour space | max abs diff | mean abs diff | pixels differing > 1e-6 "
               "| OpenCV ms/image | graph ms/image |")
    click.echo("|---|---|---|---|---|---|---|")
    for size in sizes:
        base = PreprocessConfig(image_size=size)
        target = fit_reinhard_target(images, base)
        for space in spaces.split(","):
            cfg = PreprocessConfig(image_size=size, colour_space=space, reinhard_target=target)
            def make(c):
                return tf.function(lambda x: preprocess_graph(x, c))

            fn = make(cfg)
            fn(tf.constant(images[0]))  # trace once per input shape
            t0 = time.perf_counter()
            ref = [preprocess_image(im, cfg) for im in images]
            t1 = time.perf_counter()
            out = [fn(tf.constant(im)).numpy() for im in images]
            t2 = time.perf_counter()
            d = np.stack([np.abs(a - b) for a, b in zip(out, ref, strict=True)])
            click.echo(f"| {size} | {space} | {d.max():.2g} | {d.mean():.2g} | "
                       f"{(d > 1e-6).mean():.2%} | {1000 * (t1 - t0) / len(images):.2f} | "
                       f"{1000 * (t2 - t1) / len(images):.2f} |")


if __name__ == "__main__":
    main()
