"""Each figure function writes a readable PNG."""

import numpy as np
import pytest

from all_tf import CLASS_NAMES
from all_tf.evaluation import figures
from all_tf.io import read_image


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_confusion_and_parallel_coordinates(tmp_path):
    cm = [[5, 1, 0, 0], [0, 4, 2, 0], [0, 0, 0, 0], [1, 0, 0, 5]]  # a class without images
    assert _is_png(figures.plot_confusion_matrix(cm, CLASS_NAMES, tmp_path / "a" / "cm.png"))
    rows = [{"model": "m1", "accuracy": 0.9, "macro_f1": 0.8, "macro_auc": ""},
            {"model": "m2", "accuracy": 0.7, "macro_f1": 0.8, "macro_auc": 0.9}]
    path = figures.plot_parallel_coordinates(rows, ["accuracy", "macro_f1", "macro_auc"],
                                             tmp_path / "pc.png")
    assert _is_png(path)


def test_training_curves(tmp_path):
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,learning_rate,focal_weight,loss,accuracy,val_loss,val_accuracy\n"
                    "0,0.001,0.0,1.3,0.4,1.2,0.5\n1,0.0009,0.0,1.0,0.6,1.1,0.55\n"
                    "2,0.0005,1.0,0.2,0.7,0.25,0.6\n")
    assert _is_png(figures.plot_training_curves(hist, tmp_path / "curves.png"))
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss\n")
    with pytest.raises(ValueError, match="no epochs"):
        figures.plot_training_curves(empty, tmp_path / "x.png")


def test_segmentation_colour_and_gradcam_panels(tmp_path, sample_all4):
    rgb = read_image(sorted((sample_all4 / "Pro").glob("*.jpg"))[0])
    blank = np.full((64, 64, 3), 230, np.uint8)  # no nucleus: whole-image fallback
    path = figures.plot_segmentation_panel([("Pro", rgb), ("blank", blank)], tmp_path / "seg.png")
    assert _is_png(path)
    assert _is_png(figures.plot_colour_spaces(rgb, tmp_path / "colour.png"))
    items = [{"overlay": rgb, "true": "Pro", "pred": "Pre", "confidence": 0.55}] * 3
    assert _is_png(figures.plot_gradcam_grid(items, tmp_path / "cam.png", ncols=2))
    with pytest.raises(ValueError):
        figures.plot_gradcam_grid([], tmp_path / "none.png")
