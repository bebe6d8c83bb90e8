"""all_tf.evaluation.fold_records: finding finished fold runs, rescoring a model on a run's
parts and writing a record that the protocol pools."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from all_tf.config import Config, SplitConfig
from all_tf.data import assign_groups, make_split, scan_dataset
from all_tf.evaluation.crossval import pooled_out_of_fold, read_predictions
from all_tf.evaluation.fold_records import finished_fold_runs, score_parts, write_fold_record
from all_tf.inference.tta import dihedral_views

SIZE = 32


def _orientation_dependent_model():
    """Dense on the flattened pixels: each flip and rotation gives another output."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def _run(path, metrics=True, checkpoint=False, config=True):
    path.mkdir(parents=True)
    if metrics:
        (path / "metrics.json").write_text("{}")
    if config:
        (path / "config.json").write_text("{}")
    if checkpoint:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "best.keras").write_text("")
    return path


def test_finished_fold_runs_needs_metrics_and_optionally_a_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    done = _run(runs / "m_contiguous_f1_s42")
    with_ckpt = _run(runs / "m_contiguous_f0_s42", checkpoint=True)
    _run(runs / "m_contiguous_f2_s42", metrics=False)  # still training
    _run(runs / "m_block_s42")  # not a contiguous fold

    _run(runs / "m_contiguous_f3_s42", config=False)  # a record cut before its config
    assert finished_fold_runs(tmp_path) == [with_ckpt, done]
    assert finished_fold_runs(tmp_path, with_checkpoint=True) == [with_ckpt]
    with pytest.raises(ValueError, match="no finished contiguous fold runs in runs/"):
        finished_fold_runs(tmp_path / "runs" / "m_block_s42")
    _run(runs / "m_contiguous_f3_s7")  # another seed: not the same cross-validation
    with pytest.raises(ValueError, match=r"several models or seeds \(m_contiguous_s42, "
                                         r"m_contiguous_s7\)"):
        finished_fold_runs(tmp_path)


def test_record_is_pooled_like_a_trained_fold(sample_all4, tmp_path):
    cfg = Config.preset("quick").override({"data_dir": str(sample_all4),
                                           "preprocess.image_size": SIZE})
    records = assign_groups(scan_dataset(sample_all4).records)
    split = make_split(records, SplitConfig(kind="contiguous", n_folds=3, fold=0, embargo=0,
                                            val_fraction=0.15), root=sample_all4)
    split_file = tmp_path / "split.json"
    split.save(split_file, root=sample_all4)
    model = _orientation_dependent_model()
    seen = {}

    def model_for_part(part, x):
        seen[part] = x
        return model

    single, tta = score_parts(model_for_part, split, cfg, batch_size=8)
    assert [(k, v.shape) for k, v in seen.items()] == [
        ("val", (len(split.val), SIZE, SIZE, 3)), ("test", (len(split.test), SIZE, SIZE, 3))]
    x = seen["test"]
    np.testing.assert_allclose(single["test"][2], model.predict(x, verbose=0), atol=1e-5)
    views = model.predict(dihedral_views(x), verbose=0).reshape(8, len(x), 4)
    np.testing.assert_allclose(tta["test"][2], views.mean(axis=0), atol=1e-5)
    assert np.abs(tta["test"][2] - single["test"][2]).max() > 1e-3

    run = tmp_path / "cv" / "runs" / "m_contiguous_f0_s42"
    metrics = write_fold_record(run, cfg, split_file, single, tta, source="a test",
                                extra={"epochs_trained": 3})
    stored = json.loads((run / "metrics.json").read_text())
    assert stored["source"] == "a test" and stored["epochs_trained"] == 3
    assert stored["accuracy"] == pytest.approx(metrics["accuracy"])
    assert Config.load(run / "config.json").preprocess.image_size == SIZE
    test = read_predictions(run)["test"]
    np.testing.assert_allclose(test["p"], single["test"][2], atol=1e-5)
    y_true = single["test"][1]
    pooled = pooled_out_of_fold(finished_fold_runs(tmp_path / "cv"), n_boot=10)
    assert pooled["raw"]["n"] == len(y_true) == len(split.test)
    assert pooled["raw"]["accuracy"] == pytest.approx(stored["accuracy"])


def test_score_parts_refuses_nucleus_crop_runs(sample_all4):
    cfg = Config.preset("quick").override({"preprocess.input_mode": "crops"})
    split = make_split(assign_groups(scan_dataset(sample_all4).records),
                       SplitConfig(kind="contiguous", n_folds=3, fold=0, embargo=0))
    with pytest.raises(ValueError, match="whole-field runs"):
        score_parts(lambda part, x: pytest.fail("scored a crop run"), split, cfg, 8)
