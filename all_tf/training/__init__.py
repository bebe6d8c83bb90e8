"""Training: one run from a config to a resumable run directory (:func:`train_run`), the
optimizer and its learning-rate schedule, callbacks and distribution strategies.

``train_run`` is imported lazily so that ``make_optimizer`` stays light.
"""

from all_tf.training.optim import make_optimizer, make_schedule

__all__ = ["RunError", "make_optimizer", "make_schedule", "train_run"]


def __getattr__(name):
    if name in ("RunError", "train_run"):
        from all_tf.training import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
