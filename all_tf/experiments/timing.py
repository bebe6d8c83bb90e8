"""Measured preprocessing and inference time per image (the paper's Table 4 columns).

Times are wall-clock on the machine that runs them, so they are only comparable within one
measurement session; the record says how many images and threads were used.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from all_tf.io import cached_json


def median_ms(fn, items, warmup: int = 2) -> float:
    """Median wall time of ``fn(item)`` over ``items`` in milliseconds, after ``warmup``
    untimed calls on the first items."""
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def measure_run_timing(run_dir: str | os.PathLike, n_images: int = 32,
                       batch_size: int = 32) -> dict:
    """Preprocessing and inference ms/image of a finished run, cached in ``timing.json``.

    Returns:
        ``preprocess_ms``: median time of ``inputs_for_image`` on a decoded test image
        (decoding excluded; crop mode: segmentation, crops and their preprocessing included);
        ``inference_ms_batch1``: median ``predict_on_batch`` time for one image;
        ``inference_ms_batched``: time per image of one batch of ``batch_size``;
        ``n_images``, ``cpu_count``.
    """
    return cached_json(Path(run_dir) / "timing.json",
                       lambda: _measure(Path(run_dir), n_images, batch_size))


def _measure(run_dir: Path, n_images: int, batch_size: int) -> dict:
    from all_tf.data.inputs import inputs_for_image
    from all_tf.evaluation.runs import load_config, load_model, load_split
    from all_tf.io import read_image

    cfg = load_config(run_dir)
    split = load_split(run_dir, cfg.data_dir)
    records = (split.test + split.val + split.train)[:n_images]
    images = [read_image(r.path) for r in records]

    def prep(rgb):
        return inputs_for_image(rgb, cfg)

    preprocess_ms = median_ms(prep, images)
    inputs = [prep(rgb) for rgb in images]
    model = load_model(run_dir)
    batch1_ms = median_ms(model.predict_on_batch, inputs, warmup=3)
    batch = np.concatenate(inputs)[:batch_size]
    model.predict_on_batch(batch)
    start = time.perf_counter()
    model.predict_on_batch(batch)
    batched_ms = (time.perf_counter() - start) * 1000.0 / len(batch)
    return {
        "preprocess_ms": round(preprocess_ms, 3),
        "inference_ms_batch1": round(batch1_ms, 3),
        "inference_ms_batched": round(batched_ms, 3),
        "n_images": len(images),
        "batch_size": len(batch),
        "cpu_count": os.cpu_count(),
    }
