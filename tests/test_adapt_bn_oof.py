"""scripts/adapt_bn_oof.py: BatchNorm statistics re-estimated on each part (AdaBN), written
in the protocol layout."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
from click.testing import CliRunner

from all_tf.config import Config, SplitConfig
from all_tf.data import assign_groups, make_split, scan_dataset
from tests.helpers import script_command, script_module

SIZE = 32


def _bn_model():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.BatchNormalization(name="first_bn")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="second_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def test_statistics_become_those_of_the_images_and_weights_stay():
    adapt_batchnorm = script_module("adapt_bn_oof").adapt_batchnorm
    model = _bn_model()
    x = np.random.default_rng(0).normal(3.0, 2.0, (40, SIZE, SIZE, 3)).astype(np.float32)
    kernel = model.get_layer("conv").kernel.numpy().copy()

    assert adapt_batchnorm(model, x) == 2
    first = model.get_layer("first_bn")
    np.testing.assert_allclose(first.moving_mean.numpy(), x.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(first.moving_variance.numpy(), x.var(axis=(0, 1, 2)), rtol=1e-3)
    assert first.momentum == 0.99  # restored
    np.testing.assert_array_equal(model.get_layer("conv").kernel.numpy(), kernel)
    # the second layer sees the first one's normalised output: zero mean after adaptation
    h = keras.Model(model.input, model.get_layer("second_bn").output)(x, training=False).numpy()
    np.testing.assert_allclose(h.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)


def test_fold_runs_rescored_in_the_protocol_layout(sample_all4, tmp_path):
    records = assign_groups(scan_dataset(sample_all4).records)
    cfg = Config.preset("quick").override({"data_dir": str(sample_all4),
                                           "preprocess.image_size": SIZE})
    run = tmp_path / "cv" / "runs" / "m_contiguous_f0_s42"
    (run / "checkpoints").mkdir(parents=True)
    split = make_split(records, SplitConfig(kind="contiguous", n_folds=3, fold=0, embargo=0,
                                            val_fraction=0.15), root=sample_all4)
    split.save(run / "split.json", root=sample_all4)
    cfg.save(run / "config.json")
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.25}))
    _bn_model().save(run / "checkpoints" / "best.keras")

    out = tmp_path / "adapted"
    args = [str(tmp_path / "cv"), "--data-dir", str(sample_all4), "-o", str(out)]
    result = CliRunner().invoke(script_command("adapt_bn_oof"), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    adapted = out / "runs" / run.name
    for name in ("predictions.csv", "predictions_tta.csv"):
        with (adapted / name).open() as f:
            rows = list(csv.DictReader(f))
        assert [r["part"] for r in rows] == ["val"] * len(split.val) + ["test"] * len(split.test)
        p = np.array([[float(r[f"p_{c}"]) for c in ("Benign", "Early", "Pre", "Pro")]
                      for r in rows])
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    metrics = json.loads((adapted / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "AdaBN" in metrics["source"]
    rerun = CliRunner().invoke(script_command("adapt_bn_oof"), args)
    assert rerun.exit_code == 0 and "done earlier, skipped" in rerun.output
