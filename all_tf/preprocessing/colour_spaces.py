"""Colour spaces for the model input, each mapped to [0, 1] per channel by fixed ranges.

Fixed (not per-image) ranges keep absolute colour information and make the mapping the same
at training and inference. Input is RGB float32 in [0, 1] (uint8 / 255).

| space | channels | native range (before mapping) | mapping to [0, 1] |
| --- | --- | --- | --- |
| rgb | R, G, B | [0, 1] | identity |
| hsv | H, S, V | H [0, 360) degrees, S and V [0, 1] (OpenCV float) | H / 360 |
| lab | L*, a*, b* | L [0, 100], a [-86.2, 98.2], b [-107.9, 94.5] for sRGB (D65) | L / 100, (a + 128) / 255, (b + 128) / 255 (OpenCV's 8-bit scaling) |
| hed | haematoxylin, eosin, DAB | optical density of ``skimage.color.rgb2hed`` (Ruifrok & Johnston matrix), clipped at 0 by skimage | divided by the maxima over all RGB colours >= 1/255: H 0.7532, E 0.4551, D 0.6312 |

For ``hed``, RGB is floored at 1/255 before the conversion (the darkest non-zero uint8 value), so
pure-black pixels do not reach skimage's 1e-6 floor and stretch the range 2.5-fold.

Caveat for ``hed``: the Ruifrok matrix models haematoxylin, eosin and DAB, not the Romanowsky
stains of blood smears. On the 48 shipped all4 images the mapped channels have 1st/50th/99th
percentiles H 0/0.021/0.126, E 0/0/0.054, D 0/0/0.022 (``scripts/benchmark_preprocessing.py
--hed-percentiles``): E and D are mostly clipped to 0 and H uses an eighth of its range.

Example:
    >>> import numpy as np
    >>> from all_tf.preprocessing import to_colour_space
    >>> white = np.ones((2, 2, 3), np.float32)
    >>> [round(float(v), 3) for v in to_colour_space(white, "lab")[0, 0]]
    [1.0, 0.502, 0.502]
"""

from __future__ import annotations

import cv2
import numpy as np

COLOUR_SPACE_RANGES = {
    "rgb": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    "hsv": ((0.0, 360.0), (0.0, 1.0), (0.0, 1.0)),
    "lab": ((0.0, 100.0), (-128.0, 127.0), (-128.0, 127.0)),
    "hed": ((0.0, 0.7532), (0.0, 0.4551), (0.0, 0.6312)),
}
"""Native (lo, hi) per channel that is mapped linearly onto [0, 1]."""

_HED_FLOOR = 1.0 / 255.0


def _affine(space: str) -> np.ndarray:
    """3 x 4 matrix for ``cv2.transform``: channel c -> (c - lo) / (hi - lo)."""
    ranges = np.asarray(COLOUR_SPACE_RANGES[space], np.float64)
    scale = 1.0 / (ranges[:, 1] - ranges[:, 0])
    return np.hstack([np.diag(scale), (-ranges[:, 0] * scale)[:, None]]).astype(np.float32)


_AFFINE = {space: _affine(space) for space in COLOUR_SPACE_RANGES}


def _hed_matrix() -> np.ndarray:
    """3 x 3 matrix for ``cv2.transform``: log(RGB) -> HED optical density, range-mapped.

    ``skimage.color.rgb2hed(rgb)`` is ``max(0, log(rgb) / log(1e-6) @ hed_from_rgb)``, with
    ``hed_from_rgb`` the inverse of Ruifrok & Johnston's stain matrix; the same product is
    done here by OpenCV in one pass, about ten times faster (equality is tested).
    """
    from skimage.color import hed_from_rgb

    scale = 1.0 / np.asarray(COLOUR_SPACE_RANGES["hed"], np.float64)[:, 1]
    return (hed_from_rgb.T / np.log(1e-6) * scale[:, None]).astype(np.float32)


_HED = _hed_matrix()


def _clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0, out=x)


def to_colour_space(rgb01: np.ndarray, space: str) -> np.ndarray:
    """Convert RGB in [0, 1] to ``space`` with every channel in [0, 1].

    Args:
        rgb01: float (H, W, 3) RGB in [0, 1].
        space: one of ``rgb``, ``hsv``, ``lab``, ``hed`` (see the module table).

    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    if space not in COLOUR_SPACE_RANGES:
        raise ValueError(f"colour space must be one of {tuple(COLOUR_SPACE_RANGES)}, got {space!r}")
    if rgb01.ndim != 3 or rgb01.shape[2] != 3:
        raise ValueError(f"expected RGB of shape (H, W, 3), got {rgb01.shape}")
    rgb01 = np.ascontiguousarray(rgb01, np.float32)
    if space == "rgb":
        return np.clip(rgb01, 0.0, 1.0)
    if space == "hed":
        log_rgb = cv2.log(np.maximum(rgb01, np.float32(_HED_FLOOR)))
        return _clip01(cv2.transform(log_rgb, _HED))
    code = cv2.COLOR_RGB2HSV if space == "hsv" else cv2.COLOR_RGB2Lab
    return _clip01(cv2.transform(cv2.cvtColor(rgb01, code), _AFFINE[space]))
