"""The training command: CLI errors before training, run directory, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from all_tf import CLASS_NAMES
from all_tf.train import main
from tests.helpers import test_part_accuracy

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "mobilenetv3small", "--image-size", "32", "--batch-size", "8",
        "--verbose", "2"]


def make_dataset(root: Path, per_class: dict[str, int], size: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[..., k % 3] += 120 + 20 * k  # a class-dependent colour, so the task is learnable
            cv2.imwrite(str(root / name / f"img-{i:03d}.png"), img)
    return root


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), {c: 10 for c in CLASS_NAMES})


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "--cbam-placement" in result.output and "resume" in result.output


def test_config_file_and_label_mask_option(tmp_path):
    from all_tf.config import Config
    from all_tf.train import resolve_config

    cfg = Config.preset("paper")
    cfg.preprocess.reinhard_target = {"mean": [200.0, 130.0, 118.0], "std": [40.0, 10.0, 14.0]}
    cfg.save(tmp_path / "config.json")
    got = resolve_config(None, tmp_path / "config.json", tmp_path,
                         {"mask_label_corner": True, "seed": 7})
    assert got.preprocess.mask_label_corner and got.split.seed == 7
    assert got.preprocess.reinhard_target is None  # refitted on the new run's training part


def test_scratch_preset_is_the_measured_recipe(tmp_path):
    from all_tf.config import Config
    from all_tf.train import resolve_config

    # the explicit flags of the 128 px runs in docs/benchmarks.md (97.98 +- 0.38 % over 3 seeds)
    flags = {"image_size": 128, "batch_size": 32, "epochs": 60, "learning_rate": 1e-3,
             "loss_warmup_epochs": 60, "mixed_precision": True}
    measured = resolve_config("paper", None, tmp_path, flags)
    preset = resolve_config("scratch", None, tmp_path, {"image_size": 128})
    # the preset spells "cross-entropy in every epoch" as train.loss "ce"; the flags did it
    # with a warm-up as long as the run: the same schedule
    assert preset.train.loss == "ce" and measured.train.loss == "ce_then_focal"
    assert preset.train.focal_start_epoch == measured.train.focal_start_epoch == 60
    # segmentation: the measured-best default, not the paper's (whole-field inputs do not
    # depend on it; the gate's nucleus statistics do)
    assert preset.segmentation.method == "multiotsu" and measured.segmentation.method == "otsu"
    assert preset.override({"train.loss": "ce_then_focal", "segmentation.method": "otsu",
                            "segmentation.merge_lobes": 0.0}).to_dict() == measured.to_dict()
    with pytest.raises(ValueError, match="scratch"):
        Config.preset("fast")


def test_unknown_model_is_a_usage_error(tiny_data, tmp_path):
    result = invoke("--data-dir", tiny_data, "--model", "alexnet", "-o", tmp_path / "r")
    assert result.exit_code == 2
    assert "unknown model 'alexnet'" in result.output
    assert not (tmp_path / "r").exists()


def test_quick_flag_contradicting_another_preset_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["--quick", "--preset", "paper", "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--quick contradicts --preset paper" in result.output
    assert not (tmp_path / "r").exists()


def test_input_size_the_backbone_cannot_take(tiny_data, tmp_path):
    result = invoke("--data-dir", tiny_data, "--model", "inceptionv3", "--image-size", "64",
                    "-o", tmp_path / "r")
    assert result.exit_code != 0
    assert "inceptionv3" in result.output.lower() and "75" in result.output


def test_empty_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("--data-dir", tmp_path / "empty", *TINY, "-o", tmp_path / "r")
    assert result.exit_code == 1
    assert "no usable images" in result.output


def test_single_class_dataset(tmp_path):
    data = make_dataset(tmp_path / "d", {"Pro": 8})
    result = invoke("--data-dir", data, *TINY, "-o", tmp_path / "r")
    assert result.exit_code == 1
    assert "only one class (Pro)" in result.output


def test_class_absent_from_a_split(tmp_path):
    data = make_dataset(tmp_path / "d", {"Benign": 10, "Early": 10, "Pre": 1})
    result = invoke("--data-dir", data, *TINY, "-o", tmp_path / "r")
    assert result.exit_code == 1
    assert "Pre is absent" in result.output


def test_unwritable_output_dir(tiny_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = invoke("--data-dir", tiny_data, *TINY, "-o", blocker / "run")
    assert result.exit_code == 1
    assert "not writable" in result.output and str(blocker) in result.output


def test_weights_file_that_does_not_match(tiny_data, tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    bad = tmp_path / "other.weights.h5"
    other.save_weights(bad)
    result = invoke("--data-dir", tiny_data, *TINY, "--weights", bad, "-o", tmp_path / "r")
    assert result.exit_code == 1
    assert str(bad) in result.output


def test_run_directory_from_another_config(tiny_data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    from all_tf.config import Config

    cfg = Config.preset("quick")
    cfg.data_dir = str(tiny_data)
    cfg.save(out / "config.json")
    result = invoke("--data-dir", tiny_data, *TINY, "-o", out)
    assert result.exit_code == 1
    assert "different config" in result.output and "model.name" in result.output


def test_finished_run_of_another_precision_is_accepted(tmp_path):
    """A finished run (metrics.json) is never trained again: its precision may differ, so a
    bfloat16 release recorded as a fold pools with float32 folds; an unfinished one may not."""
    from all_tf.config import Config
    from all_tf.training.run import RunError, prepare_output_dir

    stored = Config.preset("quick")
    stored.train.mixed_precision = True
    stored.save(tmp_path / "config.json")
    float32 = Config.preset("quick")
    float32.train.mixed_precision = False
    with pytest.raises(RunError, match="mixed_precision"):
        prepare_output_dir(float32, tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    assert prepare_output_dir(float32, tmp_path).train.mixed_precision is True
    float32.train.epochs += 1  # any other difference still refuses
    with pytest.raises(RunError, match="epochs"):
        prepare_output_dir(float32, tmp_path)


def test_trains_and_writes_run_directory(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = invoke("--data-dir", tiny_data, *TINY, "--epochs", "3", "--loss-warmup-epochs", "1",
                    "-o", out)
    assert result.exit_code == 0, result.output
    for name in ("config.json", "split.json", "history.csv", "metrics.json",
                 "checkpoints/best.keras", "checkpoints/last.keras"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(test_part_accuracy(out), abs=1e-6)
    assert metrics["epochs_trained"] == 3
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 4 and "val_loss" in history[0]
    # the loss schedule: cross-entropy in epoch 0, focal from epoch 1
    focal_column = history[0].split(",").index("focal_weight")
    assert [float(r.split(",")[focal_column]) for r in history[1:]] == [0.0, 1.0, 1.0]
    # the Reinhard target fitted on training images is stored for inference
    stored = json.loads((out / "config.json").read_text())
    assert len(stored["preprocess"]["reinhard_target"]["mean"]) == 3
    # a finished run is not trained again
    again = invoke("--data-dir", tiny_data, *TINY, "--epochs", "3", "--loss-warmup-epochs", "1",
                   "-o", out)
    assert again.exit_code == 0 and "Epoch" not in again.output
    # nor when it was stopped while scoring (no metrics.json): the fitted model is scored
    best = out / "checkpoints" / "best.keras"
    before = (best.stat().st_mtime_ns, (out / "history.csv").read_text(), metrics["accuracy"])
    (out / "metrics.json").unlink()
    rescored = invoke("--data-dir", tiny_data, *TINY, "--epochs", "3", "--loss-warmup-epochs",
                      "1", "-o", out)
    assert rescored.exit_code == 0 and "Epoch" not in rescored.output
    after = json.loads((out / "metrics.json").read_text())
    assert (best.stat().st_mtime_ns, (out / "history.csv").read_text(),
            after["accuracy"]) == before
    assert after["train_seconds_last_session"] == metrics["train_seconds_last_session"]
    # a split.json made with other settings is refused, not trained on
    doc = json.loads((out / "split.json").read_text())
    doc["params"]["seed"] = doc["params"]["seed"] + 1
    (out / "split.json").write_text(json.dumps(doc))
    (out / "metrics.json").unlink()
    refused = CliRunner().invoke(main, [str(a) for a in ("--data-dir", tiny_data, *TINY,
                                 "--epochs", "3", "--loss-warmup-epochs", "1", "-o", out)])
    assert refused.exit_code != 0 and "other split settings (seed: " in refused.output


@pytest.mark.slow
def test_resume_after_sigkill(tiny_data, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "all_tf.train", "--data-dir", str(tiny_data), *TINY,
           "--epochs", "6", "-o", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    history = out / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 4:  # 3 epochs done
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(history.read_text().splitlines()) - 1
    assert done_before >= 3

    resumed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first_epoch = next(int(line.split()[1].split("/")[0])
                       for line in resumed.stdout.splitlines() + resumed.stderr.splitlines()
                       if line.startswith("Epoch "))
    assert first_epoch >= done_before  # at most one epoch is repeated
    epochs = [line.split(",")[0] for line in history.read_text().splitlines()[1:]]
    assert epochs == [str(i) for i in range(6)]  # no gap, no duplicate row
    assert (out / "metrics.json").exists()


@pytest.mark.slow
def test_mirrored_strategy_over_two_cpu_devices(tiny_data, tmp_path):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from all_tf.config import Config
from all_tf.experiments import train_run
from all_tf.training.strategy import get_strategy
assert get_strategy("mirrored").num_replicas_in_sync == 2
cfg = Config.preset("quick")
cfg.data_dir = {str(tiny_data)!r}
cfg.model.name = "mobilenetv3small"
cfg.preprocess.image_size = 32
cfg.train.epochs = 1
cfg.train.strategy = "mirrored"
m = train_run(cfg, {str(tmp_path / "run")!r}, verbose=0)
print("ACC", m["accuracy"])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ACC" in result.stdout


@pytest.mark.slow
def test_crop_mode_schedule_ends_with_the_last_batch(sample_all4, tmp_path):
    # fields give 1 to max_crops crops: an estimated batch count let the cosine reach its
    # floor halfway through training
    from all_tf.config import Config
    from all_tf.training import fit_run
    from all_tf.training.callbacks import read_history

    cfg = Config.preset("quick").override({
        "data_dir": str(sample_all4), "model.name": "mobilenetv3small",
        "preprocess.input_mode": "crops", "preprocess.mask_label_corner": False,
        "preprocess.image_size": 32, "preprocess.max_crops": 4, "tta": False,
        "train.batch_size": 8, "train.epochs": 2, "train.warmup_epochs": 0,
        "train.learning_rate": 1e-3, "train.min_learning_rate": 1e-6,
        "train.mixed_precision": False, "train.early_stopping_patience": 10})
    fit_run(cfg, tmp_path / "r", verbose=0)
    lr = [float(row["learning_rate"]) for row in read_history(tmp_path / "r" / "history.csv")]
    assert len(lr) == 2
    assert lr[0] > 0.1 * 1e-3  # cosine halfway through the steps: half the peak
    assert lr[1] < 0.01 * 1e-3  # the floor, reached with the last batch


def test_crop_runs_fit_the_reinhard_target_on_crops(sample_all4):
    from types import SimpleNamespace

    from all_tf.config import Config
    from all_tf.data.inputs import input_views, view_preprocess_config
    from all_tf.io import read_image
    from all_tf.preprocessing import fit_reinhard_target
    from all_tf.training.run import fit_reinhard

    records = [SimpleNamespace(path=p) for p in sorted(Path(sample_all4).rglob("*.jpg"))[:6]]
    cfg = Config().override({"preprocess.input_mode": "crops", "preprocess.image_size": 64,
                             "preprocess.max_crops": 3, "preprocess.mask_label_corner": True})
    fit_reinhard(cfg, records)
    images = [read_image(r.path) for r in records]
    crops = [v for rgb in images for v in input_views(rgb, cfg)]
    assert cfg.preprocess.reinhard_target == fit_reinhard_target(crops, view_preprocess_config(cfg))
    field = fit_reinhard_target(images, cfg.preprocess)
    # crops are mostly purple nucleus: more chroma, and more spread in it, than whole fields
    crop_target = cfg.preprocess.reinhard_target
    assert crop_target["mean"][2] < field["mean"][2] - 4  # b*: bluer
    assert min(c / f for c, f in zip(crop_target["std"][1:], field["std"][1:], strict=True)) > 1.5


def test_preset_and_dataset_rules(tmp_path):
    from all_tf.config import Config
    from all_tf.train import resolve_config

    with pytest.raises(ValueError, match="--data-dir is required"):
        resolve_config("paper", None, None, {})
    assert resolve_config(None, None, None, {}).data_dir.endswith("sample_data/all4")  # quick
    Config.preset("paper").override({"model.weights": "imagenet"}).save(tmp_path / "c.json")
    with pytest.raises(ValueError, match="--config replaces the preset"):
        resolve_config("scratch", tmp_path / "c.json", tmp_path, {})
    with pytest.raises(ValueError, match="--data-dir is required"):  # the config names none
        resolve_config(None, tmp_path / "c.json", None, {})
    cfg = resolve_config(None, tmp_path / "c.json", tmp_path, {"weights": "none"})
    assert cfg.model.weights is None and cfg.data_dir == str(tmp_path)
    assert resolve_config(None, tmp_path / "c.json", tmp_path, {}).model.weights == "imagenet"


def test_resumed_best_value_is_the_saved_checkpoints(tmp_path):
    """A kill between an epoch's history row and its best.keras: the resumed run compares
    with the value of the checkpoint it has, not with the unsaved epoch's."""
    from all_tf.training.callbacks import RunCheckpoints

    history = tmp_path / "history.csv"
    history.write_text("epoch,val_loss\n0,1.0\n1,0.5\n")  # epoch 1 improved, then the kill
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "best.keras").write_bytes(b"epoch 0")
    (checkpoints / "best.json").write_text(json.dumps(
        {"epoch": 0, "monitor": "val_loss", "value": 1.0}))
    callback = RunCheckpoints(checkpoints, history)
    callback.on_resume(2)
    assert callback.best == 1.0  # so epoch 2's 0.7 would be saved
    (checkpoints / "best.json").unlink()  # a run without the record: the history's best
    callback.on_resume(2)
    assert callback.best == 0.5


def test_checkpoints_and_early_stopping_start_again_where_the_loss_changes(tmp_path):
    """Cross-entropy values (epochs 0-1) are not compared with focal ones (from epoch 2)."""
    import keras

    from all_tf.config import TrainConfig
    from all_tf.training.callbacks import (
        BestWeightsCheckpoint,
        ResumableEarlyStopping,
        RunCheckpoints,
    )

    assert TrainConfig(loss="ce_then_focal", loss_warmup_epochs=2, epochs=6).loss_switch_epoch == 2
    assert TrainConfig(loss="ce", epochs=6).loss_switch_epoch is None
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    history = tmp_path / "history.csv"
    checkpoints = tmp_path / "checkpoints"
    saves = RunCheckpoints(checkpoints, history, restart_at=2)
    weights = BestWeightsCheckpoint(str(tmp_path / "best.weights.h5"), restart_at=2,
                                    monitor="val_loss", save_weights_only=True)
    stops = ResumableEarlyStopping(history, restart_at=2, monitor="val_loss", patience=2)
    values = [0.2, 0.1, 0.5, 0.4, 0.45, 0.47]  # focal from epoch 2: larger here on purpose
    best_epochs, weights_best = [], []
    for callback in (saves, weights, stops):
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, value in enumerate(values):
        model.stop_training = False
        for callback in (saves, weights, stops):
            callback.on_epoch_begin(epoch)
            callback.on_epoch_end(epoch, {"val_loss": value})
        best_epochs.append(json.loads((checkpoints / "best.json").read_text())["epoch"])
        weights_best.append(weights.best)
        if model.stop_training:
            break
    assert best_epochs == [0, 1, 2, 3, 3, 3]
    assert weights_best == [0.2, 0.1, 0.5, 0.4, 0.4, 0.4]
    assert epoch == 5  # patience 2 counted from epoch 3's 0.4, not from the CE epochs' 0.1
    history.write_text("epoch,val_loss\n" + "".join(f"{k},{v}\n" for k, v in enumerate(values)))
    (checkpoints / "best.json").write_text(json.dumps(
        {"epoch": 1, "monitor": "val_loss", "value": 0.1}))  # a record of the CE phase
    saves.on_resume(4)
    assert saves.best == 0.4  # from the history's focal epochs
    resumed = ResumableEarlyStopping(history, restart_at=2, monitor="val_loss", patience=2)
    resumed.on_train_begin()
    resumed.on_epoch_begin(5)
    assert (resumed.best, resumed.wait) == (0.4, 1)
