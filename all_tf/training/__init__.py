"""Training helpers that do not touch files: the optimizer and its learning-rate schedule."""

from all_tf.training.optim import make_optimizer, make_schedule

__all__ = ["make_optimizer", "make_schedule"]
