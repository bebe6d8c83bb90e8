"""Loss schedule (CE warm-up then focal) and the AdamW + warm-up cosine optimizer."""

import keras
import numpy as np
import pytest

from all_tf.config import TrainConfig
from all_tf.training import make_optimizer, make_schedule
from all_tf.training.losses import LossScheduleCallback, ScheduledFocalLoss

Y_TRUE = np.eye(4, dtype="float32")[[0, 1, 2, 3, 1, 2]]
Y_PRED = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.2, 0.5, 0.2, 0.1],
        [0.25, 0.25, 0.25, 0.25],
        [0.1, 0.1, 0.1, 0.7],
        [0.6, 0.2, 0.1, 0.1],
        [0.05, 0.05, 0.85, 0.05],
    ],
    dtype="float32",
)


def _np(x):
    return float(keras.ops.convert_to_numpy(x))


def test_blend_equals_ce_then_focal():
    loss = ScheduledFocalLoss(gamma=2.0, alpha=0.25, warmup_epochs=3)
    ce = _np(keras.losses.CategoricalCrossentropy()(Y_TRUE, Y_PRED))
    focal = _np(keras.losses.CategoricalFocalCrossentropy(alpha=0.25, gamma=2.0)(Y_TRUE, Y_PRED))
    assert _np(loss(Y_TRUE, Y_PRED)) == pytest.approx(ce, rel=1e-6)
    assert loss.set_epoch(2) == 0.0
    assert loss.set_epoch(3) == 1.0
    assert _np(loss(Y_TRUE, Y_PRED)) == pytest.approx(focal, rel=1e-6)
    assert focal < ce


def test_per_class_alpha():
    alpha = [0.1, 0.2, 0.3, 0.4]
    loss = ScheduledFocalLoss(alpha=alpha, warmup_epochs=0)
    p = np.clip(Y_PRED, 1e-7, 1.0)
    per_sample = -(Y_TRUE * np.array(alpha) * (1 - p) ** 2 * np.log(p)).sum(axis=1)
    assert _np(loss(Y_TRUE, Y_PRED)) == pytest.approx(per_sample.mean(), rel=1e-5)


def test_config_roundtrip():
    loss = ScheduledFocalLoss(gamma=1.5, alpha=[0.25] * 4, warmup_epochs=7, label_smoothing=0.1)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, ScheduledFocalLoss)
    assert clone.get_config() == loss.get_config()


def test_switch_inside_compiled_fit_at_exact_epoch():
    """With a frozen model the loss on a fixed batch only changes when the schedule switches.

    Covers the validation loss too, and holds on every backend: JAX traces the variable into
    the compiled steps as a constant, so the callback must retrace them at the switch.
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    loss = ScheduledFocalLoss(warmup_epochs=2)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=loss)  # traced graph
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[np.arange(8) % 4]
    hist = model.fit(
        x, y, batch_size=8, epochs=4, verbose=0, validation_data=(x, y),
        callbacks=[LossScheduleCallback(loss)],
    ).history
    p = model.predict(x, verbose=0)
    ce = float(np.mean(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(y, p))))
    focal = float(np.mean(keras.ops.convert_to_numpy(
        keras.losses.categorical_focal_crossentropy(y, p))))
    np.testing.assert_allclose(hist["loss"], [ce, ce, focal, focal], rtol=1e-5)
    np.testing.assert_allclose(hist["val_loss"], [ce, ce, focal, focal], rtol=1e-5)
    assert hist["focal_weight"] == [0.0, 0.0, 1.0, 1.0]


def test_callback_uses_compiled_loss_and_resumes():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    loss = ScheduledFocalLoss(warmup_epochs=2)
    model.compile(optimizer="sgd", loss=loss)
    cb = LossScheduleCallback()
    cb.set_model(model)
    cb.on_epoch_begin(3)  # e.g. fit(initial_epoch=3) after a resume
    assert float(loss.focal_weight.numpy()) == 1.0
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="ScheduledFocalLoss"):
        cb.on_epoch_begin(0)


def test_schedule_values():
    cfg = TrainConfig(epochs=10, warmup_epochs=2, learning_rate=1e-3, min_learning_rate=1e-5)
    sched = make_schedule(cfg, steps_per_epoch=50)

    def lr(step):
        return _np(sched(step))

    assert lr(0) == pytest.approx(1e-5, rel=1e-4)
    assert lr(50) == pytest.approx((1e-5 + 1e-3) / 2, rel=1e-4)  # half-way through warm-up
    assert lr(100) == pytest.approx(1e-3, rel=1e-4)  # end of warm-up = peak
    assert lr(300) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-3)  # half-way down the cosine
    assert lr(500) == pytest.approx(1e-5, rel=1e-4)  # end of training
    assert lr(10_000) == pytest.approx(1e-5, rel=1e-4)


def test_schedule_without_warmup_and_bad_values():
    sched = make_schedule(
        TrainConfig(epochs=4, warmup_epochs=0, learning_rate=1e-3, min_learning_rate=0.0),
        steps_per_epoch=10,
    )
    assert _np(sched(0)) == pytest.approx(1e-3)
    assert _np(sched(40)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_schedule(TrainConfig(), 0)
    with pytest.raises(ValueError, match="min_learning_rate"):
        make_schedule(TrainConfig(learning_rate=1e-4, min_learning_rate=1e-3), 10)


def test_optimizer_settings():
    opt = make_optimizer(TrainConfig(epochs=3, warmup_epochs=1), steps_per_epoch=5)
    assert isinstance(opt, keras.optimizers.AdamW)
    assert (opt.beta_1, opt.beta_2, opt.epsilon) == (0.9, 0.999, 1e-8)
    assert opt.weight_decay == pytest.approx(1e-5)
    # weight decay skips BN gamma/beta and biases
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()]
    )
    opt.build(model.trainable_variables)
    decayed = {v.name for v in model.trainable_variables if opt._use_weight_decay(v)}
    assert decayed == {"kernel"}


def test_compiled_model_with_loss_saves_and_reloads(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    cfg = TrainConfig(epochs=2, warmup_epochs=1)
    model.compile(optimizer=make_optimizer(cfg, 3), loss=ScheduledFocalLoss(warmup_epochs=4))
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.loss, ScheduledFocalLoss) and reloaded.loss.warmup_epochs == 4
    x = np.ones((2, 3), "float32")
    y = np.eye(4, dtype="float32")[[0, 1]]
    assert np.isfinite(float(reloaded.train_on_batch(x, y)))
