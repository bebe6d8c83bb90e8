"""The colour check: a logistic regression on colour histograms that vetoes confident answers."""

import json

import numpy as np
import pytest

from all_tf.inference.colour_check import HIST_BINS, ColourCheck, colour_histogram


def _fields(colour, n, seed):
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.float64)
    return [np.clip(base + rng.normal(0, 12, (40, 48, 3)), 0, 255).astype(np.uint8)
            for _ in range(n)]


def _data(seed=0):
    colours = [(200, 80, 90), (90, 80, 200), (120, 190, 90)]  # classes 0, 1, 3; 2 absent
    labels = [0, 1, 3]
    x, y = [], []
    for colour, label in zip(colours, labels, strict=True):
        x += [colour_histogram(im) for im in _fields(colour, 12, seed + label)]
        y += [label] * 12
    return np.stack(x), np.array(y)


def test_fits_separable_colours_and_never_names_an_absent_class():
    x, y = _data()
    check = ColourCheck.fit(x, y, n_classes=4)
    x_new, y_new = _data(seed=100)
    probs = check.predict_proba(x_new)
    assert probs.shape == (36, 4) and np.allclose(probs.sum(axis=1), 1)
    assert (check.classes(x_new) == y_new).all()
    assert probs[:, 2].max() < 1e-6


def test_histogram_ignores_the_label_corner():
    rng = np.random.default_rng(0)
    field = np.clip(rng.normal((200, 80, 90), 12, (224, 224, 3)), 0, 255).astype(np.uint8)
    marked = field.copy()
    marked[-30:, -45:] = 255  # a white scale-bar label in the bottom-right corner
    assert colour_histogram(field).shape == (3 * HIST_BINS,)
    assert np.allclose(colour_histogram(field), colour_histogram(marked))


def test_round_trips_through_json_and_refuses_malformed_documents():
    x, y = _data()
    check = ColourCheck.fit(x, y, n_classes=4)
    again = ColourCheck.from_dict(json.loads(json.dumps(check.to_dict())))
    assert np.allclose(again.predict_proba(x), check.predict_proba(x), atol=1e-6)
    doc = check.to_dict()
    with pytest.raises(ValueError, match="colour check"):
        ColourCheck.from_dict({**doc, "coef": doc["coef"][:2] + [[0.0]]})
    with pytest.raises(ValueError, match="colour check"):
        ColourCheck.from_dict({k: v for k, v in doc.items() if k != "mean"})
