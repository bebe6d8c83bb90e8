"""Export: in-graph preprocessing parity, SavedModel signatures, TFLite variants and parity.

One tiny CBAM model (tests/deploy_helpers.py) is trained on the shipped sample and exported to
every format once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from deploy_helpers import (  # noqa: E402
    SAMPLE_ALL4,
    TINY_SIZE,
    constant_png,
    decode_rest_body,
    make_tiny_run,
    png_bytes,
    quiet_env,
    rest_body,
)

from all_tf import CLASS_NAMES  # noqa: E402
from all_tf.config import PreprocessConfig  # noqa: E402
from all_tf.io import read_image  # noqa: E402
from all_tf.preprocessing import fit_reinhard_target, preprocess_image  # noqa: E402

SAMPLE_FILES = sorted(SAMPLE_ALL4.glob("*/*.jpg"))


@pytest.fixture(scope="module")
def sample_images():
    return [read_image(p) for p in SAMPLE_FILES]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def exported(run):
    from click.testing import CliRunner

    from all_tf.cli.export import main

    run_dir, _, _ = run
    formats = "savedmodel,float32,float16,dynamic_int8,int8,int16x8"
    result = CliRunner().invoke(main, [str(run_dir), "--timing-threads", "1", "--formats", formats],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run_dir / "export"


@pytest.fixture(scope="module")
def keras_model(run):
    from all_tf.inference.model_files import load_keras_model

    return load_keras_model(run[0] / "checkpoints" / "best.keras")


@pytest.fixture(scope="module")
def serving(exported):
    loaded = tf.saved_model.load(str(exported / "serving" / "all_tf" / "1"))
    return loaded


# ------------------------------------------------------------------ graph preprocessing parity
def test_lab_conversions_bit_exact_with_opencv():
    import cv2

    from all_tf.export.graph_preprocessing import lab8_to_rgb, rgb_to_lab8

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)  # 262k random colours
    x[0, :256, :] = np.arange(256, dtype=np.uint8)[:, None]  # and the grey ramp
    np.testing.assert_array_equal(rgb_to_lab8(tf.constant(x)).numpy(), cv2.cvtColor(x, cv2.COLOR_RGB2LAB))
    np.testing.assert_array_equal(lab8_to_rgb(tf.constant(x)).numpy(), cv2.cvtColor(x, cv2.COLOR_LAB2RGB))


@pytest.mark.parametrize("shape", [(224, 224), (96, 96), (100, 77)])
@pytest.mark.parametrize("clip", [2.0, 4.0])
def test_clahe_bit_exact_with_opencv(sample_images, shape, clip):
    import cv2

    from all_tf.export.graph_preprocessing import clahe_uint8

    for rgb in sample_images[::12]:
        L = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0], shape[::-1],
                       interpolation=cv2.INTER_AREA)
        expected = cv2.createCLAHE(clip, (8, 8)).apply(L)
        np.testing.assert_array_equal(clahe_uint8(tf.constant(L), clip, 8).numpy(), expected)


# Measured on the 48 shipped images at 224 px with CLAHE + Reinhard (see docs/deployment.md):
# rgb 0, hsv and hed 1.2e-7 (float rounding); lab 0.0018 (OpenCV's float Lab interpolates a
# 33^3 table, the graph uses the exact formulas).
PARITY_TOLERANCE = {"rgb": 1e-6, "hsv": 1e-6, "hed": 1e-6, "lab": 0.0025}


@pytest.mark.parametrize("space", ["rgb", "hsv", "lab", "hed"])
def test_graph_preprocessing_matches_opencv_pipeline(sample_images, space):
    from all_tf.export.graph_preprocessing import preprocess_graph

    cfg = PreprocessConfig(image_size=224, colour_space=space,
                           reinhard_target=fit_reinhard_target(sample_images[::2]))
    fn = tf.function(lambda x: preprocess_graph(x, cfg))
    diffs = np.stack([np.abs(fn(tf.constant(im)).numpy() - preprocess_image(im, cfg))
                      for im in sample_images])
    assert diffs.max() <= PARITY_TOLERANCE[space], (space, diffs.max(), diffs.mean())


def test_graph_label_corner_mask_is_bit_exact(sample_images):
    from all_tf.export.graph_preprocessing import preprocess_graph

    cfg = PreprocessConfig(image_size=128, mask_label_corner=True,
                           reinhard_target=fit_reinhard_target(sample_images[::2]))
    fn = tf.function(lambda x: preprocess_graph(x, cfg))
    for im in sample_images[::4]:
        np.testing.assert_array_equal(fn(tf.constant(im)).numpy(), preprocess_image(im, cfg))


def test_graph_preprocessing_with_resizing(sample_images):
    """Resizing is not bit-exact (cv2 uses fixed-point weights): measured bounds."""
    from all_tf.export.graph_preprocessing import preprocess_graph, resize_uint8
    from all_tf.preprocessing import resize_to

    segwbc = [read_image(p) for p in sorted((SAMPLE_ALL4.parent / "segwbc" / "images").glob("*.png"))]
    # shrinking 224 -> 96 by area averaging: exact; 120 -> 224 bilinear, 300 -> 224 area: 1 level
    for rgb in sample_images[::6]:
        np.testing.assert_array_equal(resize_uint8(tf.constant(rgb), 96).numpy(), resize_to(rgb, 96))
    for rgb in segwbc:
        d = np.abs(resize_uint8(tf.constant(rgb), 224).numpy().astype(int) - resize_to(rgb, 224))
        assert d.max() <= 1
    # CLAHE amplifies those 1-level differences locally; measured max 0.047, mean < 0.003
    cfg = PreprocessConfig(image_size=224, reinhard=False)
    diffs = np.stack([np.abs(preprocess_graph(tf.constant(im), cfg).numpy()
                             - preprocess_image(im, cfg)) for im in segwbc])
    assert diffs.max() <= 0.06 and diffs.mean() <= 0.003, (diffs.max(), diffs.mean())


# ------------------------------------------------------------------ export layout and metadata
def test_export_writes_every_format(exported):
    names = sorted(p.name for p in (exported / "tflite").iterdir())
    for variant in ("float32", "float16", "dynamic_int8", "int8", "int16x8"):
        assert f"all_tf_{variant}.tflite" in names and f"all_tf_{variant}.json" in names
    assert (exported / "tflite" / "labels.txt").read_text().split() == list(CLASS_NAMES)
    version = exported / "serving" / "all_tf" / "1"
    assert (version / "saved_model.pb").is_file()
    assert (version / "assets.extra" / "all_tf_export.json").is_file()
    assert not [p for p in (exported / "serving" / "all_tf").iterdir() if p.name.startswith(".tmp")]


def test_tflite_metadata_records_range_layout_and_quantisation(exported, run):
    _, cfg, _ = run
    for variant in ("float32", "float16", "dynamic_int8", "int8"):
        meta = json.loads((exported / "tflite" / f"all_tf_{variant}.json").read_text())
        assert meta["class_names"] == list(CLASS_NAMES)
        assert meta["input"]["layout"] == "NHWC"
        assert meta["input"]["value_range"] == [0.0, 1.0]
        assert meta["input"]["shape"] == [1, TINY_SIZE, TINY_SIZE, 3]
        assert meta["uncertainty_threshold"] == cfg.uncertainty_threshold
        assert meta["preprocessing"] == json.loads(json.dumps(cfg.to_dict()["preprocess"]))
    meta = json.loads((exported / "tflite" / "all_tf_int8.json").read_text())
    q = meta["input"]["quantization"]
    assert meta["input"]["dtype"] == "int8" and meta["output"]["dtype"] == "int8"
    # calibration pinned the input range to [0, 1]: q = round(255 x) - 128
    assert q["zero_point"] == -128 and q["scale"] == pytest.approx(1 / 255, rel=1e-6)
    assert json.loads((exported / "tflite" / "all_tf_float32.json").read_text())["input"]["dtype"] == "float32"


def test_verify_report_parity(exported):
    """Every variant runs under LiteRT (XNNPACK) in its own process and agrees with Keras.

    Measured on the tiny model (14 held-out sample images): top-1 agreement 1.0 for all four;
    max |dp| float32 0, float16 0.0008, dynamic int8 0.005, int8 0.037, int16x8 0.035.
    """
    report = json.loads((exported / "verify.json").read_text())
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {"savedmodel", "float32", "float16", "dynamic_int8", "int8", "int16x8"}
    saved = rows.pop("savedmodel")  # serving_default on the JPEG bytes: in-graph preprocessing
    assert saved["status"] == "ok" and saved["top1_agreement"] == 1.0
    assert saved["max_prob_diff"] < 1e-5
    for r in rows.values():
        assert r["status"] == "ok", r
        assert r["ms_per_image"]["1"] > 0
        assert r["n_images"] == report["n_images"] > 0
        assert "accuracy" in r and "keras_accuracy" in r
    assert rows["float32"]["top1_agreement"] == 1.0 and rows["float32"]["max_prob_diff"] < 1e-5
    assert rows["float16"]["max_prob_diff"] < 5e-3
    assert rows["dynamic_int8"]["max_prob_diff"] < 0.03
    assert rows["int8"]["top1_agreement"] >= 0.9 and rows["int8"]["max_prob_diff"] < 0.1
    assert rows["int16x8"]["top1_agreement"] >= 0.9 and rows["int16x8"]["max_prob_diff"] < 0.06
    assert report["edge_default"] in ("int8", "dynamic_int8")
    assert (exported / "verify.md").read_text().startswith("| file |")


def test_verify_reports_a_broken_file_instead_of_crashing(tmp_path):
    from all_tf.export.verify import verify_tflite

    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer" * 100)
    x = np.zeros((2, 8, 8, 3), np.float32)
    (row,) = verify_tflite([bad], x, np.full((2, 4), 0.25), threads=(1,))
    assert row["status"] != "ok" and "status" in row["status"]


# ------------------------------------------------------------------ SavedModel / TF Serving
def test_serving_signatures_have_stable_names(serving):
    sig = serving.signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["image_bytes"]
    assert set(sig.structured_outputs) == {"probabilities", "class_id", "class_name",
                                           "confidence", "uncertain", "status"}
    pix = serving.signatures["predict_pixels"]
    assert list(pix.structured_input_signature[1]) == ["pixels"]


def test_serving_default_on_jpeg_bytes_matches_keras(serving, keras_model, run):
    _, cfg, _ = run
    files = SAMPLE_FILES[::4]
    out = serving.signatures["serving_default"](
        image_bytes=tf.constant([p.read_bytes() for p in files]))
    x = np.stack([preprocess_image(read_image(p), cfg.preprocess) for p in files])
    expected = keras_model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    ids = out["class_id"].numpy()
    np.testing.assert_array_equal(ids, expected.argmax(1))
    assert [n.decode() for n in out["class_name"].numpy()] == [CLASS_NAMES[i] for i in ids]
    conf = out["confidence"].numpy()
    np.testing.assert_array_equal(out["uncertain"].numpy(), conf < cfg.uncertainty_threshold)


@pytest.mark.parametrize("named", [None, "image_bytes"])
def test_serving_default_with_rest_json_body(serving, named):
    files = SAMPLE_FILES[:3]
    body = rest_body([p.read_bytes() for p in files], named=named)
    images = decode_rest_body(body, "image_bytes")  # what TF Serving does before the graph
    out = serving.signatures["serving_default"](image_bytes=tf.constant(images))
    direct = serving.signatures["serving_default"](
        image_bytes=tf.constant([p.read_bytes() for p in files]))
    np.testing.assert_array_equal(out["probabilities"].numpy(), direct["probabilities"].numpy())
    # the response TF Serving would send is plain JSON
    json.dumps({"predictions": [{k: v.numpy()[i].tolist() if v.dtype != tf.string
                                 else v.numpy()[i].decode() for k, v in out.items()}
                                for i in range(len(files))]})


def test_serving_empty_batch(serving):
    out = serving.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
    assert out["probabilities"].shape == (0, 4) and out["class_name"].shape == (0,)
    out = serving.signatures["predict_pixels"](pixels=tf.zeros([0, TINY_SIZE, TINY_SIZE, 3]))
    assert out["probabilities"].shape == (0, 4)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("not_image", "is not a JPEG, PNG, GIF or BMP"),
        ("empty", "is empty"),
        ("one_px", "is too small"),
        ("huge", "is too large"),
        ("truncated_jpeg", ""),
    ],
)
def test_serving_default_rejects_bad_images_clearly(serving, kind, message):
    good = SAMPLE_FILES[0].read_bytes()
    bad = {
        "not_image": b"hello, I am text",
        "empty": b"",
        "one_px": png_bytes(np.full((1, 1, 3), 9, np.uint8)),
        "huge": constant_png(10000, 10000),  # refused from its header, never decoded
        "truncated_jpeg": good[: len(good) // 3],
    }[kind]
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        serving.signatures["serving_default"](image_bytes=tf.constant([good, bad]))
    assert message in str(err.value)
    if message:
        assert "[image] [1]" in str(err.value)  # names the bad item of the batch


def test_serving_default_converts_grayscale_and_rgba_like_read_image(serving, keras_model, run,
                                                                     tmp_path):
    from deploy_helpers import write_bad_images

    _, cfg, _ = run
    files = write_bad_images(tmp_path)
    for kind in ("gray", "rgba"):
        data = files[kind].read_bytes()
        out = serving.signatures["serving_default"](image_bytes=tf.constant([data]))
        x = preprocess_image(read_image(files[kind]), cfg.preprocess)[None]
        np.testing.assert_allclose(out["probabilities"].numpy(), keras_model.predict(x, verbose=0),
                                   atol=1e-5)


def test_predict_pixels_refuses_the_wrong_range(serving, run):
    """The authors' app fed (x - 128) / 128 to a model trained on x / 255: caught here."""
    _, cfg, _ = run
    rgb = read_image(SAMPLE_FILES[0])
    good = preprocess_image(rgb, cfg.preprocess)[None]
    serving.signatures["predict_pixels"](pixels=tf.constant(good))
    pixels = np.round(good * 255.0)
    wrong = ((pixels - 128.0) / 128.0).astype(np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(x - 128\) / 128"):
        serving.signatures["predict_pixels"](pixels=tf.constant(wrong))
    with pytest.raises(tf.errors.InvalidArgumentError, match="raw 0-255"):
        serving.signatures["predict_pixels"](pixels=tf.constant(pixels.astype(np.float32)))


# ------------------------------------------------------------------ TFLite range and bad input
def test_tflite_range_check_catches_the_app_bug(exported, run):
    """The metadata says [0, 1]; (x-128)/128 is refused, and would have changed the output."""
    from all_tf.predict import load_backend

    _, cfg, _ = run
    backend = load_backend(exported / "tflite" / "all_tf_float32.tflite")
    assert backend.value_range == (0.0, 1.0)
    x = np.stack([preprocess_image(read_image(p), cfg.preprocess) for p in SAMPLE_FILES[::6]])
    app_input = ((np.round(x * 255) - 128) / 128).astype(np.float32)
    with pytest.raises(ValueError, match=r"\(x - 128\) / 128"):
        backend.predict(app_input)
    # what the bug costs when nothing checks: run the interpreter directly on both scalings
    right, wrong = backend.predict_fn(x), backend.predict_fn(app_input)
    assert np.abs(right - wrong).max() > 0.05


def test_tflite_interpreter_handles_empty_input(exported):
    from all_tf.export.verify import run_interpreter

    probs, ood, timing = run_interpreter(str(exported / "tflite" / "all_tf_float32.tflite"),
                                         np.zeros((0, TINY_SIZE, TINY_SIZE, 3), np.float32),
                                         threads=(1,))
    assert probs.shape == (0, 4) and ood is None and timing == {}


# ------------------------------------------------------------------ mixed precision, CLI
def test_mixed_bfloat16_model_is_exported_in_float32(tmp_path):
    import keras

    from all_tf.config import Config
    from all_tf.export.tflite import export_tflite
    from all_tf.inference.model_files import to_float32
    from all_tf.models import CBAM, InputScaling

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        inp = keras.Input((32, 32, 3))
        h = InputScaling("tf")(inp)
        h = keras.layers.Conv2D(8, 3, strides=2, padding="same")(h)
        h = CBAM(reduction=2)(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inp, keras.layers.Dense(4, activation="softmax", dtype="float32")(h))
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    f32 = to_float32(model)
    assert {layer.dtype_policy.name for layer in f32.layers} == {"float32"}
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(f32.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.02)
    cfg = Config()
    cfg.preprocess.image_size = 32
    (path,) = export_tflite(model, cfg, tmp_path, variants=["float32"])
    assert path.stat().st_size > 0


def test_cli_help():
    for module in ("all_tf.export", "all_tf.export.verify"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                              text=True, env=quiet_env(), timeout=120)
        assert proc.returncode == 0 and "Usage:" in proc.stdout


def test_cli_rejects_unknown_format_and_missing_source(run, tmp_path):
    from click.testing import CliRunner

    from all_tf.cli.export import main

    result = CliRunner().invoke(main, [str(run[0]), "--formats", "onnx"])
    assert result.exit_code != 0 and "unknown formats" in result.output
    (tmp_path / "x.h5").write_bytes(b"")
    result = CliRunner().invoke(main, [str(tmp_path / "x.h5")])
    assert result.exit_code != 0 and "expected a run directory or a .keras file" in result.output


def test_crop_mode_saved_model_takes_pixels(keras_model, run, tmp_path):
    from all_tf.config import Config
    from all_tf.export.serving import export_saved_model

    cfg = Config.from_dict(run[1].to_dict())
    cfg.preprocess.input_mode = "crops"
    path = export_saved_model(keras_model, cfg, tmp_path, model_name="crops", threshold=0.5)
    assert path == tmp_path / "crops" / "1"
    meta = json.loads((path / "assets.extra" / "all_tf_export.json").read_text())
    assert meta["uncertainty_threshold"] == 0.5
    sig = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["pixels"]
    out = sig(pixels=tf.fill([2, TINY_SIZE, TINY_SIZE, 3], 0.5))
    assert out["probabilities"].shape == (2, 4)
    with pytest.raises(FileExistsError):
        export_saved_model(keras_model, cfg, tmp_path, model_name="crops", version=1)
    assert export_saved_model(keras_model, cfg, tmp_path, model_name="crops").name == "2"


def test_int8_calibration_set_holds_what_the_model_sees(sample_images):
    """Image mode: one preprocessed field per image; crop mode: that field's nucleus crops."""
    from all_tf.config import Config
    from all_tf.data.inputs import inputs_for_image
    from all_tf.export.tflite import calibration_set

    cfg = Config.preset("quick")
    fields = calibration_set(sample_images[:2], cfg, count=5, pin_range=False)
    assert fields.shape == (2, cfg.preprocess.image_size, cfg.preprocess.image_size, 3)
    np.testing.assert_array_equal(fields[0], preprocess_image(sample_images[0], cfg.preprocess))
    cfg.preprocess.input_mode = "crops"
    crops = inputs_for_image(sample_images[0], cfg)
    assert len(crops) > 1
    got = calibration_set(sample_images[:1], cfg, count=len(crops) - 1, pin_range=False)
    np.testing.assert_array_equal(got, crops[: len(crops) - 1])
    pinned = calibration_set(sample_images[:1], cfg, count=1)
    assert pinned.shape[0] == 2 and pinned[1].min() == 0.0 and pinned[1].max() == 1.0
