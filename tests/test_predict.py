"""``python -m all_tf.predict`` through the .keras, SavedModel and TFLite backends."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from click.testing import CliRunner  # noqa: E402
from deploy_helpers import (  # noqa: E402
    REPO,
    SAMPLE_ALL4,
    make_tiny_run,
    quiet_env,
    write_bad_images,
)

from all_tf import CLASS_NAMES  # noqa: E402
from all_tf.predict import COLUMNS, PROB_COLUMNS, main  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from all_tf.cli.export import main as export_main

    run_dir, cfg, split = make_tiny_run(tmp_path_factory.mktemp("run"))
    result = CliRunner().invoke(export_main, [str(run_dir), "--no-verify"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir


def backends(run_dir):
    export = run_dir / "export"
    return {
        "run_dir": run_dir,
        "keras_file": run_dir / "checkpoints" / "best.keras",
        "savedmodel": export / "serving" / "all_tf",
        **{f"tflite_{v}": export / "tflite" / f"all_tf_{v}.tflite"
           for v in ("float32", "float16", "dynamic_int8", "int8")},
    }


def predict(args, tmp_path, name="out.csv"):
    out = tmp_path / name
    result = CliRunner().invoke(main, [*map(str, args), "-o", str(out), "--no-progress"],
                                catch_exceptions=False)
    return result, out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sample_predictions(run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preds")
    rows = {}
    for name, model in backends(run).items():
        result, out = predict([model, SAMPLE_ALL4], tmp, f"{name}.csv")
        assert result.exit_code == 0, result.output
        rows[name] = read_csv(out)
    return rows


def probs(rows):
    return np.array([[float(r[c]) for c in PROB_COLUMNS] for r in rows])


def test_every_backend_predicts_the_shipped_sample(sample_predictions):
    for name, rows in sample_predictions.items():
        assert len(rows) == 48, name
        assert list(rows[0]) == COLUMNS
        assert all(r["error"] == "" for r in rows), name
        assert all(r["class"] in CLASS_NAMES for r in rows)
        p = probs(rows)
        np.testing.assert_allclose(p.sum(1), 1.0, atol=0.02)
        conf = np.array([float(r["confidence"]) for r in rows])
        np.testing.assert_allclose(conf, p.max(1))
        assert [r["uncertain"] for r in rows] == [str(c < 0.7) for c in conf]
    # nuclei are counted on the decoded image, whatever the backend: the same on every one
    counts = {name: [r["nuclei"] for r in rows] for name, rows in sample_predictions.items()}
    assert len({tuple(c) for c in counts.values()}) == 1, counts
    # the sample's fields all contain stained nuclei
    assert np.mean([int(r["nuclei"]) > 0 for r in sample_predictions["keras_file"]]) > 0.9


def test_backends_agree(sample_predictions):
    ref = probs(sample_predictions["keras_file"])
    np.testing.assert_allclose(probs(sample_predictions["run_dir"]), ref, atol=1e-6)
    np.testing.assert_allclose(probs(sample_predictions["savedmodel"]), ref, atol=1e-5)
    np.testing.assert_allclose(probs(sample_predictions["tflite_float32"]), ref, atol=1e-5)
    np.testing.assert_allclose(probs(sample_predictions["tflite_float16"]), ref, atol=5e-3)
    for name in ("tflite_dynamic_int8", "tflite_int8"):
        p = probs(sample_predictions[name])
        assert np.mean(p.argmax(1) == ref.argmax(1)) >= 0.9, name
        assert np.abs(p - ref).max() < 0.1, name
    nuclei = [r["nuclei"] for r in sample_predictions["keras_file"]]
    assert all([r["nuclei"] for r in rows] == nuclei for rows in sample_predictions.values())


@pytest.mark.parametrize("backend", ["keras_file", "savedmodel", "tflite_int8"])
def test_bad_files_become_rows_and_the_rest_is_processed(run, tmp_path, backend):
    folder = tmp_path / "mixed"
    files = write_bad_images(folder)
    for p in sorted((SAMPLE_ALL4 / "Pro").glob("*.jpg"))[:2]:
        shutil.copy(p, folder / p.name)
    result, out = predict([backends(run)[backend], folder, tmp_path / "missing.jpg"], tmp_path)
    assert result.exit_code == 0, result.output
    rows = {r["file"].split("/")[-1]: r for r in read_csv(out)}
    assert len(rows) == 9
    assert "not a recognised image format" in rows[files["not_image"].name]["error"]
    assert "empty file" in rows[files["empty"].name]["error"]
    assert "too small" in rows[files["one_px"].name]["error"]
    assert "too large" in rows[files["huge"].name]["error"]
    assert "cannot read file" in rows["missing.jpg"]["error"]
    for name in (files["gray"].name, files["rgba"].name, "WBC-Malignant-Pro-001.jpg"):
        assert rows[name]["error"] == "" and rows[name]["class"] in CLASS_NAMES, rows[name]
    assert "9 images, 5 errors" in result.output


def test_all_inputs_bad_exits_nonzero(run, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"nope")
    result, out = predict([backends(run)["keras_file"], tmp_path / "a.jpg"], tmp_path)
    assert result.exit_code == 1
    assert read_csv(out)[0]["error"]


def test_json_output_and_overlays(run, tmp_path):
    overlays = tmp_path / "overlays"
    files = sorted((SAMPLE_ALL4 / "Early").glob("*.jpg"))[:3]
    result, out = predict([backends(run)["tflite_float32"], *files, "--overlays", overlays,
                           "--threshold", "0.99"], tmp_path, "out.json")
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert all(r["uncertain"] is True for r in rows)  # nothing reaches 0.99 on this tiny model
    import cv2

    for f, r in zip(files, rows, strict=True):
        png = cv2.cvtColor(cv2.imread(str(overlays / f"{f.stem}.png")), cv2.COLOR_BGR2RGB)
        assert png.shape == (224, 224, 3)
        green = (png[..., 1] == 255) & (png[..., 0] == 0) & (png[..., 2] == 0)
        assert green.any() == (r["nuclei"] > 0)


def test_crop_mode_averages_crop_probabilities(run, tmp_path):
    from all_tf.config import Config
    from all_tf.io import read_image
    from all_tf.predict import load_backend
    from all_tf.preprocessing import preprocess_image
    from all_tf.segmentation import nucleus_crops, segment_nuclei

    cfg = Config.load(run / "config.json")
    cfg.preprocess.input_mode = "crops"
    cfg.preprocess.max_crops = 3
    cfg_path = tmp_path / "crops.json"
    cfg.save(cfg_path)
    image = sorted((SAMPLE_ALL4 / "Benign").glob("*.jpg"))[0]
    result, out = predict([backends(run)["keras_file"], image, "--config", cfg_path], tmp_path)
    assert result.exit_code == 0, result.output
    (row,) = read_csv(out)
    rgb = read_image(image)
    crops = nucleus_crops(rgb, segment_nuclei(rgb, cfg.segmentation), size=64, margin=8,
                          max_crops=3).crops
    backend = load_backend(backends(run)["keras_file"], cfg_path)
    expected = backend.predict(np.stack([preprocess_image(c, cfg.preprocess) for c in crops]))
    np.testing.assert_allclose([float(row[c]) for c in PROB_COLUMNS], expected.mean(0), atol=1e-5)


def test_batch_size_does_not_change_results(run, tmp_path):
    files = sorted((SAMPLE_ALL4 / "Pre").glob("*.jpg"))[:5]
    _, a = predict([backends(run)["keras_file"], *files, "--batch-size", "1"], tmp_path, "a.csv")
    _, b = predict([backends(run)["keras_file"], *files, "--batch-size", "16"], tmp_path, "b.csv")
    np.testing.assert_allclose(probs(read_csv(a)), probs(read_csv(b)), atol=1e-5)


def test_bad_model_path_is_a_clear_error(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    result = CliRunner().invoke(main, [str(tmp_path / "m.tflite"), str(SAMPLE_ALL4)])
    assert result.exit_code != 0 and "metadata m.json not found" in result.output
    result = CliRunner().invoke(main, ["--model", str(tmp_path), str(SAMPLE_ALL4)])
    assert result.exit_code != 0 and "no saved_model.pb" in result.output
    result = CliRunner().invoke(main, ["--model", "heavy", str(SAMPLE_ALL4)])
    assert result.exit_code != 0 and "not a released model (released: light, paper)" in result.output


def test_help():
    proc = subprocess.run([sys.executable, "-m", "all_tf.predict", "--help"], capture_output=True,
                          text=True, env=quiet_env(), timeout=120)
    assert proc.returncode == 0 and "MODEL" in proc.stdout


# What each released model made of the 48 sample images when it was released: a guard against
# preprocessing or gate changes that silently alter a shipped model's answers.
RELEASED_ON_SAMPLE = {"mobilenetv3small_all4": {"ok": 48, "rejected": 0, "correct": 48},
                      "efficientnetv2s_cbam_all4": {"ok": 47, "rejected": 0, "correct": 48}}


def _released_names():
    """Every released name; the big ones (float16 parts, a minute on 2 cores) marked slow."""
    from all_tf.models.released import RELEASED, SAVED_MODELS, weights_format

    return [pytest.param(name, marks=pytest.mark.slow)
            if weights_format(SAVED_MODELS / RELEASED[name]) == "float16-parts" else name
            for name in sorted(RELEASED)]


@pytest.mark.parametrize("name", _released_names())
def test_shipped_model_still_classifies_the_sample(name):
    from all_tf.models.released import RELEASED, released_model_path
    from all_tf.predict import load_backend, predict_files

    backend = load_backend(released_model_path(name))
    rows = predict_files(backend, [SAMPLE_ALL4], progress=False)
    assert len(rows) == 48
    answered = [r for r in rows if r["class"]]
    correct = sum(Path(r["file"]).parent.name == r["class"] for r in answered)
    counts = {"ok": sum(r["status"] == "ok" for r in rows),
              "rejected": sum(r["status"].startswith("rejected") for r in rows),
              "correct": correct}
    assert counts == RELEASED_ON_SAMPLE[RELEASED[name]]


def test_released_model_loads_by_name_and_refuses_a_changed_file(tmp_path, monkeypatch):
    import shutil

    from all_tf.models import released

    model, cfg = released.load_released("light")
    assert model.output_shape == (None, 4) and cfg.tta and cfg.preprocess.mask_label_corner
    copy = tmp_path / "saved_models"
    shutil.copytree(REPO / "saved_models", copy)
    monkeypatch.setattr(released, "SAVED_MODELS", copy)
    released.released_dir("light")
    with open(copy / "mobilenetv3small_all4" / "gate.json", "a") as f:
        f.write(" ")
    with pytest.raises(released.ReleasedModelError, match="SHA-256 differs"):
        released.released_dir("light")


def test_failure_inside_segmentation_is_a_row_and_the_rest_goes_on(run, tmp_path, monkeypatch):
    import cv2

    import all_tf.segmentation as segmentation

    files = sorted((SAMPLE_ALL4 / "Pro").glob("*.jpg"))[:3]
    real = segmentation.segment_nuclei

    def segment_or_fail(rgb, cfg):
        if segment_or_fail.calls == 1:  # the second file
            segment_or_fail.calls += 1
            raise cv2.error("simulated OpenCV failure")
        segment_or_fail.calls += 1
        return real(rgb, cfg)

    segment_or_fail.calls = 0
    monkeypatch.setattr(segmentation, "segment_nuclei", segment_or_fail)
    result, out = predict([backends(run)["keras_file"], *files], tmp_path)
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [r["status"] for r in rows][1] == "error"
    assert rows[1]["error"].startswith(f"{files[1]}: error: ") and "simulated" in rows[1]["error"]
    assert rows[0]["class"] and rows[2]["class"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_interrupted_run_resumes_where_it_stopped(run, tmp_path, monkeypatch, fmt):
    from all_tf.inference import predictor

    real = predictor.iter_predictions
    predicted = []

    def counted(*args, **kwargs):
        for row in real(*args, **kwargs):
            predicted.append(row["file"])
            if counted.fail_at == len(predicted):
                raise RuntimeError("killed")
            yield row

    monkeypatch.setattr(predictor, "iter_predictions", counted)
    files = sorted((SAMPLE_ALL4 / "Early").glob("*.jpg"))[:5]
    out = tmp_path / f"out.{fmt}"
    args = [str(backends(run)["keras_file"]), *map(str, files), "-o", str(out),
            "--batch-size", "1", "--no-progress"]
    counted.fail_at = 3  # two rows written, the third batch interrupted
    result = CliRunner().invoke(main, args)
    assert isinstance(result.exception, RuntimeError) and not out.exists()
    partial = tmp_path / f"out.{fmt}.partial"
    assert "stopped after 2 images; rerun the same command to resume" in result.output
    lines = partial.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[1])["file"] == str(files[0])

    predicted.clear()
    counted.fail_at = None
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "resuming: 2 images already done" in result.output
    assert predicted == [str(f) for f in files[2:]]  # only what was not done
    assert not partial.exists()
    rows = read_csv(out) if fmt == "csv" else json.loads(out.read_text())
    fresh, _ = predict([backends(run)["keras_file"], *files], tmp_path, f"fresh.{fmt}")
    expected = read_csv(tmp_path / f"fresh.{fmt}") if fmt == "csv" \
        else json.loads((tmp_path / f"fresh.{fmt}").read_text())
    assert rows == expected  # the same rows, in the same order, as an uninterrupted run


def test_partial_rows_of_another_model_are_not_reused(tmp_path):
    from all_tf.inference.partial_rows import PartialRows

    path = tmp_path / "p.csv.partial"
    with PartialRows(path, "a.keras", None, 0.7).start([]) as rows:
        rows.write({"file": "x.png", "error": ""})
        rows.write({"file": "y.png", "error": ""})
    with open(path, "a") as f:
        f.write('{"file": "z.p')  # a line cut by a crash
    assert [r["file"] for r in PartialRows(path, "a.keras", None, 0.7).load()] == ["x.png", "y.png"]
    assert PartialRows(path, "a.keras", None, 0.8).load() == []  # another threshold
    assert PartialRows(path, "a.keras", "other.json", 0.7).load() == []  # another config


def test_rows_come_in_input_order_as_batches_finish(run):
    from all_tf.inference.predictor import iter_predictions
    from all_tf.predict import load_backend

    files = sorted((SAMPLE_ALL4 / "Benign").glob("*.jpg"))[:3]
    items = [str(files[0]), "missing.jpg", *map(str, files[1:])]
    rows = iter_predictions(load_backend(backends(run)["keras_file"]), items, batch_size=1,
                            progress=False)
    first = next(rows)  # available before the later files are read
    assert first["file"] == items[0] and first["class"] in CLASS_NAMES
    assert [r["file"] for r in rows] == items[1:]


def test_folder_without_images_is_an_error(run, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    result, out = predict([backends(run)["keras_file"], tmp_path / "empty"], tmp_path)
    assert result.exit_code == 1 and "no images found in" in result.output
    assert not out.exists() and not (tmp_path / "out.csv.partial").exists()


def test_release_folder_path_is_a_model(tmp_path):
    from all_tf.models.released import RELEASED, SAVED_MODELS

    image = sorted((SAMPLE_ALL4 / "Pre").glob("*.jpg"))[0]
    result, out = predict(["--model", SAVED_MODELS / RELEASED["light"], image], tmp_path)
    assert result.exit_code == 0, result.output
    (row,) = read_csv(out)
    assert row["class"] == "Pre" and "model.keras" in result.output


def test_tflite_without_litert_says_which_extra_to_install(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    image = sorted((SAMPLE_ALL4 / "Pre").glob("*.jpg"))[0]
    result, _ = predict(["--model", backends(run)["tflite_float32"], image], tmp_path)
    assert result.exit_code == 1 and "install all_tf[edge]" in result.output


def test_a_mixed_bfloat16_keras_file_is_predicted_in_float32(tmp_path):
    """The Keras backend computes like the exports: float32, whatever the training policy."""
    import keras

    from all_tf.config import Config
    from all_tf.inference.model_files import to_float32
    from all_tf.inference.predictor import load_backend
    from all_tf.models import InputScaling

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        inp = keras.Input((32, 32, 3))
        h = InputScaling("tf")(inp)
        h = keras.layers.Conv2D(8, 3, strides=2, padding="same")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inp, keras.layers.Dense(4, activation="softmax", dtype="float32")(h))
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    folder = tmp_path / "release"
    folder.mkdir()
    model.save(folder / "model.keras")
    cfg = Config()
    cfg.preprocess.image_size = 32
    cfg.save(folder / "config.json")

    backend = load_backend(folder / "model.keras")
    x = np.random.default_rng(0).random((3, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(backend.predict(x), to_float32(model).predict(x, verbose=0),
                               atol=1e-6)
    assert np.abs(backend.predict(x) - model.predict(x, verbose=0)).max() > 1e-5  # bf16 differs


def test_a_failing_batch_is_retried_one_image_at_a_time(run):
    from all_tf.inference.predictor import iter_predictions
    from all_tf.predict import load_backend

    backend = load_backend(backends(run)["keras_file"])
    files = sorted((SAMPLE_ALL4 / "Early").glob("*.jpg"))[:3]
    real, calls = backend.predict_fn, []

    def fail_on_the_batch_and_the_second_file(x):
        calls.append(len(x))
        if len(calls) in (1, 3):  # the batch of three, then files 1, 2 (fails), 3 alone
            raise RuntimeError("simulated delegate failure")
        return real(x)

    backend.predict_fn = fail_on_the_batch_and_the_second_file
    backend.features_fn = None
    rows = list(iter_predictions(backend, [str(f) for f in files], progress=False))
    assert len(calls) == 4
    assert [r["status"] == "error" for r in rows] == [False, True, False]
    assert rows[1]["error"] == f"{files[1]}: RuntimeError: simulated delegate failure"
    assert rows[0]["class"] in CLASS_NAMES and rows[2]["class"] in CLASS_NAMES


def test_an_overlay_that_cannot_be_written_keeps_the_prediction(run, tmp_path):
    from all_tf.inference.predictor import iter_predictions
    from all_tf.predict import load_backend

    not_a_folder = tmp_path / "overlays"
    not_a_folder.write_text("a file where the overlay folder should be")
    files = sorted((SAMPLE_ALL4 / "Pre").glob("*.jpg"))[:2]
    rows = list(iter_predictions(load_backend(backends(run)["keras_file"]),
                                 [str(f) for f in files], overlay_dir=not_a_folder,
                                 progress=False))
    for f, row in zip(files, rows, strict=True):
        assert row["class"] in CLASS_NAMES and row["status"] != "error"
        assert row["error"].startswith(f"{f}: overlay {f.stem}.png not written: ")


def test_a_config_without_a_threshold_keeps_the_exported_one(tmp_path):
    from all_tf.config import Config
    from all_tf.inference.predictor import _threshold

    meta = {"uncertainty_threshold": 0.9}
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"tta": False}))
    assert _threshold(Config.load(partial), meta, partial) == 0.9
    full = tmp_path / "full.json"
    Config.load(partial).override({"uncertainty_threshold": 0.6}).save(full)
    assert _threshold(Config.load(full), meta, full) == 0.6
    assert _threshold(Config.load(full), meta, None) == 0.9


def test_a_config_file_of_another_size_is_refused_not_resized(run, tmp_path):
    from all_tf.config import Config
    from all_tf.predict import load_backend

    other = tmp_path / "other_run.json"
    Config.load(run / "config.json").override({"preprocess.image_size": 224}).save(other)
    with pytest.raises(ValueError, match="image_size 224 does not match"):
        load_backend(backends(run)["keras_file"], other)


def test_crop_mode_with_the_label_corner_hidden_sees_the_training_crops(run, tmp_path):
    from all_tf.config import Config
    from all_tf.data.inputs import inputs_for_image
    from all_tf.inference.predictor import iter_predictions
    from all_tf.io import read_image
    from all_tf.predict import load_backend

    cfg = Config.load(run / "config.json").override({
        "preprocess.input_mode": "crops", "preprocess.max_crops": 3,
        "preprocess.mask_label_corner": True})
    cfg_path = tmp_path / "crops.json"
    cfg.save(cfg_path)
    backend = load_backend(backends(run)["keras_file"], cfg_path)
    seen = []
    real = backend.predict_fn
    backend.predict_fn = lambda x: (seen.append(np.array(x)), real(x))[1]
    backend.features_fn = None
    image = sorted((SAMPLE_ALL4 / "Benign").glob("*.jpg"))[0]
    list(iter_predictions(backend, [str(image)], progress=False))
    np.testing.assert_array_equal(seen[0], inputs_for_image(read_image(image), cfg))


def test_overlay_names_of_shared_stems_do_not_depend_on_what_a_resumed_run_still_does(
        run, tmp_path):
    import shutil

    from all_tf.inference.predictor import iter_predictions, overlay_file_names
    from all_tf.predict import load_backend

    source = sorted((SAMPLE_ALL4 / "Pre").glob("*.jpg"))[0]
    files = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        files.append(str(shutil.copy(source, tmp_path / folder / "x.jpg")))
    names = overlay_file_names(files)
    assert len(set(names.values())) == 2 and all(n.startswith("x_") for n in names.values())
    assert overlay_file_names([files[1]]) == {files[1]: "x"}  # a unique stem keeps its name
    backend = load_backend(backends(run)["keras_file"])
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    # the second file alone, as a resumed run that had done the first one would see it
    list(iter_predictions(backend, files[1:], overlays, progress=False, overlay_names=names))
    list(iter_predictions(backend, files[:1], overlays, progress=False, overlay_names=names))
    assert sorted(p.stem for p in overlays.iterdir()) == sorted(names.values())


def test_a_resumed_predict_run_keeps_every_overlay(run, tmp_path, monkeypatch):
    """Interrupted after its first image and run again, predict_to_file leaves one overlay
    per image, even for two images of one name."""
    import shutil

    from all_tf.inference import predictor
    from all_tf.predict import load_backend

    source = sorted((SAMPLE_ALL4 / "Pre").glob("*.jpg"))[0]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "x.jpg")
    inputs = [str(tmp_path / "a"), str(tmp_path / "b")]
    backend = load_backend(backends(run)["keras_file"])
    overlays, output = tmp_path / "overlays", tmp_path / "p.csv"
    overlays.mkdir()
    real = predictor.iter_predictions

    def first_only(*args, **kwargs):
        yield next(real(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(predictor, "iter_predictions", first_only)
    with pytest.raises(KeyboardInterrupt):
        predictor.predict_to_file(backend, inputs, output, overlays=overlays, batch_size=1,
                                  progress=False, echo=lambda m: None)
    assert len(list(overlays.iterdir())) == 1
    monkeypatch.setattr(predictor, "iter_predictions", real)
    said = []
    rows = predictor.predict_to_file(backend, inputs, output, overlays=overlays, batch_size=1,
                                     progress=False, echo=said.append)
    assert any(m.startswith("resuming: 1 images") for m in said), said
    assert len(rows) == 2 and not any(r["error"] for r in rows)
    files = [r["file"] for r in rows]
    assert sorted(p.stem for p in overlays.iterdir()) == \
        sorted(predictor.overlay_file_names(files).values())
