"""Nucleus candidates by colour: the purple index and a per-channel RGB threshold.

Romanowsky-stained (Giemsa, Wright, May-Gruenwald) nuclei are dark purple: red and blue
well above green. The purple index ``PI = (R + B) / 2 - G`` on [0, 1] RGB is high for nuclei
(median 0.28 on segwbc expert nucleus pixels; ``scripts/benchmark_segmentation.py
--pixel-stats``), lower for cytoplasm (0.08-0.10) and red cells, and near zero or negative
for the background (median 0.02 on dataset2, -0.12 on dataset1's yellowish one).

Example:
    >>> import numpy as np
    >>> from all_tf.segmentation import purple_index
    >>> px = np.array([[[0.6, 0.2, 0.8]]], np.float32)  # purple
    >>> round(float(purple_index(px)[0, 0]), 3)
    0.5
"""

from __future__ import annotations

import numpy as np
from skimage.filters import threshold_multiotsu, threshold_otsu

PI_RANGE = (-1.0, 1.0)
"""Range of the purple index for RGB in [0, 1]."""

RGB_TAUS = (0.5, 0.3, 0.4)
"""Default (tau_R, tau_G, tau_B) of :func:`rgb_threshold_mask`."""


def as_unit_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] RGB (H, W, 3) -> float32 [0, 1]."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected RGB of shape (H, W, 3), got {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"expected uint8 or float RGB, got {rgb.dtype}")
    return rgb.astype(np.float32, copy=False)


def purple_index(rgb01: np.ndarray) -> np.ndarray:
    """PI = (R + B) / 2 - G per pixel.

    Args:
        rgb01: RGB (H, W, 3), float in [0, 1] (uint8 is scaled by 1/255).

    Returns:
        float32 (H, W) in [-1, 1].
    """
    rgb = as_unit_rgb(rgb01)
    return (rgb[..., 0] + rgb[..., 2]) * np.float32(0.5) - rgb[..., 1]


def pi_mask(rgb01: np.ndarray, method: str = "otsu", threshold: float = 0.2) -> np.ndarray:
    """Pixels whose purple index exceeds a threshold.

    Args:
        rgb01: RGB (H, W, 3), float in [0, 1] or uint8.
        method: ``"otsu"`` (the paper: Otsu's threshold of the image's PI histogram),
            ``"multiotsu"`` (the upper of two three-class Otsu thresholds) or ``"fixed"``.
        threshold: the PI threshold for ``"fixed"`` (paper: 0.1-0.3).

    Returns:
        bool (H, W); PI > threshold. On a flat image (one PI value) Otsu selects nothing;
        ``"fixed"`` selects everything or nothing, as that value is above θ or not.

    Two-class Otsu separates background from *everything stained*, so on segwbc its mask
    takes in cytoplasm and red cells (median threshold 0.03 on dataset1, 0.10 on dataset2,
    against a median nucleus PI of 0.28). Three classes (background; cytoplasm and red
    cells; nuclei) put the upper threshold between cytoplasm and nucleus (median 0.16 and
    0.20); see docs/benchmarks.md for the Dice of each.
    """
    pi = purple_index(rgb01)
    if method in ("otsu", "multiotsu"):
        if float(pi.max()) - float(pi.min()) < 1e-6:
            return np.zeros(pi.shape, bool)
        threshold = float(threshold_otsu(pi))
        if method == "multiotsu":
            try:
                threshold = float(threshold_multiotsu(pi, classes=3)[-1])
            except ValueError:  # too few distinct values for three classes
                pass
    elif method != "fixed":
        raise ValueError(f"method must be 'otsu', 'multiotsu' or 'fixed', got {method!r}")
    return pi > threshold


def rgb_threshold_mask(
    rgb01: np.ndarray,
    tau_r: float = RGB_TAUS[0],
    tau_g: float = RGB_TAUS[1],
    tau_b: float = RGB_TAUS[2],
) -> np.ndarray:
    """Per-channel thresholds: ``R < tau_r`` and ``G < tau_g`` and ``B > tau_b``.

    The paper gives only the values (tau_R 0.5, tau_B 0.4, tau_G 0.3). The directions used
    here are those of a nucleus on segwbc expert masks: mean nucleus RGB is (0.46, 0.16, 0.40)
    in dataset1 and (0.42, 0.21, 0.54) in dataset2, against backgrounds of (0.99, 0.96, 0.74)
    and (0.90, 0.76, 0.68): nuclei are darker in red and green but keep blue. All eight
    direction combinations were scored in ``scripts/benchmark_segmentation.py``
    (``--rgb-directions``); see docs/benchmarks.md.

    Args:
        rgb01: RGB (H, W, 3), float in [0, 1] or uint8.

    Returns:
        bool (H, W).
    """
    rgb = as_unit_rgb(rgb01)
    return (rgb[..., 0] < tau_r) & (rgb[..., 1] < tau_g) & (rgb[..., 2] > tau_b)
