"""Train the fold runs of a pack (``scripts/pack_folds.py``) on any Keras 3 backend.

Meant for a machine with an accelerator but without TensorFlow or the dataset, e.g.
``KERAS_BACKEND=jax`` on a GPU. Several runs train at once (``--parallel``), each in its own
process. Each run is what ``all-tf protocol`` would train for that fold: the same config,
split, model, loss schedule, AdamW + cosine schedule, augmentation layers, early stopping on
the validation loss and best checkpoint, with two differences that the run's
``metrics.json`` states under ``source``:

- inputs are the pack's JPEG images (resized, label-masked) put through
  :func:`all_tf.preprocessing.preprocess_image`, which ``pack_folds.py`` measures against the
  original files;
- batches come from a ``keras.utils.PyDataset`` instead of ``tf.data``, the augmentation
  layers run inside the compiled training step, and the last incomplete batch of each epoch
  is dropped (one batch shape: one compiled training step).

For every run it writes ``history.csv``, ``predictions.csv``, ``predictions_tta.csv`` (8
dihedral views) and ``metrics.json`` next to the pack's ``config.json`` and ``split.json``,
and after each finished run it rewrites ``<output-dir>/<tag>.tar.gz`` with the runs of that
tag so far (weights are left out). ``--deadline-minutes`` stops training early enough to
score every run before a hard time limit; a run stopped so says ``"stopped_by_deadline":
true``, and runs still queued 150 s before the training deadline are not started.

Example (JAX on one GPU, five folds at once)::

    KERAS_BACKEND=jax python scripts/fit_packed_folds.py .devdata -o out --parallel 5
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import click
from pack_folds import PACK_FILE  # scripts/ is on sys.path when run as a script

LATEST_START_S = 150  # no run starts later than this before the training deadline, s


def _arrays(records, cfg):
    """float32 (N, S, S, 3) model inputs and int (N,) labels of ``records``."""
    import numpy as np

    from all_tf.io import read_image
    from all_tf.preprocessing import preprocess_image

    x = np.stack([preprocess_image(read_image(r.path), cfg.preprocess) for r in records])
    return x, np.array([r.label for r in records])


def _predict_padded(model, x, batch_size: int):
    """``model.predict`` in batches of exactly ``batch_size`` (the last one zero-padded), so
    that a compiling backend builds one prediction function."""
    import numpy as np

    n = len(x)
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)[:n]


def fit_one(run_dir: Path, images_dir: Path, deadline: float, eval_batch: int) -> dict:
    """Train, score and record one run directory holding ``config.json`` and ``split.json``."""
    import keras
    import numpy as np

    from all_tf import CLASS_NAMES
    from all_tf.config import Config
    from all_tf.data import Split
    from all_tf.evaluation.metrics import compute_metrics
    from all_tf.evaluation.predictions import PREDICTIONS_FILE, write_predictions
    from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE
    from all_tf.inference.tta import dihedral_views
    from all_tf.io import atomic_write_text
    from all_tf.preprocessing import build_augmentation
    from all_tf.training.callbacks import (
        BestWeightsCheckpoint,
        HistoryCSV,
        ResumableEarlyStopping,
        read_history,
    )
    from all_tf.training.losses import LossScheduleCallback
    from all_tf.training.run import _class_weights, build_for_config

    cfg = Config.load(run_dir / "config.json")
    split = Split.load(run_dir / "split.json", root=images_dir)
    # predictions.csv names the original files, as the runs of ``all-tf protocol`` do
    named = Split.load(run_dir / "split.json", root=cfg.data_dir, check_files=False)
    data = {part: _arrays(getattr(split, part), cfg) for part in ("train", "val", "test")}
    x_train, y_train = data["train"]
    n_classes = len(CLASS_NAMES)
    onehot = np.eye(n_classes, dtype=np.float32)

    seed = cfg.split.seed
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if cfg.train.mixed_precision else "float32")
    batch = cfg.train.batch_size
    steps = max(1, len(x_train) // batch)
    model, loss = build_for_config(cfg, steps)
    # The augmentation layers go inside the compiled training step, ahead of the model, so
    # that a batch never returns to the host between augmentation and the step; at
    # inference (training=False) they are the identity, and ``model`` shares the weights.
    inputs = keras.Input(model.input_shape[1:])
    trainer = keras.Model(inputs, model(build_augmentation(cfg.augment, seed)(inputs)))
    trainer.compile(optimizer=model.optimizer, loss=loss,
                    metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])

    class Batches(keras.utils.PyDataset):
        """Shuffled full batches of the training part (augmented inside ``trainer``)."""

        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x_train))

        def __len__(self):
            return steps

        def __getitem__(self, i):
            idx = self.order[i * batch:(i + 1) * batch]
            return x_train[idx], onehot[y_train[idx]]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x_train))

    class Deadline(keras.callbacks.Callback):
        """Stops training when another epoch would end after ``deadline`` (Unix time, s)."""

        def __init__(self):
            super().__init__()
            self.hit = False

        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.time()

        def on_epoch_end(self, epoch, logs=None):
            # The first epoch includes compiling the step functions: only later ones tell
            # how long another epoch takes.
            needed = time.time() - self.began if epoch > 0 else 0.0
            if time.time() + needed > deadline:
                self.hit = self.model.stop_training = True

    history_path = run_dir / "history.csv"
    best_path = run_dir / "best.weights.h5"
    stop = Deadline()
    callbacks = [
        LossScheduleCallback(loss),  # before HistoryCSV: it logs focal_weight
        HistoryCSV(history_path),
        BestWeightsCheckpoint(str(best_path), restart_at=cfg.train.loss_switch_epoch,
                              monitor="val_loss", save_weights_only=True),
        ResumableEarlyStopping(history_path, restart_at=cfg.train.loss_switch_epoch,
                               monitor="val_loss",
                               patience=cfg.train.early_stopping_patience,
                               restore_best_weights=False, verbose=1),
        stop,
    ]
    x_val, y_val = data["val"]
    class_weight = _class_weights(split.train) if cfg.train.class_weights else None
    started = time.time()
    trainer.fit(Batches(), validation_data=(x_val, onehot[y_val]),
              validation_batch_size=min(len(x_val), eval_batch), epochs=cfg.train.epochs,
              callbacks=callbacks, class_weight=class_weight, verbose=2)
    train_seconds = time.time() - started
    trainer.load_weights(best_path)

    single, tta = {}, {}
    for part in ("val", "test"):
        records, (x, y) = getattr(named, part), data[part]
        kept = np.arange(len(records))
        single[part] = (records, y, _predict_padded(model, x, eval_batch), kept)
        views = _predict_padded(model, dihedral_views(x), eval_batch)
        tta[part] = (records, y, views.reshape(8, len(x), -1).mean(axis=0), kept)
    write_predictions(run_dir / PREDICTIONS_FILE, single)
    write_predictions(run_dir / TTA_PREDICTIONS_FILE, tta)

    _, y_test, probs, _ = single["test"]
    metrics = compute_metrics(y_test, probs, threshold=cfg.uncertainty_threshold)
    pack = json.loads((run_dir.parents[2] / PACK_FILE).read_text())["images"]
    metrics.update({
        "epochs_trained": len(read_history(history_path)),
        "train_seconds_last_session": round(train_seconds, 1),
        "n_train": len(x_train), "n_val": len(x_val), "n_test": len(y_test),
        "stopped_by_deadline": stop.hit,
        "source": (f"scripts/fit_packed_folds.py: Keras {keras.__version__} on "
                   f"{keras.backend.backend()} ({_device_name()}); inputs from JPEG quality "
                   f"{pack['quality']} packed images; augmentation inside the training "
                   "step; last incomplete batch of each epoch dropped"),
    })
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def _device_name() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].device_kind
    return "default device"


def _tar_tag(work: Path, tag: str, out: Path) -> None:
    """``out/<tag>.tar.gz`` holding ``<tag>/runs/*`` of ``work`` without weight files."""
    tmp = out / f".{tag}.tar.gz"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(work / tag, arcname=tag,
                filter=lambda t: None if t.name.endswith((".h5", ".keras")) else t)
    tmp.replace(out / f"{tag}.tar.gz")


@click.command()
@click.argument("pack", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output-dir", "-o", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the <tag>.tar.gz archives of finished runs go.")
@click.option("--runs", "patterns", multiple=True,
              help="Glob over the pack's run names (<tag>/runs/<run id>) [default: all].")
@click.option("--parallel", default=1, show_default=True, type=click.IntRange(1, 32),
              help="Runs trained at once, one process each.")
@click.option("--deadline-minutes", default=None, type=float,
              help="Stop training so that every run is scored within this many minutes.")
@click.option("--eval-batch-size", default=256, show_default=True, type=int,
              help="Batch size for validation and prediction.")
@click.option("--work-dir", default="/tmp/all_tf_packed_folds", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Scratch space: the unpacked images and the runs with their weights.")
@click.option("--one", hidden=True, help="Internal: train this one run in this process.")
@click.option("--deadline", hidden=True, type=float, default=float("inf"))
def main(pack, output_dir, patterns, parallel, deadline_minutes, eval_batch_size, work_dir,
         one, deadline):
    """Train the runs of PACK (a pack_folds.py directory)."""
    images = work_dir / "images"
    if one:
        metrics = fit_one(work_dir / one, images, deadline, eval_batch_size)
        click.echo(f"{one}: test balanced accuracy {metrics['macro_recall']:.4f}, "
                   f"{metrics['epochs_trained']} epochs")
        return

    meta = json.loads((pack / PACK_FILE).read_text())
    names = [n for n in meta["runs"] if not patterns
             or any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        raise click.ClickException(f"no run of {pack} matches {list(patterns)}")
    output_dir.mkdir(parents=True, exist_ok=True)
    if not images.exists():
        with zipfile.ZipFile(pack / "images.zip") as zf:
            zf.extractall(images)
    shutil.copy2(pack / PACK_FILE, work_dir / PACK_FILE)
    for name in names:
        (work_dir / name).mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "split.json"):
            shutil.copy2(pack / name / f, work_dir / name / f)
    t0 = time.time()
    # A run must still be scored after its training stops: keep 90 s for that.
    hard = t0 + 60 * deadline_minutes - 90 if deadline_minutes else float("inf")
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / parallel:.3f}")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent), env.get("PYTHONPATH", "")])
    queue, active, failed, skipped = list(names), {}, [], []
    while queue or active:
        while queue and len(active) < parallel:
            name = queue.pop(0)
            if time.time() > hard - LATEST_START_S:
                skipped.append(name)
                continue
            log = open(work_dir / name / "fit.log", "w")  # noqa: SIM115 (closed on exit)
            cmd = [sys.executable, __file__, str(pack), "-o", str(output_dir), "--work-dir",
                   str(work_dir), "--eval-batch-size", str(eval_batch_size), "--one", name,
                   "--deadline", str(hard)]
            active[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             env=env), log)
            click.echo(f"[{time.time() - t0:6.0f} s] started {name}")
        time.sleep(2)
        for name, (proc, log) in list(active.items()):
            if proc.poll() is None:
                continue
            log.close()
            del active[name]
            ok = proc.returncode == 0 and (work_dir / name / "metrics.json").exists()
            if not ok:
                failed.append(name)
            tail = (work_dir / name / "fit.log").read_text().strip().splitlines()[-1:]
            click.echo(f"[{time.time() - t0:6.0f} s] {'finished' if ok else 'FAILED'} {name}: "
                       f"{tail[0] if tail else ''}")
            _tar_tag(work_dir, name.split("/")[0], output_dir)
    if skipped:
        click.echo(f"not started (too close to the deadline): {', '.join(skipped)}")
    if failed:
        raise click.ClickException(f"{len(failed)} run(s) failed: {', '.join(failed)} "
                                   "(their fit.log is in the archive)")


if __name__ == "__main__":
    main()
