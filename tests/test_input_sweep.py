"""The bad-input sweep: 16 kinds of awkward input at every entry point.

Each kind must give a clear error naming the file, a ``rejected:<reason>`` status, or (for a
valid encoding of a real field) the field's own classification; never a crash, never a
confident class for something that is not a smear field.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from click.testing import CliRunner  # noqa: E402
from deploy_helpers import ERROR, REJECTED, write_input_sweep  # noqa: E402

FIELD = Path(__file__).resolve().parents[1] / "all_tf/sample_data/all4/Pro/WBC-Malignant-Pro-001.jpg"
SAME_PIXELS = ("sixteen_bit", "rgba", "unicode_name")  # decode to exactly the field's pixels


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    kinds = write_input_sweep(folder, FIELD)
    (folder / "field.jpg").write_bytes(FIELD.read_bytes())
    assert len(kinds) >= 15
    return folder, kinds


def test_dataset_scan_lists_each_bad_file_with_its_reason(sweep, tmp_path):
    from all_tf.data import scan_dataset

    folder, kinds = sweep
    root = tmp_path / "data"
    (root / "Pro").mkdir(parents=True)
    for path, _ in kinds.values():
        target = root / "Pro" / path.name
        if path.is_symlink():
            target.symlink_to(root / "Pro" / Path(path.readlink()).name)
        else:
            target.write_bytes(path.read_bytes())
    (root / "Benign").mkdir()
    (root / "Benign" / "field.jpg").write_bytes(FIELD.read_bytes())
    scan = scan_dataset(root)
    skipped = {Path(p).name: reason for p, reason in scan.skipped}
    kept = {Path(r.path).name for r in scan.records}
    for kind, (path, expected) in kinds.items():
        if expected == ERROR:
            assert path.name in skipped and skipped[path.name], kind
        else:
            assert path.name in kept, kind


def _rows(model, folder, tmp_path):
    from all_tf.predict import main

    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(main, ["--model", str(model), str(folder), "-o", str(out),
                                       "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as f:
        return {Path(r["file"]).name: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("backend", ["keras", "savedmodel", "tflite"])
def test_predict_gives_every_kind_its_outcome(backend, gated_run, sweep, tmp_path):
    if backend == "tflite":
        pytest.importorskip("ai_edge_litert")
    model = {"keras": gated_run,
             "savedmodel": gated_run / "export" / "serving" / "all_tf",
             "tflite": gated_run / "export" / "tflite" / "all_tf_float32.tflite"}[backend]
    folder, kinds = sweep
    rows = _rows(model, folder, tmp_path)
    field = rows["field.jpg"]
    assert field["status"] in ("ok", "uncertain") and field["class"]
    for kind, (path, expected) in kinds.items():
        row = rows[path.name]
        if expected == ERROR:
            assert row["status"] == "error" and path.name in row["error"], kind
            assert row["class"] == "", kind
        elif expected == REJECTED:
            assert row["status"].startswith("rejected:"), (kind, row["status"])
            assert row["class"] == "", kind
        else:
            assert row["error"] == "" and not row["status"].startswith("rejected"), kind
            if kind in SAME_PIXELS:
                p = [float(row[f"p_{c}"]) for c in ("Benign", "Early", "Pre", "Pro")]
                q = [float(field[f"p_{c}"]) for c in ("Benign", "Early", "Pre", "Pro")]
                assert np.allclose(p, q, atol=1e-5), kind
                assert row["class"] == field["class"], kind


def test_saved_model_signature_answers_every_decodable_kind(gated_run, sweep):
    import tensorflow as tf

    from all_tf.inference.model_files import find_saved_model

    fn = tf.saved_model.load(str(find_saved_model(gated_run / "export" / "serving" / "all_tf"))
                             ).signatures["serving_default"]
    folder, kinds = sweep
    for kind, (path, expected) in kinds.items():
        if kind == "symlink_loop":  # no bytes to send: the client cannot read the file
            continue
        data = tf.constant([path.read_bytes()])
        if expected == ERROR:
            # the graph's own checks name the image; a truncated file fails in the decoder
            match = "Invalid JPEG data" if kind == "truncated" else r"\[image\] \[0\]"
            with pytest.raises(tf.errors.InvalidArgumentError, match=match):
                fn(image_bytes=data)
            continue
        out = fn(image_bytes=data)
        status = out["status"].numpy()[0].decode()
        if expected == REJECTED:
            assert status.startswith("rejected:"), (kind, status)
            assert out["class_id"].numpy()[0] == -1 and out["class_name"].numpy()[0] == b""
        else:
            assert not status.startswith("rejected:"), (kind, status)


def test_export_calibration_skips_bad_files_and_goes_on(gated_run, sweep, tmp_path, caplog):
    from all_tf.cli.export import main as export_main

    folder, kinds = sweep
    out = tmp_path / "export"
    result = CliRunner().invoke(export_main, [
        str(gated_run), "-o", str(out), "--formats", "int8", "--no-verify",
        "--calibration-data", str(folder)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "tflite" / "all_tf_int8.tflite").is_file()
    logged = caplog.text + result.output
    for kind, (path, expected) in kinds.items():
        if expected == ERROR and kind != "symlink_loop":
            assert path.name in logged, kind
