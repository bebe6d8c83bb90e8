"""all_tf: multistage B-ALL classification of peripheral blood smear images.

Stages, each in its own module, data flowing one way:
``data`` (scan, duplicates, splits, tf.data) -> ``preprocessing`` (scaling, CLAHE, Reinhard,
colour spaces, augmentation) and ``segmentation`` (purple index, morphology, crops, watershed)
-> ``models`` (EfficientNetV2-S + CBAM, baselines) -> ``train`` -> ``evaluation`` ->
``export`` / ``predict``.
"""

__version__ = "0.1.0"

CLASS_NAMES = ("Benign", "Early", "Pre", "Pro")
"""Canonical class order: index i of every probability vector is CLASS_NAMES[i]."""


def _quiet_tensorflow_without_gpu() -> None:
    """Hide TensorFlow's C++ error log on machines without an NVIDIA device, where the CUDA
    build of TensorFlow prints "failed call to cuInit" on every start. Python errors still
    raise; a value the user set is kept; machines with a GPU keep the full log."""
    import os

    if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


_quiet_tensorflow_without_gpu()
