"""Scanner, duplicates, splits and the tf.data pipeline (all_tf.data)."""

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from all_tf import CLASS_NAMES
from all_tf.config import Config, SplitConfig
from all_tf.data import (
    CLASS_ALIASES,
    Record,
    Split,
    assign_groups,
    class_index,
    file_number,
    find_duplicates,
    make_split,
    normalise_name,
    scan_dataset,
)


def tiny(path: Path, seed: int = 0, size: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb)
    return path


# ---------------------------------------------------------------- scanner


@pytest.mark.parametrize("name, label", [
    ("Benign", 0), ("benign", 0), ("BENIGN", 0),
    ("Early", 1), ("early", 1), ("[Malignant] early Pre-B", 1), ("Early_Pre-B", 1),
    ("Pre", 2), ("pre", 2), ("[Malignant] Pre-B", 2), ("Pre-B", 2),
    ("Pro", 3), ("pro", 3), ("[Malignant] Pro-B", 3), ("pro_b", 3),
])
def test_class_aliases(name, label):
    assert class_index(name) == label
    assert CLASS_ALIASES[normalise_name(name)] == label


@pytest.mark.parametrize("name", ["Segmented", "Malignant", "Other", "Pre-T", "benign2", ""])
def test_unknown_names_are_not_guessed(name):
    assert class_index(name) is None


@pytest.mark.parametrize("layout", ["flat", "original"])
def test_scan_kaggle_names_with_or_without_original(tmp_path, layout):
    names = ["Benign", "[Malignant] early Pre-B", "[Malignant] Pre-B", "[Malignant] Pro-B"]
    base = tmp_path / "Original" if layout == "original" else tmp_path
    for label, name in enumerate(names):
        for k in range(label + 1):
            tiny(base / name / f"img-{k:03d}.png", seed=10 * label + k)
    tiny(tmp_path / "Segmented" / "Benign" / "img-000.png")
    tiny(tmp_path / "Misc" / "img-000.png")
    scan = scan_dataset(tmp_path)
    assert scan.class_counts() == {"Benign": 1, "Early": 2, "Pre": 3, "Pro": 4}
    assert scan.unknown_dirs == [str(tmp_path / "Misc")]
    assert scan.skipped == []
    assert any("Segmented" in n and "ignored" in n for n in scan.notes)
    assert all(r.group == r.path for r in scan.records)
    assert [r.label for r in scan.records] == sorted(r.label for r in scan.records)


def test_scan_lowercase_short_names_and_merged_aliases(tmp_path):
    for k, name in enumerate(["benign", "early", "pre", "pro", "Pro"]):
        tiny(tmp_path / name / "a-001.png", seed=k)
    scan = scan_dataset(tmp_path)
    assert scan.class_counts() == {"Benign": 1, "Early": 1, "Pre": 1, "Pro": 2}
    assert any("merged" in n for n in scan.notes)


def test_scan_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere"):
        scan_dataset(tmp_path / "nothere")


def test_scan_shipped_sample(sample_all4):
    scan = scan_dataset(sample_all4)
    assert scan.class_counts() == dict.fromkeys(CLASS_NAMES, 12)
    assert scan.skipped == [] and scan.unknown_dirs == []


def test_file_number():
    assert file_number("/x/WBC-Malignant-Pro-042.jpg") == 42
    assert file_number("a1_b_007.png") == 7
    assert file_number("noname.png") is None


# ---------------------------------------------------------------- duplicates


def smear(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A synthetic smear field: pale background, grey red cells, a few purple nuclei."""
    img = np.full((h, w, 3), (236, 226, 232), np.uint8)
    for _ in range(h * w // 500):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(5, 10)), (170, 160, 175), -1)
        cv2.circle(img, c, int(rng.integers(2, 4)), (205, 195, 205), -1)
    for _ in range(6):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, int(rng.integers(9, 14)), (120, 70, 170), -1)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dup_tree(tmp_path_factory):
    """Pro/: 001 and 002 exact copies (PNG and BMP), 003 shifted by a few px, 004 sharing
    60 % of the field with 001, 010-013 distinct fields."""
    root = tmp_path_factory.mktemp("dups")
    rng = np.random.default_rng(7)
    canvas = smear(rng, 260, 320)
    save = lambda name, rgb: cv2.imwrite(str(root / "Pro" / name),  # noqa: E731
                                         cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (root / "Pro").mkdir()
    base = canvas[:160, :160]
    save("f-001.png", base)
    save("f-002.bmp", base)  # same pixels, another format: an exact duplicate
    save("f-003.png", canvas[5:165, 8:168])
    save("f-004.png", canvas[:160, 64:224])
    for k in range(4):
        save(f"f-{10 + k:03d}.png", smear(np.random.default_rng(100 + k), 160, 160))
    return root


def test_find_duplicates_exact_near_overlap(dup_tree):
    paths = sorted(str(p) for p in (dup_tree / "Pro").iterdir())
    name = {p: Path(p).name for p in paths}
    report = find_duplicates(paths)
    kinds = {(name[p.a], name[p.b]): p.kind for p in report.pairs}
    assert kinds[("f-001.png", "f-002.bmp")] == "exact"
    assert kinds[("f-001.png", "f-003.png")] == "near"
    assert kinds[("f-001.png", "f-004.png")] == "overlap"
    assert report.groups == [[p for p in paths if name[p] in
                              {"f-001.png", "f-002.bmp", "f-003.png", "f-004.png"}]]
    distinct = {f"f-{10 + k:03d}.png" for k in range(4)}
    assert not any(name[p.a] in distinct or name[p.b] in distinct for p in report.pairs)
    shift = {(name[p.a], name[p.b]): p.shift for p in report.pairs}[("f-001.png", "f-003.png")]
    np.testing.assert_allclose(shift, (-5 / 160, -8 / 160), atol=1 / 112)  # b[y-5, x-8] = a[y, x]
    assert "exact duplicate pairs: 1" in report.summary()


def test_near_duplicate_found_by_hash_alone(dup_tree):
    paths = [str(dup_tree / "Pro" / n) for n in ("f-001.png", "f-003.png", "f-010.png")]
    report = find_duplicates(paths, neighbour_window=0)
    assert [(Path(p.a).name, Path(p.b).name, p.kind) for p in report.pairs] == [
        ("f-001.png", "f-003.png", "near")]
    assert report.pairs[0].hamming <= 10


def test_assign_groups_and_cache(dup_tree, tmp_path):
    records = scan_dataset(dup_tree).records
    grouped = assign_groups(records, cache_dir=tmp_path)
    by_name = {Path(r.path).name: r.group for r in grouped}
    assert len({by_name[n] for n in ("f-001.png", "f-002.bmp", "f-003.png", "f-004.png")}) == 1
    assert by_name["f-001.png"].startswith("dup-")
    assert by_name["f-010.png"] == str(dup_tree / "Pro" / "f-010.png")
    assert len(list(tmp_path.glob("duplicates-*.json"))) == 1
    again = assign_groups(records, cache_dir=tmp_path)  # from the cache
    assert again == grouped


def test_assign_groups_keeps_custom_groups():
    recs = [Record("/a/1.png", 0, "patient-1"), Record("/a/2.png", 0, "patient-1"),
            Record("/a/3.png", 0)]
    from all_tf.data.duplicates import DuplicateReport

    out = assign_groups(recs, report=DuplicateReport([r.path for r in recs]))
    assert [r.group for r in out] == ["patient-1", "patient-1", "/a/3.png"]


def test_unreadable_files_are_reported_not_grouped(tmp_path):
    good = tiny(tmp_path / "a-001.png", size=40)
    bad = tmp_path / "a-002.png"
    bad.write_bytes(b"nope")
    report = find_duplicates([str(good), str(bad)])
    assert report.unreadable == [(str(bad), "not a recognised image format")]
    assert report.pairs == [] and report.groups == []


# ---------------------------------------------------------------- splits


def synthetic_records(sizes=(40, 70, 60, 50)) -> list[Record]:
    """Per class, numbered files; every 7th image has a duplicate, every 11th two."""
    records = []
    for label, n in enumerate(sizes):
        name = CLASS_NAMES[label]
        k = 0
        while k < n:
            size = 3 if k % 11 == 0 else 2 if k % 7 == 0 else 1
            group = f"{name}-g{k}"
            for j in range(min(size, n - k)):
                records.append(Record(f"/data/{name}/{name}-{k + j + 1:03d}.jpg", label,
                                      group if size > 1 else ""))
            k += size
    return records


def assert_disjoint_groups(split: Split):
    sides = {}
    for part, recs in split.parts().items():
        for r in recs:
            assert sides.setdefault(r.group, part) == part, (r.group, part)


@pytest.mark.parametrize("kind", ["70:30", "60:40", "kfold", "block"])
def test_split_kinds_partition_and_respect_groups(kind):
    records = synthetic_records()
    cfg = SplitConfig(kind=kind, seed=3, block_size=4)
    split = make_split(records, cfg)
    paths = [r.path for recs in split.parts().values() for r in recs]
    assert sorted(paths) == sorted(r.path for r in records)
    assert_disjoint_groups(split)
    side = {r.path: p for p, recs in split.parts().items() for r in recs}
    for g, members in groups_of(records).items():  # the input groups are never split either
        assert len({side[m] for m in members}) == 1, g
    test_frac = {"70:30": 0.3, "60:40": 0.4, "kfold": 0.2, "block": 0.3}[kind]
    tol = 0.1 if kind == "block" else 0.04
    for label in range(4):
        n = sum(r.label == label for r in records)
        n_test = sum(r.label == label for r in split.test)
        assert abs(n_test / n - test_frac) <= tol, (label, n_test, n)
        n_train = sum(r.label == label for r in split.train) + sum(
            r.label == label for r in split.val)
        n_val = sum(r.label == label for r in split.val)
        assert abs(n_val / n_train - cfg.val_fraction) <= tol


def groups_of(records):
    out = {}
    for r in records:
        out.setdefault(r.group, []).append(r.path)
    return out


def test_split_is_deterministic_and_seed_dependent():
    records = synthetic_records()
    a = make_split(records, SplitConfig(seed=1))
    b = make_split(list(reversed(records)), SplitConfig(seed=1))
    c = make_split(records, SplitConfig(seed=2))
    assert a.test == b.test and a.val == b.val and a.train == b.train
    assert {r.path for r in a.test} != {r.path for r in c.test}


def test_small_classes_still_reach_every_part():
    # 6 images per class in blocks of 2: val wants 15 % of 4 -> 1 image, which no block fits
    records = [Record(f"/d/{CLASS_NAMES[c]}/x-{k + 1:03d}.jpg", c) for c in range(4)
               for k in range(6)]
    split = make_split(records, SplitConfig(kind="block", block_size=2, seed=0))
    for part in ("train", "val", "test"):
        assert {r.label for r in getattr(split, part)} == {0, 1, 2, 3}, part


def test_kfold_test_parts_cover_everything_once():
    records = synthetic_records()
    tests = [make_split(records, SplitConfig(kind="kfold", fold=k, seed=0)).test
             for k in range(5)]
    counts = Counter(r.path for t in tests for r in t)
    assert set(counts) == {r.path for r in records} and set(counts.values()) == {1}
    with pytest.raises(ValueError, match="fold"):
        make_split(records, SplitConfig(kind="kfold", fold=5))


def test_block_split_keeps_blocks_of_file_numbers_together():
    records = synthetic_records()
    split = make_split(records, SplitConfig(kind="block", block_size=10, seed=0))
    side = {r.path: part for part, recs in split.parts().items() for r in recs}
    for r in records:
        block = (r.label, (file_number(r.path) - 1) // 10)
        mates = [q for q in records if (q.label, (file_number(q.path) - 1) // 10) == block]
        assert {side[q.path] for q in mates} == {side[r.path]}
    assert all(r.group.startswith("block:") for r in split.train)


def test_split_save_load_round_trip(tmp_path):
    root = tmp_path / "data"
    records = []
    for label in range(4):
        for k in range(10):
            p = root / CLASS_NAMES[label] / f"x-{k:03d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
            records.append(Record(str(p), label, "dup-1" if (label, k) in ((0, 1), (0, 2)) else ""))
    split = make_split(records, SplitConfig(seed=5))
    split.save(tmp_path / "split.json", root=root)
    doc = json.loads((tmp_path / "split.json").read_text())
    assert doc["root"] == str(root) and not os.path.isabs(doc["train"][0][0])
    loaded = Split.load(tmp_path / "split.json")
    assert loaded.parts() == split.parts() and loaded.kind == "70:30" and loaded.seed == 5
    # the dataset moves: the stored root is gone, a new root is given
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    with pytest.raises(FileNotFoundError, match="40 of 40 images listed are missing"):
        Split.load(tmp_path / "split.json")
    again = Split.load(tmp_path / "split.json", root=moved)
    assert [r.path for r in again.test] == [r.path.replace(str(root), str(moved))
                                            for r in split.test]
    assert [r.group for r in again.train if r.group == "dup-1"] == [
        r.group for r in split.train if r.group == "dup-1"]


def test_split_load_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not an all_tf split file"):
        Split.load(tmp_path / "x.json")


def test_make_split_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        make_split([], SplitConfig())
    r = Record("/a/1.png", 0)
    with pytest.raises(ValueError, match="listed twice"):
        make_split([r, r], SplitConfig())


# ---------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def small_cfg():
    cfg = Config.preset("quick")
    cfg.preprocess.image_size = 32
    cfg.preprocess.reinhard = False
    return cfg


@pytest.fixture(scope="module")
def sample_records(sample_all4):
    return scan_dataset(sample_all4, verify="none").records


def test_pipeline_shapes_dtypes_range_onehot(sample_records, small_cfg):
    from all_tf.data import make_dataset

    records = sample_records[::4]  # 12 images, 3 per class
    for training in (False, True):
        ds = make_dataset(records, small_cfg, training=training, batch_size=5)
        batches = list(ds)
        # parallel, non-deterministic batching may emit the short batch before a full one
        assert sorted(int(x.shape[0]) for x, _ in batches) == [2, 5, 5]
        labels = []
        for x, y in batches:
            assert x.dtype.name == "float32" and y.dtype.name == "float32"
            assert tuple(x.shape[1:]) == (32, 32, 3) and tuple(y.shape[1:]) == (4,)
            assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0
            np.testing.assert_array_equal(np.sum(y, axis=1), 1.0)
            labels += np.argmax(y, axis=1).tolist()
        assert Counter(labels) == {0: 3, 1: 3, 2: 3, 3: 3}


def test_eval_order_matches_preprocess_image(sample_records, small_cfg):
    from all_tf.data import make_eval_dataset
    from all_tf.io import read_image
    from all_tf.preprocessing import preprocess_image

    records = sample_records[::6]  # 8 images, decoded in parallel
    x, y, idx = next(iter(make_eval_dataset(records, small_cfg, batch_size=8)))
    assert idx.numpy().tolist() == list(range(8))
    for k, r in enumerate(records):
        np.testing.assert_array_equal(
            x[k].numpy(), preprocess_image(read_image(r.path), small_cfg.preprocess))


def dihedral(img):
    out = []
    for k in range(4):
        r = np.rot90(img, k)
        out += [r, r[:, ::-1]]
    return out


def test_augmentation_only_when_training(sample_records, small_cfg):
    from all_tf.data import make_dataset

    cfg = Config.from_dict(small_cfg.to_dict())
    cfg.augment.colour_jitter = 0.0  # flips and 90-degree turns only: exact, checkable
    records = [sample_records[0]] * 16
    plain = next(iter(make_dataset(records, cfg, training=False, batch_size=16)))[0].numpy()
    assert all(np.array_equal(p, plain[0]) for p in plain)
    aug = next(iter(make_dataset(records, cfg, training=True, batch_size=16, seed=1)))[0].numpy()
    variants = dihedral(plain[0])
    assert all(any(np.array_equal(a, v) for v in variants) for a in aug)
    assert sum(not np.array_equal(a, plain[0]) for a in aug) >= 8
    off = make_dataset(records, cfg, training=True, batch_size=16, augment=False)
    assert all(np.array_equal(a, plain[0]) for a in next(iter(off))[0].numpy())


def test_training_order_is_reproducible_and_reshuffled(sample_records, small_cfg):
    from all_tf.data import make_dataset

    def labels_of(ds):
        return [np.argmax(y, 1).tolist() for _, y in ds]

    records = sample_records
    kw = dict(training=True, batch_size=48, seed=4, deterministic=True)
    ds1 = make_dataset(records, small_cfg, **kw)
    ds2 = make_dataset(records, small_cfg, **kw)
    e1, e2 = labels_of(ds1), labels_of(ds1)
    assert e1 == labels_of(ds2)
    assert e1 != e2  # reshuffled each epoch
    first1 = next(iter(make_dataset(records, small_cfg, **kw)))[0].numpy()
    first2 = next(iter(make_dataset(records, small_cfg, **kw)))[0].numpy()
    np.testing.assert_array_equal(first1, first2)


def test_crop_mode_datasets(sample_records, small_cfg):
    from all_tf.data import make_dataset, make_eval_dataset

    cfg = Config.from_dict(small_cfg.to_dict())
    cfg.preprocess.input_mode = "crops"
    cfg.preprocess.max_crops = 3
    records = [sample_records[0], sample_records[12], sample_records[40]]
    rows = [(x.numpy(), y.numpy(), i.numpy()) for x, y, i in
            make_eval_dataset(records, cfg, batch_size=4)]
    x = np.concatenate([r[0] for r in rows])
    y = np.concatenate([r[1] for r in rows])
    idx = np.concatenate([r[2] for r in rows])
    assert x.shape[1:] == (32, 32, 3) and x.dtype == np.float32
    assert sorted(set(idx.tolist())) == [0, 1, 2]
    assert np.all(np.bincount(idx) <= 3)
    for k, r in enumerate(records):
        assert np.all(np.argmax(y[idx == k], 1) == r.label)
    n = sum(int(b.shape[0]) for b, _ in make_dataset(records, cfg, training=True, batch_size=4))
    assert n == len(idx)


def test_uncached_crop_training_mixes_the_crops_of_different_fields(sample_records, small_cfg):
    from all_tf.data import make_dataset

    cfg = Config.from_dict(small_cfg.to_dict())
    cfg.preprocess.input_mode = "crops"
    cfg.preprocess.max_crops = 3
    by_class = {}
    for r in sample_records:
        by_class.setdefault(r.label, []).append(r)
    records = [r for rs in by_class.values() for r in rs[:3]]  # 12 fields, 4 classes
    labels = [int(np.argmax(y)) for _, y in make_dataset(
        records, cfg, training=True, batch_size=1, cache=False, seed=1, deterministic=True,
        augment=False).unbatch()]
    runs = 1 + sum(a != b for a, b in zip(labels[:-1], labels[1:], strict=True))
    assert len(labels) > len(records)
    assert runs > len(records)  # with a field's crops kept together: at most one run a field


def test_cache_to_file(sample_records, small_cfg, tmp_path):
    from all_tf.data import make_dataset

    records = sample_records[:6]
    ds = make_dataset(records, small_cfg, training=False, batch_size=6,
                      cache=str(tmp_path / "cache"))
    a = [x.numpy() for x, _ in ds]
    b = [x.numpy() for x, _ in ds]
    np.testing.assert_array_equal(a, b)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files and all(f.startswith("all_tf-") for f in files)
    # other settings -> another cache file, never the stale one
    other = Config.from_dict(small_cfg.to_dict())
    other.preprocess.clahe = not other.preprocess.clahe
    c = [x.numpy() for x, _ in make_dataset(records, other, training=False, batch_size=6,
                                            cache=str(tmp_path / "cache"))]
    assert not np.array_equal(a, c)
    assert len({f.split(".")[0] for f in os.listdir(tmp_path / "cache")}) == 2


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_all4_scan_and_duplicates(all4_dir):
    scan = scan_dataset(all4_dir)
    assert scan.class_counts() == {"Benign": 418, "Early": 817, "Pre": 799, "Pro": 667}
    assert scan.skipped == [] and scan.unknown_dirs == []
    report = find_duplicates([r.path for r in scan.records])
    assert report.counts_by_folder("exact") == {"Pro": 40}
    assert len(report.exact_pairs) == 40
    # measured 84 near and 289 overlap pairs (docs/benchmarks.md); floors, not exact values
    assert len(report.near_pairs) >= 75
    assert len(report.overlap_pairs) >= 250
    label = {r.path: r.label for r in scan.records}
    assert all(label[p.a] == label[p.b] for p in report.pairs)  # never across classes
    records = assign_groups(scan.records, report=report)
    for kind in ("70:30", "block"):
        split = make_split(records, SplitConfig(kind=kind, seed=0))
        assert_disjoint_groups(split)
        side = {r.path: part for part, recs in split.parts().items() for r in recs}
        for p in report.pairs:
            assert side[p.a] == side[p.b]
