"""The contiguous split, calibration metrics and pooled out-of-fold evaluation."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from all_tf import CLASS_NAMES
from all_tf.config import SplitConfig
from all_tf.data import Record, make_split
from all_tf.data.scan import file_number
from all_tf.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from all_tf.evaluation.crossval import (
    block_bootstrap_ci,
    block_ids,
    oof_metrics,
    pooled_out_of_fold,
    read_predictions,
)
from all_tf.evaluation.predictions import PREDICTIONS_FILE, write_predictions

SIZES = (90, 160, 150, 120)


def numbered_records(duplicate_pairs=((0, 17), (1, 88), (3, 40))):
    """Records per class numbered 1..n; (class, k) pairs make k and k+1 one duplicate group."""
    dup = {(c, k + d): f"dup-{c}-{k}" for c, k in duplicate_pairs for d in (0, 1)}
    return [Record(f"/d/{CLASS_NAMES[c]}/WBC-{CLASS_NAMES[c]}-{k:03d}.jpg", c,
                   dup.get((c, k), ""))
            for c, n in enumerate(SIZES) for k in range(1, n + 1)]


def _numbers(records, label):
    return [file_number(r.path) for r in records if r.label == label]


def _gap(a, b):
    return min(abs(x - y) for x in a for y in b) if a and b else None


@pytest.mark.parametrize("fold", range(5))
def test_contiguous_split_keeps_the_embargo(fold):
    records = numbered_records()
    split = make_split(records, SplitConfig(kind="contiguous", fold=fold, embargo=12))
    for label in range(4):
        test, val, train = (_numbers(getattr(split, p), label) for p in ("test", "val", "train"))
        assert max(test) - min(test) + 1 == len(test)  # one contiguous run per class
        assert _gap(train, test) > 12 and _gap(val, test) > 12 and _gap(train, val) > 12
        assert val and train
    everything = split.train + split.val + split.test + split.excluded
    assert sorted(r.path for r in everything) == sorted(r.path for r in records)


def test_contiguous_split_keeps_groups_whole_and_is_deterministic():
    records = numbered_records(duplicate_pairs=((0, 18), (1, 32), (2, 60)))
    cfg = SplitConfig(kind="contiguous", fold=1, embargo=5)
    split = make_split(records, cfg)
    side = {r.path: p for p, recs in {**split.parts(), "excluded": split.excluded}.items()
            for r in recs}
    groups = {}
    for r in records:
        if r.group != r.path and r.group:
            groups.setdefault(r.group, set()).add(side[r.path])
    assert groups and all(len(s) == 1 for s in groups.values())
    again = make_split(list(reversed(records)), cfg)
    assert again.parts() == split.parts() and again.excluded == split.excluded


def test_contiguous_test_folds_cover_everything_once():
    # numbers 18 and 19 of Benign (90 images) are one group across the fold 0 / 1 boundary
    records = numbered_records(duplicate_pairs=((0, 18), (1, 64), (3, 40)))
    tests = [make_split(records, SplitConfig(kind="contiguous", fold=k, embargo=10)).test
             for k in range(5)]
    counts = Counter(r.path for t in tests for r in t)
    assert set(counts) == {r.path for r in records} and set(counts.values()) == {1}
    for label, n in enumerate(SIZES):  # fold k holds about the k-th fifth of each class
        assert abs(sum(r.label == label for r in tests[2]) - n / 5) <= 2


def test_contiguous_split_round_trips_with_its_excluded_part(tmp_path):
    root = tmp_path / "data"
    records = []
    for r in numbered_records():
        p = root / Path(r.path).relative_to("/d")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        records.append(Record(str(p), r.label, r.group))
    split = make_split(records, SplitConfig(kind="contiguous", fold=2, embargo=10))
    split.save(tmp_path / "split.json", root=root)
    from all_tf.data import Split

    loaded = Split.load(tmp_path / "split.json")
    assert loaded.parts() == split.parts() and loaded.excluded == split.excluded
    assert len(split.excluded) > 0


def test_contiguous_split_refuses_bad_settings():
    records = numbered_records()
    with pytest.raises(ValueError, match="fold"):
        make_split(records, SplitConfig(kind="contiguous", fold=5))
    with pytest.raises(ValueError, match="n_folds >= 2"):
        make_split(records, SplitConfig(kind="contiguous", n_folds=1))
    with pytest.raises(ValueError, match="no training image left"):
        make_split(records, SplitConfig(kind="contiguous", fold=0, embargo=37))
    with pytest.raises(ValueError, match="embargo"):
        SplitConfig(kind="contiguous", embargo=-1)
    # two sub-folders numbered from 1: capture order is ambiguous
    clash = records + [Record("/d/Benign/slideB/WBC-Benign-005.jpg", 0, "")]
    with pytest.raises(ValueError, match=r"class Benign: .*WBC-Benign-005.jpg and "
                                         r".*slideB/WBC-Benign-005.jpg share file number 5"):
        make_split(clash, SplitConfig(kind="contiguous", fold=2, embargo=0))


# ---------------------------------------------------------------- calibration


def test_ece_and_brier_match_a_hand_computed_case():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    # bins of 0.1: {0.95, 0.95} acc 0.5 -> |0.5 - 0.95| * 0.5; {0.55} acc 1 -> 0.45 * 0.25;
    # {0.7} acc 1 -> 0.3 * 0.25
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(
        0.225 + 0.1125 + 0.075)
    assert brier_score(probs, y) == pytest.approx(
        (2 * 0.05**2 + 2 * 0.95**2 + 2 * 0.45**2 + 2 * 0.3**2) / 4)


def _overconfident(n=600, accuracy=0.75, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    pred = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, 4, n)) % 4)
    probs = np.full((n, 4), 0.01 / 3)
    probs[np.arange(n), pred] = 0.99
    return y, probs


def test_temperature_scaling_lowers_the_nll_of_an_overconfident_model():
    y, probs = _overconfident()
    t = fit_temperature(probs, y)
    assert t > 1.5
    calibrated = apply_temperature(probs, t)
    assert negative_log_likelihood(calibrated, y) < 0.6 * negative_log_likelihood(probs, y)
    assert expected_calibration_error(calibrated, y) < 0.05 < expected_calibration_error(probs, y)
    assert (calibrated.argmax(1) == probs.argmax(1)).all()  # classes never change


def test_oof_metrics_counts_flagged_errors():
    y = np.array([0, 0, 1, 1, 2, 3])
    probs = np.array([[.9, .1, 0, 0], [.4, .3, .3, 0], [.8, .2, 0, 0], [0, .9, .1, 0],
                      [0, 0, 1, 0], [0, 0, 0, 1]])
    m = oof_metrics(y, probs, threshold=0.7)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert m["errors_flagged"] == 0.0  # the one error had confidence 0.8
    assert m["coverage"] == pytest.approx(5 / 6) and m["recall"]["Early"] == 0.5


def test_block_bootstrap_resamples_blocks_not_images():
    y, probs = _overconfident(n=400, seed=1)
    numbers = np.arange(400) + 1
    ci = block_bootstrap_ci(y, probs, block_ids(y, numbers, 40), n_boot=200)
    point = oof_metrics(y, probs)["balanced_accuracy"]
    lo, hi = ci["balanced_accuracy"]
    assert lo < point < hi and hi - lo < 0.2
    one_block = block_bootstrap_ci(y, probs, block_ids(y, np.ones(400, int), 40), n_boot=50)
    lo1, hi1 = one_block["balanced_accuracy"]  # one block per class: every draw is the data
    assert lo1 == pytest.approx(point) and hi1 == pytest.approx(point)


def test_pooled_out_of_fold_calibrates_each_fold_on_its_validation_part(tmp_path):
    runs = []
    for fold in range(3):
        run = tmp_path / f"f{fold}"
        run.mkdir()
        parts = {}
        for part, seed in (("val", 10 + fold), ("test", fold)):
            y, probs = _overconfident(n=120, seed=seed)
            records = [Record(f"/d/{CLASS_NAMES[c]}/{part}{fold}-{k:03d}.jpg", int(c))
                       for k, c in enumerate(y)]
            parts[part] = (records, y, probs, np.arange(len(y)))
        write_predictions(run / PREDICTIONS_FILE, parts)
        runs.append(run)
    result = pooled_out_of_fold(runs, n_boot=50)
    assert result["raw"]["n"] == 360 and len(result["temperatures"]) == 3
    assert result["calibrated"]["ece"] < result["raw"]["ece"]
    assert result["calibrated"]["nll"] < result["raw"]["nll"]
    twice = pooled_out_of_fold([runs[0], runs[0]], n_boot=10)
    assert twice["raw"]["n"] == 120 and twice["duplicates_dropped"] == 120
    other_root = tmp_path / "f0_other_root"  # the same images under another dataset root
    other_root.mkdir()
    text = (runs[0] / PREDICTIONS_FILE).read_text()
    (other_root / PREDICTIONS_FILE).write_text(text.replace(",/d/", ",../data/all4/"))
    assert ",../data/all4/" in (other_root / PREDICTIONS_FILE).read_text()
    twice = pooled_out_of_fold([runs[0], other_root], n_boot=10)
    assert twice["raw"]["n"] == 120 and twice["duplicates_dropped"] == 120
    # the per-fold threshold that flags 90 % of the validation errors, scored on the test folds
    chosen = result["val_chosen_threshold"]
    for run, t in zip(runs, chosen["thresholds"], strict=True):
        val = read_predictions(run)["val"]
        conf, wrong = val["p"].max(1), val["p"].argmax(1) != val["y"]
        assert np.mean(conf[wrong] < t) >= 0.9 and np.mean(conf[wrong] < t - 1e-9) < 0.9 + 1e-9
    test = [read_predictions(r)["test"] for r in runs]
    answered = np.concatenate([d["p"].max(1) >= t for d, t in
                               zip(test, chosen["thresholds"], strict=True)])
    assert chosen["coverage"] == pytest.approx(answered.mean())


def test_dihedral_views_are_the_eight_symmetries():
    from all_tf.inference.tta import dihedral_views

    x = np.random.default_rng(0).random((2, 6, 6, 3)).astype(np.float32)
    views = dihedral_views(x).reshape(8, 2, 6, 6, 3)
    assert np.array_equal(views[0], x)
    flat = {v.tobytes() for v in views[:, 0]}
    assert len(flat) == 8
    assert np.array_equal(views[1][0], np.rot90(x[0], 1))


def test_tta_of_a_rotation_invariant_model_equals_its_plain_prediction():
    keras = pytest.importorskip("keras")
    from all_tf.inference.tta import tta_probabilities

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4, activation="softmax")])
    x = np.random.default_rng(1).random((5, 8, 8, 3)).astype(np.float32)
    assert np.allclose(tta_probabilities(model, x), model.predict(x, verbose=0), atol=1e-6)


def test_threshold_sweep_by_hand():
    from all_tf.evaluation.crossval import threshold_sweep

    y = np.array([0, 1, 1, 0, 1])
    p = np.array([[.9, .1], [.2, .8], [.6, .4], [.55, .45], [.3, .7]])  # one error, conf 0.6
    sweep = threshold_sweep(y, p, (0.5, 0.7, 0.9))
    assert [r["coverage"] for r in sweep["rows"]] == [1.0, 0.6, 0.2]
    assert [r["errors_flagged"] for r in sweep["rows"]] == [0.0, 1.0, 1.0]
    assert sweep["rows"][0]["confident_accuracy"] == 0.8
    need = sweep["for_flag_share"]
    assert 0.6 < need["threshold"] < 0.6001 and need["coverage"] == 0.6
    assert threshold_sweep(y[:2], p[:2])["for_flag_share"] is None  # no errors


def test_threshold_for_90_percent_flags_exactly_9_of_10_errors():
    from all_tf.evaluation.crossval import threshold_sweep

    conf = np.linspace(0.55, 0.95, 10)  # ten errors, all with true class 1
    p = np.stack([conf, 1 - conf], axis=1)
    need = threshold_sweep(np.ones(10, int), p, ())["for_flag_share"]
    assert conf[8] < need["threshold"] < conf[9]  # the lowest threshold flagging 90 %
    assert need["errors_flagged"] == 0.9 and need["coverage"] == 0.1


def test_sweep_and_suggested_threshold_flag_the_same_error():
    from all_tf.evaluation.crossval import error_confidence_to_flag, threshold_sweep
    from all_tf.evaluation.labelled_batch import _suggested_threshold

    conf = np.array([0.62, 0.7104, 0.75, 0.81])  # four errors, true class 1
    p = np.stack([conf, 1 - conf], axis=1)
    y = np.ones(4, int)
    assert error_confidence_to_flag(y, p, 0.5) == 0.7104  # k = ceil(0.5 * 4) = 2nd smallest
    assert error_confidence_to_flag(y[:0], p[:0]) is None
    sweep_t = threshold_sweep(y, p, (), flag_share=0.5)["for_flag_share"]["threshold"]
    typed = _suggested_threshold(y, p, share=0.5)
    assert 0.7104 < sweep_t < typed["threshold"] == 0.711
    assert typed["errors_flagged"] == 0.5


def test_colour_check_flags_the_errors_it_disagrees_with(tmp_path):
    # 4 test images; the network is wrong on images 1 and 3, both confidently
    y = np.array([0, 1, 2, 3])
    p = np.array([[.9, .05, .03, .02], [.85, .1, .03, .02], [.1, .1, .75, .05],
                  [.05, .05, .8, .1]])
    records = [Record(f"/data/{CLASS_NAMES[c]}/WBC-{CLASS_NAMES[c]}-{k}.jpg", int(c))
               for k, c in enumerate(y)]
    run = tmp_path / "f0"
    run.mkdir()
    write_predictions(run / PREDICTIONS_FILE, {"test": (records, y, p, np.arange(4))})
    # keys are class folder / file name, so another dataset root still matches
    check = {"Benign/WBC-Benign-0.jpg": 0, "Early/WBC-Early-1.jpg": 1,
             "Pre/WBC-Pre-2.jpg": 2}  # image 3 missing: counts as disagreeing
    result = pooled_out_of_fold([run], n_boot=5, colour_check=check)
    assert result["raw"]["errors_flagged"] == 0.0  # the threshold alone flags neither error
    c = result["colour_check"]
    assert c["coverage"] == 0.5 and c["confident_accuracy"] == 1.0
    assert c["errors_flagged"] == 1.0 and c["disagreements"] == 0.5 and c["missing"] == 1
    assert pooled_out_of_fold([run], n_boot=5)["colour_check"] is None


def test_macro_auc_over_the_classes_present_never_nan():
    from sklearn.metrics import roc_auc_score

    from all_tf.evaluation.crossval import oof_metrics

    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1])  # no Pro image
    p = rng.dirichlet(np.ones(4), size=len(y))
    auc = oof_metrics(y, p)["macro_auc"]
    assert auc == pytest.approx(np.mean([roc_auc_score(y == c, p[:, c]) for c in (0, 1, 2)]))
    y4 = np.array([0, 1, 2, 3, 0, 1, 2, 3])  # every class: sklearn's macro one-vs-rest
    assert oof_metrics(y4, p)["macro_auc"] == pytest.approx(
        roc_auc_score(y4, p, multi_class="ovr", average="macro"))
    assert oof_metrics(np.zeros(8, int), p)["macro_auc"] is None


def test_read_predictions_names_the_file_and_the_line(tmp_path):
    from all_tf.evaluation.crossval import read_predictions

    with pytest.raises(FileNotFoundError, match="no predictions_tta.csv"):
        read_predictions(tmp_path, "predictions_tta.csv")
    (tmp_path / "predictions.csv").write_text(
        "part,path,label,number,p_Benign,p_Early,p_Pre,p_Pro\n"
        "test,a.jpg,0,1,0.7,0.1,0.1,0.1\n"
        "test,b.jpg,1,2,0.7,0.1,0.1\n")  # a cut row
    with pytest.raises(ValueError, match=r"predictions.csv: line 3: not a predictions row"):
        read_predictions(tmp_path)


def test_digit_less_file_names_are_numbered_among_every_part(tmp_path):
    """Without digits, a file's number is its rank among its class's names in all parts
    together, so validation and test numbers never collide."""
    import csv

    names = ["a", "b", "c", "d"]  # sorted: a=1, b=2, c=3, d=4
    records = {n: Record(f"/data/Benign/{n}.jpg", 0) for n in names}
    records["Early-7"] = Record("/data/Early/Early-7.jpg", 1)  # its own number, another class
    records["e"] = Record("/data/Early/e.jpg", 1)  # 2nd of Early's paths sorted by name
    chosen = {"val": ["b", "d", "Early-7"], "test": ["a", "c", "e", "b"]}  # b in both parts
    parts = {part: ([records[n] for n in names_], np.zeros(len(names_), int),
                    np.full((len(names_), 4), 0.25), np.arange(len(names_)))
             for part, names_ in chosen.items()}
    write_predictions(tmp_path / PREDICTIONS_FILE, parts)
    with open(tmp_path / PREDICTIONS_FILE, newline="") as f:
        rows = [(r["part"], Path(r["path"]).stem, int(r["number"])) for r in csv.DictReader(f)]
    assert {(name, number) for _, name, number in rows} == {
        ("a", 1), ("b", 2), ("c", 3), ("d", 4), ("Early-7", 7), ("e", 2)}
    assert len(rows) == 7
