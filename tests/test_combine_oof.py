"""scripts/combine_oof.py: networks of several cross-validations averaged, and the colour check
fitted per fold and fused with them, pooled out of fold."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner

from all_tf.config import SplitConfig
from all_tf.data import assign_groups, make_split, scan_dataset
from tests.helpers import script_command


def _protocol_dir(root: Path, sample_all4: Path, probabilities) -> set[str]:
    """Three contiguous fold runs of the sample whose test predictions are
    ``probabilities(label)``; returns the tested paths."""
    records = assign_groups(scan_dataset(sample_all4).records)
    tested = set()
    for fold in range(3):
        split = make_split(records, SplitConfig(kind="contiguous", n_folds=3, fold=fold,
                                                embargo=0, val_fraction=0.15), root=sample_all4)
        run = root / "runs" / f"m_contiguous_f{fold}_s42"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text("{}")
        (run / "config.json").write_text("{}")
        split.save(run / "split.json", root=sample_all4)
        with (run / "predictions_tta.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["part", "path", "label", "number",
                             "p_Benign", "p_Early", "p_Pre", "p_Pro"])
            for r in split.test:
                number = int(Path(r.path).stem.rsplit("-", 1)[1])
                writer.writerow(["test", r.path, r.label, number, *probabilities(r.label)])
                tested.add(r.path)
    return tested


def test_ensemble_and_colour_fusion_rows(sample_all4, tmp_path):
    sure = tmp_path / "sure"
    tested = _protocol_dir(sure, sample_all4,
                           lambda label: [1.0 if k == label else 0.0 for k in range(4)])
    _protocol_dir(tmp_path / "flat", sample_all4, lambda label: [0.25] * 4)
    result = CliRunner().invoke(script_command("combine_oof"), [
        str(sure), str(tmp_path / "flat"), "--data-dir", str(sample_all4), "--colour",
        "--n-boot", "10"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in result.output.splitlines() if line.startswith("| ")}
    assert rows[f"network + TTA, {sure}"][1] == str(len(tested))
    assert rows[f"network + TTA, {sure}"][2].startswith("100.0")
    flat = float(rows[f"network + TTA, {tmp_path / 'flat'}"][2].split()[0])
    assert flat == 25.0  # argmax of a tie is the first class: recall 1, 0, 0, 0
    assert rows["ensemble: mean of the 2 networks + TTA"][2].startswith("100.0")
    for name in ("colour check (logistic regression on colour histograms)",
                 "ensemble and colour check, mean", "ensemble and colour check, geometric mean"):
        assert 0.0 <= float(rows[name][2].split()[0]) <= 100.0


def test_a_protocol_dir_without_fold_runs_is_a_clear_error(tmp_path, sample_all4):
    (tmp_path / "runs").mkdir()
    result = CliRunner().invoke(script_command("combine_oof"), [str(tmp_path), "--data-dir", str(sample_all4)])
    assert result.exit_code == 1 and "no finished contiguous fold runs" in result.output


def test_pooling_needs_no_images_but_colour_does(sample_all4, tmp_path):
    tested = _protocol_dir(tmp_path / "a", sample_all4, lambda label: [0.7, 0.1, 0.1, 0.1])
    command = script_command("combine_oof")
    result = CliRunner().invoke(command, [str(tmp_path / "a"), "--n-boot", "10"])
    assert result.exit_code == 0, result.output
    assert f"| network + TTA, {tmp_path / 'a'} | {len(tested)} |" in result.output
    result = CliRunner().invoke(command, [str(tmp_path / "a"), "--colour"])
    assert result.exit_code == 2 and "--colour needs --data-dir" in result.output


def test_folders_without_a_common_test_image_are_a_clear_error(sample_all4, tmp_path):
    _protocol_dir(tmp_path / "a", sample_all4, lambda label: [0.25] * 4)
    _protocol_dir(tmp_path / "b", sample_all4, lambda label: [0.25] * 4)
    for run in (tmp_path / "b" / "runs").iterdir():  # b tested other images
        csv_file = run / "predictions_tta.csv"
        csv_file.write_text(csv_file.read_text().replace("WBC-", "other-"))
    result = CliRunner().invoke(script_command("combine_oof"),
                                [str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 1 and "no test image that every folder tested" in result.output


def test_the_table_says_which_folds_it_pools(sample_all4, tmp_path):
    import shutil

    _protocol_dir(tmp_path / "a", sample_all4, lambda label: [0.7, 0.1, 0.1, 0.1])
    command = script_command("combine_oof")
    result = CliRunner().invoke(command, [str(tmp_path / "a"), "--n-boot", "10"])
    assert f"Pooled: {tmp_path / 'a'}: all 3 folds." in result.output
    shutil.rmtree(tmp_path / "a" / "runs" / "m_contiguous_f1_s42")
    result = CliRunner().invoke(command, [str(tmp_path / "a"), "--n-boot", "10"])
    assert result.exit_code == 0, result.output
    assert f"Pooled: {tmp_path / 'a'}: folds 0, 2 of 3 (not a full cross-validation)." \
        in result.output
