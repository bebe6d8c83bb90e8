"""Experiments: what turns models and metrics into the project's results.

One run (:func:`train_run`: fit, then score), the classification protocol over seeds and
splits (``protocol``), the dataset audit and colour baselines (``audit``), the label-corner
check (``label_check``) and per-image timing (``timing``). Modules import their heavy
dependencies on first use.
"""

from all_tf.experiments.run import train_run

__all__ = ["train_run"]
