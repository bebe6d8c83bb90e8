"""Preprocessing: scaling, CLAHE, Reinhard, colour spaces, the pipeline, augmentation."""

import doctest
import importlib

import cv2
import numpy as np
import pytest

from all_tf.config import AugmentConfig, PreprocessConfig
from all_tf.io import read_image
from all_tf.preprocessing import (
    COLOUR_SPACE_RANGES,
    clahe,
    fit_reinhard_target,
    preprocess_image,
    reinhard_normalize,
    scale_to_unit,
    to_colour_space,
)

SPACES = ("rgb", "hsv", "lab", "hed")


def smear_like(seed=0, size=48, shift=(0, 0, 0), spread=1.0):
    """A smooth, colourful uint8 image with controllable colour cast and contrast."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(0, 40, (size, size, 3)).astype(np.float32), (0, 0), 2)
    img = np.array([170, 140, 180], np.float32) + spread * base + np.array(shift, np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def lab_mean_std(rgb):
    mean, std = cv2.meanStdDev(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB))
    return mean.ravel(), std.ravel()


@pytest.mark.parametrize(
    "module",
    ["intensity", "reinhard", "colour_spaces", "pipeline", "augmentation", "label_corner"],
)
def test_docstring_examples(module):
    mod = importlib.import_module(f"all_tf.preprocessing.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_scale_to_unit_values():
    x = np.array([[[0, 51, 255]]], np.uint8)
    y = scale_to_unit(x)
    assert y.dtype == np.float32 and y.shape == (1, 1, 3)
    np.testing.assert_allclose(y[0, 0], [0.0, 0.2, 1.0], atol=1e-7)
    with pytest.raises(ValueError, match="uint8"):
        scale_to_unit(y)


def test_hsv_hand_checked_pixels():
    px = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 0.5]]], np.float32)  # red, green, dark blue
    out = to_colour_space(px, "hsv")
    np.testing.assert_allclose(out[0, 0], [0, 1, 1], atol=1e-5)
    np.testing.assert_allclose(out[0, 1], [120 / 360, 1, 1], atol=1e-5)
    np.testing.assert_allclose(out[0, 2], [240 / 360, 1, 0.5], atol=1e-5)


def test_lab_hand_checked_pixels():
    px = np.array([[[1, 1, 1], [0, 0, 0], [1, 0, 0]]], np.float32)
    out = to_colour_space(px, "lab")
    np.testing.assert_allclose(out[0, 0], [1, 128 / 255, 128 / 255], atol=1e-3)
    np.testing.assert_allclose(out[0, 1], [0, 128 / 255, 128 / 255], atol=1e-3)
    # sRGB red is L* 53.24, a* 80.09, b* 67.20 (D65)
    expected = [53.24 / 100, (80.09 + 128) / 255, (67.20 + 128) / 255]
    np.testing.assert_allclose(out[0, 2], expected, atol=2e-3)


def test_hed_matches_skimage_rgb2hed():
    from skimage.color import rgb2hed

    rgb = scale_to_unit(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    hi = np.array([r[1] for r in COLOUR_SPACE_RANGES["hed"]])
    expected = np.clip(rgb2hed(np.maximum(rgb, 1 / 255)) / hi, 0, 1)
    np.testing.assert_allclose(to_colour_space(rgb, "hed"), expected, atol=1e-5)
    white = np.ones((1, 1, 3), np.float32)
    np.testing.assert_allclose(to_colour_space(white, "hed")[0, 0], [0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("space", SPACES)
def test_colour_space_shape_dtype_range(space):
    rgb = scale_to_unit(np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    extremes = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], np.float32)
    for x in (rgb, extremes):
        out = to_colour_space(x, space)
        assert out.shape == x.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1


def test_colour_space_rejects_bad_input():
    with pytest.raises(ValueError, match="colour space"):
        to_colour_space(np.zeros((4, 4, 3), np.float32), "xyz")
    with pytest.raises(ValueError, match="shape"):
        to_colour_space(np.zeros((4, 4), np.float32), "rgb")


def test_clahe_raises_contrast_and_keeps_shape():
    rgb = smear_like(spread=0.2, size=64)
    out = clahe(rgb, clip_limit=2.0, tile_grid=4)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert lab_mean_std(out)[1][0] > 1.3 * lab_mean_std(rgb)[1][0]
    assert not np.array_equal(out, rgb)


def test_reinhard_moves_lab_stats_to_target():
    target = {"mean": [150.0, 140.0, 118.0], "std": [20.0, 6.0, 8.0]}
    src = smear_like(seed=3, shift=(-30, 10, -20), spread=0.6)
    before_mean, _ = lab_mean_std(src)
    assert np.abs(before_mean - target["mean"]).max() > 5
    mean, std = lab_mean_std(reinhard_normalize(src, target))
    np.testing.assert_allclose(mean, target["mean"], atol=1.5)
    np.testing.assert_allclose(std, target["std"], rtol=0.1, atol=1.0)


def test_fit_reinhard_target_averages_per_image_stats():
    a, b = smear_like(seed=4), smear_like(seed=5, shift=(20, -10, 0), spread=0.5)
    target = fit_reinhard_target([a, b])
    (ma, sa), (mb, sb) = lab_mean_std(a), lab_mean_std(b)
    np.testing.assert_allclose(target["mean"], (ma + mb) / 2, atol=1e-3)
    np.testing.assert_allclose(target["std"], (sa + sb) / 2, atol=1e-3)
    with pytest.raises(ValueError, match="no images"):
        fit_reinhard_target([])
    with pytest.raises(ValueError, match="image 1"):
        fit_reinhard_target([a, a.astype(np.float32)])


def test_fit_reinhard_target_with_cfg_applies_clahe():
    imgs = [smear_like(seed=s, spread=0.2, size=64) for s in range(3)]
    plain = fit_reinhard_target(imgs)
    staged = fit_reinhard_target(imgs, PreprocessConfig(image_size=32, clahe_tile_grid=4))
    assert staged["std"][0] > plain["std"][0]


def test_reinhard_rejects_malformed_target():
    rgb = smear_like()
    for bad in ({"mean": [1, 2]}, {"mean": [1, 2, 3], "std": [1, 0, 1]}, None):
        with pytest.raises(ValueError, match="target"):
            reinhard_normalize(rgb, bad)


@pytest.mark.parametrize("space", SPACES)
def test_preprocess_image_contract(space):
    rgb = np.random.default_rng(6).integers(0, 256, (90, 60, 3), dtype=np.uint8)
    target = {"mean": [150.0, 140.0, 118.0], "std": [30.0, 8.0, 10.0]}
    cfg = PreprocessConfig(image_size=32, colour_space=space, reinhard_target=target)
    out = preprocess_image(rgb, cfg)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(out, preprocess_image(rgb, cfg))  # deterministic


def test_preprocess_image_steps():
    rgb = smear_like(seed=7, size=64)
    raw = PreprocessConfig(image_size=64, clahe=False, reinhard=False)
    np.testing.assert_allclose(preprocess_image(rgb, raw), rgb / 255.0, atol=1e-6)
    # no Reinhard target: Reinhard is skipped, CLAHE still applied
    only_clahe = PreprocessConfig(image_size=64, clahe=True, reinhard=True, reinhard_target=None)
    np.testing.assert_allclose(
        preprocess_image(rgb, only_clahe), clahe(rgb) / 255.0, atol=1.5 / 255
    )
    target = {"mean": [120.0, 150.0, 100.0], "std": [15.0, 5.0, 5.0]}
    normed = preprocess_image(
        rgb, PreprocessConfig(image_size=64, clahe=False, reinhard_target=target)
    )
    lab = cv2.cvtColor((normed * 255).round().astype(np.uint8), cv2.COLOR_RGB2LAB)
    np.testing.assert_allclose(lab.reshape(-1, 3).mean(0), target["mean"], atol=2.0)


def test_mask_label_corner_fills_the_box_with_the_median_of_the_rest():
    from all_tf.preprocessing.label_corner import label_box_mask, mask_label_corner

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = mask_label_corner(rgb)
    inside = label_box_mask(rgb.shape)
    # the box is rows 34-39 (0.85 * 40) and columns 39-49 (0.78 * 50, rounded)
    assert inside.sum() == 6 * 11 and inside[34:, 39:].all()
    np.testing.assert_array_equal(out[~inside], rgb[~inside])
    expected = np.floor(np.median(rgb[~inside].astype(float), axis=0))
    assert (out[inside] == expected).all()
    assert rgb[inside].std() > 0  # the input was not changed


def test_preprocess_image_masks_the_label_corner_on_request():
    from all_tf.preprocessing.label_corner import label_box_mask

    rgb = smear_like(seed=3, size=64)
    rgb[-20:, -30:] = (255, 0, 0)  # red "label" text in the corner
    plain = PreprocessConfig(image_size=64, clahe=False, reinhard=False)
    masked = PreprocessConfig(image_size=64, clahe=False, reinhard=False, mask_label_corner=True)
    a, b = preprocess_image(rgb, plain), preprocess_image(rgb, masked)
    inside = label_box_mask(a.shape)
    np.testing.assert_array_equal(a[~inside], b[~inside])
    assert a[inside][:, 0].max() == 1.0 and (b[inside] == b[inside][0]).all()


def test_preprocess_image_rejects_bad_input():
    cfg = PreprocessConfig(image_size=32)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_image(np.zeros((40, 40, 3), np.float32), cfg)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        preprocess_image(np.zeros((40, 40), np.uint8), cfg)


def test_preprocess_real_sample(sample_all4):
    path = next(iter(sorted((sample_all4 / "Early").glob("*.jpg"))))
    rgb = read_image(path)
    target = fit_reinhard_target([rgb], PreprocessConfig())
    out = preprocess_image(rgb, PreprocessConfig(reinhard_target=target))
    assert out.shape == (224, 224, 3) and 0 <= out.min() and out.max() <= 1


# ---------------------------------------------------------------- augmentation


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def batch(n=4, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3), dtype=np.float32)


@pytest.mark.parametrize("rand_augment", [False, True])
def test_augmentation_is_identity_when_not_training(keras, rand_augment):
    from all_tf.preprocessing import build_augmentation

    aug = build_augmentation(AugmentConfig(colour_jitter=0.2, rand_augment=rand_augment), seed=1)
    x = batch()
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)


def test_augmentation_changes_training_images_within_range(keras):
    from all_tf.preprocessing import build_augmentation

    aug = build_augmentation(AugmentConfig(colour_jitter=0.3, rand_augment=True), seed=1)
    x = batch(8)
    y = np.asarray(aug(x, training=True))
    assert y.shape == x.shape and y.dtype == np.float32
    assert not np.allclose(y, x)
    assert y.min() >= 0 and y.max() <= 1


def test_geometric_augmentation_only_permutes_pixels(keras):
    from all_tf.preprocessing import build_augmentation

    aug = build_augmentation(AugmentConfig(colour_jitter=0.0), seed=3)
    x = batch(8)
    y = np.asarray(aug(x, training=True))
    for xi, yi in zip(x, y, strict=True):
        candidates = [np.rot90(f, k) for f in (xi, xi[::-1]) for k in range(4)]
        assert any(np.array_equal(yi, c) for c in candidates)


def test_random_rot90_is_exact_and_covers_all_k(keras):
    from all_tf.preprocessing import RandomRot90

    x = batch(64, size=8, seed=4)
    y = np.asarray(RandomRot90(seed=0)(x, training=True))
    seen = set()
    for xi, yi in zip(x, y, strict=True):
        ks = [k for k in range(4) if np.array_equal(yi, np.rot90(xi, k))]
        assert len(ks) == 1
        seen.add(ks[0])
    assert seen == {0, 1, 2, 3}
    single = np.asarray(RandomRot90(seed=0)(x[0], training=True))
    assert any(np.array_equal(single, np.rot90(x[0], k)) for k in range(4))
    np.testing.assert_array_equal(np.asarray(RandomRot90()(x, training=False)), x)
    with pytest.raises(ValueError, match="square"):
        RandomRot90()(np.zeros((1, 8, 6, 3), np.float32), training=True)


def test_random_rot90_config_round_trip(keras, tmp_path):
    from all_tf.preprocessing import RandomRot90

    layer = RandomRot90(seed=7, name="rot")
    config = layer.get_config()
    assert config["seed"] == 7
    clone = RandomRot90.from_config(config)
    assert clone.seed == 7 and clone.name == "rot"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, RandomRot90) and restored.seed == 7

    model = keras.Sequential([keras.Input((8, 8, 3)), RandomRot90(seed=1)])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[0], RandomRot90)
    x = batch(2, size=8)
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), x)  # inference


def test_augmentation_in_tf_data(keras):
    import tensorflow as tf

    from all_tf.preprocessing import build_augmentation

    aug = build_augmentation(AugmentConfig(colour_jitter=0.1), seed=2)
    ds = tf.data.Dataset.from_tensor_slices(batch(6)).batch(3)
    ds = ds.map(lambda x: aug(x, training=True))
    out = np.concatenate([b.numpy() for b in ds])
    assert out.shape == (6, 16, 16, 3) and out.min() >= 0 and out.max() <= 1


def test_augmentation_rejects_bad_jitter(keras):
    from all_tf.preprocessing import build_augmentation

    with pytest.raises(ValueError, match="colour_jitter"):
        build_augmentation(AugmentConfig(colour_jitter=1.5))


def test_benchmark_script_runs(sample_all4, tmp_path):
    from click.testing import CliRunner

    from tests.helpers import script_command
    args = [
        "--data-dir",
        str(sample_all4 / "Pro"),
        "--image-size",
        "64",
        "--repeats",
        "1",
        "--hed-percentiles",
    ]
    result = CliRunner().invoke(script_command("benchmark_preprocessing"), args)
    assert result.exit_code == 0, result.output
    assert "| hed |" in result.output and "H: " in result.output
    result = CliRunner().invoke(script_command("benchmark_preprocessing"), ["--data-dir", str(tmp_path)])
    assert result.exit_code != 0 and "no .jpg/.png images" in result.output


def test_hed_jitter_changes_stain_only_in_training_and_keeps_range():
    from all_tf.preprocessing.augmentation import RandomHEDJitter

    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.95, (4, 16, 16, 3)).astype(np.float32)
    layer = RandomHEDJitter(0.2, seed=1)
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert np.abs(y - x).mean() > 0.01
    # per image one stain change: a jittered image is a smooth function of the original,
    # so equal input pixels stay equal
    x2 = np.repeat(x[:, :1, :1], 16, axis=1).repeat(16, axis=2)
    y2 = np.asarray(layer(x2, training=True))
    assert np.allclose(y2, y2[:, :1, :1], atol=1e-6)
    tiny = np.asarray(RandomHEDJitter(1e-4, seed=0)(x, training=True))
    assert np.allclose(tiny, x, atol=2e-3)  # the HED round trip itself is lossless
    again = RandomHEDJitter.from_config(layer.get_config())
    assert again.factor == 0.2 and again.seed == 1


def test_zoom_rescales_only_in_training_and_keeps_shape_and_range():
    from all_tf.config import AugmentConfig
    from all_tf.preprocessing import build_augmentation

    cfg = AugmentConfig(flips=False, rot90=False, colour_jitter=0.0, zoom=0.3)
    aug = build_augmentation(cfg, seed=0)
    assert "random_zoom" in [layer.name for layer in aug.layers]
    # a disc in the centre: zooming changes its area, the frame stays 32 x 32 in [0, 1]
    yy, xx = np.mgrid[:32, :32]
    disc = ((yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 8 ** 2).astype(np.float32)
    x = np.repeat(disc[None, :, :, None], 3, axis=3).repeat(16, axis=0)
    assert np.array_equal(np.asarray(aug(x, training=False)), x)
    y = np.asarray(aug(x, training=True))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    areas = (y[..., 0] > 0.5).sum(axis=(1, 2)) / disc.sum()
    assert areas.min() < 0.9 and areas.max() > 1.1
    with pytest.raises(ValueError, match="zoom"):
        AugmentConfig(zoom=1.0)


def test_hed_jitter_needs_rgb_input():
    from all_tf.config import Config

    cfg = Config()
    cfg.augment.hed_jitter = 0.05
    cfg.preprocess.colour_space = "hsv"
    with pytest.raises(ValueError, match="hed_jitter"):
        Config.from_dict(cfg.to_dict())
