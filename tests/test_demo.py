"""``python -m all_tf.demo`` (what ``bash dev.sh demo`` runs) classifies the shipped sample."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("tensorflow")


def test_demo_classifies_the_sample_with_the_released_model(tmp_path):
    from click.testing import CliRunner

    from all_tf.demo import main

    result = CliRunner().invoke(main, ["-o", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "accuracy on the answered images: 48/48 = 100.0 %" in result.output
    assert "ms (keras, 48 images)" in result.output
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48 and {r["status"] for r in rows} == {"ok"}
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 48
    assert (tmp_path / "gradcam.png").stat().st_size > 10_000
