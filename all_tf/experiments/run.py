"""One experiment run: fit a config into a run directory, then score it on its test part.

Example:
    >>> from all_tf.config import Config
    >>> from all_tf.experiments import train_run
    >>> cfg = Config.preset("quick")
    >>> cfg.data_dir = "all_tf/sample_data/all4"
    >>> metrics = train_run(cfg, "runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from all_tf.config import Config

log = logging.getLogger(__name__)


def train_run(cfg: Config, output_dir: str | os.PathLike, *, verbose: int = 1) -> dict:
    """Fit ``cfg`` into ``output_dir`` and score it; resumable, and a no-op once complete.

    The directory gets what :func:`all_tf.training.fit_run` writes plus ``predictions.csv``
    and ``metrics.json`` (:func:`all_tf.evaluation.evaluate_run`).

    Returns:
        The test metrics of the best checkpoint (the stored ones when the run is complete).

    Raises:
        all_tf.training.RunError: an unusable dataset, split, model or directory.
    """
    from all_tf.evaluation.predictions import evaluate_run, load_run_metrics
    from all_tf.training.run import fit_run, prepare_output_dir

    out = Path(output_dir)
    if prepare_output_dir(cfg, out) is not None:
        metrics = load_run_metrics(out)
        if metrics is not None:
            log.info("%s is complete; returning its stored metrics", out)
            return metrics
    return evaluate_run(fit_run(cfg, out, verbose=verbose), out)
