"""The paper's loss schedule: categorical cross-entropy warm-up, then focal loss.

``ScheduledFocalLoss`` computes ``(1 - w) * CE + w * focal`` where ``w`` is a non-trainable
scalar ``keras.Variable``. ``LossScheduleCallback`` switches from CE (w = 0) to focal loss
(w = 1) at the start of epoch N. TensorFlow's compiled steps read the variable, so nothing is
recompiled there; JAX bakes its value into the jitted steps, so on that backend the callback
rebuilds the train and test functions once, at the switch.

Example:
    >>> import keras
    >>> from all_tf.training.losses import LossScheduleCallback, ScheduledFocalLoss
    >>> loss = ScheduledFocalLoss(gamma=2.0, alpha=0.25, warmup_epochs=5)
    >>> # model.compile(optimizer, loss=loss)
    >>> # model.fit(..., callbacks=[LossScheduleCallback(loss)])
    >>> float(loss.focal_weight.numpy())
    0.0

Note the scale change at the switch: with alpha = 0.25 and gamma = 2 the focal loss of a
sample is at most a quarter of its cross-entropy and much less for well-classified ones, so
the reported loss drops at epoch N. The best checkpoint and early stopping of
:func:`all_tf.training.run.fit_run` therefore start again at the switch
(``restart_at`` of :mod:`all_tf.training.callbacks`).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="all_tf")
class ScheduledFocalLoss(keras.losses.Loss):
    """Cross-entropy / categorical focal loss blend over one-hot labels and probabilities.

    Args:
        gamma: focal focusing parameter (paper: 2).
        alpha: focal weighting, a float or a per-class list of length num_classes
            (paper: 0.25).
        warmup_epochs: epochs of pure cross-entropy before the switch; the callback uses it.
            0 starts with pure focal loss.
        label_smoothing: applied to both terms, in [0, 1).
        reduction, name, dtype: as for ``keras.losses.Loss``.

    Inputs are ``y_true`` one-hot (B, C) and ``y_pred`` probabilities (B, C) (softmax
    outputs, not logits). The variable ``focal_weight`` is not saved with the loss config:
    ``LossScheduleCallback`` sets it at every epoch start, which also makes resumed runs
    (``initial_epoch``) correct. Create the loss inside ``strategy.scope()`` when training
    with a distribution strategy, so the variable is placed by the strategy.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | list[float] = 0.25,
        warmup_epochs: int = 5,
        label_smoothing: float = 0.0,
        reduction: str = "sum_over_batch_size",
        name: str = "scheduled_focal_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        self.gamma = float(gamma)
        self.alpha = [float(a) for a in alpha] if isinstance(alpha, (list, tuple)) else float(alpha)
        self.warmup_epochs = int(warmup_epochs)
        self.label_smoothing = float(label_smoothing)
        self.focal_weight = keras.Variable(
            0.0 if self.warmup_epochs > 0 else 1.0,
            trainable=False,
            dtype="float32",
            name="focal_weight",
        )

    def set_epoch(self, epoch: int) -> float:
        """Set the blend for 0-based ``epoch``: CE before ``warmup_epochs``, focal from then on.

        Returns:
            The new focal weight (0.0 or 1.0).
        """
        weight = 1.0 if epoch >= self.warmup_epochs else 0.0
        self.focal_weight.assign(weight)
        return weight

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        alpha = ops.convert_to_tensor(self.alpha, dtype=y_pred.dtype)
        ce = keras.losses.categorical_crossentropy(
            y_true, y_pred, label_smoothing=self.label_smoothing
        )
        focal = keras.losses.categorical_focal_crossentropy(
            y_true, y_pred, alpha=alpha, gamma=self.gamma, label_smoothing=self.label_smoothing
        )
        w = ops.cast(self.focal_weight, ce.dtype)
        return (1.0 - w) * ce + w * focal

    def get_config(self):
        config = super().get_config()
        config.update(
            gamma=self.gamma,
            alpha=self.alpha,
            warmup_epochs=self.warmup_epochs,
            label_smoothing=self.label_smoothing,
        )
        return config


class LossScheduleCallback(keras.callbacks.Callback):
    """Switches a ``ScheduledFocalLoss`` at the start of each epoch and logs ``focal_weight``.

    Args:
        loss: the loss object passed to ``compile``; when None, the model's compiled loss is
            used (it must be a ``ScheduledFocalLoss``).
    """

    def __init__(self, loss: ScheduledFocalLoss | None = None):
        super().__init__()
        self.loss = loss

    def _loss(self) -> ScheduledFocalLoss:
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        if not isinstance(loss, ScheduledFocalLoss):
            raise ValueError(
                f"LossScheduleCallback needs a ScheduledFocalLoss, the model has {loss!r}"
            )
        return loss

    def on_epoch_begin(self, epoch, logs=None):
        loss = self._loss()
        before = float(keras.ops.convert_to_numpy(loss.focal_weight))
        if loss.set_epoch(epoch) != before and keras.backend.backend() == "jax":
            # JAX traces the variable's value into the jitted steps as a constant (it is not
            # model state), so the switch needs fresh train and test functions (one retrace).
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["focal_weight"] = float(keras.ops.convert_to_numpy(self._loss().focal_weight))
