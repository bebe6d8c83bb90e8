"""``all-tf evaluate`` and :mod:`all_tf.evaluation.labelled_batch`: a model scored on a
labelled batch of one's own."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from deploy_helpers import SAMPLE_ALL4, make_tiny_run, write_bad_images
from sklearn.metrics import roc_auc_score

from all_tf import CLASS_NAMES
from all_tf.data import Record
from all_tf.evaluation.labelled_batch import report_markdown, score_rows


def _row(file, status, probs, error=""):
    return {"file": file, "status": status, "error": error,
            **{f"p_{c}": v for c, v in zip(CLASS_NAMES, probs, strict=True)}}


def test_scores_every_readable_labelled_field_and_counts_what_the_statuses_caught():
    records = [Record(f"{c}/WBC-{c}-{k:03d}.jpg", label)
               for label, c in enumerate(CLASS_NAMES) for k in (1, 2)]
    rows = [
        _row(records[0].path, "ok", [0.9, 0.1, 0, 0]),            # Benign, right
        _row(records[1].path, "uncertain", [0.4, 0.6, 0, 0]),     # Benign called Early
        _row(records[2].path, "ok", [0.05, 0.95, 0, 0]),          # Early, right
        _row(records[3].path, "ok", [0.8, 0.2, 0, 0]),            # Early called Benign, ok
        _row(records[4].path, "rejected:ood", [0, 0, 0.3, 0.7]),  # Pre called Pro
        _row(records[5].path, "ok", [0, 0, 0.99, 0.01]),          # Pre, right
        _row(records[6].path, "error", [0] * 4, error="x: empty file"),
        _row(records[7].path, "ok", [0, 0, 0.1, 0.9]),            # Pro, right
        _row("elsewhere/a.jpg", "ok", [1, 0, 0, 0]),              # no label
    ]
    result = score_rows(rows, records, threshold=0.7, block_size=1, n_boot=20)

    assert result["n_images"] == 9 and result["unlabelled"] == 1
    assert result["unreadable"] == {records[6].path: "x: empty file"}
    assert result["per_class"] == {"Benign": 2, "Early": 2, "Pre": 2, "Pro": 1}
    assert result["status"] == {"ok": 5, "uncertain": 1, "rejected": 1}
    assert result["confusion"] == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]]
    m = result["metrics"]
    assert m["n"] == 7 and m["accuracy"] == pytest.approx(4 / 7)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 0.5 + 1) / 4)
    # answered = status ok: 5 fields, 4 right; of 3 errors, 2 were uncertain or rejected
    assert result["answered"] == pytest.approx(
        {"coverage": 5 / 7, "confident_accuracy": 4 / 5, "errors_flagged": 2 / 3})
    # confidence alone: the 0.6 error is below 0.7, the 0.7 and 0.8 ones are not
    row_07 = next(r for r in result["sweep"]["rows"] if r["threshold"] == 0.7)
    assert row_07["errors_flagged"] == pytest.approx(1 / 3)
    report = report_markdown(result, "tiny on batch")
    assert "| Early | 1 | 1 | 0 | 0 |" in report and "66.7 % of the errors" in report

    with pytest.raises(ValueError, match="none of the 1 images"):
        score_rows([rows[6]], records, threshold=0.7)


def test_a_one_class_batch_and_the_suggested_threshold():
    records = [Record(f"Benign/WBC-Benign-{k:03d}.jpg", 0) for k in range(1, 6)]
    confidence = [0.95, 0.9, 0.6, 0.98712, 0.99]  # the first four are errors (called Early)
    rows = [_row(r.path, "ok", [1 - c, c, 0, 0] if k < 4 else [c, 1 - c, 0, 0])
            for k, (r, c) in enumerate(zip(records, confidence, strict=True))]
    result = score_rows(rows, records, threshold=0.7, n_boot=10)

    m = result["metrics"]
    assert m["balanced_accuracy"] == pytest.approx(0.2) == m["recall"]["Benign"]
    assert m["recall"]["Early"] is None and m["macro_auc"] is None
    assert result["confusion"][0] == [1, 4, 0, 0]
    # flagging 90 % of 4 errors flags all 4: above 0.98712, typed with 3 decimals
    suggested = result["suggested_threshold"]
    assert suggested["threshold"] == 0.988 and suggested["errors_flagged"] == 1.0
    assert "`all-tf predict --threshold 0.988`" in report_markdown(result, "one class")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir, _, _ = make_tiny_run(tmp_path_factory.mktemp("run"))
    return run_dir


def test_evaluate_command_scores_its_own_prediction_rows(tiny_run, tmp_path):
    from all_tf.cli.evaluate import main

    batch = tmp_path / "batch"
    for c in ("Benign", "Pro"):
        shutil.copytree(SAMPLE_ALL4 / c, batch / c)
    bad = write_bad_images(tmp_path / "bad")
    shutil.copy(bad["empty"], batch / "Pro" / bad["empty"].name)
    out = tmp_path / "eval"
    args = ["--data-dir", str(batch), "-o", str(out), "--model", str(tiny_run),
            "--no-progress", "--block-size", "1"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output

    with (out / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 25 and not (out / "predictions.csv.partial").exists()
    scored = [r for r in rows if not r["error"]]
    truth = [0 if "/Benign/" in r["file"] else 3 for r in scored]
    pred = [int(np.argmax([float(r[f"p_{c}"]) for c in CLASS_NAMES])) for r in scored]
    doc = json.loads((out / "evaluation.json").read_text())
    assert doc["metrics"]["n"] == 24 and len(doc["unreadable"]) == 1
    assert doc["metrics"]["accuracy"] == pytest.approx(np.mean(np.equal(truth, pred)))
    assert doc["per_class"] == {"Benign": 12, "Early": 0, "Pre": 0, "Pro": 12}
    # only two classes labelled: no recall for the others, F1 over the two
    assert doc["metrics"]["recall"]["Early"] is None and doc["metrics"]["recall"]["Pre"] is None
    assert doc["metrics"]["classes_present"] == ["Benign", "Pro"]
    p = np.array([[float(r[f"p_{c}"]) for c in CLASS_NAMES] for r in scored])
    t = np.array(truth)
    expected_auc = np.mean([roc_auc_score(t == c, p[:, c]) for c in (0, 3)])
    assert doc["metrics"]["macro_auc"] == pytest.approx(expected_auc)
    assert (out / "evaluation.md").read_text() in result.output

    # without unreadable files a rerun with the same model, config and threshold reuses the rows
    (batch / "Pro" / bad["empty"].name).unlink()
    CliRunner().invoke(main, args, catch_exceptions=False)
    reused = CliRunner().invoke(main, args, catch_exceptions=False)
    assert reused.exit_code == 0 and "reusing" in reused.output
    assert json.loads((out / "evaluation.json").read_text())["metrics"]["n"] == 24
    other = CliRunner().invoke(main, [*args, "--threshold", "0.5"], catch_exceptions=False)
    assert other.exit_code == 0 and "reusing" not in other.output


def test_evaluate_without_class_folders_is_a_clear_error(tmp_path):
    from all_tf.cli.evaluate import main

    (tmp_path / "flat").mkdir()
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "flat"), "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 1 and "class folders" in result.output
