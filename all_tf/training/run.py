"""Fitting one run: config -> data -> model -> fit -> run directory.

:func:`fit_run` writes ``config.json`` (the resolved config, fitted Reinhard target
included), ``split.json``, ``history.csv``, ``checkpoints/{best,last}.keras`` and ``backup/``
(while the fit is unfinished); calling it again on the same directory resumes from the last
finished epoch. Scoring the fitted model is the evaluation stage's job
(:func:`all_tf.evaluation.evaluate_run`); :func:`all_tf.experiments.train_run` does both.

Example:
    >>> from all_tf.config import Config
    >>> from all_tf.training import fit_run
    >>> cfg = Config.preset("quick")
    >>> cfg.data_dir = "all_tf/sample_data/all4"
    >>> fitted = fit_run(cfg, "runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from all_tf import CLASS_NAMES
from all_tf.config import Config
from all_tf.training.precision import set_precision

log = logging.getLogger(__name__)

REINHARD_FIT_IMAGES = 64  # training images used to fit the Reinhard target


class RunError(ValueError):
    """A run that cannot start: bad data, bad settings or an unusable output directory."""


def _comparable(d: dict, finished: bool = False) -> dict:
    """A config dict without the fields that may legitimately differ on resume (and, for a
    ``finished`` run, which is never trained again, its precision: a fold recorded from a
    bfloat16 release pools with float32 folds of the same recipe)."""
    d = json.loads(json.dumps(d))
    if finished:
        d["train"].pop("mixed_precision", None)
    d["preprocess"]["reinhard_target"] = None  # fitted at the start of the run
    d["train"].pop("strategy", None)  # the same run may resume on other hardware
    d.pop("temperature", None)  # fitted after training (python -m all_tf.calibrate)
    d.pop("tta", None)  # an inference setting
    if d["preprocess"].get("input_mode") == "image":  # segmentation does not shape the
        d["segmentation"] = {}  # inputs; a resumed run keeps the stored one (fit_run)
    return d


def prepare_output_dir(cfg: Config, out: Path) -> Config | None:
    """Check ``out`` is writable and holds no run of another config; return the stored config."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"output directory {out} is not writable ({e.strerror or e})") from None
    stored_path = out / "config.json"
    if not stored_path.exists():
        return None
    stored = Config.load(stored_path)
    finished = (out / "metrics.json").exists()
    a, b = _comparable(stored.to_dict(), finished), _comparable(cfg.to_dict(), finished)
    if a != b:
        diffs = [f"{s}.{k}: {a[s][k]!r} -> {b[s].get(k)!r}" if isinstance(a[s], dict) else s
                 for s in a for k in (a[s] if isinstance(a[s], dict) else [None])
                 if (a[s][k] if k else a[s]) != (b[s].get(k) if k else b[s])]
        raise RunError(f"{out} holds a run with a different config ({'; '.join(diffs)}); "
                       "use another --output-dir or the same settings to resume")
    return stored


def load_records(cfg: Config):
    """Scan ``cfg.data_dir`` and group duplicates; refuse datasets that cannot be trained on."""
    from all_tf.data import assign_groups, scan_dataset

    if not cfg.data_dir or not Path(cfg.data_dir).is_dir():
        raise RunError(f"data directory {cfg.data_dir!r} does not exist")
    scan = scan_dataset(cfg.data_dir)
    for path, reason in scan.skipped:
        log.warning("skipped %s: %s", path, reason)
    if not scan.records:
        raise RunError(f"{cfg.data_dir}: no usable images found (class folders expected: "
                       f"{', '.join(CLASS_NAMES)}; unknown folders: {scan.unknown_dirs or 'none'})")
    present = sorted({r.label for r in scan.records})
    if len(present) < 2:
        raise RunError(f"{cfg.data_dir}: only one class ({CLASS_NAMES[present[0]]}) found; "
                       "training needs at least two")
    return assign_groups(scan.records)


def check_split(split, root: str) -> None:
    for part in ("train", "val", "test"):
        records = getattr(split, part)
        if not records:
            raise RunError(f"{root}: the {part} part of the split is empty; the dataset is too small")
    train_labels = {r.label for r in split.train}
    for part in ("val", "test"):
        missing = {r.label for r in getattr(split, part)} - train_labels
        if missing:
            names = ", ".join(CLASS_NAMES[i] for i in sorted(missing))
            raise RunError(f"{root}: class {names} is absent from the training part of the split")
    absent = train_labels - {r.label for r in split.test}
    if absent:
        names = ", ".join(CLASS_NAMES[i] for i in sorted(absent))
        raise RunError(f"{root}: class {names} is absent from the test part of the split; "
                       "use more images or another split")


def fit_reinhard(cfg: Config, records) -> None:
    """Fit the Reinhard target on a seeded sample of training images (stored in the config);
    in crop mode on their nucleus crops, which are what gets normalised."""
    import random

    from all_tf.io import ImageReadError, read_image
    from all_tf.preprocessing import fit_reinhard_target

    rng = random.Random(cfg.split.seed)
    sample = rng.sample(list(records), min(REINHARD_FIT_IMAGES, len(records)))
    images = []
    for r in sample:
        try:
            images.append(read_image(r.path))
        except ImageReadError as e:
            log.warning("%s", e)
    pre = cfg.preprocess
    if pre.input_mode == "crops":
        from all_tf.data.inputs import input_views, view_preprocess_config

        images = [view for rgb in images for view in input_views(rgb, cfg)]
        pre = view_preprocess_config(cfg)
    cfg.preprocess.reinhard_target = fit_reinhard_target(images, pre)


def build_for_config(cfg: Config, steps_per_epoch: int):
    """Build and compile the model, loss schedule and optimizer of ``cfg`` (in the strategy scope)."""
    import keras

    from all_tf.models import build_from_config
    from all_tf.training.losses import ScheduledFocalLoss
    from all_tf.training.optim import make_optimizer

    model = build_from_config(cfg)
    loss = ScheduledFocalLoss(gamma=cfg.train.focal_gamma, alpha=cfg.train.focal_alpha,
                              warmup_epochs=cfg.train.focal_start_epoch)
    model.compile(
        optimizer=make_optimizer(cfg.train, steps_per_epoch),
        loss=loss,
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model, loss


@dataclass
class FittedRun:
    """A fitted run: the model with its best weights, the split and config it was trained on."""

    model: Any
    split: Any
    cfg: Config
    train_seconds: float  # fitting time of this call (a resumed run counts only its part), s
    epochs: int  # epochs in history.csv


FIT_DONE_FILE = "fit_done.json"  # in checkpoints/: {"train_seconds"}, written when fit ends


def fit_run(cfg: Config, output_dir: str | os.PathLike, *, verbose: int = 1) -> FittedRun:
    """Fit ``cfg`` into ``output_dir`` (resuming if it holds an unfinished run of ``cfg``; a
    finished fit is not repeated: its best checkpoint is loaded).

    Returns:
        The model with the best checkpoint's weights loaded (scoring it is
        :func:`all_tf.evaluation.evaluate_run`).

    Raises:
        RunError: before any training, for an unusable dataset, split, model or directory.
    """
    out = Path(output_dir)
    cfg = Config.from_dict(cfg.to_dict())  # never mutate the caller's config
    stored = prepare_output_dir(cfg, out)
    if stored is not None:
        cfg.preprocess.reinhard_target = stored.preprocess.reinhard_target
        cfg.segmentation = stored.segmentation  # its gate statistics stay those it began with

    import keras

    from all_tf.data import Split, make_dataset, make_split
    from all_tf.models import MODEL_NAMES
    from all_tf.training.strategy import get_strategy

    if cfg.model.name not in MODEL_NAMES:
        raise RunError(f"unknown model {cfg.model.name!r}; choose one of {', '.join(MODEL_NAMES)}")

    # Everything that can fail is checked before the directory gets any file.
    split_path = out / "split.json"
    try:
        if split_path.exists():
            split = Split.load(split_path, root=cfg.data_dir)
            wanted = json.loads(json.dumps(dataclasses.asdict(cfg.split)))
            changed = sorted(k for k, v in split.params.items() if k in wanted and wanted[k] != v)
            if changed:
                raise ValueError(f"{split_path} was made with other split settings ("
                                 + ", ".join(f"{k}: {split.params[k]!r}, config {wanted[k]!r}"
                                             for k in changed) + ")")
        else:
            split = make_split(load_records(cfg), cfg.split)
    except (ValueError, FileNotFoundError) as e:
        raise RunError(str(e)) from None
    check_split(split, cfg.data_dir)
    if cfg.preprocess.reinhard and cfg.preprocess.reinhard_target is None:
        fit_reinhard(cfg, split.train)
    from all_tf.preprocessing import validate_preprocess_config

    try:
        validate_preprocess_config(cfg.preprocess)
    except ValueError as e:
        raise RunError(f"preprocess: {e}") from None

    keras.utils.set_random_seed(cfg.split.seed)
    if cfg.train.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    set_precision(cfg.train.mixed_precision)
    batch = cfg.train.batch_size
    train_ds = make_dataset(split.train, cfg, training=True, batch_size=batch)
    val_ds = make_dataset(split.val, cfg, training=False, batch_size=batch)
    steps = max(1, -(-len(split.train) // batch))
    if cfg.preprocess.input_mode == "crops":
        # Fields give 1 to max_crops crops: count the batches of an epoch so that the LR
        # schedule ends with the last one. With the in-memory cache this pass fills it for
        # the first epoch; without a cache it is one extra preprocessing pass.
        steps = max(1, int(train_ds.reduce(0, lambda n, _: n + 1)))
    strategy = get_strategy(cfg.train.strategy)
    try:
        with strategy.scope():
            model, loss = build_for_config(cfg, steps)
    except ValueError as e:
        raise RunError(str(e)) from None

    best = out / "checkpoints" / "best.keras"
    fit_done = out / "checkpoints" / FIT_DONE_FILE
    if fit_done.exists() and best.exists():  # fitted before, e.g. stopped while scoring
        model.load_weights(best)
        done = json.loads(fit_done.read_text())
        return FittedRun(model, split, cfg, float(done["train_seconds"]),
                         read_history_epochs(out))

    if not split_path.exists():
        split.save(split_path, root=cfg.data_dir)
    cfg.save(out / "config.json")

    from all_tf.training.callbacks import HistoryCSV, ResumableEarlyStopping, RunCheckpoints
    from all_tf.training.losses import LossScheduleCallback

    history_path = out / "history.csv"
    restart_at = cfg.train.loss_switch_epoch
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),  # must stay first
        LossScheduleCallback(loss),  # before HistoryCSV: it logs focal_weight
        HistoryCSV(history_path),
        RunCheckpoints(out / "checkpoints", history_path, restart_at=restart_at),
        ResumableEarlyStopping(history_path, restart_at=restart_at, monitor="val_loss",
                               patience=cfg.train.early_stopping_patience,
                               restore_best_weights=False, verbose=1),
    ]
    class_weight = _class_weights(split.train) if cfg.train.class_weights else None
    started = time.time()
    with warnings.catch_warnings():
        # Unreadable files are filtered out, so the batch count is unknown until the first
        # epoch ends; Keras then warns that the input "ran out of data", which is expected.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.train.epochs, shuffle=False,
                  callbacks=callbacks, class_weight=class_weight, verbose=verbose)
    train_seconds = time.time() - started
    # Keras deletes backup/ when fit ends, so without this a rerun would start afresh
    from all_tf.io import atomic_write_text

    atomic_write_text(fit_done, json.dumps({"train_seconds": train_seconds}))

    if best.exists():
        model.load_weights(best)
    return FittedRun(model, split, cfg, train_seconds, read_history_epochs(out))


def read_history_epochs(out: Path) -> int:
    from all_tf.training.callbacks import read_history

    return len(read_history(out / "history.csv"))


def _class_weights(records) -> dict[int, float]:
    from collections import Counter

    counts = Counter(r.label for r in records)
    total = sum(counts.values())
    return {c: total / (len(counts) * n) for c, n in counts.items()}


__all__ = ["FittedRun", "RunError", "fit_run", "prepare_output_dir"]
