"""Hybrid head: pooled deep features of a trained classifier -> gradient-boosted trees.

The paper's third contribution puts a gradient-boosting classifier on the CNN's features.
Here the features are the pooled backbone output (the input of the softmax layer, taken
with ``training=False``), the trees are XGBoost when the optional extra ``boost`` is
installed and scikit-learn's ``HistGradientBoostingClassifier`` otherwise, and the result
goes through the same :func:`~all_tf.evaluation.metrics.compute_metrics` as the softmax head.

The trees are fitted on the training part only (features of the images the CNN was trained
on, without augmentation) and scored on the test part; in crop mode each crop is classified
and an image's probabilities are the mean over its crops, as for the softmax head.
"""

from __future__ import annotations

import numpy as np

BACKENDS = ("auto", "xgboost", "sklearn")


def feature_model(model):
    """A Keras model mapping the classifier's input to its pooled features (B, D)."""
    try:
        from all_tf.models import feature_extractor
    except ImportError:
        feature_extractor = None
    if feature_extractor is not None:
        return feature_extractor(model)
    import keras

    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"model {model.name!r} does not end in a Dense layer; cannot find features")
    return keras.Model(model.inputs, last.input)


def extract_features(model, records, cfg, batch_size: int = 32):
    """Pooled features of ``records`` through the evaluation pipeline.

    Returns:
        ``(features, labels, image_index)``: float32 (M, D), int (M,) and int (M,), one row per
        image (image mode) or per crop (crop mode); ``image_index`` numbers the images read.
    """
    from all_tf.evaluation.predictions import eval_outputs

    fmodel = feature_model(model)
    feats, labels, index = eval_outputs(fmodel.predict_on_batch, records, cfg, batch_size)
    return feats.reshape(len(feats), -1), labels, index


def make_booster(backend: str = "auto", seed: int = 0):
    """A gradient-boosting classifier and the name of its backend ("xgboost" or "sklearn")."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "xgboost"):
        try:
            from xgboost import XGBClassifier

            return XGBClassifier(n_estimators=300, learning_rate=0.1, max_depth=4,
                                 tree_method="hist", random_state=seed, n_jobs=2), "xgboost"
        except ImportError:
            if backend == "xgboost":
                raise ValueError("backend 'xgboost' needs the optional extra: "
                                 "pip install 'all_tf[boost]'") from None
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1,
                                          random_state=seed), "sklearn"


def fit_booster(features, labels, backend: str = "auto", seed: int = 0):
    """Fit a booster; returns ``(clf, backend_name, classes)``.

    Labels are re-encoded to 0..k-1 over the classes present (XGBoost needs no gaps);
    ``classes`` maps the encoded columns back to class indices.
    """
    classes, encoded = np.unique(np.asarray(labels, dtype=int), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"the training features hold only class {classes.tolist()}; need two")
    clf, name = make_booster(backend, seed)
    with _single_openmp_thread():
        clf.fit(features, encoded)
    return clf, name, classes


def _single_openmp_thread():
    """Limit OpenMP to one thread when TensorFlow is loaded: its spinning thread pool and the
    OpenMP threads of HistGradientBoosting compete (measured here: a 28-sample fit took 58 s
    with 2 threads and 0.6 s with 1). Other Keras backends keep every thread."""
    import contextlib
    import sys

    if "tensorflow" not in sys.modules:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def predict_proba_full(clf, classes, features, n_classes: int) -> np.ndarray:
    """``clf.predict_proba`` with a column for every class (classes unseen in training get 0)."""
    out = np.zeros((len(features), n_classes), dtype=np.float64)
    with _single_openmp_thread():
        out[:, classes] = clf.predict_proba(features)
    return out


def evaluate_hybrid(model, split, cfg, *, backend: str = "auto", seed: int = 0,
                    batch_size: int = 32) -> dict:
    """Fit boosted trees on the training part's features and score the test part.

    Args:
        model: the trained classifier (e.g. loaded from ``checkpoints/best.keras``).
        split: an ``all_tf.data.Split``.
        cfg: the run's ``Config`` (preprocessing, input mode, uncertainty threshold).

    Returns:
        ``compute_metrics`` of the test part plus ``hybrid_backend`` and ``feature_dim``.
    """
    from all_tf import CLASS_NAMES
    from all_tf.evaluation.metrics import compute_metrics
    from all_tf.evaluation.predictions import per_image

    x_train, y_train, _ = extract_features(model, split.train, cfg, batch_size)
    x_test, y_test, i_test = extract_features(model, split.test, cfg, batch_size)
    clf, name, classes = fit_booster(x_train, y_train, backend, seed)
    probs = predict_proba_full(clf, classes, x_test, len(CLASS_NAMES))
    y_true, probs, _ = per_image(y_test, i_test, probs)
    metrics = compute_metrics(y_true, probs, threshold=cfg.uncertainty_threshold)
    metrics["hybrid_backend"] = name
    metrics["feature_dim"] = int(x_train.shape[1])
    return metrics
