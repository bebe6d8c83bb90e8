"""scripts/colour_fusion_oof.py: the colour check fitted per fold and fused with the network's
pooled out-of-fold probabilities."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from click.testing import CliRunner

from all_tf.config import SplitConfig
from all_tf.data import assign_groups, make_split, scan_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "colour_fusion_oof.py"


def _script():
    spec = importlib.util.spec_from_file_location("colour_fusion_oof", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_perfect_network_stays_perfect_under_geometric_fusion(sample_all4, tmp_path):
    records = assign_groups(scan_dataset(sample_all4).records)
    tested = set()
    for fold in range(3):
        split = make_split(records, SplitConfig(kind="contiguous", n_folds=3, fold=fold,
                                                embargo=0, val_fraction=0.15), root=sample_all4)
        run = tmp_path / "runs" / f"m_contiguous_f{fold}_s42"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text("{}")
        split.save(run / "split.json", root=sample_all4)
        with (run / "predictions_tta.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["part", "path", "label", "number",
                             "p_Benign", "p_Early", "p_Pre", "p_Pro"])
            for r in split.test:  # a network that is always right and sure
                number = int(Path(r.path).stem.rsplit("-", 1)[1])
                writer.writerow(["test", r.path, r.label, number,
                                 *[1.0 if k == r.label else 0.0 for k in range(4)]])
                tested.add(r.path)
    result = CliRunner().invoke(_script().main, [str(tmp_path), "--data-dir", str(sample_all4),
                                                 "--n-boot", "10"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in result.output.splitlines() if line.startswith("| ")}
    assert rows["network + TTA"][1] == str(len(tested))
    assert rows["network + TTA"][2].startswith("100.0")
    assert rows["geometric mean of the two"][2].startswith("100.0")
    colour = float(rows["colour check (logistic regression on colour histograms)"][2].split()[0])
    assert 0.0 <= colour <= 100.0


def test_a_protocol_dir_without_fold_runs_is_a_clear_error(tmp_path, sample_all4):
    (tmp_path / "runs").mkdir()
    result = CliRunner().invoke(_script().main, [str(tmp_path), "--data-dir", str(sample_all4)])
    assert result.exit_code == 1 and "no finished contiguous fold runs" in result.output
