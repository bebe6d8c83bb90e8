"""The experiment commands' --quick modes, resuming, and their clear errors on bad input.

One quick protocol run (MobileNetV3-Small, the quick preset, 70:30, one seed) is trained once
per module on the shipped sample; the other tests reuse its run directory. Both split kinds
and the table layout are covered with a fake trainer in test_protocol.py.
"""

import json
import shutil

import pytest
from click.testing import CliRunner

from all_tf.cli.main import main
from tests.helpers import test_part_accuracy

pytestmark = pytest.mark.slow


def invoke(name, *args, ok=True):
    result = CliRunner().invoke(main, [name, *(str(a) for a in args)])
    if ok and result.exit_code != 0:
        raise AssertionError(f"{name} {args} failed ({result.exit_code}):\n{result.output}") \
            from result.exception
    return result


@pytest.fixture(scope="module")
def protocol_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("protocol")
    invoke("protocol", "--quick", "--splits", "70:30", "-o", out)
    return out


def _rows(path):
    from all_tf.evaluation.results_csv import read_rows

    return read_rows(path)


def test_protocol_quick_writes_runs_rows_and_tables(protocol_dir):
    rows = _rows(protocol_dir / "results.csv")
    assert [r["run_id"] for r in rows] == [
        "mobilenetv3small_70-30_s42", "mobilenetv3small_70-30_s42+gbt"]
    run_dir = protocol_dir / "runs" / "mobilenetv3small_70-30_s42"
    # each row is its run's own result: the softmax row recomputed from predictions.csv, the
    # gbt row the cached hybrid metrics, both on the 16 test images
    assert float(rows[0]["accuracy"]) == pytest.approx(test_part_accuracy(run_dir), abs=1e-6)
    hybrid = json.loads((run_dir / "hybrid_metrics.json").read_text())
    assert float(rows[1]["accuracy"]) == pytest.approx(hybrid["accuracy"], abs=1e-6)
    assert [r["head"] for r in rows] == ["softmax", "gbt"] and {r["n"] for r in rows} == {"16"}
    for name in ("config.json", "split.json", "history.csv", "metrics.json",
                 "hybrid_metrics.json", "label_masked_metrics.json", "checkpoints/best.keras"):
        assert (run_dir / name).is_file(), name
    # the label-corner check: a softmax-row column, scored on the same 16 test images
    assert rows[1]["label_masked_accuracy"] == ""
    masked = json.loads((run_dir / "label_masked_metrics.json").read_text())
    assert float(rows[0]["label_masked_accuracy"]) == pytest.approx(masked["accuracy"], abs=1e-6)
    assert masked["n"] == int(rows[0]["n"])
    md = (protocol_dir / "summary.md").read_text()
    assert "acc. label hidden" in md
    assert "Table 2 (the paper's protocol): 70:30 split" in md
    assert "| mobilenetv3small | gbt | 1 |" in md
    assert (protocol_dir / "summary.csv").read_text().startswith("model,head,split,n_runs")


def test_protocol_rerun_skips_finished_runs(protocol_dir):
    before = (protocol_dir / "results.csv").read_bytes()
    result = invoke("protocol", "--quick", "--splits", "70:30", "-o", protocol_dir)
    assert result.output.count("skip ") == 1 and "train " not in result.output
    assert (protocol_dir / "results.csv").read_bytes() == before


def test_protocol_repairs_a_truncated_csv_without_retraining(protocol_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(protocol_dir, out)
    csv_path = out / "results.csv"
    data = csv_path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    csv_path.write_bytes(data[: last_start + 25])  # a crash in the middle of the last row
    lost = data[last_start:].split(b",", 1)[0].decode()
    result = invoke("protocol", "--quick", "--splits", "70:30", "-o", out)
    assert "train " not in result.output  # metrics.json / hybrid_metrics.json were reused
    new = csv_path.read_bytes()
    assert new.startswith(data[:last_start])  # finished rows never rewritten
    ids = [r["run_id"] for r in _rows(csv_path)]
    assert sorted(ids) == sorted(r["run_id"] for r in _rows(protocol_dir / "results.csv"))
    assert ids[-1] == lost


def test_protocol_run_dir_of_another_config_is_a_clear_error(protocol_dir, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(protocol_dir, out)
    result = invoke("protocol", "--quick", "--splits", "70:30", "--epochs", "3", "-o", out,
                    ok=False)
    assert result.exit_code == 1
    assert "different config" in result.output and "epochs" in result.output


def test_empty_dataset_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    (empty / "Benign").mkdir(parents=True)
    for script in ("protocol", "colour-spaces"):
        result = invoke(script, "--quick", "--data-dir", empty, "-o", tmp_path / script, ok=False)
        assert result.exit_code == 1 and "no usable images" in result.output, result.output
    result = invoke("audit", "--data-dir", empty, "-o", tmp_path / "audit", ok=False)
    assert result.exit_code == 1 and "no usable images" in result.output


def test_missing_checkpoint_is_a_clear_error(protocol_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(protocol_dir / "runs" / "mobilenetv3small_70-30_s42", run)
    shutil.rmtree(run / "checkpoints")
    result = invoke("figures", "--run-dir", run, "-o", tmp_path / "figs", ok=False)
    assert result.exit_code == 1 and "missing checkpoint" in result.output
    result = invoke("audit", "--quick", "--run-dir", run, "-o", tmp_path / "audit", ok=False)
    assert result.exit_code == 1 and "missing checkpoint" in result.output


def test_figures_quick(protocol_dir, tmp_path):
    out = tmp_path / "figs"
    invoke("figures", "--quick", "--protocol-dir", protocol_dir, "-o", out,
           "--per-class", 1, "--gradcam-per-class", 1)
    names = {p.name for p in out.glob("*.png")}
    expected = {"parallel_70-30.png", "colour_spaces.png",
                "mobilenetv3small_70-30_confusion.png", "mobilenetv3small_70-30_curves.png",
                "mobilenetv3small_70-30_s42_gradcam.png",
                *(f"segmentation_{c}.png" for c in ("Benign", "Early", "Pre", "Pro"))}
    assert expected <= names, expected - names
    result = invoke("figures", "--quick", "--protocol-dir", protocol_dir, "-o", out,
                    "--per-class", 1, "--gradcam-per-class", 1)
    assert "0 figure(s) drawn" in result.output  # rerun keeps what exists


def test_audit_quick_with_model_checks(protocol_dir, tmp_path):
    out = tmp_path / "audit"
    run = protocol_dir / "runs" / "mobilenetv3small_70-30_s42"
    invoke("audit", "--quick", "--run-dir", run, "-o", out)
    result = json.loads((out / "audit.json").read_text())
    assert result["n_images"] == 48
    assert result["class_balance"] == {"Benign": 12, "Early": 12, "Pre": 12, "Pro": 12}
    assert set(result["colour_baselines"]) >= {"colour", "colour_reinhard", "corner_only"}
    # the unchanged test part scores what training reported for it
    original = json.loads((run / "metrics.json").read_text())
    assert result["model_checks"]["original"]["accuracy"] == pytest.approx(original["accuracy"])
    assert result["model_checks"]["reinhard_one_target"]["n"] == original["n"]
    # one label check: the audit reports the protocol's cached number for this run
    protocol_check = json.loads((run / "label_masked_metrics.json").read_text())
    assert result["model_checks"]["label_masked"] == protocol_check
    md = (out / "audit.md").read_text()
    assert "## Duplicates" in md and "label corner masked" in md
    assert "up to date" in invoke("audit", "--quick", "--run-dir", run, "-o", out).output


def test_colour_spaces_quick(tmp_path):
    out = tmp_path / "colour"
    invoke("colour-spaces", "--quick", "--spaces", "hed", "-o", out)
    rows = _rows(out / "results.csv")
    assert [r["colour_space"] for r in rows] == ["hed"]
    for r in rows:
        assert float(r["preprocess_ms"]) > 0 and float(r["inference_ms_batch1"]) > 0
    md = (out / "summary.md").read_text()
    assert "Time per image" in md and "| hed |" in md
    result = invoke("colour-spaces", "--quick", "--spaces", "hed", "-o", out)
    assert result.output.count("skip ") == 1


def test_protocol_cbam_placements_get_their_own_runs_and_rows():
    from all_tf.config import Config

    base = Config.preset("paper")
    from all_tf.experiments.protocol import protocol_specs

    specs = protocol_specs(
        base, ["efficientnetv2s_cbam", "mobilenetv3small"], ["70:30"], [42, 43],
        ["stages", "every_block"])
    assert [s.run_id for s in specs] == [
        "efficientnetv2s_cbam_70-30_s42", "efficientnetv2s_cbam_70-30_s43",
        "efficientnetv2s_cbam-every_block_70-30_s42", "efficientnetv2s_cbam-every_block_70-30_s43",
        "mobilenetv3small_70-30_s42", "mobilenetv3small_70-30_s43"]
    assert [s.cfg.model.cbam_placement for s in specs[:4]] == ["stages"] * 2 + ["every_block"] * 2
    assert specs[0].columns == {} and specs[2].columns == {"model": "efficientnetv2s_cbam-every_block"}
    assert base.model.cbam_placement == "stages"  # the base config is not changed


def test_config_file_reinhard_target_is_refitted_per_run(tmp_path):
    from all_tf.config import Config

    cfg = Config.preset("paper")
    cfg.data_dir = str(tmp_path)
    cfg.preprocess.reinhard_target = {"mean": [200.0, 130.0, 118.0], "std": [40.0, 10.0, 14.0]}
    cfg.save(tmp_path / "config.json")
    from all_tf.cli.options import base_config

    base = base_config(False, tmp_path / "config.json", None, None, None, None, None)
    assert base.preprocess.reinhard and base.preprocess.reinhard_target is None
    assert base.data_dir == str(tmp_path)


def test_protocol_unknown_cbam_placement_is_a_clear_error(tmp_path):
    result = invoke("protocol", "--quick", "--cbam-placements", "everywhere", "-o", tmp_path, ok=False)
    assert result.exit_code != 0 and "everywhere" in result.output


def test_scripts_help():
    for name in ("protocol", "colour-spaces", "figures", "audit"):
        result = invoke(name, "--help")
        assert "Usage" in result.output and "--output-dir" in result.output
