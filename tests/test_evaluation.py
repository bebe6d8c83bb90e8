"""Metrics, the uncertainty rule and crop aggregation against hand-computed cases."""

import json

import numpy as np
import pytest

from all_tf.evaluation import (
    aggregate_crop_probabilities,
    compute_metrics,
    flat_metrics,
    predict_labels,
)
from all_tf.evaluation.results_csv import append_row, completed_keys, read_rows, repair_csv

NAMES = ("a", "b", "c")
Y = np.array([0, 0, 1, 1, 2, 2])
P = np.array(
    [
        [0.8, 0.1, 0.1],  # 0 -> 0
        [0.3, 0.6, 0.1],  # 0 -> 1
        [0.1, 0.8, 0.1],  # 1 -> 1
        [0.2, 0.5, 0.3],  # 1 -> 1, uncertain
        [0.1, 0.1, 0.8],  # 2 -> 2
        [0.5, 0.2, 0.3],  # 2 -> 0, uncertain
    ]
)


def test_metrics_hand_computed():
    m = compute_metrics(Y, P, NAMES, threshold=0.7)
    assert m["n"] == 6
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    pc = m["per_class"]
    assert [pc[c]["precision"] for c in NAMES] == pytest.approx([0.5, 2 / 3, 1.0])
    assert [pc[c]["recall"] for c in NAMES] == pytest.approx([0.5, 1.0, 0.5])
    assert [pc[c]["f1"] for c in NAMES] == pytest.approx([0.5, 0.8, 2 / 3])
    # specificity = TN / (TN + FP): 4 negatives per class; FP = 1, 1, 0
    assert [pc[c]["specificity"] for c in NAMES] == pytest.approx([0.75, 0.75, 1.0])
    # one-vs-rest AUC by counting positive/negative pairs (ties count 1/2)
    assert [pc[c]["auc"] for c in NAMES] == pytest.approx([7 / 8, 7 / 8, 7.5 / 8])
    assert [pc[c]["support"] for c in NAMES] == [2, 2, 2]
    assert m["macro_precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["macro_recall"] == pytest.approx(2.0 / 3)
    assert m["macro_specificity"] == pytest.approx(2.5 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["macro_auc"] == pytest.approx((7 + 7 + 7.5) / 24)
    assert m["auc_classes"] == list(NAMES) and m["auc_note"] is None
    # confidences 0.8 0.6 0.8 0.5 0.8 0.5: three >= 0.7, all correct
    assert m["coverage"] == pytest.approx(0.5)
    assert m["confident_accuracy"] == pytest.approx(1.0)
    json.dumps(m, allow_nan=False)


def test_metrics_threshold_is_inclusive():
    m = compute_metrics(Y, P, NAMES, threshold=0.6)
    assert m["coverage"] == pytest.approx(4 / 6)
    assert m["confident_accuracy"] == pytest.approx(3 / 4)
    m = compute_metrics(Y, P, NAMES, threshold=0.95)
    assert m["coverage"] == 0.0 and m["confident_accuracy"] is None


def test_metrics_absent_class_auc_over_present_classes():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.05, 0.05], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    m = compute_metrics(y, p, NAMES)
    assert m["per_class"]["c"]["auc"] is None
    assert m["auc_classes"] == ["a", "b"]
    assert "c" in m["auc_note"] and "2 of 3" in m["auc_note"]
    # a: positives 0.9, 0.4 vs negatives 0.2, 0.3 -> 1.0; b: 0.7, 0.3 vs 0.05, 0.5 -> 3/4
    assert m["macro_auc"] == pytest.approx((1.0 + 0.75) / 2)
    # class c: never true, predicted once -> precision 0, specificity 3/4
    assert m["per_class"]["c"]["precision"] == 0.0
    assert m["per_class"]["c"]["specificity"] == pytest.approx(0.75)
    json.dumps(m, allow_nan=False)


def test_metrics_single_class_has_no_auc():
    m = compute_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), ("x", "y"))
    assert m["macro_auc"] is None and m["auc_classes"] == []
    assert m["per_class"]["y"]["specificity"] == 0.0  # no negatives: zero_division -> 0


def test_metrics_default_class_names_and_flat_row():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=20)
    y = np.arange(20) % 4
    m = compute_metrics(y, probs)
    assert m["class_names"] == ["Benign", "Early", "Pre", "Pro"]
    row = flat_metrics(m)
    assert row["accuracy"] == m["accuracy"] and row["n"] == 20
    assert row["Pro_f1"] == m["per_class"]["Pro"]["f1"]
    assert "Benign_auc" in row and "confusion_matrix" not in row


@pytest.mark.parametrize(
    "y, p, match",
    [
        (np.array([0, 1]), np.ones((2, 2)) / 2, "columns"),
        (np.array([0]), np.ones((2, 3)) / 3, "shape"),
        (np.array([0, 3]), np.ones((2, 3)) / 3, r"\[0, 3\)"),
        (np.array([0.0, 1.0]), np.ones((2, 3)) / 3, "integer"),
        (np.array([0, 1]), np.array([[np.nan, 0.5, 0.5], [0.3, 0.3, 0.4]]), "NaN"),
        (np.zeros(0, int), np.zeros((0, 3)), "N = 0"),
    ],
)
def test_metrics_bad_input(y, p, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y, p, NAMES)


def test_predict_labels_rule():
    cls, conf, unc = predict_labels(P, threshold=0.7)
    assert cls.tolist() == [0, 1, 1, 1, 2, 0]
    assert conf.tolist() == pytest.approx([0.8, 0.6, 0.8, 0.5, 0.8, 0.5])
    assert unc.tolist() == [False, True, False, True, False, True]
    _, _, unc = predict_labels(P, threshold=0.5)  # 0.5 itself is confident
    assert not unc.any()
    cls, _, _ = predict_labels(np.array([[0.5, 0.5]]))  # tie -> lower index
    assert cls.tolist() == [0]
    with pytest.raises(ValueError, match="threshold"):
        predict_labels(P, threshold=1.5)
    with pytest.raises(ValueError, match="shape"):
        predict_labels(np.array([0.2, 0.8]))


def test_aggregate_crop_probabilities_mean_per_image():
    crop_probs = np.array([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9], [0.5, 0.5], [0.3, 0.7]])
    index = np.array([0, 0, 2, 1, 2])
    out = aggregate_crop_probabilities(crop_probs, index, 3)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out, [[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]])
    assert out.sum(axis=1) == pytest.approx(np.ones(3))


def test_aggregate_crop_probabilities_errors():
    p = np.array([[0.8, 0.2], [0.4, 0.6]])
    with pytest.raises(ValueError, match="image 1 has no crops"):
        aggregate_crop_probabilities(p, np.array([0, 2]), 3)
    with pytest.raises(ValueError, match="out of range"):
        aggregate_crop_probabilities(p, np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="shape"):
        aggregate_crop_probabilities(p, np.array([0]), 1)


# ---- results CSV -----------------------------------------------------------------------


def test_results_csv_append_and_read(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    append_row(path, {"run_id": "a", "accuracy": 0.25, "note": None}, ["run_id", "accuracy", "note"])
    append_row(path, {"run_id": "b", "accuracy": 1 / 3})  # missing column -> empty cell
    rows = read_rows(path)
    assert [r["run_id"] for r in rows] == ["a", "b"]
    assert float(rows[1]["accuracy"]) == 1 / 3  # full precision
    assert rows[0]["note"] == "" and rows[1]["note"] == ""
    assert completed_keys(path) == {"a", "b"}
    with pytest.raises(ValueError, match="not in the existing header"):
        append_row(path, {"run_id": "c", "new_column": 1})
    assert completed_keys(tmp_path / "absent.csv") == set()


def test_results_csv_truncated_line_is_dropped_finished_rows_kept(tmp_path):
    path = tmp_path / "results.csv"
    append_row(path, {"run_id": "a", "accuracy": 0.5})
    append_row(path, {"run_id": "b", "accuracy": 0.75})
    finished = path.read_bytes()
    with open(path, "ab") as f:  # a crash in the middle of writing run c
        f.write(b"c,0.1234")
    assert completed_keys(path) == {"a", "b"}  # reading ignores the partial line
    assert path.read_bytes().endswith(b"c,0.1234")  # ... and does not modify the file
    append_row(path, {"run_id": "c", "accuracy": 0.9})  # repairs, then appends
    assert path.read_bytes().startswith(finished)
    assert [r["run_id"] for r in read_rows(path)] == ["a", "b", "c"]
    assert repair_csv(path) == 0


def test_results_csv_partial_header_and_newlines(tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes(b"run_id,accu")  # crashed while writing the header
    assert read_rows(path) == []
    append_row(path, {"run_id": "a", "note": "two\nlines"})
    rows = read_rows(path)
    assert rows == [{"run_id": "a", "note": "two lines"}]
