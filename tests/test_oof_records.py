"""docs/oof: the committed out-of-fold records are complete and agree with themselves.

They back numbers in docs/results.md, so each run folder must hold the five files of a fold
record, its predictions must cover exactly its split's validation and test parts, and the
accuracy stored in ``metrics.json`` must be the one its single-view predictions give.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from all_tf.data import Split
from all_tf.evaluation.crossval import image_key, read_predictions
from all_tf.evaluation.fold_records import finished_fold_runs
from all_tf.evaluation.tta import TTA_PREDICTIONS_FILE

OOF = Path(__file__).resolve().parents[1] / "docs" / "oof"
RUNS = [run for folder in sorted(p for p in OOF.iterdir() if p.is_dir())
        for run in finished_fold_runs(folder)]
FILES = ("config.json", "split.json", "metrics.json", "predictions.csv", TTA_PREDICTIONS_FILE)


def test_there_are_records():
    assert RUNS, f"no fold runs under {OOF}"


@pytest.mark.parametrize("run", RUNS, ids=lambda r: f"{r.parents[1].name}/{r.name}")
def test_record_is_complete_and_consistent(run):
    assert sorted(p.name for p in run.iterdir()) == sorted(FILES)
    split = Split.load(run / "split.json", check_files=False)
    fold = json.loads((run / "split.json").read_text())["params"]["fold"]
    assert run.name.split("_contiguous_f")[1].startswith(f"{fold}_")
    metrics = json.loads((run / "metrics.json").read_text())
    for name in ("predictions.csv", TTA_PREDICTIONS_FILE):
        parts = read_predictions(run, name)
        for part in ("val", "test"):
            listed = {image_key(r.path): r.label for r in getattr(split, part)}
            found = {image_key(p): int(y) for p, y in zip(parts[part]["path"], parts[part]["y"],
                                                          strict=True)}
            assert found == listed, (name, part)
            np.testing.assert_allclose(parts[part]["p"].sum(axis=1), 1.0, atol=1e-4)
    test = read_predictions(run)["test"]
    assert len(test["y"]) == metrics["n"]
    assert np.mean(test["p"].argmax(axis=1) == test["y"]) == pytest.approx(metrics["accuracy"])
