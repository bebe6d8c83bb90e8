"""scripts/pack_folds.py and scripts/fit_packed_folds.py: a fold packed, trained elsewhere
(here: in a subprocess on the TensorFlow backend) and recorded by ``all-tf protocol``."""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from all_tf import CLASS_NAMES
from all_tf.config import Config
from all_tf.data import Split

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
PER_CLASS = 30


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASS_NAMES):
        (root / name).mkdir(parents=True)
        for k in range(1, PER_CLASS + 1):
            base = np.array([60 * c + 40, 120, 200 - 40 * c], np.float32)
            rgb = np.clip(base + rng.normal(0, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(root / name / f"WBC-{name}-{k:03d}.jpg", quality=95)
    return root


def _script(name, *args, env=None):
    result = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packed")
    data = _dataset(tmp / "data")
    cfg = Config.preset("quick").override({
        "data_dir": str(data), "model.name": "mobilenetv3small", "preprocess.image_size": 32,
        "split.kind": "contiguous", "split.n_folds": 3, "split.embargo": 2, "split.fold": 0,
        "train.epochs": 1, "train.batch_size": 8, "train.mixed_precision": False})
    cfg.save(tmp / "config.json")
    _script("pack_folds.py", "--config", tmp / "config.json", "--data-dir", data, "--folds", "0",
            "--tag", "cv", "-o", tmp / "pack")
    return tmp, data


def test_pack_holds_resized_images_and_the_protocols_fold(packed):
    tmp, data = packed
    pack = tmp / "pack"
    with zipfile.ZipFile(pack / "images.zip") as zf:
        names = zf.namelist()
        assert len(names) == 4 * PER_CLASS and "Early/WBC-Early-007.jpg" in names
        assert Image.open(zf.open(names[0])).size == (32, 32)
    meta = json.loads((pack / "pack.json").read_text())
    run = pack / "cv" / "runs" / "mobilenetv3small_contiguous_f0_s42"
    assert meta["runs"] == ["cv/runs/mobilenetv3small_contiguous_f0_s42"]
    assert 0 < meta["input_deviation"]["cv"] < 20  # JPEG at quality 95: a few levels of 255
    cfg = Config.load(run / "config.json")
    assert cfg.split.fold == 0 and cfg.preprocess.reinhard_target is not None
    split = Split.load(run / "split.json", root=data)
    assert split.test and {Path(r.path).parent.parent for r in split.test} == {data}


def test_fitted_fold_comes_back_and_the_protocol_records_it(packed):
    from all_tf.cli.main import main
    from all_tf.evaluation.predictions import PREDICTIONS_FILE
    from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE
    from all_tf.experiments.protocol import read_rows

    tmp, data = packed
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    out = _script("fit_packed_folds.py", tmp / "pack", "-o", tmp / "out", "--work-dir",
                  tmp / "work", "--eval-batch-size", 16, env=env)
    assert "finished cv/runs/mobilenetv3small_contiguous_f0_s42" in out
    with tarfile.open(tmp / "out" / "cv.tar.gz") as tar:
        names = set(tar.getnames())
        assert not any(n.endswith((".h5", ".keras")) for n in names)  # no weights
        tar.extractall(tmp / "protocol", filter="data")
    run = tmp / "protocol" / "cv" / "runs" / "mobilenetv3small_contiguous_f0_s42"
    metrics = json.loads((run / "metrics.json").read_text())
    split = Split.load(run / "split.json", root=data)
    assert metrics["n_test"] == len(split.test) and metrics["epochs_trained"] == 1
    assert "fit_packed_folds.py" in metrics["source"] and not metrics["stopped_by_deadline"]
    for name in (PREDICTIONS_FILE, TTA_PREDICTIONS_FILE):
        lines = (run / name).read_text().splitlines()
        assert len(lines) == 1 + len(split.val) + len(split.test)
        assert all(line.split(",")[1].startswith(str(data)) for line in lines[1:])

    result = CliRunner().invoke(main, [
        "protocol", "--config", str(tmp / "config.json"), "--data-dir", str(data),
        "--models", "mobilenetv3small", "--seeds", "42", "--splits", "contiguous",
        "--folds", "0", "--no-hybrid", "--no-label-check", "--no-colour-baseline",
        "-o", str(tmp / "protocol" / "cv")])
    assert result.exit_code == 0, result.output
    assert "finished earlier, recording its stored metrics" in result.output
    rows = read_rows(tmp / "protocol" / "cv" / "results.csv")
    assert [r["run_id"] for r in rows] == ["mobilenetv3small_contiguous_f0_s42"]
    assert float(rows[0]["accuracy"]) == pytest.approx(metrics["accuracy"], abs=1e-6)
