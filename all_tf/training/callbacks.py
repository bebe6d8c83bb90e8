"""Callbacks that keep a run directory consistent across interruptions.

Keras' ``BackupAndRestore`` restores weights, optimizer state and the epoch counter; these
callbacks restore the rest (history rows, the best validation loss, early-stopping patience)
from ``history.csv`` so a resumed run behaves like an uninterrupted one, except for its random
draws: the seed is set again, so shuffling and augmentation restart the first epoch's sequence.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import keras

from all_tf.io import atomic_path, atomic_write_text


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of a history CSV as dicts of floats (``epoch`` is 0-based); [] when missing.

    A last line cut by a crash (wrong number of fields) is ignored.
    """
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            return []
        rows = []
        for values in reader:
            if len(values) != len(header):
                continue
            try:
                row = {k: float(v) for k, v in zip(header, values, strict=True)}
                row["epoch"] = int(row["epoch"])
            except (ValueError, KeyError):
                continue
            rows.append(row)
    return rows


class _ResumeAware(keras.callbacks.Callback):
    """Calls ``on_resume(start)`` once, at the first epoch of a ``fit`` call.

    ``start`` is that epoch's index: 0 for a new run, the restored epoch when
    ``BackupAndRestore`` resumed one.
    """

    def on_train_begin(self, logs=None):
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            self.on_resume(int(epoch))

    def on_resume(self, start: int) -> None:
        raise NotImplementedError


class HistoryCSV(_ResumeAware):
    """Appends one row per finished epoch (epoch, learning rate, all logs) to a CSV.

    On (re)start, rows for epochs at or after the restored epoch are dropped: they were
    written after the last backup and will be trained again.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._rows: list[dict[str, float]] = []

    def on_resume(self, start: int) -> None:
        self._rows = [r for r in read_history(self.path) if r["epoch"] < start]
        self._write()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch}
        row["learning_rate"] = _current_lr(self.model)
        row.update({k: float(v) for k, v in (logs or {}).items()})
        self._rows.append(row)
        self._write()

    def _write(self):
        keys: list[str] = []
        for row in self._rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=keys or ["epoch"], restval="")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(self.path, buf.getvalue())


def _current_lr(model) -> float:
    opt = model.optimizer
    lr = opt.learning_rate
    try:
        if callable(lr):
            return float(lr(opt.iterations))
        return float(keras.ops.convert_to_numpy(lr))
    except Exception:
        return math.nan


def _phase_start(epoch: int, restart_at: int | None) -> int:
    """The first epoch whose ``monitor`` values compare with ``epoch``'s: ``restart_at`` from
    then on (the loss changed there), else 0."""
    return restart_at if restart_at is not None and epoch >= restart_at else 0


class RunCheckpoints(_ResumeAware):
    """Saves ``last.keras`` every epoch and ``best.keras`` when ``monitor`` improves.

    Files are written to a temporary name and renamed, so a kill never leaves half a file.
    ``best.json`` beside them records the epoch and value of ``best.keras``, written after it;
    a resumed run reads the best value from it (the history CSV may hold the row of an epoch
    killed before its checkpoint was saved), or from the history CSV in a run without it.

    ``restart_at``: the epoch at which the loss changes (the cross-entropy to focal switch);
    from it on, epochs are compared only with each other, so ``best.keras`` is the best epoch
    of the last loss.
    """

    def __init__(self, directory: str | Path, history_path: str | Path, monitor="val_loss",
                 restart_at: int | None = None):
        super().__init__()
        self.directory = Path(directory)
        self.history_path = Path(history_path)
        self.monitor = monitor
        self.restart_at = restart_at
        self.best = math.inf

    def on_resume(self, start: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        first = _phase_start(start, self.restart_at)
        saved = self.directory / "best.json"
        if saved.is_file() and (self.directory / "best.keras").is_file():
            doc = json.loads(saved.read_text())
            if doc.get("monitor") == self.monitor and first <= doc["epoch"] < start:
                self.best = float(doc["value"])
                return
        past = [r[self.monitor] for r in read_history(self.history_path)
                if first <= r["epoch"] < start and self.monitor in r]
        self.best = min(past, default=math.inf)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if epoch == self.restart_at:
            self.best = math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._save(self.directory / "last.keras")
        value = logs.get(self.monitor)
        if value is not None and float(value) < self.best:
            self.best = float(value)
            self._save(self.directory / "best.keras")
            atomic_write_text(self.directory / "best.json", json.dumps(
                {"epoch": int(epoch), "monitor": self.monitor, "value": self.best}))

    def _save(self, path: Path):
        with atomic_path(path) as tmp:
            self.model.save(tmp)


class BestWeightsCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint(save_best_only=True)`` whose best value starts again at
    ``restart_at`` (where the loss changes, as in :class:`RunCheckpoints`)."""

    def __init__(self, filepath: str, restart_at: int | None = None, **kwargs):
        super().__init__(filepath, save_best_only=True, **kwargs)
        self.restart_at = restart_at

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if epoch == self.restart_at:
            self.best = None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose best value and patience counter survive a resume.

    ``restart_at``: the epoch at which the loss changes; there the best value and the
    patience counter start again, as for a new loss.
    """

    def __init__(self, history_path: str | Path, restart_at: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.history_path = Path(history_path)
        self.restart_at = restart_at

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.restart_at:
            self.best, self.wait, self.best_weights, self.best_epoch = None, 0, None, epoch
        if self._started:
            return
        self._started = True  # the first epoch of this fit: 0, or where BackupAndRestore resumed
        first = _phase_start(epoch, self.restart_at)
        past = [r[self.monitor] for r in read_history(self.history_path)
                if first <= r["epoch"] < epoch and self.monitor in r]
        if past:
            best_index = min(range(len(past)), key=past.__getitem__)
            self.best = past[best_index]
            self.wait = len(past) - 1 - best_index
