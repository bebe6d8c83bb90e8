"""One training run: config -> data -> model -> fit -> run directory.

A run directory holds ``config.json`` (the resolved config, fitted Reinhard target included),
``split.json``, ``history.csv``, ``checkpoints/{best,last}.keras``, ``backup/`` (while a run
is unfinished) and ``metrics.json`` (test metrics of the best checkpoint). Calling
:func:`train_run` again on the same directory resumes from the last finished epoch, or returns
the stored metrics when the run is complete.

Example:
    >>> from all_tf.config import Config
    >>> from all_tf.training import train_run
    >>> cfg = Config.preset("quick")
    >>> cfg.data_dir = "all_tf/sample_data/all4"
    >>> metrics = train_run(cfg, "runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

from all_tf import CLASS_NAMES
from all_tf.config import Config
from all_tf.io import atomic_write_text

log = logging.getLogger(__name__)

REINHARD_FIT_IMAGES = 64  # training images used to fit the Reinhard target


class RunError(ValueError):
    """A run that cannot start: bad data, bad settings or an unusable output directory."""


def _comparable(d: dict) -> dict:
    """A config dict without the fields that may legitimately differ on resume."""
    d = json.loads(json.dumps(d))
    d["preprocess"]["reinhard_target"] = None  # fitted at the start of the run
    d["train"].pop("strategy", None)  # the same run may resume on other hardware
    d.pop("temperature", None)  # fitted after training (python -m all_tf.calibrate)
    d.pop("tta", None)  # an inference setting
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
    if _comparable(stored.to_dict()) != _comparable(cfg.to_dict()):
        a, b = _comparable(stored.to_dict()), _comparable(cfg.to_dict())
        diffs = [f"{s}.{k}: {a[s][k]!r} -> {b[s][k]!r}" if isinstance(a[s], dict) else s
                 for s in a for k in (a[s] if isinstance(a[s], dict) else [None])
                 if (a[s][k] if k else a[s]) != (b[s][k] if k else b[s])]
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
    """Fit the Reinhard target on a seeded sample of training images (stored in the config)."""
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
    cfg.preprocess.reinhard_target = fit_reinhard_target(images, cfg.preprocess)


def build_for_config(cfg: Config, steps_per_epoch: int):
    """Build and compile the model, loss schedule and optimizer of ``cfg`` (in the strategy scope)."""
    import keras

    from all_tf.losses import ScheduledFocalLoss
    from all_tf.models import build_from_config
    from all_tf.training.optim import make_optimizer

    model = build_from_config(cfg)
    loss = ScheduledFocalLoss(gamma=cfg.train.focal_gamma, alpha=cfg.train.focal_alpha,
                              warmup_epochs=cfg.train.loss_warmup_epochs)
    model.compile(
        optimizer=make_optimizer(cfg.train, steps_per_epoch),
        loss=loss,
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model, loss


def predict_split(model, records, cfg: Config, batch_size: int, *, return_index: bool = False):
    """Per-image (y_true, probabilities) for ``records``; crop mode averages crop probabilities.

    With ``return_index`` a third array gives, for each row, its position in ``records``
    (unreadable files have no row).
    """
    import keras
    import numpy as np

    from all_tf.data import make_eval_dataset
    from all_tf.evaluation import aggregate_crop_probabilities

    ds = make_eval_dataset(records, cfg, batch_size=batch_size)
    probs, labels, index = [], [], []
    for images, onehot, image_index in ds:
        probs.append(keras.ops.convert_to_numpy(model(images, training=False)))
        labels.append(np.argmax(onehot.numpy(), axis=1))
        index.append(image_index.numpy())
    if not probs:
        raise RunError("no test image could be read")
    probs, labels, index = map(np.concatenate, (probs, labels, index))
    kept = np.unique(index)  # images whose file could not be read have no rows
    remap = {int(i): k for k, i in enumerate(kept)}
    index = np.array([remap[int(i)] for i in index])
    y_true = np.zeros(len(kept), dtype=int)
    y_true[index] = labels
    probs = aggregate_crop_probabilities(probs, index, len(kept))
    return (y_true, probs, kept) if return_index else (y_true, probs)


PREDICTIONS_FILE = "predictions.csv"


def write_predictions(path: Path, parts: dict) -> None:
    """Write per-image probabilities of several parts to one CSV.

    Args:
        path: output CSV (columns part, path, label, number, p_<class>...; written atomically).
        parts: ``{part: (records, y_true, probs (N, C), index into records)}``.
    """
    import csv
    import io

    from all_tf.data.splits import sequence_numbers

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["part", "path", "label", "number", *(f"p_{c}" for c in CLASS_NAMES)])
    for part, (records, y_true, probs, index) in parts.items():
        numbers = sequence_numbers(records)
        for row, k in enumerate(index):
            writer.writerow([part, records[k].path, int(y_true[row]), numbers[k],
                             *(f"{p:.6g}" for p in probs[row])])
    atomic_write_text(path, buf.getvalue())


def train_run(cfg: Config, output_dir: str | os.PathLike, *, verbose: int = 1) -> dict:
    """Train ``cfg`` into ``output_dir`` (resuming if it holds an unfinished run of ``cfg``).

    Returns:
        The test metrics of the best checkpoint (also written to ``metrics.json``).

    Raises:
        RunError: before any training, for an unusable dataset, split, model or directory.
    """
    out = Path(output_dir)
    cfg = Config.from_dict(cfg.to_dict())  # never mutate the caller's config
    stored = prepare_output_dir(cfg, out)
    metrics_path = out / "metrics.json"
    if stored is not None and metrics_path.exists():
        log.info("%s is complete; returning its stored metrics", out)
        return json.loads(metrics_path.read_text())
    if stored is not None:
        cfg.preprocess.reinhard_target = stored.preprocess.reinhard_target

    import keras

    from all_tf.data import Split, make_dataset, make_split
    from all_tf.models import MODEL_NAMES
    from all_tf.training.strategy import get_strategy

    if cfg.model.name not in MODEL_NAMES:
        raise RunError(f"unknown model {cfg.model.name!r}; choose one of {', '.join(MODEL_NAMES)}")

    # Everything that can fail is checked before the directory gets any file.
    split_path = out / "split.json"
    if split_path.exists():
        split = Split.load(split_path, root=cfg.data_dir)
    else:
        split = make_split(load_records(cfg), cfg.split)
    check_split(split, cfg.data_dir)
    if cfg.preprocess.reinhard and cfg.preprocess.reinhard_target is None:
        fit_reinhard(cfg, split.train)

    keras.utils.set_random_seed(cfg.split.seed)
    if cfg.train.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if cfg.train.mixed_precision else "float32")
    batch = cfg.train.batch_size
    steps = max(1, -(-len(split.train) // batch))
    if cfg.preprocess.input_mode == "crops":
        steps = max(1, steps * cfg.preprocess.max_crops // 2)  # approximate, for the LR schedule
    strategy = get_strategy(cfg.train.strategy)
    try:
        with strategy.scope():
            model, loss = build_for_config(cfg, steps)
    except ValueError as e:
        raise RunError(str(e)) from None

    if not split_path.exists():
        split.save(split_path, root=cfg.data_dir)
    cfg.save(out / "config.json")
    train_ds = make_dataset(split.train, cfg, training=True, batch_size=batch)
    val_ds = make_dataset(split.val, cfg, training=False, batch_size=batch)

    from all_tf.evaluation import compute_metrics
    from all_tf.losses import LossScheduleCallback
    from all_tf.training.callbacks import HistoryCSV, ResumableEarlyStopping, RunCheckpoints

    history_path = out / "history.csv"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),  # must stay first
        LossScheduleCallback(loss),  # before HistoryCSV: it logs focal_weight
        HistoryCSV(history_path),
        RunCheckpoints(out / "checkpoints", history_path),
        ResumableEarlyStopping(history_path, monitor="val_loss",
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

    best = out / "checkpoints" / "best.keras"
    if best.exists():
        model.load_weights(best)
    predictions = {}
    for part in ("val", "test"):
        records = getattr(split, part)
        predictions[part] = (records, *predict_split(model, records, cfg, batch,
                                                     return_index=True))
    write_predictions(out / PREDICTIONS_FILE, predictions)
    _, y_true, probs, _ = predictions["test"]
    metrics = compute_metrics(y_true, probs, threshold=cfg.uncertainty_threshold)
    metrics["epochs_trained"] = read_history_epochs(out)
    metrics["train_seconds_last_session"] = round(train_seconds, 1)
    metrics["n_train"], metrics["n_val"], metrics["n_test"] = (
        len(split.train), len(split.val), len(split.test))
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2))
    return metrics


def read_history_epochs(out: Path) -> int:
    from all_tf.training.callbacks import read_history

    return len(read_history(out / "history.csv"))


def _class_weights(records) -> dict[int, float]:
    from collections import Counter

    counts = Counter(r.label for r in records)
    total = sum(counts.values())
    return {c: total / (len(counts) * n) for c, n in counts.items()}


__all__ = ["RunError", "train_run"]
