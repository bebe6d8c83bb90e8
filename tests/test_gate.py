"""The input gate, the feature distance, calibration of a run and predict's status column."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from all_tf.inference import (
    REASONS,
    FeatureDistance,
    Gate,
    fit_input_bounds,
    image_statistics,
    input_reason,
)
from all_tf.io import read_image


@pytest.fixture(scope="module")
def sample_images(sample_all4):
    return [read_image(p) for p in sorted(sample_all4.glob("*/*.jpg"))]


@pytest.fixture(scope="module")
def bounds(sample_images):
    return fit_input_bounds([image_statistics(im) for im in sample_images])


def test_grey_nuclei_have_no_hue_and_pass_the_hue_check():
    stats = image_statistics(np.full((64, 64, 3), 200, np.uint8))
    assert np.isnan(stats["nucleus_hue"])
    assert input_reason({**stats, "brightness": 200.0}, {"nucleus_hue": [-80.0, -30.0]}) is None


def test_statistics_of_known_images():
    black = image_statistics(np.zeros((300, 500, 3), np.uint8))
    assert black["brightness"] == 0 and black["saturation"] == 0 and black["nuclei"] == 0
    assert black["focus"] == 0
    red = image_statistics(np.dstack([np.full((50, 50), 255, np.uint8),
                                      np.zeros((50, 50), np.uint8), np.zeros((50, 50), np.uint8)]))
    assert red["saturation"] == 255 and red["stain_a"] > 200  # OpenCV LAB: a* of red ~ 208


def test_sample_fields_pass_and_each_kind_of_bad_input_gets_its_reason(sample_images, bounds):
    assert all(input_reason(image_statistics(im), bounds) is None for im in sample_images)
    field = sample_images[0]
    grey = np.repeat(cv2.cvtColor(field, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    cases = {
        "too_dark": np.zeros_like(field),
        "too_bright": np.full_like(field, 255),
        "not_colour": grey,
        "blurred": cv2.GaussianBlur(field, (0, 0), 8),
        "noisy": np.clip(field + np.random.default_rng(0).normal(0, 60, field.shape), 0,
                         255).astype(np.uint8),
    }
    for reason, image in cases.items():
        assert input_reason(image_statistics(image), bounds) == reason, reason
    assert set(cases) <= set(REASONS)


def test_colour_swapped_fields_are_rejected_as_unusual_stain(sample_images, bounds):
    """Swapping red and green keeps the purple-blue nuclei inside the nucleus hue bounds but
    turns the grey-blue red cells lavender: the nuclei's hue against the rest of the stained
    field (contrast_hue) leaves its training range."""
    assert bounds["contrast_hue"][0] is not None
    without = {k: v for k, v in bounds.items() if k != "contrast_hue"}  # a gate.json before it
    only_by_contrast = 0
    for rgb in sample_images[::2]:
        stats = image_statistics(rgb)
        assert input_reason(stats, bounds) is None
        swapped = image_statistics(np.ascontiguousarray(rgb[..., [1, 0, 2]]))
        assert input_reason(swapped, bounds) == "unusual_stain"
        assert not bounds["contrast_hue"][0] <= swapped["contrast_hue"] <= bounds["contrast_hue"][1]
        only_by_contrast += input_reason(swapped, without) is None
    assert only_by_contrast >= 3  # the old checks let these through
    from all_tf.experiments.rejection import synthetic_images  # every all-tf rejection permutation

    for image in synthetic_images("colour_shuffled", sample_images[1::8]):
        assert input_reason(image_statistics(image), bounds) is not None


def test_gates_fitted_before_contrast_hue_still_load_and_pass_the_sample(sample_images, tmp_path):
    """A gate.json written before contrast_hue existed has no bounds for it: the check is
    skipped, and the released gate (which has them) passes the whole sample."""
    import json
    import shutil

    released = Path(__file__).resolve().parents[1] / "saved_models" / "mobilenetv3small_all4"
    if not (released / "gate.json").is_file():
        pytest.skip("no released model")
    assert Gate.load(released).bounds["contrast_hue"][0] is not None
    doc = json.loads((released / "gate.json").read_text())
    del doc["bounds"]["contrast_hue"]
    doc["checks"] = [c for c in doc["checks"] if c[0] != "contrast_hue"]
    (tmp_path / "gate.json").write_text(json.dumps(doc))
    shutil.copy(released / "ood.npz", tmp_path / "ood.npz")
    old_gate = Gate.load(tmp_path)
    assert "contrast_hue" not in old_gate.bounds
    for gate in (old_gate, Gate.load(released)):
        assert all(input_reason(image_statistics(im), gate.bounds) is None for im in sample_images)
    old = [{k: v for k, v in image_statistics(im).items() if k != "contrast_hue"}
           for im in sample_images[:4]]
    assert fit_input_bounds(old)["contrast_hue"] == [None, None]  # statistics without it


def test_bounds_come_from_the_data():
    stats = [{"brightness": 150.0, "saturation": s, "focus": 100.0, "stain_a": a,
              "stain_b": 120.0, "nucleus_a": 160.0, "nucleus_b": 80.0, "nucleus_hue": -50.0, "nucleus_size": 400.0,
              "nuclei": n}
             for s, a, n in zip(np.geomspace(10, 90, 100), range(100, 200), [3, 5] * 50,
                                    strict=True)]
    b = fit_input_bounds(stats, quantile=0.0, margin=0.1)
    assert b["stain_a"] == pytest.approx([100 - 9.9, 199 + 9.9])  # linear scale
    w = np.log1p(90) - np.log1p(10)  # log(1 + x) scale: the margin is relative
    assert b["saturation"] == pytest.approx([np.expm1(np.log1p(10) - 0.1 * w),
                                             np.expm1(np.log1p(90) + 0.1 * w)])
    assert b["nuclei"] == [3.0, None] and b["brightness"] == pytest.approx([150.0, 150.0])


def test_feature_distance_separates_far_points_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (4, 8))
    labels = np.repeat(np.arange(4), 100)
    train = centres[labels] + rng.normal(0, 1, (400, 8))
    held_out = centres[labels] + rng.normal(0, 1, (400, 8))
    d = FeatureDistance.fit(train, labels)
    t = d.calibrate(held_out, 0.99)
    assert np.mean(d.score(held_out) > t) == pytest.approx(0.01, abs=0.006)
    far = centres[labels[:50]] + rng.normal(0, 1, (50, 8)) + 12.0
    assert np.all(d.score(far) > t)
    d.save(tmp_path / "ood.npz")
    again = FeatureDistance.load(tmp_path / "ood.npz")
    assert again.threshold == t and np.allclose(again.score(far), d.score(far), rtol=1e-5)


def test_gate_status_order_and_files(tmp_path, bounds):
    d = FeatureDistance(np.zeros((1, 2), np.float32), np.eye(2, dtype=np.float32), 4.0)
    gate = Gate(bounds, d)
    ok = {k: (v[0] if v[1] is None else (v[0] + v[1]) / 2) for k, v in bounds.items()}
    assert gate.status(ok, 1.0, 0.9, 0.7) == "ok"
    assert gate.status(ok, 1.0, 0.5, 0.7) == "uncertain"
    assert gate.status(ok, 9.0, 0.99, 0.7) == "rejected:out_of_distribution"
    assert gate.status({**ok, "brightness": 0.0}, 9.0, 0.99, 0.7) == "rejected:too_dark"
    gate.save(tmp_path)
    again = Gate.load(tmp_path)
    assert again.bounds == json.loads(json.dumps(bounds)) and again.distance.threshold == 4.0
    assert again.colour is None and again.colour_class(np.zeros((8, 8, 3), np.uint8)) is None
    assert Gate.load(tmp_path / "nowhere") is None


def test_colour_check_makes_a_disagreeing_answer_uncertain(tmp_path, bounds, sample_images):
    from all_tf.inference.colour_check import ColourCheck, colour_histogram

    x = np.stack([colour_histogram(im) for im in sample_images])
    labels = np.arange(len(x)) % 4  # any labels: only the plumbing is tested here
    gate = Gate(bounds, None, colour=ColourCheck.fit(x, labels, n_classes=4))
    ok = {k: (v[0] if v[1] is None else (v[0] + v[1]) / 2) for k, v in bounds.items()}
    assert gate.status(ok, None, 0.99, 0.7, predicted=2, colour_class=2) == "ok"
    assert gate.status(ok, None, 0.99, 0.7, predicted=2, colour_class=1) == "uncertain"
    assert gate.status({**ok, "brightness": 0.0}, None, 0.99, 0.7, 2, 1) == "rejected:too_dark"
    gate.save(tmp_path)
    again = Gate.load(tmp_path)
    assert [again.colour_class(im) for im in sample_images[:5]] == \
        [gate.colour_class(im) for im in sample_images[:5]]
    doc = json.loads((tmp_path / "gate.json").read_text())
    doc["colour_check"]["coef"] = [[0.0]]
    (tmp_path / "gate.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="gate.json.*colour check"):
        Gate.load(tmp_path)


# ---------------------------------------------------------------- a calibrated run end to end


@pytest.fixture(scope="module")
def strange_inputs(tmp_path_factory, sample_all4):
    """The black 4000 x 4000 JPEG and the grayscale Pro field of the issue, and a real field."""
    folder = tmp_path_factory.mktemp("strange")
    cv2.imwrite(str(folder / "black.jpg"), np.zeros((4000, 4000, 3), np.uint8))
    field = cv2.imread(str(sorted((sample_all4 / "Pro").glob("*.jpg"))[0]))
    cv2.imwrite(str(folder / "grey_pro.png"), cv2.cvtColor(field, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "field.png"), field)
    return folder


def _predict_rows(model, folder, tmp_path):
    import csv

    from click.testing import CliRunner

    from all_tf.predict import main

    out = tmp_path / "p.csv"
    result = CliRunner().invoke(main, [str(model), str(folder), "-o", str(out), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as f:
        return {Path(r["file"]).name: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("backend", ["keras", "savedmodel", "tflite"])
def test_black_frame_and_grayscale_field_are_rejected_by_every_backend(
        backend, gated_run, strange_inputs, tmp_path):
    if backend == "tflite":
        pytest.importorskip("ai_edge_litert")
    model = {"keras": gated_run,
             "savedmodel": gated_run / "export" / "serving" / "all_tf",
             "tflite": gated_run / "export" / "tflite" / "all_tf_float32.tflite"}[backend]
    rows = _predict_rows(model, strange_inputs, tmp_path)
    assert rows["black.jpg"]["status"] == "rejected:too_dark"
    assert rows["grey_pro.png"]["status"] == "rejected:not_colour"
    assert rows["black.jpg"]["class"] == "" and rows["grey_pro.png"]["class"] == ""
    assert rows["field.png"]["status"] in ("ok", "uncertain")
    assert rows["field.png"]["class"] in ("Benign", "Early", "Pre", "Pro")


def test_saved_model_status_output_matches_the_host_gate(gated_run, strange_inputs):
    import tensorflow as tf

    from all_tf.inference.model_files import find_saved_model

    fn = tf.saved_model.load(str(find_saved_model(gated_run / "export" / "serving" / "all_tf"))
                             ).signatures["serving_default"]
    names = ["black.jpg", "grey_pro.png", "field.png"]
    out = fn(image_bytes=tf.constant([(strange_inputs / n).read_bytes() for n in names]))
    status = [s.decode() for s in out["status"].numpy()]
    assert status[:2] == ["rejected:too_dark", "rejected:not_colour"]
    assert status[2] in ("ok", "uncertain", "rejected:out_of_distribution")
    assert out["ood_score"].shape == (3,)
    assert out["class_name"].numpy()[0] == b"" and out["class_id"].numpy()[0] == -1
    # the colour check in the graph names the host's class, and a disagreement is uncertain
    gate = Gate.load(gated_run)
    field = read_image(strange_inputs / "field.png")
    assert int(out["colour_class_id"].numpy()[2]) == gate.colour_class(field)
    disagrees = out["colour_class_id"].numpy()[2] != int(np.argmax(out["probabilities"][2]))
    if status[2] != "rejected:out_of_distribution":
        assert (status[2] == "uncertain") == (disagrees or out["confidence"].numpy()[2] < 0.7)


@pytest.mark.parametrize("tta", [False, True])
def test_backends_agree_with_temperature_and_tta(tmp_path, sample_all4, tta):
    """Keras, the SavedModel through predict and serving_default on the file bytes give the
    same confidence: the temperature applied once, after averaging the 8 views."""
    pytest.importorskip("tensorflow")
    from click.testing import CliRunner
    from deploy_helpers import make_tiny_run

    from all_tf.cli.export import main as export_main
    from all_tf.config import Config
    from all_tf.predict import load_backend, predict_files

    run_dir, _, _ = make_tiny_run(tmp_path / "run", epochs=3)
    cfg = Config.load(run_dir / "config.json")
    cfg.temperature = 2.5
    cfg.tta = tta
    cfg.save(run_dir / "config.json")
    result = CliRunner().invoke(export_main, [str(run_dir), "--no-verify", "--formats",
                                              "savedmodel"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    files = sorted((sample_all4 / "Pro").glob("*.jpg"))[:3]
    keras_rows = predict_files(load_backend(run_dir), files, progress=False)
    saved_rows = predict_files(load_backend(run_dir / "export" / "serving" / "all_tf"), files,
                               progress=False)
    import tensorflow as tf

    from all_tf.inference.model_files import find_saved_model

    fn = tf.saved_model.load(str(find_saved_model(run_dir / "export" / "serving" / "all_tf"))
                             ).signatures["serving_default"]
    served = fn(image_bytes=tf.constant([f.read_bytes() for f in files]))["confidence"].numpy()
    for a, b, c in zip(keras_rows, saved_rows, served, strict=True):
        assert abs(a["confidence"] - b["confidence"]) < 1e-3, (a, b)
        assert abs(a["confidence"] - c) < 5e-3, (a, c)  # in-graph preprocessing: near-exact
    if not tta:  # a --config override replaces the exported temperature, once
        cfg.temperature = 1.0
        cfg.save(tmp_path / "t1.json")
        keras_t1 = predict_files(load_backend(run_dir, config=tmp_path / "t1.json"), files,
                                 progress=False)
        saved_t1 = predict_files(load_backend(run_dir / "export" / "serving" / "all_tf",
                                              config=tmp_path / "t1.json"), files, progress=False)
        for a, b, before in zip(keras_t1, saved_t1, keras_rows, strict=True):
            assert abs(a["confidence"] - b["confidence"]) < 1e-3, (a, b)
            assert a["confidence"] >= before["confidence"] - 1e-6  # T 2.5 -> 1 sharpens


def test_graph_statistics_agree_with_the_host_on_smear_fields(sample_images):
    tf = pytest.importorskip("tensorflow")
    from all_tf.export.graph_gate import GRAPH_STATISTICS, gate_statistics_graph

    swapped = [np.ascontiguousarray(rgb[..., [1, 0, 2]]) for rgb in sample_images[3::12]]
    for rgb in sample_images[::6] + swapped:
        host = image_statistics(rgb)
        graph = gate_statistics_graph(tf.constant(rgb)).numpy()
        for name, value in zip(GRAPH_STATISTICS, graph, strict=True):
            if np.isnan(host[name]) or np.isnan(value):
                assert np.isnan(host[name]) and np.isnan(value), name
                continue
            # hues in degrees; contrast_hue: pixels of equal saturation are ranked differently
            tolerance = {"focus": 0.05 * abs(host[name]), "contrast_hue": 2.0}.get(name, 1.0)
            assert abs(value - host[name]) <= tolerance, (name, value, host[name])


def test_graph_colour_histogram_matches_the_host(sample_images):
    tf = pytest.importorskip("tensorflow")
    from all_tf.export.graph_gate import colour_histogram_graph
    from all_tf.inference.colour_check import colour_histogram

    for rgb in sample_images[::6]:  # 224 px fields: no resizing, the same pixels
        graph = colour_histogram_graph(tf.constant(rgb)).numpy()
        np.testing.assert_allclose(graph, colour_histogram(rgb), atol=1e-6)
    big = cv2.resize(sample_images[0], (500, 460), interpolation=cv2.INTER_LINEAR)
    graph = colour_histogram_graph(tf.constant(big)).numpy()
    assert np.abs(graph - colour_histogram(big)).sum() < 0.1  # resampling differs slightly


def test_graph_gate_rejects_a_swapped_field_and_skips_checks_without_bounds(sample_images,
                                                                             bounds):
    tf = pytest.importorskip("tensorflow")
    from all_tf.export.graph_gate import gate_reason_graph, gate_statistics_graph

    rgb = sample_images[0]
    stats = tf.stack([gate_statistics_graph(tf.constant(im)) for im in
                      (rgb, np.ascontiguousarray(rgb[..., [1, 0, 2]]))])
    without = {k: v for k, v in bounds.items() if k != "contrast_hue"}
    host = [input_reason(image_statistics(im), b) or "" for b in (bounds, without)
            for im in (rgb, np.ascontiguousarray(rgb[..., [1, 0, 2]]))]
    graph = [r.decode() for b in (bounds, without) for r in gate_reason_graph(stats, b).numpy()]
    assert graph == host == ["", "unusual_stain", "", ""]


def test_only_colour_check_adds_it_to_a_release_and_changes_nothing_else(gated_run, tmp_path):
    import shutil

    from click.testing import CliRunner

    from all_tf.cli.calibrate import main
    from all_tf.models.released import verify_checksums, write_checksums

    folder = tmp_path / "release"
    shutil.copytree(gated_run, folder, ignore=shutil.ignore_patterns("export"))
    doc = json.loads((folder / "gate.json").read_text())
    assert doc["colour_check"] is not None  # calibrate fits it by default
    doc["colour_check"] = None  # as a gate fitted before the colour check existed
    (folder / "gate.json").write_text(json.dumps(doc))
    write_checksums(folder)
    before = {n: (folder / n).read_bytes() for n in ("ood.npz", "config.json")}
    result = CliRunner().invoke(main, [str(folder), "--only-colour-check"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    after = json.loads((folder / "gate.json").read_text())
    assert after["colour_check"]["method"] == "logistic_regression_rgb_histogram"
    assert {k: v for k, v in after.items() if k != "colour_check"} == \
        {k: v for k, v in doc.items() if k != "colour_check"}
    assert all((folder / n).read_bytes() == b for n, b in before.items())
    verify_checksums(folder)  # rewritten for the new gate.json
    assert Gate.load(folder).colour is not None


def test_only_colour_check_refuses_flags_it_would_ignore(tmp_path):
    from click.testing import CliRunner

    from all_tf.cli.calibrate import main

    for extra in (["--quantile", "0.9"], ["--no-colour-check"]):
        result = CliRunner().invoke(main, [str(tmp_path), "--only-colour-check", *extra])
        assert result.exit_code == 2, result.output
        assert "--only-colour-check keeps the stored gate" in result.output


def test_float_tflite_files_compute_the_feature_distance_as_keras_does(
        gated_run, strange_inputs, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from all_tf.inference.model_files import read_metadata

    tflite = gated_run / "export" / "tflite" / "all_tf_float32.tflite"
    meta = read_metadata(tflite.with_suffix(".json"))
    threshold = Gate.load(gated_run).distance.threshold
    assert meta["gate"]["ood"]["threshold"] == pytest.approx(threshold)
    assert meta["ood_output"]["dtype"] == "float32"
    keras_rows = _predict_rows(gated_run, strange_inputs, tmp_path / "keras")
    tflite_rows = _predict_rows(tflite, strange_inputs, tmp_path / "tflite")
    assert set(keras_rows) == set(tflite_rows) and len(keras_rows) >= 3
    for name, row in keras_rows.items():
        assert float(tflite_rows[name]["ood_score"]) == pytest.approx(
            float(row["ood_score"]), rel=1e-3), name
        assert tflite_rows[name]["status"] == row["status"], name


@pytest.mark.slow
def test_export_verification_compares_the_tflite_feature_distance(gated_run, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from click.testing import CliRunner

    from all_tf.cli.export import main as export_main

    result = CliRunner().invoke(export_main, [
        str(gated_run), "-o", str(tmp_path / "export"), "--formats", "float32,int8,edge",
        "--verify-count", "12", "--timing-threads", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in
            json.loads((tmp_path / "export" / "verify.json").read_text())["results"]}
    assert rows["float32"]["status"] == "ok"
    assert rows["float32"]["ood_max_rel_diff"] < 1e-3
    assert rows["float32"]["ood_decision_agreement"] == 1.0
    assert "ood_max_rel_diff" not in rows["int8"]  # full int8: no distance output
    assert rows["edge"]["status"] == "ok" and rows["edge"]["ood_max_rel_diff"] < 1e-3
    assert "ood_score max rel. Δ" in (tmp_path / "export" / "verify.md").read_text()


def test_a_tflite_file_rejects_by_its_feature_distance(gated_run, strange_inputs, tmp_path):
    """Below the field's own distance, the threshold in the file's JSON rejects the field;
    the input checks still come first."""
    pytest.importorskip("ai_edge_litert")
    import shutil

    source = gated_run / "export" / "tflite" / "all_tf_float32.tflite"
    rows = _predict_rows(source, strange_inputs, tmp_path / "before")
    field = float(rows["field.png"]["ood_score"])
    tflite = tmp_path / "model" / source.name
    tflite.parent.mkdir()
    shutil.copy(source, tflite)
    meta = json.loads(source.with_suffix(".json").read_text())
    meta["gate"]["ood"]["threshold"] = field * 0.9
    tflite.with_suffix(".json").write_text(json.dumps(meta))
    rows = _predict_rows(tflite, strange_inputs, tmp_path / "after")
    assert rows["field.png"]["status"] == "rejected:out_of_distribution"
    assert rows["field.png"]["class"] == ""
    assert rows["black.jpg"]["status"] == "rejected:too_dark"


def _export_tflite(run_dir: Path, out: Path, formats: str) -> Path:
    """``all-tf export RUN_DIR -o OUT --formats FORMATS --no-verify``; returns OUT/tflite."""
    from click.testing import CliRunner

    from all_tf.cli.export import main as export_main

    result = CliRunner().invoke(export_main, [str(run_dir), "-o", str(out), "--formats",
                                              formats, "--no-verify"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "tflite"


def test_predict_notes_a_gated_file_without_the_feature_distance(gated_run, strange_inputs,
                                                                 tmp_path):
    pytest.importorskip("ai_edge_litert")
    from click.testing import CliRunner

    from all_tf.predict import main

    tflite = _export_tflite(gated_run, tmp_path / "export", "dynamic_int8") \
        / "all_tf_dynamic_int8.tflite"
    notes = {}
    for name, model in (("int8 weights", tflite),
                        ("float32", gated_run / "export" / "tflite" / "all_tf_float32.tflite"),
                        ("keras", gated_run),
                        ("savedmodel", gated_run / "export" / "serving" / "all_tf")):
        result = CliRunner().invoke(main, ["--model", str(model), str(strange_inputs),
                                           "--no-progress"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        notes[name] = "has no feature-distance output" in result.output
    assert notes == {"int8 weights": True, "float32": False, "keras": False,
                     "savedmodel": False}


def test_the_edge_file_outputs_the_feature_distance_of_the_unrotated_view(
        gated_run, strange_inputs, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from all_tf.data.inputs import inputs_for_image
    from all_tf.inference.model_files import read_metadata
    from all_tf.inference.tflite_runner import TFLiteRunner
    from all_tf.predict import load_backend
    from all_tf.preprocessing import resize_to

    edge = _export_tflite(gated_run, tmp_path / "export", "edge") / "all_tf_edge_uint8.tflite"
    meta = read_metadata(edge.with_suffix(".json"))
    assert meta["gate"]["ood"]["threshold"] == pytest.approx(Gate.load(gated_run).distance.threshold)
    host = load_backend(gated_run)
    size = host.config.preprocess.image_size
    small = np.stack([resize_to(read_image(strange_inputs / n), size)
                      for n in ("field.png", "grey_pro.png")])
    _, edge_ood = TFLiteRunner(str(edge)).predict_with_ood(small.astype(np.float32))
    host_ood = np.concatenate([host.predict_with_features(inputs_for_image(im, host.config))[1]
                               for im in small])
    np.testing.assert_allclose(edge_ood, host_ood, rtol=1e-3)


def test_the_edge_file_with_tta_scores_the_unrotated_view(gated_run, strange_inputs, tmp_path):
    """With the 8 views in the graph, the distance is the unrotated view's, as the gate was
    fitted; the probabilities are still the 8 views' mean."""
    pytest.importorskip("ai_edge_litert")
    import keras

    from all_tf.data.inputs import inputs_for_image
    from all_tf.export.edge import export_edge
    from all_tf.inference.tflite_runner import TFLiteRunner
    from all_tf.inference.tta import dihedral_views
    from all_tf.predict import load_backend
    from all_tf.preprocessing import resize_to

    host = load_backend(gated_run)
    model = keras.models.load_model(gated_run / "checkpoints" / "best.keras", compile=False)
    edge = export_edge(model, host.config, tmp_path, gate=Gate.load(gated_run), tta=True)
    size = host.config.preprocess.image_size
    field = resize_to(read_image(strange_inputs / "field.png"), size)
    probs, ood = TFLiteRunner(str(edge)).predict_with_ood(field[None].astype(np.float32))
    x = inputs_for_image(field, host.config)
    host_probs, host_ood = host.predict_with_features(dihedral_views(x))
    np.testing.assert_allclose(ood, host_ood[:1], rtol=1e-3)
    assert not np.allclose(host_ood[1:], host_ood[0], rtol=1e-3)  # the views differ
    np.testing.assert_allclose(probs, host.calibrate(host_probs.mean(axis=0, keepdims=True)),
                               atol=1e-4)
