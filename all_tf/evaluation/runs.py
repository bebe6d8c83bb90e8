"""Reading finished run directories (written by ``all_tf.experiments.train_run``).

A run directory holds ``config.json``, ``split.json``, ``history.csv``,
``checkpoints/{best,last}.keras`` and ``metrics.json``. Every loader here raises
:class:`RunDirError` naming the directory and the missing or unreadable file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class RunDirError(ValueError):
    """A run directory that lacks a file or holds an unreadable one."""


def _need(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.is_file():
        raise RunDirError(f"{run_dir}: missing {name} (not a finished all_tf run directory?)")
    return path


def load_config(run_dir: str | os.PathLike):
    """The run's ``Config`` (with its fitted Reinhard target)."""
    from all_tf.config import Config

    run_dir = Path(run_dir)
    try:
        return Config.load(_need(run_dir, "config.json"))
    except ValueError as e:
        if isinstance(e, RunDirError):
            raise
        raise RunDirError(str(e)) from None


def load_metrics(run_dir: str | os.PathLike, name: str = "metrics.json") -> dict:
    """A metrics JSON file of the run (``metrics.json`` by default)."""
    run_dir = Path(run_dir)
    path = _need(run_dir, name)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: unreadable metrics ({e})") from None


def load_split(run_dir: str | os.PathLike, data_dir: str | None = None):
    """The run's ``Split`` (paths resolved against ``data_dir`` or the config's data_dir)."""
    from all_tf.data import Split

    run_dir = Path(run_dir)
    path = _need(run_dir, "split.json")
    try:
        if data_dir is None:
            return Split.load(path)
        return Split.load(path, root=data_dir)
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: cannot load the split ({e})") from None


def load_model(run_dir: str | os.PathLike, which: str = "best"):
    """The Keras model of ``checkpoints/<which>.keras``."""
    import keras

    import all_tf.models  # noqa: F401  (registers the custom layers)

    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / f"{which}.keras"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: missing checkpoint checkpoints/{which}.keras "
                          "(the run did not finish an epoch, or the file was removed)")
    try:
        return keras.models.load_model(path, compile=False)  # inference only
    except Exception as e:  # Keras raises many types for a bad archive
        raise RunDirError(f"{path}: cannot load the model ({e})") from None
