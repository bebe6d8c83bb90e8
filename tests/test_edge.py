"""The edge TFLite file: RGB uint8 in, preprocessing in the graph, TFLite builtin ops only.

One tiny CBAM run (tests/deploy_helpers.py, 64 px) is exported with ``--formats edge`` once per
module, with the label-corner mask, CLAHE, Reinhard, test-time augmentation and a temperature
switched on so every piece of the graph is exercised.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from deploy_helpers import SAMPLE_ALL4, TINY_SIZE, make_tiny_run  # noqa: E402

from all_tf import CLASS_NAMES  # noqa: E402
from all_tf.config import Config, PreprocessConfig  # noqa: E402
from all_tf.io import read_image  # noqa: E402
from all_tf.preprocessing import fit_reinhard_target, preprocess_image, resize_to  # noqa: E402

SAMPLE_FILES = sorted(SAMPLE_ALL4.glob("*/*.jpg"))
TEMPERATURE = 0.7
# The edge preprocessing is bit-exact with the OpenCV pipeline on these images (checked
# below), so what is left is the model's float arithmetic: LiteRT/XNNPACK against TF on 8
# views, averaged, then the temperature. Measured on the 48 shipped images: max |dp| 4e-7
# with the tiny model (the float32 TFLite file is within 1e-5 of Keras in test_export.py);
# 1e-4 leaves room for other CPUs' kernels. (The released MobileNetV3-Small differs from Keras
# by up to 0.03 in the edge file and the plain float32 file alike: that model is sensitive to
# float rounding, not to the preprocessing; docs/benchmarks.md.)
PROB_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sample_images():
    return [read_image(p) for p in SAMPLE_FILES]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir, cfg, split = make_tiny_run(tmp_path_factory.mktemp("edge_run"))
    cfg = Config.from_dict(cfg.to_dict())
    cfg.preprocess.mask_label_corner = True
    cfg.tta = True
    cfg.temperature = TEMPERATURE
    cfg.save(run_dir / "config.json")
    return run_dir, cfg, split


@pytest.fixture(scope="module")
def exported(run):
    from click.testing import CliRunner

    from all_tf.cli.export import main

    result = CliRunner().invoke(main, [str(run[0]), "--timing-threads", "1", "--formats", "edge"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run[0] / "export"


@pytest.fixture(scope="module")
def edge_file(exported):
    return exported / "tflite" / "all_tf_edge_uint8.tflite"


# ------------------------------------------------------------------ preprocessing with builtins
@pytest.mark.parametrize("size", [64, 128])
def test_edge_preprocessing_is_bit_exact_with_opencv(sample_images, size):
    from all_tf.export.edge import preprocess_edge

    cfg = PreprocessConfig(image_size=size, mask_label_corner=True,
                           reinhard_target=fit_reinhard_target(sample_images[::2]))
    fn = tf.function(lambda x: preprocess_edge(x, cfg))
    for im in sample_images[::3]:
        rgb = resize_to(im, size)
        np.testing.assert_array_equal(fn(tf.constant(rgb)).numpy(), preprocess_image(rgb, cfg))


def test_lab_conversions_bit_exact_with_opencv_under_litert():
    """The SavedModel's LAB conversions (bit-exact under TF, test_export.py), converted with
    builtins only and run by LiteRT's kernels."""
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    from all_tf.export.edge import non_builtin_ops
    from all_tf.export.graph_preprocessing import lab8_to_rgb, rgb_to_lab8

    x = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    x[0, :256, :] = np.arange(256, dtype=np.uint8)[:, None]
    fn = tf.function(lambda v: tf.concat([rgb_to_lab8(v), lab8_to_rgb(v)], axis=-1),
                     input_signature=[tf.TensorSpec(x.shape, tf.uint8)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flat = converter.convert()
    assert non_builtin_ops(flat) == []
    interp = Interpreter(model_content=flat)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_array_equal(out[..., :3], cv2.cvtColor(x, cv2.COLOR_RGB2LAB))
    np.testing.assert_array_equal(out[..., 3:], cv2.cvtColor(x, cv2.COLOR_LAB2RGB))


def test_edge_hsv_differs_only_by_float_rounding(sample_images):
    from all_tf.export.edge import preprocess_edge

    cfg = PreprocessConfig(image_size=64, colour_space="hsv", reinhard=False)
    for im in sample_images[::8]:
        rgb = resize_to(im, 64)
        d = np.abs(preprocess_edge(tf.constant(rgb), cfg).numpy() - preprocess_image(rgb, cfg))
        assert d.max() <= 1e-6, d.max()


# ------------------------------------------------------------------ the file
def test_edge_file_takes_uint8_and_has_builtin_ops_only(edge_file):
    from ai_edge_litert.interpreter import Interpreter

    from all_tf.export.edge import flatbuffer_ops, non_builtin_ops

    flat = edge_file.read_bytes()
    assert non_builtin_ops(flat) == []
    ops = flatbuffer_ops(flat)
    assert ops["UNSORTED_SEGMENT_SUM"] >= 2 and ops["CONV_2D"] >= 1  # CLAHE, mask and model
    interp = Interpreter(model_path=str(edge_file))
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert inp["dtype"] == np.uint8 and list(inp["shape"]) == [1, TINY_SIZE, TINY_SIZE, 3]
    assert inp["quantization"] == (0.0, 0)
    assert out["dtype"] == np.float32 and list(out["shape"]) == [1, len(CLASS_NAMES)]
    assert interp.get_signature_list() == {
        "serving_default": {"inputs": ["rgb"], "outputs": ["probabilities"]}}
    names = {op["op_name"] for op in interp._get_ops_details()}
    assert not [n for n in names if n.startswith("Flex") or n == "CUSTOM"], names


def test_edge_metadata(edge_file, run):
    _, cfg, _ = run
    meta = json.loads(edge_file.with_suffix(".json").read_text())
    assert meta["variant"] == "edge" and meta["ops"] == "TFLITE_BUILTINS only"
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["value_range"] == [0, 255]
    assert meta["input"]["shape"] == [1, TINY_SIZE, TINY_SIZE, 3]
    assert meta["output"]["dtype"] == "float32" and meta["tta_in_graph"] is True
    assert meta["temperature"] == TEMPERATURE
    assert meta["preprocessing"] == json.loads(json.dumps(cfg.to_dict()["preprocess"]))


def test_edge_matches_keras_with_opencv_preprocessing(edge_file, run, sample_images):
    from ai_edge_litert.interpreter import Interpreter

    from all_tf.evaluation.calibration import apply_temperature
    from all_tf.inference.model_files import load_keras_model
    from all_tf.inference.tta import tta_probabilities

    run_dir, cfg, _ = run
    model = load_keras_model(run_dir / "checkpoints" / "best.keras")
    x = np.stack([preprocess_image(im, cfg.preprocess) for im in sample_images])
    expected = apply_temperature(tta_probabilities(model, x), TEMPERATURE)
    interp = Interpreter(model_path=str(edge_file))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    rows = []
    for im in sample_images:
        interp.set_tensor(inp, resize_to(im, TINY_SIZE)[None])  # what an app feeds
        interp.invoke()
        rows.append(interp.get_tensor(out)[0].copy())
    probs = np.stack(rows)
    assert np.abs(probs - expected).max() <= PROB_TOLERANCE
    np.testing.assert_array_equal(probs.argmax(1), expected.argmax(1))
    assert probs.std(axis=0).max() > 0.1  # the outputs differ between images (measured 0.23)


def test_verify_report_has_the_edge_row(exported):
    report = json.loads((exported / "verify.json").read_text())
    (row,) = report["results"]
    assert row["variant"] == "edge" and row["status"] == "ok", row
    assert row["top1_agreement"] == 1.0 and row["max_prob_diff"] <= PROB_TOLERANCE
    assert row["ms_per_image"]["1"] > 0
    assert report["written"]["edge"].endswith("all_tf_edge_uint8.tflite")


def test_predict_refuses_the_edge_file(edge_file):
    from all_tf.predict import load_backend

    with pytest.raises(ValueError, match="edge file"):
        load_backend(edge_file)


def test_benchmark_script_help():
    import subprocess
    import sys

    from deploy_helpers import REPO, quiet_env

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_edge.py"), "--help"],
                          capture_output=True, text=True, env=quiet_env(), timeout=120)
    assert proc.returncode == 0 and "--output-dir" in proc.stdout and "--data-dir" in proc.stdout
