"""AdamW with linear warm-up then cosine decay, from a ``TrainConfig``.

The learning rate rises linearly from ``min_learning_rate`` to ``learning_rate`` over
``warmup_epochs * steps_per_epoch`` optimizer steps, then follows a cosine from
``learning_rate`` down to ``min_learning_rate`` at the last step of ``epochs``.

Example:
    >>> from all_tf.config import TrainConfig
    >>> from all_tf.training import make_optimizer
    >>> opt = make_optimizer(TrainConfig(epochs=10, warmup_epochs=1), steps_per_epoch=100)
    >>> round(float(opt.learning_rate.numpy()), 8)  # step 0
    1e-06
"""

from __future__ import annotations

import keras

# Normalisation scales/offsets and biases are not decayed (standard practice for AdamW).
NO_DECAY_NAMES = ("gamma", "beta", "bias")


def make_schedule(train_cfg, steps_per_epoch: int) -> keras.optimizers.schedules.CosineDecay:
    """The warm-up + cosine schedule, a function of the optimizer step (0-based).

    Args:
        train_cfg: ``all_tf.config.TrainConfig`` (learning_rate, min_learning_rate, epochs,
            warmup_epochs).
        steps_per_epoch: optimizer steps per epoch (>= 1).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    lr, min_lr = float(train_cfg.learning_rate), float(train_cfg.min_learning_rate)
    if not 0.0 <= min_lr <= lr:
        raise ValueError(f"need 0 <= min_learning_rate <= learning_rate, got {min_lr} and {lr}")
    total = max(1, int(train_cfg.epochs) * steps_per_epoch)
    warmup = min(int(train_cfg.warmup_epochs) * steps_per_epoch, total - 1)
    alpha = min_lr / lr if lr > 0 else 0.0
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=min_lr,
        decay_steps=total - warmup,
        alpha=alpha,
        warmup_target=lr,
        warmup_steps=warmup,
    )


def make_optimizer(train_cfg, steps_per_epoch: int) -> keras.optimizers.AdamW:
    """AdamW (beta 0.9/0.999, epsilon 1e-8, ``train_cfg.weight_decay``) on ``make_schedule``.

    Batch-norm gamma/beta and biases are excluded from weight decay.
    """
    opt = keras.optimizers.AdamW(
        learning_rate=make_schedule(train_cfg, steps_per_epoch),
        weight_decay=float(train_cfg.weight_decay),
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
    )
    opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return opt
