"""Shared test helpers: Keras serialisation round trips, scripts' Click commands."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_layer_roundtrip(layer, x, atol: float = 1e-6):
    """Assert ``layer.__class__.from_config(layer.get_config())`` reproduces ``layer(x)``.

    The copy is built on ``x`` and given the original's weights before comparing.

    Returns:
        The rebuilt layer.
    """
    expected = keras.ops.convert_to_numpy(layer(x))
    clone = layer.__class__.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), expected, atol=atol)
    assert clone.get_config() == layer.get_config()
    return clone


def run_keras_save_roundtrip(model, x, tmp_path, atol: float = 0.0):
    """Save ``model`` as ``.keras`` under ``tmp_path``, reload, assert identical outputs on ``x``.

    Returns:
        The reloaded model.
    """
    path = tmp_path / f"{model.name}.keras"
    expected = keras.ops.convert_to_numpy(model(x, training=False))  # eager: no graph trace
    model.save(path)
    reloaded = keras.saving.load_model(path)
    got = keras.ops.convert_to_numpy(reloaded(x, training=False))
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    return reloaded


def test_part_accuracy(run_dir) -> float:
    """Accuracy of a run's test part recomputed from its ``predictions.csv`` (argmax)."""
    import csv
    from pathlib import Path

    from all_tf import CLASS_NAMES

    with open(Path(run_dir) / "predictions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["part"] == "test"]
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    return float(np.mean(probs.argmax(1) == labels))


test_part_accuracy.__test__ = False  # a helper, not a test


def script_module(name: str):
    """The module ``scripts/<name>.py``, loaded without running it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"all_tf_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_command(name: str):
    """The Click command ``main`` of ``scripts/<name>.py``, loaded without running it."""
    return script_module(name).main
