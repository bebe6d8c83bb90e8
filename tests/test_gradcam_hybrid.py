"""Grad-CAM (through CBAM and nested backbones) and the gradient-boosting hybrid head."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from all_tf.evaluation.gradcam import find_feature_layer, grad_cam, overlay_heatmap  # noqa: E402
from all_tf.evaluation.hybrid import (  # noqa: E402
    fit_booster,
    make_booster,
    predict_proba_full,
)
from all_tf.evaluation.predictions import per_image  # noqa: E402


def _cam_model():
    """Conv 1x1 that copies the red channel, GAP, Dense: Grad-CAM equals CAM = red channel."""
    x = keras.Input((32, 32, 3))
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="conv")
    h = conv(x)
    dense = keras.layers.Dense(2, activation="softmax", name="head")
    y = dense(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(x, y)
    conv.set_weights([np.array([1.0, 0.0, 0.0], "float32").reshape(1, 1, 3, 1)])
    dense.set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32")])
    return model


def test_grad_cam_localises_the_evidence():
    image = np.zeros((1, 32, 32, 3), "float32")
    image[0, 4:10, 20:28, 0] = 1.0
    model = _cam_model()
    assert find_feature_layer(model) == "conv"
    heat, cls, probs = grad_cam(model, image, class_index=0)
    assert heat.shape == (1, 32, 32) and heat.dtype == np.float32
    y, x = np.unravel_index(heat[0].argmax(), heat[0].shape)
    assert 4 <= y < 10 and 20 <= x < 28
    assert heat[0, 4:10, 20:28].mean() > 0.9 and heat[0, 20:, :10].max() < 0.05
    assert probs[0] == pytest.approx(model.predict(image, verbose=0)[0], abs=1e-5)
    # class 1 is argued against by the red square: no positive evidence anywhere
    heat1, _, _ = grad_cam(model, image, class_index=1)
    assert heat1.max() == 0.0
    # default class is the predicted one
    _, cls, _ = grad_cam(model, image)
    assert cls.tolist() == [0]


def _cbam_backbone():
    from all_tf.models import CBAM

    x = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    h = CBAM(reduction=4, name="cbam")(h)
    return x, h


def test_grad_cam_through_cbam_flat_and_nested():
    rng = np.random.default_rng(0)
    images = rng.random((3, 32, 32, 3)).astype("float32")
    x, h = _cbam_backbone()
    y = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    flat = keras.Model(x, y)
    assert find_feature_layer(flat) == "cbam"
    heat, cls, probs = grad_cam(flat, images)
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all()
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert cls.tolist() == probs.argmax(1).tolist()

    backbone = keras.Model(x, h, name="backbone")
    inp = keras.Input((32, 32, 3))
    out = keras.layers.Dense(4, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(backbone(inp)))
    nested = keras.Model(inp, out)
    assert find_feature_layer(nested) == "backbone"
    heat, _, _ = grad_cam(nested, images, class_index=np.array([0, 1, 2]))
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all()


def test_overlay_heatmap():
    rgb = np.full((20, 30, 3), 100, np.uint8)
    heat = np.zeros((5, 5), np.float32)
    heat[2, 2] = 1.0
    out = overlay_heatmap(rgb, heat, alpha=0.5)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, rgb)
    assert np.array_equal(overlay_heatmap(rgb, heat, alpha=0.0), rgb)
    assert overlay_heatmap(rgb / 255.0, heat).dtype == np.uint8


def test_hybrid_booster_on_separable_features():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 3], 20)  # class 2 absent from training
    features = rng.normal(size=(60, 5)) + labels[:, None] * 3.0
    clf, name, classes = fit_booster(features, labels, backend="sklearn", seed=0)
    assert name == "sklearn" and classes.tolist() == [0, 1, 3]
    probs = predict_proba_full(clf, classes, features, 4)
    assert probs.shape == (60, 4) and np.allclose(probs[:, 2], 0.0)
    assert np.allclose(probs.sum(1), 1.0)
    assert (probs.argmax(1) == labels).mean() > 0.95
    with pytest.raises(ValueError, match="backend"):
        make_booster("lightgbm")


def test_hybrid_per_image_averages_crops():
    labels = np.array([1, 1, 0])
    index = np.array([5, 5, 9])  # image numbers with gaps (unreadable images dropped)
    probs = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]])
    y, p, kept = per_image(labels, index, probs)
    assert y.tolist() == [1, 0]
    assert kept.tolist() == [5, 9]
    np.testing.assert_allclose(p, [[0.3, 0.7], [0.9, 0.1]])


def test_grad_cam_on_an_all_tf_model_with_cbam():
    from all_tf.evaluation.hybrid import feature_model
    from all_tf.models import build_model

    model = build_model("efficientnetv2b0_cbam", image_size=64)
    x = np.random.default_rng(1).random((2, 64, 64, 3)).astype("float32")
    assert find_feature_layer(model) == "top_activation"
    heat, cls, probs = grad_cam(model, x)
    assert heat.shape == (2, 64, 64) and np.isfinite(heat).all()
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-5)  # logits path
    assert feature_model(model).output.shape[-1] == 1280


def test_gradcam_items_picks_per_label_skips_unreadable_and_takes_unlabelled(tmp_path):
    from pathlib import Path

    from all_tf.config import Config
    from all_tf.evaluation.gradcam import gradcam_items

    sample = Path(__file__).resolve().parents[1] / "all_tf" / "sample_data" / "all4"
    pre, pro = sorted((sample / "Pre").glob("*.jpg")), sorted((sample / "Pro").glob("*.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    cfg = Config()
    cfg.preprocess.image_size = 32
    cfg.preprocess.clahe = cfg.preprocess.reinhard = False
    pairs = [(pro[0], 3), (broken, 2), (pre[0], 2), (pre[1], 2), (pre[2], 2), (pro[1], None)]
    items = gradcam_items(_cam_model_4(), cfg, pairs, per_class=2)
    assert [(Path(i["path"]).name, i["true"]) for i in items] == [
        (pre[0].name, "Pre"), (pre[1].name, "Pre"), (pro[0].name, "Pro"), (pro[1].name, "?")]
    assert all(i["overlay"].shape == (32, 32, 3) and i["pred"] for i in items)


def _cam_model_4():
    x = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    y = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(x, y)
