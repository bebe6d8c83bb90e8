"""Throughput of the tf.data input pipeline alone (no model): images per second.

Cases: evaluation pass; training epoch without cache (decode + preprocess + augmentation every
epoch); training with the in-memory cache (epoch 1 fills it, epoch 2 reads it, shuffled and
augmented); the same in crop mode (segmentation + nucleus crops); the augmentation layers
alone on random input (mode "augment"). Preprocessing is the paper setting: CLAHE + Reinhard (target fitted on 50 images) + RGB.

Examples:
    python scripts/benchmark_pipeline.py --data-dir ../shared/data/all4
    python scripts/benchmark_pipeline.py --data-dir all_tf/sample_data/all4 --image-size 64
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

CACHE_LIMIT_BYTES = 3 << 30  # cached crop-mode runs are skipped above this estimate


def _epoch(ds) -> tuple[int, float]:
    """Elements read and seconds for one full pass."""
    started = time.perf_counter()
    n = 0
    for batch in ds:
        n += int(batch[0].shape[0])
    return n, time.perf_counter() - started


def _augment_only(cfg, n: int, batch_size: int):
    """n random images in batches through the training augmentation, as in make_dataset."""
    import numpy as np
    import tensorflow as tf

    from all_tf.preprocessing import build_augmentation

    size = cfg.preprocess.image_size
    batch = np.random.default_rng(0).random((batch_size, size, size, 3), dtype=np.float32)
    aug = build_augmentation(cfg.augment, 0)
    ds = tf.data.Dataset.from_tensors((batch, batch[:, 0, 0])).repeat(max(1, n // batch_size))

    def augment(x, y):
        return aug(x, training=True), y

    return ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@click.command()
@click.option("--data-dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--image-size", default=224, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--limit", default=0, show_default=True,
              help="Use only the first N images (every class represented); 0 = all.")
@click.option("--modes", default="image,crops,augment", show_default=True,
              help="Comma-separated: image, crops, augment (the augmentation layers alone).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON.")
def main(data_dir, image_size, batch_size, limit, modes, json_path):
    """Measure the input pipeline on DATA-DIR and print a Markdown table."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from all_tf.config import Config
    from all_tf.data import make_dataset, make_eval_dataset, scan_dataset
    from all_tf.io import read_image
    from all_tf.preprocessing import fit_reinhard_target

    records = scan_dataset(data_dir, verify="none").records
    if limit:
        step = max(1, len(records) // limit)
        records = records[::step][:limit]
    cfg = Config.preset("paper")
    cfg.preprocess.image_size = image_size
    cfg.preprocess.reinhard_target = fit_reinhard_target(
        read_image(r.path) for r in records[:: max(1, len(records) // 50)])

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    click.echo(f"{len(records)} images from {data_dir}, {image_size} px, batch {batch_size}, "
               f"{os.cpu_count()} CPUs, load average {load:.2f} at start")
    rows = []

    def record(mode, case, n_images, n_elems, seconds):
        row = dict(mode=mode, case=case, images=n_images, elements=n_elems,
                   seconds=round(seconds, 2), images_per_s=round(n_images / seconds, 1),
                   elements_per_s=round(n_elems / seconds, 1))
        rows.append(row)
        click.echo(f"  {mode:6s} {case:40s} {row['images_per_s']:8.1f} images/s "
                   f"({n_elems} elements in {seconds:.1f} s)")

    n = len(records)
    for mode in [m.strip() for m in modes.split(",") if m.strip()]:
        if mode not in ("image", "crops", "augment"):
            raise click.BadParameter(f"unknown mode {mode!r}", param_hint="--modes")
        if mode == "augment":
            elems, secs = _epoch(_augment_only(cfg, n, batch_size))
            record(mode, "augmentation layers alone (random input)", elems, elems, secs)
            continue
        cfg.preprocess.input_mode = mode
        elems, secs = _epoch(make_eval_dataset(records, cfg, batch_size))
        record(mode, "evaluation pass (no augmentation)", n, elems, secs)
        ds = make_dataset(records, cfg, training=True, batch_size=batch_size, cache=False)
        elems, secs = _epoch(ds)
        record(mode, "training epoch, no cache, augmentation", n, elems, secs)
        per = image_size ** 2 * 3 * 4 * (cfg.preprocess.max_crops if mode == "crops" else 1)
        if n * per > CACHE_LIMIT_BYTES:
            click.echo(f"  {mode:6s} cached runs skipped: up to {n * per / 2**30:.1f} GiB "
                       "(use --limit)")
            continue
        ds = make_dataset(records, cfg, training=True, batch_size=batch_size, cache=True)
        elems, secs = _epoch(ds)
        record(mode, "training epoch 1, filling the cache", n, elems, secs)
        elems, secs = _epoch(ds)
        record(mode, "training epoch 2, cached, augmentation", n, elems, secs)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"load_average": load, "rows": rows}, indent=1))

    click.echo("\n| mode | case | images/s | elements/s |\n| --- | --- | --- | --- |")
    for r in rows:
        click.echo(f"| {r['mode']} | {r['case']} | {r['images_per_s']} | {r['elements_per_s']} |")


if __name__ == "__main__":
    main()
