"""all-tf rejection: cached fold results are reused only when they were fitted with every
statistic of the current gate."""

from __future__ import annotations

import json

from click.testing import CliRunner

from all_tf.cli import rejection
from all_tf.inference.gate import STATISTICS


def _fold(bounds: dict) -> dict:
    counts = {"n": 10, "rejected": 1, "uncertain": 0, "reasons": {"unusual_stain": 1}}
    return {"bounds": bounds, "all4_errors": {"n": 2, "rejected_or_uncertain": 1},
            "sets": {"all4 held-out": {**counts, "auroc": None},
                     "synthetic:colour_shuffled": {**counts, "rejected": 10, "auroc": {
                         "mahalanobis": 0.9, "knn": 0.8, "msp": 0.5}}}}


def test_stale_cached_folds_are_measured_again(tmp_path, monkeypatch):
    for name in ("m_contiguous_f0", "m_contiguous_f1"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.json").write_text("{}")
    cache = tmp_path / "rejection"
    cache.mkdir()
    current = {name: [0.0, 1.0] for name in STATISTICS}
    old = {k: v for k, v in current.items() if k != "contrast_hue"}
    (cache / "m_contiguous_f0.json").write_text(json.dumps(_fold(current)))
    (cache / "m_contiguous_f1.json").write_text(json.dumps(_fold(old)))
    measured = []

    def evaluate_fold(run, data_dir, segwbc):
        measured.append(run.name)
        return _fold(current)

    monkeypatch.setattr(rejection, "evaluate_fold", evaluate_fold)
    result = CliRunner().invoke(rejection.main, [str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert measured == ["m_contiguous_f1"]
    assert "contrast_hue" in json.loads((cache / "m_contiguous_f1.json").read_text())["bounds"]
    assert "| synthetic:colour_shuffled | 20 | 100.0 |" in (tmp_path / "rejection.md").read_text()
