"""all-tf rejection: the gate applied to held-out and foreign images as predict applies it,
and cached fold results reused only when they are current."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from all_tf.cli import rejection as cli
from all_tf.experiments import rejection
from all_tf.inference.gate import STATISTICS


def _fold(bounds: dict, fmt: int = rejection.FORMAT) -> dict:
    counts = {"n": 10, "rejected": 1, "uncertain": 2, "colour_only": 1,
              "reasons": {"unusual_stain": 1}}
    return {"format": fmt, "bounds": bounds,
            "gate": {"temperature": 1.0, "threshold": 0.7, "tta": True, "ood_threshold": 5.0},
            "all4_errors": {"n": 4, "rejected": 1, "uncertain_threshold": 1, "colour_only": 1},
            "sets": {"all4 held-out": {**counts, "auroc": None},
                     "synthetic:colour_shuffled": {**counts, "rejected": 10, "uncertain": 0,
                                                   "colour_only": 0, "auroc": {
                                                       "mahalanobis": 0.9, "knn": 0.8,
                                                       "msp": 0.5}}}}


def test_stale_cached_folds_are_measured_again(tmp_path, monkeypatch):
    names = ("m_contiguous_f0", "m_contiguous_f1", "m_contiguous_f2", "m_contiguous_f3")
    for name in names:
        (tmp_path / "runs" / name / "checkpoints").mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.json").write_text("{}")
        (tmp_path / "runs" / name / "config.json").write_text("{}")
        (tmp_path / "runs" / name / "checkpoints" / "best.keras").write_text("")
    cache = tmp_path / "rejection"
    cache.mkdir()
    current = {name: [0.0, 1.0] for name in STATISTICS}
    old = {k: v for k, v in current.items() if k != "contrast_hue"}
    (cache / "m_contiguous_f0.json").write_text(json.dumps(_fold(current)))
    (cache / "m_contiguous_f1.json").write_text(json.dumps(_fold(old)))
    (cache / "m_contiguous_f2.json").write_text(json.dumps(_fold(current, fmt=1)))
    measured = []

    def evaluate_fold(run, data_dir, segwbc, model=None):
        measured.append(run.name)
        return _fold(current)

    monkeypatch.setattr(rejection, "evaluate_fold", evaluate_fold)
    result = CliRunner().invoke(cli.main, [str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert measured == ["m_contiguous_f1", "m_contiguous_f2", "m_contiguous_f3"]
    assert "contrast_hue" in json.loads((cache / "m_contiguous_f1.json").read_text())["bounds"]
    text = (tmp_path / "rejection.md").read_text()
    assert "| synthetic:colour_shuffled | 40 | 100.0 | 0.0 (0.0) | 100.0 |" in text
    assert "| all4 held-out | 40 | 10.0 | 20.0 (10.0) | 30.0 |" in text
    # 4 folds x 4 errors: 4 rejected + 4 by the threshold + 4 by the colour check alone
    assert "Stopped (rejected or uncertain): 12 (75.0 %) with the colour check, 8 (50.0 %)" \
        in text


def test_a_fold_recorded_from_a_release_needs_the_release(tmp_path, monkeypatch):
    (tmp_path / "runs" / "m_contiguous_f4_s42").mkdir(parents=True)
    (tmp_path / "runs" / "m_contiguous_f4_s42" / "metrics.json").write_text("{}")
    (tmp_path / "runs" / "m_contiguous_f4_s42" / "config.json").write_text("{}")
    monkeypatch.setattr(rejection, "evaluate_fold", lambda *a, **k: pytest.fail("measured"))
    result = CliRunner().invoke(cli.main, [str(tmp_path)])
    assert result.exit_code == 1
    assert "skip m_contiguous_f4_s42: no checkpoint" in result.output
    assert "no fold run with a model to measure" in result.output


def test_evaluate_fold_applies_the_gate_as_predict_does(gated_run, monkeypatch):
    """On a tiny trained run, with a colour check that disagrees with every answer: blank
    frames are rejected, every answer not rejected is uncertain, and the errors not stopped
    by the gate or the threshold are counted as stopped by the colour check alone."""
    import numpy as np

    from all_tf.inference.colour_check import ColourCheck

    monkeypatch.setattr(ColourCheck, "classes", lambda self, h: np.full(len(h), -1))
    out = rejection.evaluate_fold(gated_run, None, None)
    assert out["format"] == rejection.FORMAT and out["gate"]["threshold"] == 0.7
    for kind in ("black", "white"):
        row = out["sets"][f"synthetic:{kind}"]
        assert row["n"] == rejection.N_SOURCE and row["rejected"] == row["n"]
    held = out["sets"]["all4 held-out"]
    assert held["n"] > 0 and held["uncertain"] == held["n"] - held["rejected"]
    assert 0 <= held["colour_only"] <= held["uncertain"]
    errors = out["all4_errors"]
    assert errors["rejected"] + errors["uncertain_threshold"] + errors["colour_only"] \
        == errors["n"]
    for name, row in out["sets"].items():
        if name != "all4 held-out":
            assert set(row["auroc"]) == {"mahalanobis", "knn", "msp"}
            assert all(0.0 <= v <= 1.0 for v in row["auroc"].values())


def test_cached_folds_are_measured_again_when_the_segwbc_row_is_asked_or_dropped(
        tmp_path, monkeypatch):
    run = tmp_path / "runs" / "m_contiguous_f0"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("metrics.json", "config.json"):
        (run / name).write_text("{}")
    (run / "checkpoints" / "best.keras").write_text("")
    (tmp_path / "rejection").mkdir()
    (tmp_path / "rejection" / "m_contiguous_f0.json").write_text(
        json.dumps(_fold({name: [0.0, 1.0] for name in STATISTICS})))
    segwbc = tmp_path / "segwbc"
    segwbc.mkdir()

    other = tmp_path / "segwbc_other"
    other.mkdir()
    asked = []

    def evaluate_fold(run, data_dir, segwbc, model=None):
        asked.append(segwbc)
        fold = _fold({name: [0.0, 1.0] for name in STATISTICS})
        fold["segwbc_dir"] = rejection._segwbc_key(segwbc)
        if segwbc is not None:
            fold["sets"]["segwbc"] = fold["sets"]["synthetic:colour_shuffled"]
        return fold

    monkeypatch.setattr(rejection, "evaluate_fold", evaluate_fold)
    for args in ([], ["--segwbc-dir", str(segwbc)], ["--segwbc-dir", str(segwbc)],
                 ["--segwbc-dir", str(other)], []):
        result = CliRunner().invoke(cli.main, [str(tmp_path), *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    # cached without: reused; then with, reused, with another folder, without again
    assert asked == [segwbc, other, None]
    assert "| segwbc |" not in (tmp_path / "rejection.md").read_text()
