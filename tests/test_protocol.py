"""Protocol bookkeeping with a fake trainer: skip, re-record, summary tables (fast)."""

import json

import numpy as np
import pytest

from all_tf.config import Config
from all_tf.evaluation import compute_metrics
from all_tf.evaluation.results_csv import read_rows
from all_tf.experiments.protocol import (
    RunSpec,
    run_specs,
    summarise,
    summary_markdown,
    write_summary,
)


@pytest.fixture
def fake_train(monkeypatch):
    calls = []

    def train_run(cfg, output_dir, verbose=1):
        calls.append(str(output_dir))
        output_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(output_dir / "config.json")
        y = np.array([0, 1, 2, 3])
        probs = np.eye(4)[[0, 1, 2, cfg.split.seed % 4]] * 0.9 + 0.025
        metrics = compute_metrics(y, probs)
        (output_dir / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    import all_tf.experiments.run

    monkeypatch.setattr(all_tf.experiments.run, "train_run", train_run)
    return calls


def _specs(seeds=(1, 3)):
    specs = []
    for seed in seeds:
        cfg = Config.preset("quick")
        cfg.split.seed = seed
        specs.append(RunSpec(f"m_s{seed}", cfg))
    return specs


def test_run_specs_skips_and_rerecords(fake_train, tmp_path):
    rows = run_specs(_specs(), tmp_path, echo=lambda s: None)
    assert [r["run_id"] for r in rows] == ["m_s1", "m_s3"]
    assert [float(r["accuracy"]) for r in rows] == [0.75, 1.0]
    assert len(fake_train) == 2
    run_specs(_specs(), tmp_path, echo=lambda s: None)
    assert len(fake_train) == 2  # nothing retrained
    # the row of m_s3 is lost (crash between metrics.json and the CSV append)
    csv_path = tmp_path / "results.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    csv_path.write_text("".join(lines[:-1]) + lines[-1][:10])
    messages = []
    rows = run_specs(_specs(), tmp_path, echo=messages.append)
    assert [r["run_id"] for r in rows] == ["m_s1", "m_s3"]
    assert any("finished earlier" in m for m in messages)


def test_run_specs_refuses_a_run_dir_of_another_config(fake_train, tmp_path):
    run_specs(_specs((1,)), tmp_path, echo=lambda s: None)
    other = _specs((1,))
    other[0].cfg.train.epochs = 99
    with pytest.raises(ValueError, match="different config"):
        run_specs(other, tmp_path, echo=lambda s: None)


def test_summarise_mean_and_sample_sd():
    rows = [{"model": "a", "head": "softmax", "split": "70:30", "accuracy": "0.8"},
            {"model": "a", "head": "softmax", "split": "70:30", "accuracy": "0.9"},
            {"model": "b", "head": "softmax", "split": "70:30", "accuracy": "0.5",
             "macro_auc": ""}]
    summary = summarise(rows, metrics=["accuracy", "macro_auc"])
    assert summary[0]["n_runs"] == 2
    assert summary[0]["accuracy_mean"] == pytest.approx(0.85)
    assert summary[0]["accuracy_sd"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert summary[1]["accuracy_sd"] is None and summary[1]["macro_auc_mean"] is None
    full = summarise(rows)
    md = summary_markdown(full, "T", headings={"70:30": "Table 2"})
    assert "## Table 2" in md
    assert "| a | softmax | 2 | 85.00 ± 7.07 |" in md
    assert "| b | softmax | 1 | 50.00 |" in md


def test_write_summary_tables_per_split(fake_train, tmp_path):
    specs = []
    for kind in ("70:30", "60:40"):
        for seed in (1, 2):
            cfg = Config.preset("quick")
            cfg.split.kind, cfg.split.seed = kind, seed
            specs.append(RunSpec(f"m_{kind.replace(':', '-')}_s{seed}", cfg))
    run_specs(specs, tmp_path, echo=lambda s: None)
    summary = write_summary(tmp_path, "Protocol", headings={"70:30": "Table 2: 70:30 split",
                                                            "60:40": "Table 3: 60:40 split"})
    assert [(s["split"], s["n_runs"]) for s in summary] == [("70:30", 2), ("60:40", 2)]
    md = (tmp_path / "summary.md").read_text()
    assert md.index("## Table 2: 70:30 split") < md.index("## Table 3: 60:40 split")
    # seeds 1 and 2 score 0.75 and 0.75 (fake): mean 75.00, sd 0.00
    assert "| efficientnetv2b0_cbam | softmax | 2 | 75.00 ± 0.00 |" in md
    assert (tmp_path / "summary.csv").read_text().startswith("model,head,split,n_runs,")


def test_read_rows_of_protocol_csv_are_complete(fake_train, tmp_path):
    run_specs(_specs((2,)), tmp_path, echo=lambda s: None)
    (row,) = read_rows(tmp_path / "results.csv")
    assert row["model"] == "efficientnetv2b0_cbam" and row["split"] == "70:30"
    assert row["Pro_recall"] != "" and row["head"] == "softmax"


def test_a_csv_begun_before_a_column_existed_keeps_its_header(fake_train, tmp_path):
    from all_tf.experiments.protocol import RESULT_COLUMNS, append_result

    old_header = [c for c in RESULT_COLUMNS if not c.startswith("label_masked")]
    (tmp_path / "results.csv").write_text(",".join(old_header) + "\n")
    append_result(tmp_path / "results.csv", {"run_id": "a", "accuracy": 0.5,
                                             "label_masked_accuracy": 0.4})
    (row,) = read_rows(tmp_path / "results.csv")
    assert row["run_id"] == "a" and "label_masked_accuracy" not in row
    append_result(tmp_path / "new.csv", {"run_id": "b", "label_masked_accuracy": 0.4})
    assert read_rows(tmp_path / "new.csv")[0]["label_masked_accuracy"] == "0.4"


def test_crossval_tables_pool_the_folds_and_cache_the_colour_baseline(tmp_path, monkeypatch):
    """`all-tf protocol --splits contiguous` after training: pooled crossval.md / .json from
    each fold's predictions.csv, with the colour baseline computed once and then read back."""
    from all_tf.data import SAMPLE_ALL4_DIR, assign_groups, make_split, scan_dataset
    from all_tf.evaluation.predictions import write_predictions
    from all_tf.experiments import audit
    from all_tf.experiments import protocol as command

    base = Config.preset("quick").override({
        "data_dir": str(SAMPLE_ALL4_DIR), "model.name": "mobilenetv3small",
        "split.kind": "contiguous", "split.n_folds": 3, "split.embargo": 0})
    records = assign_groups(scan_dataset(SAMPLE_ALL4_DIR).records)
    specs = []
    for fold in range(3):
        cfg = base.override({"split.fold": fold})
        spec = RunSpec(f"mobilenetv3small_contiguous_f{fold}_s42", cfg)
        split = make_split(records, cfg.split)
        parts = {}
        for part in ("val", "test"):
            rs = getattr(split, part)
            y = np.array([r.label for r in rs])
            probs = np.full((len(rs), 4), 0.02)
            probs[np.arange(len(rs)), (y + (np.arange(len(rs)) % 7 == 0)) % 4] = 0.94
            parts[part] = (rs, y, probs, np.arange(len(rs)))
        write_predictions(tmp_path / "runs" / spec.run_id / "predictions.csv", parts)
        specs.append(spec)

    command.write_crossval(tmp_path, specs, base, colour_baseline=True)
    doc = json.loads((tmp_path / "crossval.json").read_text())
    pooled = doc["recipes"]["mobilenetv3small s42"]["raw"]
    assert pooled["n"] == 48  # every sample image tested once over the 3 folds
    wrong = sum(((k % 7 == 0)) for fold in range(3)
                for k in range(len(make_split(records, base.override(
                    {"split.fold": fold}).split).test)))
    assert pooled["accuracy"] == pytest.approx(1 - wrong / 48)
    assert doc["colour_baseline"]["raw"]["n"] == 48
    md = (tmp_path / "crossval.md").read_text()
    assert "mobilenetv3small s42" in md and "colour" in md.lower() and "96.8 [95.5, 97.8]" in md

    def refuse(*args, **kwargs):
        raise AssertionError("the cached colour baseline should be read back")

    monkeypatch.setattr(audit, "colour_baseline_oof", refuse)
    command.write_crossval(tmp_path, specs, base, colour_baseline=True)
    again = json.loads((tmp_path / "crossval.json").read_text())
    assert again["colour_baseline"] == doc["colour_baseline"]
    assert doc["colour_baseline"]["threshold"] == 0.7

    # another uncertainty threshold: the baseline's coverage is measured again at it
    monkeypatch.undo()
    strict = base.override({"uncertainty_threshold": 0.99})
    command.write_crossval(tmp_path, specs, strict, colour_baseline=True)
    colour = json.loads((tmp_path / "crossval.json").read_text())["colour_baseline"]
    assert colour["threshold"] == 0.99
    assert colour["raw"]["coverage"] < doc["colour_baseline"]["raw"]["coverage"]

    # another seed pooled by a later command joins the table instead of replacing it
    import shutil

    seed7 = []
    for spec in specs:
        run_id = spec.run_id.replace("_s42", "_s7")
        shutil.copytree(tmp_path / "runs" / spec.run_id, tmp_path / "runs" / run_id)
        seed7.append(RunSpec(run_id, spec.cfg.override({"split.seed": 7})))
    command.write_crossval(tmp_path, seed7, strict, colour_baseline=False)
    recipes = json.loads((tmp_path / "crossval.json").read_text())["recipes"]
    assert set(recipes) == {"mobilenetv3small s42", "mobilenetv3small s7"}
    assert recipes["mobilenetv3small s7"]["raw"] == recipes["mobilenetv3small s42"]["raw"]
    assert "mobilenetv3small s42" in (tmp_path / "crossval.md").read_text()
    command.write_crossval(tmp_path, seed7, base, colour_baseline=False)  # threshold 0.7 again
    assert set(json.loads((tmp_path / "crossval.json").read_text())["recipes"]) == {
        "mobilenetv3small s7"}


def test_crossval_of_a_fold_subset_says_so_and_scores_the_baseline_on_the_same_folds(tmp_path):
    """`all-tf protocol --folds 1`: only fold 1's predictions pooled into crossval_f1.md, the
    colour baseline scored on fold 1 alone (its own cache file), and the text names the subset."""
    from all_tf.data import SAMPLE_ALL4_DIR, assign_groups, make_split, scan_dataset
    from all_tf.evaluation.predictions import write_predictions
    from all_tf.experiments import protocol as command

    base = Config.preset("quick").override({
        "data_dir": str(SAMPLE_ALL4_DIR), "model.name": "mobilenetv3small",
        "split.kind": "contiguous", "split.n_folds": 3, "split.embargo": 0})
    specs = command.protocol_specs(base, ["mobilenetv3small"], ["contiguous"], [42], folds=[1])
    assert [s.run_id for s in specs] == ["mobilenetv3small_contiguous_f1_s42"]
    records = assign_groups(scan_dataset(SAMPLE_ALL4_DIR).records)
    split = make_split(records, specs[0].cfg.split)
    parts = {}
    for part in ("val", "test"):
        rs = getattr(split, part)
        y = np.array([r.label for r in rs])
        parts[part] = (rs, y, np.eye(4)[y] * 0.9 + 0.025, np.arange(len(rs)))
    write_predictions(tmp_path / "runs" / specs[0].run_id / "predictions.csv", parts)

    path = command.write_crossval(tmp_path, specs, base, colour_baseline=True, folds=[1])
    assert path == tmp_path / "crossval_f1.md" and not (tmp_path / "crossval.md").exists()
    doc = json.loads((tmp_path / "crossval_f1.json").read_text())
    assert doc["folds"] == [1]
    assert doc["recipes"]["mobilenetv3small s42"]["raw"]["n"] == len(split.test) < 48
    assert doc["colour_baseline"]["raw"]["n"] == len(split.test)
    assert (tmp_path / "colour_baseline_oof_f1.json").is_file()
    assert not (tmp_path / "colour_baseline_oof.json").exists()
    assert "Only fold 1 of the 3 pooled here" in path.read_text()


@pytest.mark.parametrize("folds", [[3], [0, 0], [-1]])
def test_protocol_refuses_folds_outside_the_split(folds):
    from all_tf.experiments import protocol as command

    base = Config.preset("quick").override({"split.kind": "contiguous", "split.n_folds": 3})
    with pytest.raises(ValueError, match="each fold once, from 0 to 2"):
        command.protocol_specs(base, ["mobilenetv3small"], ["contiguous"], [42], folds=folds)


def test_fold_records_without_a_checkpoint_skip_the_hybrid_row(fake_train, tmp_path):
    messages = []
    rows = run_specs(_specs((1,)), tmp_path, echo=messages.append, hybrid=True)
    assert [r["run_id"] for r in rows] == ["m_s1"]  # the softmax row, no "+gbt" row
    assert any(m.startswith("skip m_s1+gbt: no checkpoints/best.keras") for m in messages)


def test_a_fold_stopped_by_a_deadline_is_recorded_with_a_warning(tmp_path):
    spec = _specs((1,))[0]
    run_dir = tmp_path / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    spec.cfg.save(run_dir / "config.json")
    (run_dir / "metrics.json").write_text(json.dumps({
        **compute_metrics(np.array([0, 1, 2, 3]), np.eye(4) * 0.9 + 0.025),
        "stopped_by_deadline": True}))
    messages = []
    rows = run_specs([spec], tmp_path, echo=messages.append)
    assert [r["run_id"] for r in rows] == ["m_s1"]  # recorded, not trained
    assert any("m_s1 was stopped by a time limit" in m for m in messages)
