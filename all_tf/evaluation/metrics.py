"""Classification metrics per image, as a JSON-serialisable dict.

Conventions: a ratio whose denominator is zero (precision of a class never predicted,
specificity when every image belongs to the class) is 0.0, as scikit-learn's
``zero_division=0``. AUC is one-vs-rest from the probabilities; a class with no positive
(or no negative) example in ``y_true`` has no AUC (``None``) and the macro AUC is the mean
over the classes that have one, listed in ``auc_classes``.

Example:
    >>> import numpy as np
    >>> from all_tf.evaluation.metrics import compute_metrics
    >>> m = compute_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ("a", "b"))
    >>> m["accuracy"], m["macro_auc"], m["confusion_matrix"]
    (1.0, 1.0, [[1, 0], [0, 1]])
"""

from __future__ import annotations

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.config import UNCERTAINTY_THRESHOLD
from all_tf.inference.uncertainty import predict_labels

MACRO_KEYS = ("macro_precision", "macro_recall", "macro_specificity", "macro_f1", "macro_auc")
SCALAR_KEYS = ("accuracy", *MACRO_KEYS, "coverage", "confident_accuracy", "n")
"""The scalar metrics, in the order used for results tables."""


def compute_metrics(
    y_true, probs, class_names=CLASS_NAMES, threshold: float = UNCERTAINTY_THRESHOLD
) -> dict:
    """Metrics of probabilistic predictions against integer labels.

    Args:
        y_true: int array (N,) of class indices in [0, C).
        probs: float array (N, C) of class probabilities (softmax output, per image).
        class_names: C names, index i naming column i.
        threshold: confidence below which a prediction is "uncertain" (see ``predict_labels``).

    Returns:
        dict with ``n``; ``accuracy``; ``macro_{precision,recall,specificity,f1,auc}``;
        ``per_class`` ({name: {precision, recall, specificity, f1, auc, support}});
        ``auc_classes`` (names whose AUC entered the macro mean) and ``auc_note`` (None when
        all classes were used); ``confusion_matrix`` (C x C list, rows true, columns
        predicted); ``class_names``; ``threshold``; ``coverage`` (share of predictions with
        confidence >= threshold) and ``confident_accuracy`` (accuracy on those; None when
        there are none). All values are plain Python numbers, strings, lists or None.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    class_names = [str(c) for c in class_names]
    y_pred, _, uncertain = predict_labels(probs, threshold)
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    n_classes = len(class_names)
    if probs.shape[1] != n_classes:
        raise ValueError(f"probs has {probs.shape[1]} columns but there are {n_classes} classes")
    if y_true.shape != (len(probs),):
        raise ValueError(f"y_true must have shape ({len(probs)},), got {y_true.shape}")
    if len(y_true) == 0:
        raise ValueError("no predictions to evaluate (N = 0)")
    if not np.issubdtype(y_true.dtype, np.integer):
        raise ValueError(f"y_true must be integer class indices, got dtype {y_true.dtype}")
    if y_true.min() < 0 or y_true.max() >= n_classes:
        raise ValueError(f"y_true values must be in [0, {n_classes}), got {y_true.min()}..{y_true.max()}")

    labels = list(range(n_classes))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - cm.sum(axis=1) - fp
    negatives = tn + fp
    specificity = np.divide(tn, negatives, out=np.zeros(n_classes), where=negatives > 0)

    aucs: list[float | None] = []
    for i in labels:
        positive = y_true == i
        if positive.all() or not positive.any():
            aucs.append(None)
        else:
            aucs.append(float(roc_auc_score(positive, probs[:, i])))
    auc_used = [name for name, a in zip(class_names, aucs, strict=True) if a is not None]
    macro_auc = float(np.mean([a for a in aucs if a is not None])) if auc_used else None
    missing = [name for name, a in zip(class_names, aucs, strict=True) if a is None]
    auc_note = (
        None
        if not missing
        else f"AUC undefined for {', '.join(missing)} (no positive or no negative example); "
        f"macro AUC over {len(auc_used)} of {n_classes} classes"
    )

    confident = ~uncertain
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "specificity": float(specificity[i]),
            "f1": float(f1[i]),
            "auc": aucs[i],
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_specificity": float(specificity.mean()),
        "macro_f1": float(f1.mean()),
        "macro_auc": macro_auc,
        "auc_classes": auc_used,
        "auc_note": auc_note,
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
        "class_names": class_names,
        "threshold": float(threshold),
        "coverage": float(confident.mean()),
        "confident_accuracy": (
            float((y_pred[confident] == y_true[confident]).mean()) if confident.any() else None
        ),
    }


def flat_metrics(metrics: dict, per_class: bool = True) -> dict:
    """Scalar columns of a ``compute_metrics`` dict, for one CSV row.

    Returns ``SCALAR_KEYS`` and, if ``per_class``, ``<name>_<metric>`` for each class and
    precision/recall/specificity/f1/auc. None stays None (an empty CSV cell).
    """
    row = {key: metrics.get(key) for key in SCALAR_KEYS}
    if per_class:
        for name, values in metrics.get("per_class", {}).items():
            for key in ("precision", "recall", "specificity", "f1", "auc"):
                row[f"{name}_{key}"] = values.get(key)
    return row
