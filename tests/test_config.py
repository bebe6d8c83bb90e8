"""Config: choices defined once and validated, dotted overrides, old run configs upgraded."""

import json

import pytest

from all_tf.config import LOSSES, STRATEGIES, Config


@pytest.mark.parametrize("key, value", [
    ("preprocess.colour_space", "xyz"), ("preprocess.input_mode", "tiles"),
    ("split.kind", "80:20"), ("model.cbam_placement", "everywhere"),
    ("segmentation.method", "kmeans"), ("train.strategy", "tpu"), ("train.loss", "hinge"),
])
def test_every_choice_is_validated(key, value):
    with pytest.raises(ValueError, match=key.split(".")[1]):
        Config().override({key: value})


def test_override_is_dotted_and_skips_none():
    cfg = Config().override({"model.name": "vgg16", "split.fold": 3, "data_dir": "d",
                             "train.epochs": None})
    assert (cfg.model.name, cfg.split.fold, cfg.data_dir, cfg.train.epochs) == ("vgg16", 3, "d", 100)
    for key in ("model.nmae", "model", "x.y", "split.fold.z"):
        with pytest.raises(ValueError, match="unknown config key"):
            Config().override({key: 1})


@pytest.mark.parametrize("loss, start", [("ce", 100), ("focal", 0), ("ce_then_focal", 5)])
def test_loss_schedule(loss, start):
    assert loss in LOSSES and Config().override({"train.loss": loss}).train.focal_start_epoch == start


def test_configs_saved_before_train_loss_are_upgraded(tmp_path):
    for warmup, epochs, loss in [(60, 60, "ce"), (0, 10, "focal"), (5, 100, "ce_then_focal")]:
        d = Config().to_dict()
        del d["train"]["loss"]
        d["train"].update(loss_warmup_epochs=warmup, epochs=epochs)
        (tmp_path / "config.json").write_text(json.dumps(d))
        assert Config.load(tmp_path / "config.json").train.loss == loss


def test_strategies_are_the_trainer_choices():
    from all_tf.training.strategy import get_strategy

    assert STRATEGIES == ("default", "mirrored", "multi_worker")
    with pytest.raises(ValueError, match="tpu"):
        get_strategy("tpu")


@pytest.mark.parametrize("updates, message", [
    ({"preprocess.max_crops": 0}, "max_crops >= 1"),
    ({"preprocess.crop_margin": -1}, "crop_margin >= 0"),
    ({"preprocess.clahe_clip_limit": 0.0}, "clahe_clip_limit > 0"),
    ({"preprocess.clahe_tile_grid": 0}, "clahe_tile_grid >= 1"),
])
def test_preprocess_settings_that_cannot_work_are_refused_when_the_config_is_made(updates,
                                                                                  message):
    with pytest.raises(ValueError, match=message):
        Config().override(updates)
    if "clahe" in next(iter(updates)):  # unused without CLAHE
        Config().override({**updates, "preprocess.clahe": False})


@pytest.mark.parametrize("key", ["train.epochs", "train.batch_size"])
def test_zero_epochs_or_batch_size_is_refused(key):
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        Config().override({key: 0})
