"""A second opinion from colour alone: a prediction the colour model disagrees with is uncertain.

On a new acquisition batch the network's errors are mostly confident (a Benign field called
Early with 0.9), so the confidence threshold alone misses them. A multinomial logistic
regression on the field's RGB histograms (label corner masked), fitted on the same training
images, makes different errors: where its class differs from the network's, the prediction is
marked ``uncertain``. It never changes the class the network reports, it only abstains more.
Colour carries the stain and illumination of the training slides, so on another laboratory's
stain it disagrees more often and the model answers less; that is the intended direction.

Example:
    >>> import numpy as np
    >>> from all_tf.inference.colour_check import ColourCheck, colour_histogram
    >>> rng = np.random.default_rng(0)
    >>> reds = [np.full((32, 32, 3), (200, 60, 60), np.uint8) for _ in range(4)]
    >>> blues = [np.full((32, 32, 3), (60, 60, 200), np.uint8) for _ in range(4)]
    >>> x = np.stack([colour_histogram(im) for im in reds + blues])
    >>> check = ColourCheck.fit(x, np.array([0] * 4 + [1] * 4), n_classes=4)
    >>> int(check.predict_proba(x[:1]).argmax())
    0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIST_BINS = 32


def rgb_histogram(rgb: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Per-channel histograms of uint8 RGB, each normalised to sum 1; float32 (3 * bins,)."""
    import cv2

    rgb = np.ascontiguousarray(rgb)
    hists = [cv2.calcHist([rgb], [c], None, [bins], [0, 256]).ravel() for c in range(3)]
    return np.concatenate([h / max(h.sum(), 1.0) for h in hists]).astype(np.float32)


def colour_histogram(rgb: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """The colour check's features: :func:`rgb_histogram` of the field resized to
    ``GATE_SIZE`` x ``GATE_SIZE`` (as the gate's statistics) with its label corner masked;
    uint8 RGB (H, W, 3) of any size -> float32 (3 * bins,)."""
    from all_tf.inference.gate import GATE_SIZE
    from all_tf.preprocessing.label_corner import mask_label_corner
    from all_tf.preprocessing.resize import resize_to

    return rgb_histogram(mask_label_corner(resize_to(rgb, GATE_SIZE)), bins)


@dataclass
class ColourCheck:
    """Multinomial logistic regression on standardised colour histograms.

    Attributes:
        mean: float32 (D,) feature means of the training histograms.
        scale: float32 (D,) their standard deviations (1 where constant).
        coef: float32 (C, D) weights, one row per class of the model.
        intercept: float32 (C,).
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @classmethod
    def fit(cls, histograms: np.ndarray, labels: np.ndarray, n_classes: int,
            c: float = 1.0) -> ColourCheck:
        """Fit on training histograms (N, D) and int labels (N,) in [0, n_classes).

        A class absent from ``labels`` gets weights 0 and intercept -inf-like (-1e4), so it is
        never predicted.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        x = np.asarray(histograms, np.float64)
        y = np.asarray(labels)
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(x), y)
        coef = np.zeros((n_classes, x.shape[1]))
        intercept = np.full(n_classes, -1e4)
        if len(model.classes_) == 2:  # sklearn stores one row for two classes
            coef[model.classes_[1]], intercept[model.classes_[1]] = model.coef_[0], \
                model.intercept_[0]
            intercept[model.classes_[0]] = 0.0
        else:
            coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
        return cls(scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32),
                   coef.astype(np.float32), intercept.astype(np.float32))

    def predict_proba(self, histograms: np.ndarray) -> np.ndarray:
        """float64 (N, C) class probabilities for histograms (N, D)."""
        x = (np.asarray(histograms, np.float64) - self.mean) / self.scale
        logits = x @ self.coef.T.astype(np.float64) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def classes(self, histograms: np.ndarray) -> np.ndarray:
        """int64 (N,) the colour model's class for each histogram."""
        return self.predict_proba(histograms).argmax(axis=1)

    def to_dict(self) -> dict:
        """JSON-ready form (stored in ``gate.json``)."""
        return {"method": "logistic_regression_rgb_histogram", "bins": HIST_BINS,
                "label_corner_masked": True, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, doc: dict) -> ColourCheck:
        """Inverse of :meth:`to_dict`; ValueError on a malformed document."""
        try:
            check = cls(*(np.asarray(doc[k], np.float32)
                          for k in ("mean", "scale", "coef", "intercept")))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an all_tf colour check ({e})") from None
        d = check.mean.shape[0] if check.mean.ndim == 1 else -1
        if doc.get("bins", HIST_BINS) * 3 != d or check.scale.shape != (d,) \
                or check.coef.ndim != 2 or check.coef.shape[1] != d \
                or check.intercept.shape != (check.coef.shape[0],):
            raise ValueError("not an all_tf colour check (inconsistent shapes)")
        return check
