"""Know when not to answer: input checks and an out-of-distribution score.

A softmax over four classes always names one of them, even for a black frame or a photograph.
The gate runs before the class is reported and gives every prediction a status:

* ``rejected:<reason>`` — the input is not a smear field like those the model was trained on:
  ``too_dark`` / ``too_bright`` (mean grey level), ``not_colour`` (mean HSV saturation),
  ``unusual_stain`` (saturation, or mean LAB a*/b* of the field or of its most saturated
  pixels, or the hue of those pixels, alone or against the next most saturated ones, outside
  the training range: a channel-swapped field keeps its purple-blue nuclei but turns its red
  cells from grey-blue to lavender), ``blurred`` / ``noisy`` (variance of the Laplacian),
  ``no_nucleus`` (no purple-index nucleus), ``wrong_scale`` (nuclei far larger or smaller than
  in training: another magnification, or a single-cell crop), or
  ``out_of_distribution`` (the model's pooled features are far from every class of its
  training images: Mahalanobis distance to the nearest class mean, shared covariance);
* ``uncertain`` — the calibrated confidence is below the model's threshold, or the model's
  colour check (:mod:`all_tf.inference.colour_check`), where it has one, names another class;
* ``ok``.

Every bound is fitted on training images, not set by hand (:func:`fit_input_bounds`,
:meth:`FeatureDistance.fit`), and stored with the model. The image statistics are taken on the
image resized to :data:`GATE_SIZE` pixels, so they do not depend on the camera's resolution.

Example:
    >>> import numpy as np
    >>> from all_tf.inference.gate import image_statistics, input_reason
    >>> black = np.zeros((64, 64, 3), np.uint8)
    >>> image_statistics(black)["brightness"]
    0.0
    >>> input_reason(image_statistics(black), {"brightness": [100.0, 240.0]})
    'too_dark'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from all_tf.inference.colour_check import ColourCheck

GATE_SIZE = 224
STATISTICS = ("brightness", "saturation", "focus", "stain_a", "stain_b", "nucleus_a",
              "nucleus_b", "nucleus_hue", "contrast_hue", "nucleus_size", "nuclei")
DOMINANT_SHARE = 0.05  # nucleus_a/b: mean over this share of the most saturated pixels
CONTRAST_SHARE = 0.15  # contrast_hue: nuclei against the next 15 % (cytoplasm, red cells)
MIN_CHROMA = 10.0  # LAB a*b* distance from grey below which a hue is not defined
# contrast_hue: a*b* distance between nuclei and the rest below which it is not defined (mean
# colours of thousands of pixels: a small difference still has a well-defined direction)
MIN_CONTRAST = 2.0
# (statistic, side) -> reason; checked in this order, the first failing check names the reason
CHECKS = (
    ("brightness", 0, "too_dark"),
    ("brightness", 1, "too_bright"),
    ("saturation", 0, "not_colour"),
    ("focus", 0, "blurred"),
    ("focus", 1, "noisy"),
    ("saturation", 1, "unusual_stain"),
    ("stain_a", 0, "unusual_stain"),
    ("stain_a", 1, "unusual_stain"),
    ("stain_b", 0, "unusual_stain"),
    ("stain_b", 1, "unusual_stain"),
    ("nucleus_a", 0, "unusual_stain"),
    ("nucleus_a", 1, "unusual_stain"),
    ("nucleus_b", 0, "unusual_stain"),
    ("nucleus_b", 1, "unusual_stain"),
    ("nucleus_hue", 0, "unusual_stain"),
    ("nucleus_hue", 1, "unusual_stain"),
    ("contrast_hue", 0, "unusual_stain"),
    ("contrast_hue", 1, "unusual_stain"),
    ("nuclei", 0, "no_nucleus"),
    ("nucleus_size", 0, "wrong_scale"),
    ("nucleus_size", 1, "wrong_scale"),
)
REASONS = tuple(dict.fromkeys(r for *_, r in CHECKS)) + ("out_of_distribution",)
GATE_FILE = "gate.json"
OOD_FILE = "ood.npz"


def image_statistics(rgb: np.ndarray, seg_cfg=None) -> dict[str, float]:
    """The gate's statistics of one RGB uint8 image (H, W, 3), any size.

    Returns:
        ``brightness`` (mean grey level, 0-255), ``saturation`` (mean HSV S, 0-255), ``focus``
        (variance of the Laplacian of the grey image), ``stain_a`` / ``stain_b`` (mean OpenCV
        LAB a* and b*, 0-255, 128 neutral), ``nucleus_a`` / ``nucleus_b`` (the same over the
        5 % most saturated pixels: the stained nuclei, purple = high a*, low b*),
        ``nucleus_hue`` (their hue angle atan2(b* - 128, a* - 128) in degrees; NaN, and so
        not checked, when their chroma is below MIN_CHROMA), ``contrast_hue`` (the hue
        angle of their mean a*b* minus that of the next CONTRAST_SHARE most saturated pixels,
        cytoplasm and red cells: the direction in which nuclei differ from the rest of the
        stained field; NaN below MIN_CONTRAST), ``nuclei``
        (purple-index nucleus objects of ``segment_nuclei(rgb, seg_cfg)``: one per white cell
        when ``seg_cfg.merge_lobes`` joins the lobes of a nucleus), ``nucleus_size`` (their
        mean area in pixels: a single cell filling the frame is another magnification), all
        on the image resized to GATE_SIZE x GATE_SIZE. ``seg_cfg`` is the model's
        segmentation (its ``config.json``), so the counts match those its bounds were
        fitted on.
    """
    import cv2

    from all_tf.preprocessing.resize import resize_to
    from all_tf.segmentation import segment_nuclei

    small = np.ascontiguousarray(resize_to(rgb, GATE_SIZE))
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)
    try:
        mask = segment_nuclei(small, seg_cfg)
        nuclei = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
        size = float(mask.sum()) / max(nuclei, 1)
    except ValueError:  # a flat image has no threshold to find
        nuclei, size = 0, 0.0
    sat = hsv[..., 1].ravel()
    n = sat.size
    k = max(1, int(round(DOMINANT_SHARE * n)))
    order = np.argpartition(sat, n - k)
    lab = lab.reshape(-1, 3)
    dominant = lab[order[n - k:]].astype(np.float64)
    nucleus_a, nucleus_b = dominant[:, 1].mean(), dominant[:, 2].mean()
    others = order[:n - k]  # the next CONTRAST_SHARE of the pixels, by saturation
    j = min(len(others), max(1, int(round(CONTRAST_SHARE * n))))
    rest = (lab[others[np.argpartition(sat[others], len(others) - j)[-j:]]].astype(np.float64)
            if j else dominant)
    return {
        "brightness": float(grey.mean()),
        "saturation": float(hsv[..., 1].mean()),
        "focus": float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        "stain_a": float(lab[:, 1].mean()),
        "stain_b": float(lab[:, 2].mean()),
        "nucleus_a": float(nucleus_a),
        "nucleus_b": float(nucleus_b),
        "nucleus_hue": _hue(nucleus_a - 128.0, nucleus_b - 128.0),
        "contrast_hue": _hue(nucleus_a - rest[:, 1].mean(), nucleus_b - rest[:, 2].mean(),
                             MIN_CONTRAST),
        "nuclei": float(nuclei),
        "nucleus_size": size,
    }


def _hue(a: float, b: float, min_chroma: float = MIN_CHROMA) -> float:
    """Hue angle in degrees of a LAB (a*, b*) offset; NaN when it is shorter than min_chroma."""
    return float(np.degrees(np.arctan2(b, a))) if np.hypot(a, b) >= min_chroma else float("nan")


def _forward(name: str, x: np.ndarray) -> np.ndarray:
    """The scale on which a statistic's margin is added (so bounds respect its natural range)."""
    if name == "brightness":  # in (0, 255): logit
        p = np.clip(x / 255.0, 1e-4, 1 - 1e-4)
        return np.log(p / (1 - p))
    if name in ("saturation", "focus"):  # >= 0, skewed: log
        return np.log1p(x)
    return x


def _inverse(name: str, y: float) -> float:
    if name == "brightness":
        return float(255.0 / (1.0 + np.exp(-y)))
    if name in ("saturation", "focus"):
        return float(np.expm1(y))
    return float(y)


def fit_input_bounds(stats: list[dict[str, float]], quantile: float = 0.005,
                     margin: float = 0.5) -> dict[str, list[float | None]]:
    """Bounds of each statistic from training images.

    Each bound is the ``quantile`` (lower) or ``1 - quantile`` (upper) quantile, widened by
    ``margin`` times the distance between the two, on a scale that fits the statistic (logit
    of brightness / 255, log(1 + x) of saturation and focus, linear for stain, hue and
    nucleus size). The nucleus count has only a lower bound, at least 1. A statistic that
    ``stats`` lack or that is NaN in all of them gets ``[None, None]`` (not checked).

    Returns:
        ``{statistic: [low, high]}`` (``high`` None for ``nuclei``).
    """
    if not stats:
        raise ValueError("cannot fit input bounds on 0 images")
    bounds: dict[str, list[float | None]] = {}
    for name in STATISTICS:
        values = np.array([s.get(name, np.nan) for s in stats], dtype=np.float64)
        values = values[~np.isnan(values)]
        if not len(values):
            bounds[name] = [None, None]
            continue
        if name == "nuclei":
            bounds[name] = [max(1.0, float(np.floor(np.quantile(values, quantile)))), None]
            continue
        lo, hi = np.quantile(_forward(name, values), [quantile, 1 - quantile])
        width = hi - lo
        bounds[name] = [_inverse(name, lo - margin * width), _inverse(name, hi + margin * width)]
    return bounds


def input_reason(stats: dict[str, float], bounds: dict) -> str | None:
    """The first failing input check's reason, or None when every check passes (a NaN
    statistic, such as the hue of grey nuclei, passes its checks, and a statistic without
    bounds, such as ``contrast_hue`` in a gate fitted before it existed, is not checked)."""
    for name, side, reason in CHECKS:
        limit = (bounds.get(name) or [None, None])[side]
        if limit is None:
            continue
        value = stats.get(name, float("nan"))
        if (side == 0 and value < limit) or (side == 1 and value > limit):
            return reason
    return None


@dataclass
class FeatureDistance:
    """Mahalanobis out-of-distribution score on pooled features (Lee et al. 2018).

    ``score(f) = min_c (f - mean_c)^T P (f - mean_c)``, with ``P`` the inverse of the
    Ledoit-Wolf shrunk covariance of the class-centred training features. Higher is farther.

    Attributes:
        means: float32 (C, D) class means.
        precision: float32 (D, D).
        threshold: scores above it are out of distribution (None until calibrated).
    """

    means: np.ndarray
    precision: np.ndarray
    threshold: float | None = None

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> FeatureDistance:
        """Fit on training features (N, D) and their int labels (N,)."""
        from sklearn.covariance import LedoitWolf

        features = np.asarray(features, np.float64)
        labels = np.asarray(labels)
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        return cls(means.astype(np.float32), precision.astype(np.float32))

    def score(self, features: np.ndarray) -> np.ndarray:
        """float64 (N,) distances of features (N, D)."""
        f = np.asarray(features, np.float64)
        p = self.precision.astype(np.float64)
        best = None
        for mean in self.means.astype(np.float64):
            d = f - mean
            dist = np.einsum("nd,de,ne->n", d, p, d)
            best = dist if best is None else np.minimum(best, dist)
        return best

    def calibrate(self, held_out_features: np.ndarray, quantile: float = 0.99,
                  factor: float = 1.0) -> float:
        """Set ``threshold`` to ``factor`` times the ``quantile`` of held-out in-distribution
        scores (``factor`` > 1 leaves room for the larger distances of a new batch)."""
        self.threshold = float(factor * np.quantile(self.score(held_out_features), quantile))
        return self.threshold

    def save(self, path: str | Path) -> None:
        import io

        from all_tf.io import atomic_write_bytes

        buf = io.BytesIO()
        np.savez_compressed(buf, means=self.means, precision=self.precision,
                            threshold=np.float64(np.nan if self.threshold is None
                                                 else self.threshold))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> FeatureDistance:
        try:
            with np.load(path) as z:
                t = float(z["threshold"])
                return cls(z["means"], z["precision"], None if np.isnan(t) else t)
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not an all_tf out-of-distribution file ({e})") from None


@dataclass
class Gate:
    """Input bounds and feature distance of one model (``gate.json`` + ``ood.npz``).

    ``ood_threshold`` stands in for ``distance.threshold`` where only the scores are known
    (a SavedModel computes the distance in its graph). ``colour`` is the colour check, or None.
    """

    bounds: dict
    distance: FeatureDistance | None = None
    ood_threshold: float | None = None
    colour: ColourCheck | None = None

    @property
    def threshold(self) -> float | None:
        """The feature-distance threshold, or None."""
        return self.distance.threshold if self.distance is not None else self.ood_threshold

    def colour_class(self, rgb: np.ndarray) -> int | None:
        """The colour check's class for an RGB uint8 field (H, W, 3), or None without one."""
        if self.colour is None:
            return None
        from all_tf.inference.colour_check import colour_histogram

        return int(self.colour.classes(colour_histogram(rgb)[None])[0])

    def status(self, stats: dict[str, float], ood_score: float | None, confidence: float,
               threshold: float, predicted: int | None = None,
               colour_class: int | None = None) -> str:
        """``"ok"``, ``"uncertain"`` or ``"rejected:<reason>"`` for one image whose predicted
        class is ``predicted`` and whose colour check class (:meth:`colour_class`) is
        ``colour_class`` (None: not checked)."""
        reason = input_reason(stats, self.bounds)
        if reason is None and ood_score is not None and self.threshold is not None \
                and ood_score > self.threshold:
            reason = "out_of_distribution"
        if reason is not None:
            return f"rejected:{reason}"
        disagrees = colour_class is not None and colour_class != predicted
        return "uncertain" if confidence < threshold or disagrees else "ok"

    def to_dict(self) -> dict:
        return {"format": "all_tf.gate", "version": 1, "gate_size": GATE_SIZE,
                "bounds": self.bounds, "checks": [list(c) for c in CHECKS],
                "ood": None if self.distance is None else {
                    "method": "mahalanobis_min_class", "file": OOD_FILE,
                    "threshold": self.distance.threshold},
                "colour_check": None if self.colour is None else self.colour.to_dict()}

    def save(self, folder: str | Path) -> None:
        from all_tf.io import atomic_write_text

        folder = Path(folder)
        atomic_write_text(folder / GATE_FILE, json.dumps(self.to_dict(), indent=2))
        if self.distance is not None:
            self.distance.save(folder / OOD_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> Gate | None:
        """The gate stored in ``folder``, or None when it has none."""
        folder = Path(folder)
        path = folder / GATE_FILE
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
            bounds = doc["bounds"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not an all_tf gate file ({e})") from None
        distance = FeatureDistance.load(folder / OOD_FILE) if doc.get("ood") else None
        return cls(bounds, distance, colour=colour_check_from(doc, path))


def colour_check_from(doc: dict, source) -> ColourCheck | None:
    """The colour check stored in a gate document, or None; ValueError naming ``source``."""
    if not doc.get("colour_check"):
        return None
    try:
        return ColourCheck.from_dict(doc["colour_check"])
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
