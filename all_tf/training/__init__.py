"""Training: fitting one run into a resumable run directory (:func:`fit_run`), the optimizer
and its learning-rate schedule, callbacks and distribution strategies.

``fit_run`` is imported lazily so that ``make_optimizer`` stays light.
"""

from all_tf.training.optim import make_optimizer, make_schedule

__all__ = ["FittedRun", "RunError", "fit_run", "make_optimizer", "make_schedule"]


def __getattr__(name):
    if name in ("FittedRun", "RunError", "fit_run"):
        from all_tf.training import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
