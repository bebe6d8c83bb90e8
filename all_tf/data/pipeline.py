"""tf.data pipelines: file list -> decoded, preprocessed, augmented batches.

Decoding and preprocessing run in Python (``tf.py_function``) with the same
:func:`all_tf.io.read_image` and :func:`all_tf.preprocessing.preprocess_image` that predict and
export use, so the model sees identical inputs everywhere. A file that cannot be read or
preprocessed is dropped (logged once, naming the file and the reason) and the epoch goes on.

Order of the training pipeline::

    paths -> [shuffle paths] -> decode+preprocess (parallel) -> drop failures -> [cache]
          -> [shuffle] -> batch -> augmentation (training only) -> prefetch

In crop mode (``cfg.preprocess.input_mode == "crops"``) each image becomes its nucleus crops
(:func:`all_tf.data.inputs.inputs_for_image`: :func:`all_tf.segmentation.segment_nuclei`,
:func:`all_tf.segmentation.nucleus_crops`, each crop preprocessed), all with the image's
label; :func:`make_eval_dataset` also yields the image index of each crop so that
probabilities can be averaged per image.

Example:
    >>> from all_tf.config import Config
    >>> from all_tf.data import make_dataset, scan_dataset
    >>> cfg = Config.preset("quick")
    >>> ds = make_dataset(scan_dataset("all_tf/sample_data/all4").records[:8], cfg,
    ...                   training=False, batch_size=4)
    >>> [tuple(t.shape) for t in next(iter(ds))]
    [(4, 64, 64, 3), (4, 4)]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

from all_tf import CLASS_NAMES
from all_tf.config import Config
from all_tf.data.inputs import inputs_for_image
from all_tf.data.scan import Record
from all_tf.io import read_image

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
CACHE_AUTO_BYTES = 1 << 30  # cache="auto" keeps decoded inputs in memory up to 1 GiB


class _FailureLog:
    """Logs each failing file once (a dataset may be iterated for many epochs)."""

    def __init__(self):
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, path: str, err: Exception) -> None:
        with self._lock:
            if path in self._seen:
                return
            self._seen.add(path)
        msg = str(err) if path in str(err) else f"{path}: {type(err).__name__}: {err}"
        log.warning("skipped unreadable image %s", msg)

    @property
    def failed(self) -> set[str]:
        return set(self._seen)


def load_image_and_preprocess(path: str, cfg: Config) -> np.ndarray:
    """Model input(s) for one file: float32 (S, S, 3) in image mode, (K, S, S, 3) in crop mode.

    Raises:
        ImageReadError: the file cannot be decoded.
        ValueError: preprocessing refused the image.
    """
    x = inputs_for_image(read_image(path), cfg)
    return x if cfg.preprocess.input_mode == "crops" else x[0]


def _decode_fn(cfg: Config, failures: _FailureLog):
    """A tf function (path, label, index) -> (x, label, index, ok) for ``Dataset.map``."""
    size = cfg.preprocess.image_size
    crops = cfg.preprocess.input_mode == "crops"
    empty = np.zeros((0, size, size, 3) if crops else (size, size, 3), np.float32)

    def load(path_t):
        path = path_t.numpy().decode("utf-8")
        try:
            x = load_image_and_preprocess(path, cfg)
            return np.asarray(x, np.float32), True
        except Exception as e:  # a bad file must never end the epoch
            failures(path, e)
            return empty, False

    def fn(path, label, index):
        x, ok = tf.py_function(load, [path], [tf.float32, tf.bool])
        x.set_shape([None, size, size, 3] if crops else [size, size, 3])
        ok.set_shape([])
        return x, label, index, ok

    return fn


def _estimate_bytes(n: int, cfg: Config) -> int:
    per = cfg.preprocess.image_size ** 2 * 3 * 4
    return n * per * (cfg.preprocess.max_crops if cfg.preprocess.input_mode == "crops" else 1)


def _base(records: list[Record], cfg: Config, *, shuffle_files: bool, seed: int,
          deterministic: bool, num_parallel_calls, failures: _FailureLog) -> tf.data.Dataset:
    """(x, one-hot y, image index) per image (image mode) or per crop (crop mode)."""
    if not records:
        raise ValueError("make_dataset: no records")
    n_classes = len(CLASS_NAMES)
    paths = [r.path for r in records]
    labels = np.array([r.label for r in records], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels, np.arange(len(records), dtype=np.int32)))
    if shuffle_files:
        ds = ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_decode_fn(cfg, failures), num_parallel_calls=num_parallel_calls,
                deterministic=deterministic)
    ds = ds.filter(lambda x, y, i, ok: ok)
    if cfg.preprocess.input_mode == "crops":
        def per_crop(x, y, i, ok):
            k = tf.shape(x)[0]
            return x, tf.fill([k], y), tf.fill([k], i)

        ds = ds.map(per_crop).unbatch()
    else:
        ds = ds.map(lambda x, y, i, ok: (x, y, i))
    return ds.map(lambda x, y, i: (x, tf.one_hot(y, n_classes, dtype=tf.float32), i))


def make_dataset(
    records: list[Record],
    cfg: Config,
    training: bool,
    batch_size: int,
    *,
    cache: bool | str | None = "auto",
    shuffle_buffer: int | None = None,
    seed: int | None = None,
    deterministic: bool | None = None,
    augment: bool = True,
    drop_remainder: bool = False,
    num_parallel_calls: int | None = None,
) -> tf.data.Dataset:
    """Batches of (images, one-hot labels) for ``model.fit`` / ``evaluate``.

    Args:
        records: images to read (``path``, ``label``).
        cfg: the run config (preprocessing, segmentation, augmentation, seeds).
        training: shuffle every epoch and apply ``cfg.augment`` (only then).
        batch_size: images (or crops) per batch.
        cache: ``"auto"`` caches the preprocessed inputs in memory when they fit in 1 GiB;
            True/``"memory"`` always in memory; a folder path caches on disk there, in files
            named by a hash of the records and the preprocessing/segmentation settings (so a
            stale cache is never reused for other inputs); False/None never.
        shuffle_buffer: buffer after a cache (default: everything cached, i.e. a full
            shuffle); without a cache the file list itself is shuffled every epoch, and in
            crop mode the crops too, over this buffer (default 16 fields' crops).
        seed: shuffle and augmentation seed (default ``cfg.split.seed``).
        deterministic: fixed element order (default ``cfg.train.deterministic``); also runs
            augmentation sequentially so that its random draws are reproducible.
        augment: set False to switch augmentation off even when training.
        drop_remainder: drop the last incomplete batch.
        num_parallel_calls: decoding parallelism (default AUTOTUNE).

    Returns:
        ``tf.data.Dataset`` of (float32 [B, S, S, 3] in [0, 1], float32 one-hot [B, 4]).
        In crop mode every element is a crop carrying its image's label.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seed = cfg.split.seed if seed is None else seed
    deterministic = cfg.train.deterministic if deterministic is None else deterministic
    parallel = AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    if cache == "auto":
        cache = _estimate_bytes(len(records), cfg) <= CACHE_AUTO_BYTES
    elif cache == "memory":
        cache = True
    failures = _FailureLog()
    ds = _base(records, cfg, shuffle_files=training and not cache, seed=seed,
               deterministic=deterministic, num_parallel_calls=parallel, failures=failures)
    ds = ds.map(lambda x, y, i: (x, y))
    if cache:
        ds = ds.cache() if cache is True else ds.cache(_cache_file(cache, records, cfg))
        if training:
            buffer = shuffle_buffer or _cached_count(records, cfg)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    elif training and cfg.preprocess.input_mode == "crops":
        # the file list is shuffled, but a field's crops arrive together: mix them over
        # about 16 fields so that a batch is not the crops of two or three fields
        buffer = shuffle_buffer or 16 * cfg.preprocess.max_crops
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if deterministic:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=parallel,
                      deterministic=False)
    if training and augment:
        from all_tf.preprocessing import build_augmentation

        aug = build_augmentation(cfg.augment, seed)
        ds = ds.map(lambda x, y: (aug(x, training=True), y),
                    num_parallel_calls=1 if deterministic else parallel,
                    deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    ds = ds.with_options(options)
    return ds.prefetch(AUTOTUNE)


def _cache_file(folder, records: list[Record], cfg: Config) -> str:
    key = hashlib.sha1(json.dumps({
        "records": [[r.path, r.label] for r in records],
        "preprocess": dataclasses.asdict(cfg.preprocess),
        "segmentation": dataclasses.asdict(cfg.segmentation),
    }, sort_keys=True).encode()).hexdigest()[:16]
    Path(folder).mkdir(parents=True, exist_ok=True)
    return str(Path(folder) / f"all_tf-{key}")


def _cached_count(records: list[Record], cfg: Config) -> int:
    n = len(records)
    return n * cfg.preprocess.max_crops if cfg.preprocess.input_mode == "crops" else n


def make_eval_dataset(records: list[Record], cfg: Config, batch_size: int, *,
                      num_parallel_calls: int | None = None) -> tf.data.Dataset:
    """Batches of (inputs, one-hot labels, image index) in record order, never augmented.

    ``image index`` (int32 [B]) is the position in ``records`` of the image each row comes
    from: one row per image in image mode, one per nucleus crop in crop mode (average the
    crops' probabilities per index, e.g. with
    ``all_tf.evaluation.aggregate_crop_probabilities``). Unreadable images have no rows
    (logged once); indices of the others are unchanged.

    Returns:
        ``tf.data.Dataset`` of (float32 [B, S, S, 3], float32 [B, 4], int32 [B]).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    parallel = AUTOTUNE if num_parallel_calls is None else num_parallel_calls
    ds = _base(records, cfg, shuffle_files=False, seed=0, deterministic=True,
               num_parallel_calls=parallel, failures=_FailureLog())
    return ds.batch(batch_size).prefetch(AUTOTUNE)
