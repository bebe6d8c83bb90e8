"""Segmentation: purple index, thresholds, morphology, crops, watershed, overlays, quality."""

import dataclasses
import doctest
import importlib
from pathlib import Path

import numpy as np
import pytest

from all_tf import CLASS_NAMES
from all_tf.config import Config, SegmentationConfig
from all_tf.io import read_image
from all_tf.segmentation import (
    clean_mask,
    count_objects,
    dice_iou,
    merge_lobes,
    nucleus_crops,
    overlay_ridges,
    pi_mask,
    purple_index,
    rgb_threshold_mask,
    segment_nuclei,
    watershed_nuclei,
)
from tests.deploy_helpers import SAMPLE_ALL4
from tests.helpers import script_command

PINK = (235, 190, 200)  # red-cell / background tone, PI about -0.08
PURPLE = (110, 40, 150)  # nucleus tone, PI about 0.36


def disk_mask(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def synthetic_smear(seed=0):
    """96x96 pink field with two purple disks (r 12 and 9) and a tiny purple blob (r 4, 49 px)."""
    rng = np.random.default_rng(seed)
    shape = (96, 96)
    rgb = np.empty((*shape, 3), np.float32)
    rgb[:] = PINK
    big = disk_mask(shape, (30, 30), 12)
    small = disk_mask(shape, (65, 65), 9)
    tiny = disk_mask(shape, (15, 80), 4)
    # a pale "cytoplasm" ring round the big nucleus, as in real cells
    rgb[disk_mask(shape, (30, 30), 17) & ~big] = (200, 170, 215)
    for m in (big, small, tiny):
        rgb[m] = PURPLE
    rgb += rng.normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), big | small, tiny


CYTOPLASM = (200, 170, 215)  # pale lilac, PI about 0.15


def two_lobed_cell(thread=True, seed=0):
    """96x128 pink field: one cell (pale cytoplasm, r 30) whose nucleus is two purple lobes
    (r 10, 6 px apart) joined by a 2 px purple chromatin thread (the opening cuts it), and a
    second cell's round nucleus (r 10) 35 px away. ``thread=False``: cytoplasm between the
    lobes (two touching nuclei, not one nucleus)."""
    rng = np.random.default_rng(seed)
    shape = (96, 128)
    rgb = np.empty((*shape, 3), np.float32)
    rgb[:] = PINK
    rgb[disk_mask(shape, (48, 45), 30)] = CYTOPLASM
    lobes = disk_mask(shape, (48, 32), 10) | disk_mask(shape, (48, 58), 10)
    rgb[lobes] = PURPLE
    if thread:
        rgb[47:49, 40:51] = PURPLE
    other = disk_mask(shape, (48, 113), 10)
    rgb[other] = PURPLE
    rgb += rng.normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), lobes, other


def test_merge_lobes_joins_one_nucleus_not_two_cells():
    rgb, lobes, other = two_lobed_cell()
    apart = segment_nuclei(rgb, SegmentationConfig(merge_lobes=0))
    assert count_objects(apart & lobes) == 2 and count_objects(apart) == 3  # thread cut
    merged = segment_nuclei(rgb, SegmentationConfig())  # the default merges
    assert count_objects(merged) == 2  # the two-lobed nucleus and the other cell's
    assert count_objects(merged & ~other) == 1 and not (merged & ~other)[:, 75:].any()
    assert (merged & ~apart).sum() < 0.05 * apart.sum()  # only the thread is added
    assert dice_iou(merged, lobes | other)[0] > 0.95
    closing = segment_nuclei(rgb, SegmentationConfig(merge_bridge="closing"))
    assert count_objects(closing) == 2
    assert count_objects(segment_nuclei(rgb, SegmentationConfig(method="otsu"))) == 2


def test_merge_lobes_colour_bridge_keeps_touching_nuclei_apart():
    rgb, lobes, _ = two_lobed_cell(thread=False)
    assert count_objects(segment_nuclei(rgb, SegmentationConfig()) & lobes) == 2
    closing = segment_nuclei(rgb, SegmentationConfig(merge_bridge="closing"))
    assert count_objects(closing) == 2  # the closing joins them whatever lies between


def test_merge_lobes_radius_follows_the_nucleus_scale():
    mask = np.zeros((200, 200), bool)
    mask[20:40, 10:40] = mask[20:40, 46:76] = True  # 6 px apart; largest 600 px, R 13.8
    assert count_objects(merge_lobes(mask, 0.5)) == 1  # r 7
    assert count_objects(merge_lobes(mask, 0.2)) == 1  # r 3: a 6 px gap is just reached
    assert count_objects(merge_lobes(mask, 0.1)) == 2  # r 1
    small = mask[::2, ::2]  # half the magnification: the same cell, the same answers
    assert count_objects(merge_lobes(small, 0.5)) == 1
    assert count_objects(merge_lobes(small, 0.1)) == 2
    assert count_objects(merge_lobes(mask, 0)) == 2
    single = np.zeros((50, 50), bool)
    single[10:30, 10:30] = True
    np.testing.assert_array_equal(merge_lobes(single, 0.5), single)  # one object: unchanged
    with pytest.raises(ValueError, match="merge_lobes"):
        SegmentationConfig(merge_lobes=-1)
    with pytest.raises(ValueError, match="merge_bridge"):
        SegmentationConfig(merge_bridge="dilate")


def test_segmentation_defaults_and_presets():
    default = SegmentationConfig()
    # the benchmark's choice: best mean Dice on segwbc (docs/benchmarks.md,
    # test_benchmark_script_on_shipped_pairs, test_default_method_is_best_on_segwbc)
    assert default.method == "multiotsu" and default.merge_lobes > 0
    paper = Config.preset("paper").segmentation
    assert paper.method == "otsu" and paper.merge_lobes == 0
    for name in ("scratch", "quick"):
        assert Config.preset(name).segmentation == default


def test_configs_saved_before_merging_keep_their_segmentation():
    root = Path(__file__).resolve().parents[1]
    released = Config.load(root / "saved_models" / "mobilenetv3small_all4" / "config.json")
    assert released.segmentation.method == "otsu" and released.segmentation.merge_lobes == 0
    old = Config.preset("paper").to_dict()
    old["segmentation"] = {"method": "multiotsu", "threshold": 0.2, "opening_radius": 3,
                           "min_object_px": 80, "smooth_sigma": 1.0}
    assert Config.from_dict(old).segmentation.merge_lobes == 0
    assert Config.from_dict(old).segmentation.method == "multiotsu"
    partial = Config.from_dict({"segmentation": {"threshold": 0.25}}).segmentation
    assert partial.merge_lobes == SegmentationConfig().merge_lobes  # not a saved config
    cfg = Config()
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_a_run_begun_with_other_segmentation_resumes_in_image_mode_only(tmp_path):
    """Segmentation does not shape whole-field inputs: a run begun before the default changed
    resumes (keeping its stored segmentation); a crop-mode run does not."""
    from all_tf.training.run import RunError, prepare_output_dir

    old = Config.preset("scratch")
    old.segmentation = SegmentationConfig(method="otsu", merge_lobes=0)
    old.save(tmp_path / "config.json")
    assert prepare_output_dir(Config.preset("scratch"), tmp_path).segmentation == \
        old.segmentation
    crops = old.override({"preprocess.input_mode": "crops"})
    crops.save(tmp_path / "config.json")
    new = Config.preset("scratch").override({"preprocess.input_mode": "crops"})
    with pytest.raises(RunError, match="segmentation.method: 'otsu' -> 'multiotsu'"):
        prepare_output_dir(new, tmp_path)


@pytest.mark.parametrize("module", ["purple_index", "morphology", "crops", "watershed", "metrics"])
def test_docstring_examples(module, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    mod = importlib.import_module(f"all_tf.segmentation.{module}")
    assert doctest.testmod(mod).failed == 0


def test_package_doctest(monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert doctest.testmod(importlib.import_module("all_tf.segmentation")).failed == 0


def test_purple_index_hand_checked():
    px = np.array([[[0.6, 0.2, 0.8], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]], np.float32)
    pi = purple_index(px)
    assert pi.shape == (1, 3) and pi.dtype == np.float32
    np.testing.assert_allclose(pi[0], [0.5, 0.0, -1.0], atol=1e-6)
    # uint8 input is scaled by 1/255
    np.testing.assert_allclose(
        purple_index(np.array([[[153, 51, 204]]], np.uint8)), [[0.5]], atol=1e-6
    )


def test_purple_index_range_on_extremes():
    corners = (
        np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).T[None].astype(np.float32)
    )
    pi = purple_index(corners)
    assert pi.min() == -1.0 and pi.max() == 1.0


def test_pi_mask_methods():
    rgb, nuclei, tiny = synthetic_smear()
    for method in ("otsu", "multiotsu", "fixed"):
        mask = pi_mask(rgb, method, threshold=0.2)
        assert mask.dtype == bool and mask.shape == rgb.shape[:2]
        assert dice_iou(mask, nuclei | tiny)[0] > 0.95
    assert not pi_mask(np.full((8, 8, 3), 128, np.uint8), "otsu").any()  # flat image
    with pytest.raises(ValueError, match="method"):
        pi_mask(rgb, "mean")


def test_rgb_threshold_directions():
    px = np.array([[[0.42, 0.21, 0.54], [0.90, 0.76, 0.68], [0.99, 0.96, 0.74]]], np.float32)
    np.testing.assert_array_equal(rgb_threshold_mask(px)[0], [True, False, False])


def test_clean_mask_removes_small_objects_and_specks():
    shape = (96, 96)
    big = disk_mask(shape, (40, 40), 12)
    tiny = disk_mask(shape, (80, 80), 4)  # 49 px: survives the r-3 opening, < 80 px
    line = np.zeros(shape, bool)
    line[5, 5:90] = True  # 1 px wide: removed by the opening
    out = clean_mask(big | tiny | line)
    assert out.dtype == bool
    assert not out[tiny].any() and not out[line].any()
    assert dice_iou(out, big)[0] > 0.97
    assert clean_mask(tiny, min_object_px=40)[tiny].sum() > 40  # kept when allowed
    with pytest.raises(ValueError, match="2-D"):
        clean_mask(np.zeros((4, 4, 3), bool))


@pytest.mark.parametrize("method", ["otsu", "multiotsu", "fixed"])
def test_segment_nuclei_on_synthetic_smear(method):
    rgb, nuclei, tiny = synthetic_smear()
    mask = segment_nuclei(rgb, SegmentationConfig(method=method))
    assert mask.shape == rgb.shape[:2] and mask.dtype == bool
    assert dice_iou(mask, nuclei)[0] > 0.95
    assert not mask[tiny].any()


def test_segment_nuclei_rgb_method_and_float_input():
    rgb, nuclei, _ = synthetic_smear()
    mask = segment_nuclei(rgb.astype(np.float32) / 255, SegmentationConfig(method="rgb"))
    assert dice_iou(mask, nuclei)[0] > 0.95
    with pytest.raises(ValueError, match="method"):
        segment_nuclei(rgb, SegmentationConfig(method="kmeans"))


def test_nucleus_crops_largest_first_square_boxes():
    rgb, _, _ = synthetic_smear()
    mask = segment_nuclei(rgb)
    result = nucleus_crops(rgb, mask, size=32, margin=4)
    assert not result.fallback
    assert result.crops.shape == (2, 32, 32, 3) and result.crops.dtype == np.uint8
    assert result.boxes.shape == (2, 4)
    (y0, x0, y1, x1), (v0, u0, v1, u1) = result.boxes
    assert y1 - y0 == x1 - x0 > v1 - v0 == u1 - u0  # square, largest first
    assert y0 <= 30 - 12 - 4 + 1 and y1 >= 30 + 12 + 4  # big nucleus plus margin inside box
    one = nucleus_crops(rgb, mask, size=32, margin=4, max_crops=1)
    assert len(one.crops) == 1
    np.testing.assert_array_equal(one.boxes, result.boxes[:1])
    np.testing.assert_array_equal(one.crops, result.crops[:1])


def test_nucleus_crops_box_shifted_inside_image():
    rgb = np.zeros((50, 60, 3), np.uint8)
    mask = np.zeros((50, 60), bool)
    mask[0:10, 52:60] = True  # touching the top-right corner
    (y0, x0, y1, x1) = nucleus_crops(rgb, mask, size=16, margin=8).boxes[0]
    assert (y0, y1) == (0, 26) and (x0, x1) == (34, 60)


def test_nucleus_crops_fallback_and_errors():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    result = nucleus_crops(rgb, np.zeros((40, 50), bool), size=24)
    assert result.fallback and result.crops.shape == (1, 24, 24, 3)
    assert result.boxes.tolist() == [[0, 0, 40, 50]]
    with pytest.raises(ValueError, match="does not match"):
        nucleus_crops(rgb, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="uint8"):
        nucleus_crops(rgb.astype(np.float32), np.zeros((40, 50), bool))


def two_touching_disks(separation=46, radius=25):
    rgb = np.full((120, 180, 3), 230, np.uint8)
    for cx in (60, 60 + separation):
        rgb[disk_mask(rgb.shape[:2], (60, cx), radius)] = 60
    return rgb


def test_watershed_splits_two_touching_disks():
    rgb = two_touching_disks()  # overlapping by 4 px; waist half-width about 10 px
    labels = watershed_nuclei(rgb, peak_fraction=0.5)
    assert labels.dtype == np.int32 and labels.shape == rgb.shape[:2]
    assert labels.max() == 2 and set(np.unique(labels)) == {0, 1, 2}
    left, right = labels[60, 40], labels[60, 126]
    assert {left, right} == {1, 2}
    # A lower peak fraction makes markers bigger: here they merge across the waist.
    assert watershed_nuclei(rgb, peak_fraction=0.4).max() == 1


def test_watershed_per_component_keeps_small_nuclei():
    rgb = np.full((100, 140, 3), 230, np.uint8)
    rgb[disk_mask(rgb.shape[:2], (50, 40), 30)] = 50
    rgb[disk_mask(rgb.shape[:2], (50, 110), 16)] = 50
    # paper: peaks above half the *image* maximum (30 px) leave the small disk a tiny marker
    assert watershed_nuclei(rgb).max() == 1
    labels = watershed_nuclei(rgb, per_component=True)
    assert labels.max() == 2 and labels[50, 110] > 0 and labels[50, 40] > 0


def test_watershed_with_given_mask():
    rgb = two_touching_disks()
    mask = np.all(rgb == 60, axis=-1)
    assert watershed_nuclei(rgb, mask=mask).max() == 2
    with pytest.raises(ValueError, match="does not match"):
        watershed_nuclei(rgb, mask=mask[:10])


def test_watershed_single_and_empty():
    rgb = np.full((80, 80, 3), 230, np.uint8)
    assert watershed_nuclei(rgb).max() == 0
    rgb[disk_mask((80, 80), (40, 40), 20)] = 50
    assert watershed_nuclei(rgb).max() == 1
    with pytest.raises(ValueError, match="peak_fraction"):
        watershed_nuclei(rgb, peak_fraction=1.5)


def test_overlay_ridges_marks_boundaries_red():
    rgb = two_touching_disks()
    labels = watershed_nuclei(rgb)
    out = overlay_ridges(rgb, labels)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    red = np.all(out == (255, 0, 0), axis=-1)
    assert red.sum() > 100
    # the ridge between the two nuclei is drawn
    assert red[50:71, 80:88].any()
    # away from boundaries nothing changes
    np.testing.assert_array_equal(out[~red], rgb[~red])
    assert not red[0:10, 0:10].any()
    assert rgb.max() < 255  # input untouched
    with pytest.raises(ValueError, match="does not match"):
        overlay_ridges(rgb, labels[:10])


def test_dice_iou_edge_cases():
    empty = np.zeros((5, 5), bool)
    assert dice_iou(empty, empty) == (1.0, 1.0)
    full = ~empty
    assert dice_iou(full, empty) == (0.0, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_iou(empty, np.zeros((4, 4), bool))


# ---------------------------------------------------------------- quality on expert masks


def mean_dice(pairs, cfg):
    scores = []
    for image_path, mask_path in pairs:
        truth = read_image(mask_path)[..., 0] == 255
        scores.append(dice_iou(segment_nuclei(read_image(image_path), cfg), truth)[0])
    return float(np.mean(scores))


def sample_pairs(sample_segwbc, dataset):
    images = sorted((sample_segwbc / "images").glob(f"{dataset}_*.png"))
    return [(p, sample_segwbc / "masks" / p.name) for p in images]


# Floors: measured on the shipped 10 pairs minus 0.02 (scripts/benchmark_segmentation.py
# --data all_tf/sample_data/segwbc, objects table, merging "0.5, colour", the default):
# Otsu-PI 0.850 / 0.584, 3-class Otsu-PI 0.959 / 0.943.
@pytest.mark.parametrize(
    "dataset,method,floor",
    [
        ("dataset1", "otsu", 0.83),
        ("dataset2", "otsu", 0.56),
        ("dataset1", "multiotsu", 0.93),
        ("dataset2", "multiotsu", 0.92),
    ],
)
def test_quality_on_shipped_pairs(sample_segwbc, dataset, method, floor):
    pairs = sample_pairs(sample_segwbc, dataset)
    assert len(pairs) == 5
    assert mean_dice(pairs, SegmentationConfig(method=method)) >= floor


# Floors: full segwbc, measured minus 0.02 (docs/benchmarks.md, "Nucleus segmentation on
# segwbc", objects table, merging "0.5, colour", the default): Otsu-PI 0.710 / 0.542,
# 3-class Otsu-PI 0.928 / 0.920.
@pytest.mark.realdata
@pytest.mark.parametrize(
    "dataset,method,floor",
    [
        ("dataset1", "otsu", 0.69),
        ("dataset2", "otsu", 0.52),
        ("dataset1", "multiotsu", 0.90),
        ("dataset2", "multiotsu", 0.90),
    ],
)
def test_quality_on_segwbc(segwbc_dir, dataset, method, floor):
    folder = segwbc_dir / dataset
    pairs = [(p, folder / "masks" / p.name) for p in sorted((folder / "images").glob("*.png"))]
    assert len(pairs) >= 100
    cfg = dataclasses.replace(SegmentationConfig(), method=method)
    assert mean_dice(pairs, cfg) >= floor


def segwbc_pairs(segwbc_dir, dataset):
    folder = segwbc_dir / dataset
    return [(p, folder / "masks" / p.name) for p in sorted((folder / "images").glob("*.png"))]


@pytest.mark.realdata
def test_default_method_is_best_on_segwbc(segwbc_dir):
    """The benchmark's rule: best mean Dice over dataset1 and dataset2 (cleaned, no merging)."""
    data = [(read_image(i), read_image(m)[..., 0] == 255)
            for ds in ("dataset1", "dataset2") for i, m in segwbc_pairs(segwbc_dir, ds)[::2]]
    means = {}
    for method in ("otsu", "multiotsu", "fixed", "rgb"):
        cfg = SegmentationConfig(method=method, merge_lobes=0)
        means[method] = np.mean([dice_iou(segment_nuclei(rgb, cfg), t)[0] for rgb, t in data])
    assert max(means, key=means.get) == SegmentationConfig().method, means


# Measured (docs/benchmarks.md, objects table): share of images with exactly one object,
# merging off -> default: 83.0 -> 89.7 % (dataset1), 51.0 -> 65.0 % (dataset2).
@pytest.mark.realdata
@pytest.mark.parametrize("dataset,off_max,on_min", [("dataset1", 0.85, 0.87),
                                                    ("dataset2", 0.53, 0.63)])
def test_one_object_per_white_cell_on_segwbc(segwbc_dir, dataset, off_max, on_min):
    images = [read_image(i) for i, _ in segwbc_pairs(segwbc_dir, dataset)]
    off = [count_objects(segment_nuclei(rgb, SegmentationConfig(merge_lobes=0)))
           for rgb in images]
    on = [count_objects(segment_nuclei(rgb, SegmentationConfig())) for rgb in images]
    assert np.mean(np.array(off) == 1) <= off_max and np.mean(np.array(on) == 1) >= on_min
    assert min(on) >= 1 and all(a <= b for a, b in zip(on, off, strict=True))  # never splits


def test_benchmark_script_on_shipped_pairs(sample_segwbc, tmp_path):
    from click.testing import CliRunner

    out = tmp_path / "seg.md"
    result = CliRunner().invoke(
        script_command("benchmark_segmentation"),
        [
            "--data-dir",
            str(sample_segwbc),
            "--theta-min",
            "0.2",
            "--theta-max",
            "0.2",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| dataset1 | 5 | 3-class Otsu-PI |" in text and "| dataset2 | 5 | Otsu-PI |" in text
    # the default method is the one the benchmark picks
    assert f"(method {SegmentationConfig().method}," in text
    # objects per white cell, merging off and on, with the expert masks' own count
    assert "| dataset1 | 5 | expert masks | – | 1.00 |" in text
    assert "| dataset2 | 5 | 3-class Otsu-PI | off |" in text
    assert "| dataset2 | 5 | Otsu-PI | 0.5, colour | 6.00 |" in text  # 7.40 without merging
    result = CliRunner().invoke(script_command("benchmark_segmentation"),
                                ["--data-dir", str(sample_segwbc), "--merge", "0.5:dilate"])
    assert result.exit_code != 0 and "FRACTION:BRIDGE" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(script_command("benchmark_segmentation"), ["--data-dir", str(empty)])
    assert result.exit_code != 0 and "no images/ folders" in result.output


def test_fold_drift_table_has_a_row_per_class_and_fold(tmp_path):
    from click.testing import CliRunner

    cfg = Config.preset("quick")
    cfg.split.kind, cfg.split.n_folds, cfg.split.embargo = "contiguous", 3, 2
    cfg.save(tmp_path / "config.json")
    table = tmp_path / "drift.md"
    result = CliRunner().invoke(script_command("fold_drift"), [
        "--config", str(tmp_path / "config.json"), "--data-dir", str(SAMPLE_ALL4),
        "-o", str(table)])
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:-1] for line in table.read_text().splitlines()[2:]]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (name, str(fold)) for fold in range(3) for name in CLASS_NAMES]
    for r in rows:
        area, nuclei, lightness = float(r[3]), float(r[4]), float(r[5])
        assert 0 < area < 100 and nuclei >= 1 and 0 < lightness <= 100
    cfg.split.kind = "70:30"
    cfg.save(tmp_path / "config.json")
    result = CliRunner().invoke(script_command("fold_drift"), [
        "--config", str(tmp_path / "config.json"), "--data-dir", str(SAMPLE_ALL4)])
    assert result.exit_code != 0 and "not 'contiguous'" in result.output


def test_crop_mode_cuts_crops_from_the_label_masked_field():
    from all_tf.data.inputs import input_views, inputs_for_image, view_preprocess_config
    from all_tf.preprocessing import preprocess_image
    from all_tf.preprocessing.label_corner import label_box_slices

    rgb, _, _ = synthetic_smear()
    rows, cols = label_box_slices(rgb.shape)
    rgb[rows, cols][2:-2, 3:-2] = PURPLE  # a purple label in the corner box
    cfg = Config()
    cfg.preprocess = dataclasses.replace(cfg.preprocess, input_mode="crops", image_size=32,
                                         max_crops=4, clahe=False)
    assert len(input_views(rgb, cfg)) == 3  # two nuclei and the label
    masked = Config.from_dict({**cfg.to_dict(), "preprocess": {
        **cfg.to_dict()["preprocess"], "mask_label_corner": True}})
    assert len(input_views(rgb, masked)) == 2
    assert len(input_views(rgb, masked, mask=segment_nuclei(rgb, masked.segmentation))) == 2
    # the crops are not masked again: their own bottom-right corner is cell, not label
    pre = view_preprocess_config(masked)
    assert not pre.mask_label_corner and view_preprocess_config(cfg) is cfg.preprocess
    np.testing.assert_array_equal(
        inputs_for_image(rgb, masked),
        np.stack([preprocess_image(v, pre) for v in input_views(rgb, masked)]))
