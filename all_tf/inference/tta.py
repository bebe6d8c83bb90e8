"""Test-time augmentation: average the softmax over the 8 flips and 90-degree rotations.

A smear field has no orientation, and the models are trained with flips and rotations, so the
eight dihedral copies of an image are equally valid views; averaging them is a cheap ensemble.

Example:
    >>> import numpy as np
    >>> from all_tf.inference.tta import dihedral_views
    >>> dihedral_views(np.zeros((2, 8, 8, 3), np.float32)).shape
    (16, 8, 8, 3)
"""

from __future__ import annotations

import numpy as np


def dihedral_views(x: np.ndarray) -> np.ndarray:
    """The 8 dihedral copies of each image of x (N, S, S, C): (8 N, S, S, C), view-major."""
    views = []
    for flip in (False, True):
        base = x[:, :, ::-1] if flip else x
        for k in range(4):
            views.append(np.rot90(base, k, axes=(1, 2)))
    return np.ascontiguousarray(np.concatenate(views))


def check_whole_field(cfg) -> None:
    """Raise ValueError unless ``cfg`` classifies whole fields (the views are of a field)."""
    if cfg.preprocess.input_mode != "image":
        raise ValueError(f"input mode {cfg.preprocess.input_mode!r}: test-time augmentation "
                         "is for whole-field runs")


def tta_probabilities(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mean softmax (N, C) over the 8 dihedral views of preprocessed inputs x (N, S, S, 3)."""
    n = len(x)
    probs = np.asarray(model.predict(dihedral_views(np.asarray(x)), batch_size=batch_size,
                                     verbose=0))
    return probs.reshape(8, n, -1).mean(axis=0)
