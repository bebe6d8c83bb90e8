"""The Keras dtype policy of a run, and a warning where bfloat16 would be emulated.

On a CPU without bfloat16 instructions (no ``avx512_bf16`` or ``amx_bf16``, e.g. AVX2-only
x86) TensorFlow emulates bfloat16 arithmetic: a training step of EfficientNetV2-S + CBAM
(batch 32, 128 px) takes about 10 times as long as in float32, one of MobileNetV3-Small
about 3 times (``docs/benchmarks.md``).
``mixed_precision`` pays only on accelerators and on CPUs that have those instructions.

Example:
    >>> from all_tf.training.precision import set_precision
    >>> set_precision(False)
    'float32'
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU lists a bfloat16 instruction set; None where ``cpuinfo`` cannot be
    read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return any(f in flags for f in BF16_CPU_FLAGS)


def set_precision(mixed: bool, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """Set Keras' global dtype policy (``mixed_bfloat16`` or ``float32``) and return its name.

    With ``mixed`` on a machine without a GPU whose CPU lacks bfloat16 instructions, logs a
    warning that training will be several times slower than in float32.
    """
    import keras

    policy = "mixed_bfloat16" if mixed else "float32"
    if mixed and cpu_has_bfloat16(cpuinfo) is False and not _has_gpu():
        log.warning("mixed_bfloat16 on a CPU without bfloat16 instructions is emulated and "
                    "several times slower than float32 (about 10x for EfficientNetV2-S); "
                    "train with --no-mixed-precision here")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _has_gpu() -> bool:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return False
