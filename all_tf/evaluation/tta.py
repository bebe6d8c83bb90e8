"""Test-time augmentation: average the softmax over the 8 flips and 90-degree rotations.

A smear field has no orientation, and the models are trained with flips and rotations, so the
eight dihedral copies of an image are equally valid views; averaging them is a cheap ensemble.

Example:
    >>> import numpy as np
    >>> from all_tf.evaluation.tta import dihedral_views
    >>> dihedral_views(np.zeros((2, 8, 8, 3), np.float32)).shape
    (16, 8, 8, 3)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TTA_PREDICTIONS_FILE = "predictions_tta.csv"


def dihedral_views(x: np.ndarray) -> np.ndarray:
    """The 8 dihedral copies of each image of x (N, S, S, C): (8 N, S, S, C), view-major."""
    views = []
    for flip in (False, True):
        base = x[:, :, ::-1] if flip else x
        for k in range(4):
            views.append(np.rot90(base, k, axes=(1, 2)))
    return np.ascontiguousarray(np.concatenate(views))


def tta_probabilities(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mean softmax (N, C) over the 8 dihedral views of preprocessed inputs x (N, S, S, 3)."""
    n = len(x)
    probs = np.asarray(model.predict(dihedral_views(x), batch_size=batch_size, verbose=0))
    return probs.reshape(8, n, -1).mean(axis=0)


def write_tta_predictions(run_dir: str | Path, data_dir: str | None = None,
                          batch_size: int = 64) -> Path:
    """``predictions_tta.csv`` of a finished whole-field run (validation and test parts),
    cached: an existing file is kept."""
    from all_tf.evaluation.runs import load_config, load_model, load_split
    from all_tf.io import ImageReadError, read_image
    from all_tf.preprocessing import preprocess_image
    from all_tf.training.run import write_predictions

    run_dir = Path(run_dir)
    out = run_dir / TTA_PREDICTIONS_FILE
    if out.exists():
        return out
    cfg = load_config(run_dir)
    if cfg.preprocess.input_mode != "image":
        raise ValueError(f"{run_dir}: test-time augmentation is for whole-field runs")
    split = load_split(run_dir, data_dir or cfg.data_dir)
    model = load_model(run_dir)
    parts = {}
    for part in ("val", "test"):
        records = getattr(split, part)
        kept, x = [], []
        for k, r in enumerate(records):
            try:
                x.append(preprocess_image(read_image(r.path), cfg.preprocess))
                kept.append(k)
            except ImageReadError:
                continue
        if not x:
            continue
        probs = np.concatenate([tta_probabilities(model, np.stack(x[i:i + 32]), batch_size)
                                for i in range(0, len(x), 32)])
        y = np.array([records[k].label for k in kept])
        parts[part] = (records, y, probs, np.array(kept))
    write_predictions(out, parts)
    return out
