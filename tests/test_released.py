"""Released models: the keras form (``light``) and the float16-parts form for big models.

The parts tests use an untrained MobileNetV3-Small at 32 px (quick preset) with randomly
perturbed weights, so its probabilities differ per input, and a part limit just above its
largest array so the weights are split over many parts.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    """(model, config, inputs float32 (6, 32, 32, 3) in [0, 1])."""
    keras = pytest.importorskip("keras")
    from all_tf.config import Config
    from all_tf.models import build_from_config

    cfg = Config.preset("quick")
    cfg.preprocess.image_size = 32
    cfg.model.name = "mobilenetv3small"
    keras.utils.set_random_seed(0)
    model = build_from_config(cfg)
    rng = np.random.default_rng(0)
    for w in model.weights:  # fresh weights give 0.25 everywhere; these give varied answers
        v = w.numpy()
        v = rng.uniform(0.5, 1.5, v.shape) if w.path.endswith("moving_variance") \
            else v + rng.normal(0, 0.2, v.shape)
        w.assign(v.astype(np.float32))
    x = rng.uniform(0, 1, (6, 32, 32, 3)).astype(np.float32)
    return model, cfg, x


def _release(tmp_path, monkeypatch, model, cfg, part_bytes):
    from all_tf.models import released

    folder = tmp_path / "saved_models" / "tiny_parts"
    parts = released.write_weight_parts(model, folder, part_bytes=part_bytes)
    cfg.save(folder / "config.json")
    released.write_checksums(folder)
    monkeypatch.setattr(released, "SAVED_MODELS", tmp_path / "saved_models")
    monkeypatch.setitem(released.RELEASED, "tiny", "tiny_parts")
    monkeypatch.setenv("ALL_TF_CACHE_DIR", str(tmp_path / "cache"))
    return folder, parts


def test_parts_release_reloads_as_the_float16_rounded_model(tiny, tmp_path, monkeypatch):
    import json

    import keras

    from all_tf.models import released
    from all_tf.predict import resolve_model

    model, cfg, x = tiny
    largest = max(w.numpy().astype(np.float16).nbytes for w in model.weights)
    limit = largest + 4096
    folder, parts = _release(tmp_path, monkeypatch, model, cfg, limit)
    assert len(parts) >= 3 and all(p.stat().st_size <= limit for p in parts)
    manifest = json.loads((folder / released.MANIFEST_FILE).read_text())
    assert [e["name"] for e in manifest["weights"]] == [w.path for w in model.weights]
    assert {e["stored"] for e in manifest["weights"]} == {"float16"}
    sums = (folder / released.CHECKSUM_FILE).read_text()
    assert all(p.name in sums for p in parts) and released.MANIFEST_FILE in sums

    p32 = model.predict(x, verbose=0)
    rounded = keras.models.clone_model(model)
    rounded.set_weights([w.astype(np.float16).astype(np.float32) for w in model.get_weights()])
    p16 = rounded.predict(x, verbose=0)
    assert np.abs(p32 - p16).max() > 0  # the rounding is visible, so the check below bites
    loaded, loaded_cfg = released.load_released("tiny")
    assert loaded_cfg == cfg and released.weights_format(folder) == "float16-parts"
    assert all(w.dtype == "float32" for w in loaded.weights)
    p = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(p, p16, atol=1e-6)
    assert np.abs(p - p32).max() < 1e-2 and (p.argmax(1) == p32.argmax(1)).all()

    path = released.released_model_path("tiny")
    assert path.suffix == ".keras" and (path.parent / "config.json").is_file()
    assert path.is_relative_to(tmp_path / "cache")
    assert resolve_model("tiny", ()) == (str(path), ())  # cached: not rebuilt
    np.testing.assert_allclose(keras.saving.load_model(path, compile=False).predict(x, verbose=0),
                               p, atol=1e-6)


def test_corrupt_part_and_too_small_limit_are_clear_errors(tiny, tmp_path, monkeypatch):
    from all_tf.models import released

    model, cfg, _ = tiny
    largest = max(w.numpy().astype(np.float16).nbytes for w in model.weights)
    with pytest.raises(ValueError, match="more than one part may hold"):
        released.write_weight_parts(model, tmp_path / "small", part_bytes=largest)
    _, parts = _release(tmp_path, monkeypatch, model, cfg, largest + 4096)
    data = bytearray(parts[1].read_bytes())
    data[-200] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    with pytest.raises(released.ReleasedModelError, match=f"{parts[1].name}: SHA-256 differs"):
        released.load_released("tiny")
    parts[1].unlink()
    with pytest.raises(released.ReleasedModelError, match=f"{parts[1].name}: listed in"):
        released.released_model_path("tiny")


def test_light_release_keeps_the_keras_form(tmp_path):
    from all_tf.models import released

    folder = released.released_dir("light")
    assert released.weights_format(folder) == "keras"
    assert released.released_model_path("light") == folder / "model.keras"
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    released.write_checksums(copy)  # the default file list gives the shipped SHA256SUMS
    assert (copy / "SHA256SUMS").read_bytes() == (folder / "SHA256SUMS").read_bytes()
    with (copy / "SHA256SUMS").open("a") as f:
        f.write("not-a-checksum-line\n")
    with pytest.raises(released.ReleasedModelError, match=r"SHA256SUMS: line \d+ is not"):
        released.verify_checksums(copy)


def _run_from_the_light_release(run_dir):
    """A finished run folder (checkpoints/best.keras) holding the light release's files."""
    from all_tf.models import released

    shutil.copytree(released.released_dir("light"), run_dir)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "model.keras").rename(run_dir / "checkpoints" / "best.keras")
    return run_dir


@pytest.mark.slow
def test_release_script_writes_and_checks_float16_parts(tmp_path):
    """all-tf release --weights-format float16-parts on a run made from the light release."""
    from click.testing import CliRunner

    from all_tf.cli.main import main
    from all_tf.models import released

    run_dir = _run_from_the_light_release(tmp_path / "run")

    result = CliRunner().invoke(main, ["release", str(run_dir), "--name", "light_parts", "-o",
                                              str(tmp_path / "out"), "--tta",
                                              "--weights-format", "float16-parts"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "light_parts"
    assert "same class 8/8" in result.output and not (out / "model.keras").exists()
    assert released.weights_format(out) == "float16-parts" and released.weight_parts(out)
    model, cfg = released.load_release(out)
    assert model.output_shape == (None, 4) and cfg.tta


def test_release_of_an_unfinished_or_invalid_run_changes_nothing(tmp_path):
    from click.testing import CliRunner

    from all_tf.cli.main import main
    from all_tf.config import Config
    from all_tf.models import released

    light = released.released_dir("light")
    run_dir = _run_from_the_light_release(tmp_path / "run")
    (run_dir / "metrics.json").unlink()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["release", str(run_dir), "--name", "x", "-o", str(out)])
    assert result.exit_code != 0 and "not a finished run (missing metrics.json)" in result.output
    # --tta on a crop run is refused before the run's config is touched
    shutil.copy2(light / "metrics.json", run_dir / "metrics.json")
    Config.load(run_dir / "config.json").override({"tta": False, "preprocess.input_mode": "crops"}
                                                  ).save(run_dir / "config.json")
    crops_config = (run_dir / "config.json").read_bytes()
    result = CliRunner().invoke(main, ["release", str(run_dir), "--name", "x", "-o", str(out),
                                       "--tta"])
    assert result.exit_code != 0 and "tta averages views of a whole field" in result.output
    assert (run_dir / "config.json").read_bytes() == crops_config
    assert (run_dir / "gate.json").read_bytes() == before["gate.json"] and not out.exists()
