"""tf.distribute strategy selection: the same training command on 1 CPU, n GPUs or n hosts."""

from __future__ import annotations

from all_tf.config import STRATEGIES


def get_strategy(name: str = "default"):
    """Return a ``tf.distribute.Strategy``.

    Args:
        name: ``default`` (one device), ``mirrored`` (all local GPUs, or all logical CPU
            devices when there is no GPU) or ``multi_worker`` (hosts listed in ``TF_CONFIG``).
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")
