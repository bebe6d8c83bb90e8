"""Model files for inference and export: find a model and its config, load it in float32,
check its input, read and write the metadata stored beside an exported model.

Example:
    >>> from all_tf.inference.model_files import resolve_source
    >>> resolve_source("runs/missing")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: runs/missing: ...
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from all_tf import CLASS_NAMES, __version__
from all_tf.config import UNCERTAINTY_THRESHOLD, Config

METADATA_FORMAT = "all_tf.export"
METADATA_FILE = "all_tf_export.json"  # in a SavedModel's assets.extra/
DEFAULT_THRESHOLD = UNCERTAINTY_THRESHOLD


@dataclass
class ModelSource:
    """A Keras model file with the run configuration that goes with it."""

    model_path: Path
    config: Config
    run_dir: Path | None
    config_path: Path | None


def resolve_source(source: str | Path, config: str | Path | None = None) -> ModelSource:
    """Find the ``.keras`` file and the config for ``source``.

    Args:
        source: a run directory (``config.json`` + ``checkpoints/best.keras``) or a ``.keras``
            file. For a file, ``config`` or a ``config.json`` in the run directory above
            ``checkpoints/`` is used; without either the defaults are used and the image size
            is taken from the model when it is loaded (see :func:`config_for_model`).
        config: explicit config JSON (overrides the run's).

    Raises:
        FileNotFoundError: the run directory has no best checkpoint, or the path is missing.
        ValueError: the path is neither a run directory nor a ``.keras`` file, or the config
            is not valid.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such run directory or model file")
    run_dir = None
    if source.is_dir():
        run_dir = source
        model_path = source / "checkpoints" / "best.keras"
        if not model_path.is_file():
            raise FileNotFoundError(f"{source}: run directory without checkpoints/best.keras")
    elif source.suffix == ".keras":
        model_path = source
        if source.parent.name == "checkpoints" and (source.parent.parent / "config.json").is_file():
            run_dir = source.parent.parent
    else:
        raise ValueError(f"{source}: expected a run directory or a .keras file")
    config_path = Path(config) if config is not None else None
    if config_path is None and run_dir is not None and (run_dir / "config.json").is_file():
        config_path = run_dir / "config.json"
    if config_path is None and source.is_file() and (source.parent / "config.json").is_file():
        config_path = source.parent / "config.json"  # a released model's folder
    cfg = Config.load(config_path) if config_path is not None else Config()
    return ModelSource(model_path, cfg, run_dir, config_path)


def load_keras_model(path: str | Path):
    """Load a ``.keras`` file (all_tf layers registered); raise ValueError naming the file."""
    import keras

    import all_tf.models  # noqa: F401  (registers CBAM, InputScaling, ...)

    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for a bad archive
        raise ValueError(f"{path}: cannot load Keras model ({type(e).__name__}: {e})") from e


def _float32_policies(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy" and isinstance(obj.get("config"), dict):
            return {**obj, "config": {**obj["config"], "name": "float32"}}
        return {k: _float32_policies(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_policies(v) for v in obj]
    return obj


def to_float32(model):
    """The same model with every layer in float32 (mixed bfloat16/float16 policies removed).

    TFLite has no bfloat16 kernels: converting a model trained under ``mixed_bfloat16``
    fails with "'tf.Conv2D' op is neither a custom op nor a flex op". Weights are float32
    under mixed precision anyway, so they are copied unchanged.
    """
    import keras

    from all_tf.models.build import walk_layers

    if all(layer.dtype_policy.name == "float32" for layer in walk_layers(model)):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    clone = keras.saving.deserialize_keras_object(config)
    clone.set_weights(model.get_weights())
    return clone


def config_for_model(cfg: Config, model, from_file: bool = False) -> Config:
    """``cfg`` with ``preprocess.image_size`` checked against the model's input.

    Args:
        cfg: the run config.
        model: a Keras model with input (None, S, S, 3).
        from_file: ``cfg`` was read from a config file, so its size is the one the run used
            and any mismatch is an error. Otherwise a size left at the default is taken to be
            unset and replaced by the model's.

    Raises:
        ValueError: the model's input is not (None, S, S, 3) or S disagrees with the config.
    """
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or shape[1] is None:
        raise ValueError(f"model input must be (None, S, S, 3), got {shape}")
    size = int(shape[1])
    if cfg.preprocess.image_size != size:
        default = Config().preprocess.image_size
        if not from_file and cfg.preprocess.image_size == default:  # unset: the model's
            cfg = Config.from_dict(cfg.to_dict())
            cfg.preprocess.image_size = size
        else:
            raise ValueError(
                f"config image_size {cfg.preprocess.image_size} does not match the model's "
                f"input size {size}"
            )
    return cfg


def input_range(model) -> list[float]:
    """The model's expected input value range, [0, 1] for every all_tf model."""
    try:
        from all_tf.models import expected_input_range

        lo, hi = expected_input_range(model)
        return [float(lo), float(hi)]
    except Exception:  # a foreign model without the InputScaling layer
        return [0.0, 1.0]


def export_metadata(cfg: Config, threshold: float, **extra: Any) -> dict[str, Any]:
    """The description stored beside every exported model (JSON-serialisable)."""
    return {
        "format": METADATA_FORMAT,
        "all_tf_version": __version__,
        "class_names": list(CLASS_NAMES),
        "uncertainty_threshold": float(threshold),
        "temperature": float(cfg.temperature),
        "tta": bool(cfg.tta),
        "uncertainty_rule": "probabilities = softmax(log(p) / temperature), p = the model "
                            "output, or its mean over the 8 flips and 90-degree rotations of "
                            "the input when tta is true (averaged first, then the "
                            "temperature); uncertain = max(probabilities) < "
                            "uncertainty_threshold, or, when gate.colour_check is present, its "
                            "class differs from argmax(probabilities) (class = argmax((h - mean)"
                            " / scale @ coef.T + intercept), h = the 3 x 32-bin RGB histograms, "
                            "each summing to 1, of the image resized to gate_size with its label "
                            "corner masked)",
        "preprocessing": dataclasses.asdict(cfg.preprocess),
        "segmentation": dataclasses.asdict(cfg.segmentation),
        "model": dataclasses.asdict(cfg.model),
        **extra,
    }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read an export metadata JSON; raise ValueError naming the file if it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read export metadata ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != METADATA_FORMAT:
        raise ValueError(f"{path}: not an all_tf export metadata file")
    return doc


def config_from_metadata(doc: dict[str, Any]) -> Config:
    """Rebuild the Config parts that inference needs from export metadata."""
    return Config.from_dict(
        {"preprocess": doc["preprocessing"], "segmentation": doc.get("segmentation", {}),
         "uncertainty_threshold": doc.get("uncertainty_threshold", DEFAULT_THRESHOLD),
         "temperature": doc.get("temperature", 1.0), "tta": doc.get("tta", False)}
    )


def check_input_range(x, value_range=(0.0, 1.0), tolerance: float = 1e-4, name: str = "input"):
    """Raise ValueError if float pixels ``x`` leave the model's value range.

    This is the check that catches an app feeding ``(x - 128) / 128`` (range [-1, 1]) to a model
    trained on ``x / 255`` ([0, 1]), or raw 0-255 pixels.
    """
    import numpy as np

    lo, hi = float(value_range[0]), float(value_range[1])
    x = np.asarray(x)
    if x.size == 0:
        return x
    xmin, xmax = float(x.min()), float(x.max())
    if xmin < lo - tolerance or xmax > hi + tolerance:
        hint = ""
        if xmin < 0 <= lo:
            hint = " (negative values: was it scaled as (x - 128) / 128 instead of x / 255?)"
        elif xmax > 1.5 and hi <= 1:
            hint = " (values above 1: raw 0-255 pixels instead of x / 255?)"
        raise ValueError(
            f"{name}: values in [{xmin:.4g}, {xmax:.4g}] but the model takes [{lo}, {hi}]{hint}"
        )
    return x


def find_saved_model(path: str | os.PathLike) -> Path:
    """A SavedModel folder: ``path`` itself, or its highest numeric version (TF Serving layout).

    Raises:
        FileNotFoundError: no ``saved_model.pb`` there.
    """
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(
        (int(p.name), p) for p in path.glob("*") if p.name.isdigit() and (p / "saved_model.pb").is_file()
    )
    if versions:
        return versions[-1][1]
    raise FileNotFoundError(f"{path}: no saved_model.pb here or in a numeric version folder")
