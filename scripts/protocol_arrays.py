"""The protocol on in-memory arrays, for any Keras backend (JAX, PyTorch or TensorFlow).

``scripts/protocol.py`` trains through the tf.data pipeline and needs TensorFlow. This script
runs the same runs where TensorFlow is missing, e.g. on a GPU machine whose image has JAX or
PyTorch only (``KERAS_BACKEND=jax``): images are decoded once, preprocessed with the same
``preprocess_image`` (CLAHE, Reinhard fitted on the run's training images, colour space),
held as float32 arrays, and fed in shuffled full batches through the same augmentation layers.
The model, loss schedule, optimizer, early stopping, metrics and boosted-trees head are the
package's own. Differences from ``train_run``: no per-epoch ``.keras`` checkpoints (the best
weights are kept in memory, as ``EarlyStopping(restore_best_weights=True)``), no resume inside
a run (a finished run is skipped), and the last incomplete training batch of each epoch is
dropped (every image is still seen over epochs; fixed shapes avoid recompiling).

A plan file lists the runs in priority order::

    {"runs": [{"id": "v2s_cbam_224_70-30_s42", "label": "efficientnetv2s_cbam",
               "split_file": "splits/70-30_s42.json",
               "set": {"preprocess.image_size": 224, "split.seed": 42}}]}

``set`` overrides dotted fields of the base config; ``label`` is the ``model`` column of the
results (default: the model name); ``split_file`` (relative to the plan) is optional: without
it the split is made from the config. With ``--time-budget`` no run starts when less than
``--min-run-seconds`` are left, and a run's training stops early when the budget is nearly
spent (its row then shows ``epochs_trained`` < ``epochs``).

Outputs in ``--output-dir``: ``results.csv`` (one row per run and head, appended as each run
finishes), ``summary.md``/``summary.csv``, and ``runs/<id>/`` with config, history.csv and
metrics.json. ``--bundle`` also packs these (no weights) into one .tar.gz after every run.

Examples:
    python scripts/protocol_arrays.py --quick -o results/protocol_arrays_quick
    KERAS_BACKEND=jax python scripts/protocol_arrays.py --data-dir data/all4 \\
        --base-config results/protocol_base.json --plan plan.json -o out --time-budget 500
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from _common import SAMPLE_ALL4, fail

QUICK_PLAN = {"runs": [
    {"id": "mobilenetv3small_32_70-30_s0", "set": {"model.name": "mobilenetv3small",
                                                   "preprocess.image_size": 32,
                                                   "train.epochs": 2, "train.batch_size": 8,
                                                   "split.seed": 0}},
]}


def apply_overrides(base: dict, overrides: dict) -> dict:
    """Copy of a config dict with ``{"section.field": value}`` overrides applied."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section not in out or (name and not isinstance(out[section], dict)):
            raise ValueError(f"unknown config field {key!r}")
        if name:
            if name not in out[section]:
                raise ValueError(f"unknown config field {key!r}")
            out[section][name] = value
        else:
            out[section] = value
    return out


def read_images(records, workers: int) -> tuple[dict, list[tuple[str, str]]]:
    """Decode every record once: ({path: uint8 RGB}, [(path, reason)] for unreadable files)."""
    from concurrent.futures import ThreadPoolExecutor

    from all_tf.io import ImageReadError, read_image

    def one(path):
        try:
            return path, read_image(path), None
        except ImageReadError as e:
            return path, None, str(e)

    images, failed = {}, []
    with ThreadPoolExecutor(workers) as pool:
        for path, rgb, err in pool.map(one, sorted({r.path for r in records})):
            if rgb is None:
                failed.append((path, err))
            else:
                images[path] = rgb
    return images, failed


def to_arrays(records, images: dict, cfg, workers: int):
    """float32 (N, S, S, 3) in [0, 1] and int labels (N,) for the readable records."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from all_tf.preprocessing import preprocess_image

    kept = [r for r in records if r.path in images]
    with ThreadPoolExecutor(workers) as pool:
        xs = list(pool.map(lambda r: preprocess_image(images[r.path], cfg.preprocess), kept))
    s = cfg.preprocess.image_size
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, s, s, 3), np.float32)
    return x, np.array([r.label for r in kept], dtype=int)


def make_batches(x, y, batch_size: int, augment_cfg, seed: int):
    """A ``keras.utils.PyDataset`` of shuffled, augmented full batches (one-hot labels)."""
    import threading

    import keras
    import numpy as np

    from all_tf import CLASS_NAMES
    from all_tf.preprocessing import build_augmentation

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=2, max_queue_size=8)  # augment ahead of the train step
            self.rng = np.random.default_rng(seed)
            self.aug = build_augmentation(augment_cfg, seed)
            # Build it here: two worker threads building a Sequential at once can corrupt it.
            self.aug(x[:1], training=True)
            self.lock = threading.Lock()  # one augmentation at a time (seed state updates)
            self.onehot = np.eye(len(CLASS_NAMES), dtype=np.float32)[y]
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            return max(1, len(x) // batch_size)

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            with self.lock:
                xb = keras.ops.convert_to_numpy(self.aug(x[idx], training=True))
            return xb.astype(np.float32), self.onehot[idx]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return Batches()


def padded(x, batch_size: int):
    """``x`` padded with copies of its first row to a multiple of ``batch_size``."""
    import numpy as np

    extra = (-len(x)) % batch_size
    return np.concatenate([x, np.repeat(x[:1], extra, axis=0)]) if extra else x


def predict_padded(model, x, batch_size: int):
    """Model outputs for ``x`` in fixed-size batches (one compiled shape), float32 numpy."""
    import numpy as np

    out = model.predict(padded(x, batch_size), batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32)[: len(x)]


def deadline_callback(deadline: float | None, reserve: float):
    import keras

    class StopAtDeadline(keras.callbacks.Callback):
        """Stops training when less than ``reserve`` seconds are left before ``deadline``."""

        def __init__(self):
            super().__init__()
            self.stopped = False
            self.epoch_seconds = 0.0
            self._t = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_seconds = time.time() - self._t  # the last epoch: the first one compiles
            if deadline is not None and time.time() + self.epoch_seconds + reserve > deadline:
                self.stopped = True
                self.model.stop_training = True

    return StopAtDeadline()


def train_one(cfg, split, images: dict, run_dir: Path, *, workers: int,
              deadline: float | None, reserve: float, hybrid: bool, echo, record) -> None:
    """Train and evaluate one run, writing run_dir files.

    ``record(head, metrics)`` is called as soon as each head's test metrics exist, so that
    the softmax row is saved before the boosted-trees head is fitted.
    """
    import keras
    import numpy as np

    from all_tf.config import Config
    from all_tf.evaluation import compute_metrics
    from all_tf.evaluation.hybrid import feature_model, fit_booster, predict_proba_full
    from all_tf.experiments.label_check import CACHE_NAME as LABEL_CHECK_FILE
    from all_tf.io import atomic_write_text
    from all_tf.losses import LossScheduleCallback
    from all_tf.training.callbacks import HistoryCSV
    from all_tf.training.run import build_for_config, check_split, fit_reinhard

    check_split(split, cfg.data_dir)
    if cfg.preprocess.reinhard and cfg.preprocess.reinhard_target is None:
        fit_reinhard(cfg, split.train)
    t0 = time.time()
    x_tr, y_tr = to_arrays(split.train, images, cfg, workers)
    x_va, y_va = to_arrays(split.val, images, cfg, workers)
    x_te, y_te = to_arrays(split.test, images, cfg, workers)
    preprocess_s = time.time() - t0
    n_img = len(x_tr) + len(x_va) + len(x_te)
    echo(f"  preprocessed {n_img} images in {preprocess_s:.1f} s "
         f"(train {len(x_tr)}, val {len(x_va)}, test {len(x_te)})")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    split.save(run_dir / "split.json", root=cfg.data_dir)

    keras.utils.set_random_seed(cfg.split.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if cfg.train.mixed_precision else "float32")
    batch = cfg.train.batch_size
    train_batches = make_batches(x_tr, y_tr, batch, cfg.augment, cfg.split.seed)
    model, loss = build_for_config(cfg, len(train_batches))
    eye = np.eye(model.output_shape[-1], dtype=np.float32)
    xv = padded(x_va, batch)
    yv = padded(eye[y_va], batch)
    # Padding rows get weight 0 and real rows len(xv)/len(x_va), so that Keras' per-batch
    # "sum over batch size" losses average to the plain mean over the real images.
    wv = np.r_[np.full(len(x_va), len(xv) / len(x_va), np.float32),
               np.zeros(len(xv) - len(x_va), np.float32)]
    stopper = deadline_callback(deadline, reserve)
    callbacks = [
        LossScheduleCallback(loss),
        HistoryCSV(run_dir / "history.csv"),
        keras.callbacks.EarlyStopping(monitor="val_loss",
                                      patience=cfg.train.early_stopping_patience,
                                      restore_best_weights=True),
        stopper,
    ]
    t0 = time.time()
    history = model.fit(train_batches, validation_data=(xv, yv, wv), validation_batch_size=batch,
                        epochs=cfg.train.epochs, callbacks=callbacks, verbose=2)
    train_s = time.time() - t0
    epochs_trained = len(history.history.get("loss", []))

    t0 = time.time()
    probs = predict_padded(model, x_te, batch)
    infer_ms = 1000 * (time.time() - t0) / max(1, len(x_te))
    common = {"epochs_trained": epochs_trained, "train_seconds_last_session": round(train_s, 1),
              "stopped_at_deadline": stopper.stopped, "n_train": len(x_tr), "n_val": len(x_va),
              "n_test": len(x_te), "preprocess_seconds": round(preprocess_s, 2),
              "inference_ms_batched": round(infer_ms, 3),
              "backend": keras.backend.backend()}
    metrics = compute_metrics(y_te, probs, threshold=cfg.uncertainty_threshold)
    metrics.update(common)
    if not cfg.preprocess.mask_label_corner:
        # The same test images with the burned-in label corner hidden: how much the model
        # reads the label (saved beside metrics.json, in the row's label_masked_* columns).
        masked = Config.from_dict(cfg.to_dict())
        masked.preprocess.mask_label_corner = True
        x_mask, _ = to_arrays(split.test, images, masked, workers)
        lm = compute_metrics(y_te, predict_padded(model, x_mask, batch),
                             threshold=cfg.uncertainty_threshold)
        atomic_write_text(run_dir / LABEL_CHECK_FILE, json.dumps(lm, indent=2))
        del x_mask
    else:
        lm = metrics
    metrics["label_masked"] = {"accuracy": lm["accuracy"], "macro_f1": lm["macro_f1"]}
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    np.save(run_dir / "test_probabilities.npy", probs)
    echo(f"  test accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} "
         f"after {epochs_trained} epochs, {train_s:.0f} s; label corner hidden "
         f"{lm['accuracy']:.4f}")
    record("softmax", metrics)
    if hybrid:
        fmodel = feature_model(model)
        f_tr = predict_padded(fmodel, x_tr, batch).reshape(len(x_tr), -1)
        f_te = predict_padded(fmodel, x_te, batch).reshape(len(x_te), -1)
        clf, name, classes = fit_booster(f_tr, y_tr, "auto", cfg.split.seed)
        hprobs = predict_proba_full(clf, classes, f_te, len(eye))
        hmetrics = compute_metrics(y_te, hprobs, threshold=cfg.uncertainty_threshold)
        hmetrics.update(common, hybrid_backend=name, feature_dim=int(f_tr.shape[1]))
        atomic_write_text(run_dir / "hybrid_metrics.json", json.dumps(hmetrics, indent=2))
        echo(f"  gbt head accuracy {hmetrics['accuracy']:.4f}")
        record("gbt", hmetrics)
    keras.backend.clear_session()


def write_bundle(out: Path, bundle: Path) -> None:
    """Pack results, summaries and small run files (no arrays, no weights) into a .tar.gz."""
    import tarfile

    tmp = bundle.with_name(bundle.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.suffix in (".csv", ".md", ".json", ".log", ".txt"):
                tar.add(path, arcname=str(path.relative_to(out.parent)))
    tmp.replace(bundle)


@click.command()
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Dataset root with class folders (default: the shipped sample with --quick).")
@click.option("--base-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A config.json to start each run from (default: the paper preset).")
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON plan of runs in priority order (see the module docstring).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Protocol directory (results.csv, summary.md, runs/).")
@click.option("--time-budget", type=float, default=None,
              help="Seconds for the whole command; runs that would not fit are left out.")
@click.option("--min-run-seconds", type=float, default=60.0, show_default=True,
              help="Do not start a run with less than this left of the budget.")
@click.option("--reserve-seconds", type=float, default=30.0, show_default=True,
              help="Seconds kept for evaluation when a run's training is cut at the budget.")
@click.option("--workers", type=int, default=None, help="Decoding threads (default: CPUs).")
@click.option("--hybrid/--no-hybrid", default=True, show_default=True,
              help="Also score a boosted-trees head on each run's pooled features.")
@click.option("--bundle", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a .tar.gz of the results after every run (for copying back).")
@click.option("--quick", is_flag=True, help="Tiny plan on the shipped sample (a smoke test).")
def main(data_dir, base_config, plan_file, output_dir, time_budget, min_run_seconds,
         reserve_seconds, workers, hybrid, bundle, quick):
    """Train and evaluate a plan of runs from in-memory arrays; append each to results.csv."""
    import os

    start = time.time()
    deadline = start + time_budget if time_budget else None
    from all_tf.config import Config
    from all_tf.data import Split, make_split
    from all_tf.evaluation.results_csv import completed_keys
    from all_tf.experiments.label_check import label_masked_columns
    from all_tf.experiments.protocol import (
        RunSpec,
        _row,
        append_result,
        split_tag,
        write_summary,
    )
    from all_tf.training.run import RunError, load_records

    if quick:
        data_dir = data_dir or SAMPLE_ALL4
    if data_dir is None:
        fail("--data-dir is required without --quick")
    if plan_file is None and not quick:
        fail("--plan is required without --quick")
    plan = json.loads(plan_file.read_text()) if plan_file else QUICK_PLAN
    base = (json.loads(base_config.read_text()) if base_config
            else Config.preset("quick" if quick else "paper").to_dict())
    workers = workers or os.cpu_count() or 1
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / "protocol.log"

    def echo(msg: str) -> None:
        line = f"[{time.time() - start:7.1f}s] {msg}"
        click.echo(line)
        with log_path.open("a") as f:
            f.write(line + "\n")

    import keras

    echo(f"backend {keras.backend.backend()}, keras {keras.__version__}, data {data_dir}")
    csv_path = output_dir / "results.csv"
    done = completed_keys(csv_path)
    images, failed = None, []
    for spec in plan["runs"]:
        run_id = spec["id"]
        if run_id in done:
            echo(f"skip {run_id}: already in {csv_path.name}")
            continue
        left = None if deadline is None else deadline - time.time()
        if left is not None and left < min_run_seconds:
            echo(f"budget: {left:.0f} s left, not starting {run_id}")
            continue
        try:
            cfg = Config.from_dict(apply_overrides(base, spec.get("set", {})))
        except (ValueError, TypeError) as e:
            fail(f"plan run {run_id}: {e}")
        cfg.data_dir = str(data_dir)
        if cfg.preprocess.input_mode != "image":
            fail(f"plan run {run_id}: input mode {cfg.preprocess.input_mode!r} is not supported "
                 "here (whole images only); use scripts/protocol.py for nucleus crops")
        if spec.get("split_file"):
            split_path = (plan_file.parent if plan_file else Path.cwd()) / spec["split_file"]
            split = Split.load(split_path, root=data_dir)
        else:
            split = make_split(load_records(cfg), cfg.split)
        if images is None:
            all_records = split.train + split.val + split.test
            images, failed = read_images(all_records, workers)
            echo(f"decoded {len(images)} images ({len(failed)} unreadable)")
            for _path, reason in failed:
                echo(f"  unreadable: {reason}")
        missing = [r for r in split.train + split.val + split.test if r.path not in images]
        if missing and len(missing) > len(failed):
            more, failed_more = read_images(missing, workers)
            images.update(more)
            failed += failed_more
        echo(f"run {run_id}: {cfg.model.name} ({cfg.model.cbam_placement}), "
             f"{cfg.preprocess.image_size} px, {cfg.preprocess.colour_space}, split "
             f"{cfg.split.kind} seed {cfg.split.seed}, {cfg.train.epochs} epochs, batch "
             f"{cfg.train.batch_size}, lr {cfg.train.learning_rate}")
        run_dir = output_dir / "runs" / run_id

        def record(head, metrics, cfg=cfg, run_id=run_id, run_dir=run_dir, spec=spec):
            run_spec = RunSpec(run_id, cfg, columns={"model": spec.get("label", cfg.model.name)})
            row = _row(run_spec, metrics, run_dir, head,
                       run_id if head == "softmax" else f"{run_id}+{head}",
                       extra={"inference_ms_batched": metrics["inference_ms_batched"],
                              **label_masked_columns(metrics.get("label_masked"))})
            append_result(csv_path, row)
            done.add(run_id)
            write_summary(output_dir, "Classification protocol (in-memory arrays)",
                          group_by=("model", "head", "split"),
                          intro=f"Backend {keras.backend.backend()}; data `{data_dir}`.",
                          headings={k: f"Split {split_tag(k)}" for k in ("70:30", "60:40")})
            if bundle:
                write_bundle(output_dir, bundle)

        try:
            train_one(cfg, split, images, run_dir, workers=workers, deadline=deadline,
                      reserve=reserve_seconds, hybrid=hybrid, echo=echo, record=record)
        except RunError as e:
            echo(f"run {run_id} cannot start: {e}")
    echo(f"done; {len(done)} runs in {csv_path}")
    if bundle:
        write_bundle(output_dir, bundle)


if __name__ == "__main__":
    main()
