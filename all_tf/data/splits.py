"""Group-aware, stratified train/val/test splits, saved as JSON.

Kinds (``SplitConfig.kind``):

* ``"70:30"`` / ``"60:40"``: test = 30 % / 40 % of every class, by whole groups.
* ``"kfold"``: ``n_folds`` stratified group folds (scikit-learn ``StratifiedGroupKFold``);
  fold ``fold`` is the test part.
* ``"block"``: blocks of ``block_size`` consecutive file numbers per class are groups
  (neighbouring numbers come from the same slide, about one patient), merged with the
  duplicate groups; test = 30 % of every class, by whole blocks.
* ``"contiguous"``: per class, images sorted by file number are cut into ``n_folds``
  contiguous folds; fold ``fold`` is the test part. The validation part is a contiguous run of
  ``val_fraction`` of what is left, at the end of the class's numbers farthest from the test
  fold. Any other image of the same class within ``embargo`` file numbers of a test image, or
  a training image within ``embargo`` of a validation image, is dropped (listed in
  ``Split.excluded``). This is the split that predicts accuracy on a new acquisition batch:
  neighbouring file numbers share a slide, stain and scale-bar style.

In every other kind the validation part is ``val_fraction`` of the training part, carved by whole
groups and stratified the same way. No group is ever on two sides. The same records and
``SplitConfig`` give the same split on any machine (the records are sorted first).

Example:
    >>> from all_tf.config import SplitConfig
    >>> from all_tf.data import Record, make_split
    >>> records = [Record(f"/d/{c}/{i:03d}.jpg", c) for c in range(4) for i in range(20)]
    >>> split = make_split(records, SplitConfig(kind="70:30", seed=1))
    >>> len(split.train), len(split.val), len(split.test)
    (48, 8, 24)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from all_tf import CLASS_NAMES
from all_tf.config import SplitConfig
from all_tf.data.groups import component_labels
from all_tf.data.scan import Record, file_number
from all_tf.io import atomic_write_text

PARTS = ("train", "val", "test")
_FORMAT = "all_tf.split"


@dataclass
class Split:
    """Train/validation/test records and how they were made.

    Attributes:
        train, val, test: records of each part.
        kind, seed: from the ``SplitConfig`` used.
        params: the whole ``SplitConfig`` as a dict.
        root: dataset root the paths were made relative to in the JSON file (or None).
        excluded: records in no part (the embargo of a ``"contiguous"`` split).
    """

    train: list[Record]
    val: list[Record]
    test: list[Record]
    kind: str = "70:30"
    seed: int = 42
    params: dict = field(default_factory=dict)
    root: str | None = None
    excluded: list[Record] = field(default_factory=list)

    def parts(self) -> dict[str, list[Record]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class name in each part."""
        out = {}
        for part, records in self.parts().items():
            c = Counter(r.label for r in records)
            out[part] = {name: c.get(i, 0) for i, name in enumerate(CLASS_NAMES)}
        return out

    def summary(self) -> str:
        return "; ".join(f"{part} {sum(c.values())} {c}" for part, c in self.counts().items())

    def check_disjoint(self) -> None:
        """Raise ValueError if a path or a group appears in two parts."""
        seen_path: dict[str, str] = {}
        seen_group: dict[str, str] = {}
        for part, records in self.parts().items():
            for r in records:
                for seen, key, what in ((seen_path, r.path, "file"), (seen_group, r.group, "group")):
                    other = seen.setdefault(key, part)
                    if other != part:
                        raise ValueError(f"{what} {key!r} is in both {other} and {part}")

    def save(self, path: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
        """Write the split as JSON.

        Args:
            path: output file (written atomically).
            root: dataset root; paths under it are stored relative to it, so the dataset can
                move. Default: ``self.root``, else the common folder of all paths.
        """
        all_paths = [r.path for part in self.parts().values() for r in part]
        if root is None:
            root = self.root
        if root is None and all_paths:
            try:
                root = os.path.commonpath([os.path.abspath(p) for p in all_paths])
            except ValueError:
                root = None
        root = os.path.abspath(root) if root is not None else None

        def rel(p: str) -> str:
            if root is None:
                return p
            r = os.path.relpath(os.path.abspath(p), root)
            return p if r.startswith("..") else r.replace(os.sep, "/")

        def entry(r: Record) -> list:
            return [rel(r.path), r.label, None if r.group == r.path else r.group]

        doc = {
            "format": _FORMAT,
            "version": 1,
            "kind": self.kind,
            "seed": self.seed,
            "params": self.params,
            "root": root,
            "class_names": list(CLASS_NAMES),
            "counts": self.counts(),
            **{part: [entry(r) for r in records] for part, records in self.parts().items()},
            "excluded": [entry(r) for r in self.excluded],
        }
        atomic_write_text(path, json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, root: str | os.PathLike | None = None,
             check_files: bool = True) -> Split:
        """Read a split written by :meth:`save`.

        Args:
            path: the JSON file.
            root: dataset root for the relative paths; default: the root stored in the file.
            check_files: raise if listed images no longer exist.

        Raises:
            ValueError: not a split file, or written for other class names.
            FileNotFoundError: images are missing (the message counts them and names a few).
        """
        try:
            doc = json.loads(Path(path).read_text())
            if doc.get("format") != _FORMAT:
                raise ValueError("format field is not 'all_tf.split'")
        except (OSError, ValueError, AttributeError) as e:
            raise ValueError(f"{path}: not an all_tf split file ({e})") from None
        if doc.get("class_names", list(CLASS_NAMES)) != list(CLASS_NAMES):
            raise ValueError(f"{path}: written for classes {doc['class_names']}, "
                             f"expected {list(CLASS_NAMES)}")
        base = str(root) if root is not None else doc.get("root")

        def record(e) -> Record:
            p, label, group = e
            if base is not None and not os.path.isabs(p):
                p = os.path.join(base, p)
            return Record(p, label, group or p)

        parts = {part: [record(e) for e in doc[part]] for part in PARTS}
        split = cls(**parts, kind=doc["kind"], seed=doc["seed"], params=doc.get("params", {}),
                    root=base, excluded=[record(e) for e in doc.get("excluded", [])])
        if check_files:
            missing = [r.path for recs in parts.values() for r in recs if not os.path.isfile(r.path)]
            if missing:
                total = sum(len(v) for v in parts.values())
                raise FileNotFoundError(
                    f"{path}: {len(missing)} of {total} images listed are missing "
                    f"(root {base!r}), e.g. {missing[:3]}; pass root= if the dataset moved")
        return split


def stratified_group_take(labels: np.ndarray, groups: list[str], indices: list[int],
                          fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Split ``indices`` into (rest, taken) with about ``fraction`` of each class taken,
    moving whole groups only.

    A group counts for its most frequent label. Per class, groups are visited in random order
    and taken while they fit the target ``round(fraction * n_class)``; then the remaining group
    that brings the count closest to the target is added if it helps, or, for a target of at
    least one image, if the class would otherwise be absent from the taken part while keeping
    at least one group in the rest (a target that rounds to 0 takes nothing).
    """
    by_group: dict[str, list[int]] = defaultdict(list)
    for k in indices:
        by_group[groups[k]].append(k)
    by_class: dict[int, list[str]] = defaultdict(list)
    for g in sorted(by_group):
        members = by_group[g]
        label = Counter(int(labels[k]) for k in members).most_common()
        best = min(lab for lab, n in label if n == label[0][1])
        by_class[best].append(g)
    taken: list[int] = []
    for label in sorted(by_class):
        class_groups = by_class[label]
        n_class = sum(len(by_group[g]) for g in class_groups)
        target = int(round(fraction * n_class))
        order = [class_groups[i] for i in rng.permutation(len(class_groups))]
        count, left = 0, []
        for g in order:
            size = len(by_group[g])
            if count + size <= target:
                taken += by_group[g]
                count += size
            else:
                left.append(g)
        if count < target and left:
            g = min(left, key=lambda g: (abs(count + len(by_group[g]) - target), order.index(g)))
            # a class absent from a part is worse than an overshoot (while the rest keeps a group)
            if abs(count + len(by_group[g]) - target) < target - count or (
                    count == 0 and len(left) >= 2):
                taken += by_group[g]
    taken_set = set(taken)
    return [k for k in indices if k not in taken_set], sorted(taken)


def sequence_numbers(records: list[Record]) -> list[int]:
    """Capture-order number of each record: its file number, or for a file name without digits
    its 1-based position among its class's paths sorted by name."""
    rank: dict[int, dict[str, int]] = {}
    for label in {r.label for r in records}:
        names = sorted(r.path for r in records if r.label == label)
        rank[label] = {p: k + 1 for k, p in enumerate(names)}
    nums = []
    for r in records:
        num = file_number(r.path)
        nums.append(rank[r.label][r.path] if num is None else num)
    return nums


def _near(nums: np.ndarray, labels: np.ndarray, candidates: list[int], anchors: list[int],
          distance: int) -> set[int]:
    """Candidates within ``distance`` file numbers of an anchor of the same class."""
    near = set()
    for label in np.unique(labels[anchors]) if anchors else []:
        ref = np.sort(nums[[a for a in anchors if labels[a] == label]])
        for k in candidates:
            if labels[k] != label:
                continue
            pos = np.searchsorted(ref, nums[k])
            gaps = [abs(int(ref[j]) - int(nums[k])) for j in (pos - 1, pos) if 0 <= j < len(ref)]
            if min(gaps) <= distance:
                near.add(k)
    return near


def _whole_groups(chosen: set[int], pool: set[int], groups: list[str]) -> set[int]:
    """``chosen`` grown by every member of ``pool`` that shares a group with it."""
    wanted = {groups[k] for k in chosen}
    return chosen | {k for k in pool if groups[k] in wanted}


def _contiguous_parts(records: list[Record], groups: list[str], cfg: SplitConfig
                      ) -> tuple[list[int], list[int], list[int], list[int]]:
    """(train, val, test, excluded) indices of the ``"contiguous"`` split."""
    if cfg.n_folds < 2:
        raise ValueError(f"a contiguous split needs n_folds >= 2, got {cfg.n_folds}")
    if not 0 <= cfg.fold < cfg.n_folds:
        raise ValueError(f"fold must be in 0..{cfg.n_folds - 1}, got {cfg.fold}")
    nums = np.array(sequence_numbers(records))
    labels = np.array([r.label for r in records])
    everything = set(range(len(records)))
    position_fold = np.zeros(len(records), dtype=int)  # fold of each image's place in its class
    for label in np.unique(labels):
        idx = sorted(np.flatnonzero(labels == label), key=lambda k: (nums[k], records[k].path))
        if len(idx) < cfg.n_folds:
            raise ValueError(f"class {CLASS_NAMES[label]} has {len(idx)} images, fewer than "
                             f"{cfg.n_folds} contiguous folds")
        # folds and the embargo follow file numbers: one number on two files (e.g. two
        # sub-folders numbered from 1) would interleave different acquisitions
        clash = next(((a, b) for a, b in zip(idx[:-1], idx[1:], strict=True)
                      if nums[a] == nums[b]), None)
        if clash is not None:
            a, b = (records[k].path for k in clash)
            raise ValueError(f"class {CLASS_NAMES[label]}: {a} and {b} share file number "
                             f"{nums[clash[0]]}; contiguous folds need one capture-order "
                             "number per image (rename the files, or use another split)")
        for rank, k in enumerate(idx):
            position_fold[k] = min(cfg.n_folds - 1, rank * cfg.n_folds // len(idx))
    # A duplicate group belongs to the fold of its first member (by class, number, path), so
    # every image is tested in exactly one fold even when a group crosses a fold boundary.
    group_fold: dict[str, int] = {}
    for k in sorted(everything, key=lambda k: (labels[k], nums[k], records[k].path)):
        group_fold.setdefault(groups[k], int(position_fold[k]))
    test = {k for k in everything if group_fold[groups[k]] == cfg.fold}
    rest = everything - test
    excluded = _whole_groups(_near(nums, labels, sorted(rest), sorted(test), cfg.embargo),
                             rest, groups)
    rest -= excluded
    val: set[int] = set()
    for label in np.unique(labels):
        idx = sorted((k for k in rest if labels[k] == label), key=lambda k: (nums[k], records[k].path))
        n_val = int(round(cfg.val_fraction * len(idx)))
        if not n_val:
            continue
        class_nums = nums[labels == label]
        test_centre = np.mean([nums[k] for k in test if labels[k] == label])
        from_top = test_centre < (class_nums.min() + class_nums.max()) / 2
        val.update(idx[-n_val:] if from_top else idx[:n_val])
    val = _whole_groups(val, rest, groups)
    rest -= val
    near_val = _whole_groups(_near(nums, labels, sorted(rest), sorted(val), cfg.embargo),
                             rest, groups)
    excluded |= near_val
    rest -= near_val
    for label in np.unique(labels):
        if not any(labels[k] == label for k in rest):
            raise ValueError(f"class {CLASS_NAMES[label]} has no training image left in fold "
                             f"{cfg.fold} (embargo {cfg.embargo} file numbers is too wide for "
                             f"{int((labels == label).sum())} images in {cfg.n_folds} folds)")
    return sorted(rest), sorted(val), sorted(test), sorted(excluded)


def _block_groups(records: list[Record], block_size: int) -> list[str]:
    """Group of each record for the block split: union of its own group and its block."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    nums = sequence_numbers(records)
    first_of: dict[str, int] = {}
    links = [(k, first_of.setdefault(key, k)) for k, r in enumerate(records)
             for key in (f"group:{r.group}", f"block:{r.label}:{(nums[k] - 1) // block_size}")]
    labels = component_labels(len(records), links)
    name_of: dict[int, str] = {}  # a group is named by its first record's block
    for k, r in enumerate(records):
        name_of.setdefault(labels[k], f"block:{r.label}:{(nums[k] - 1) // block_size:04d}")
    return [name_of[labels[k]] for k in range(len(records))]


def make_split(records: list[Record], split_cfg: SplitConfig,
               root: str | os.PathLike | None = None) -> Split:
    """Split ``records`` by ``split_cfg`` (kinds in the module docstring).

    Args:
        records: records with their duplicate groups (see :func:`assign_groups`).
        split_cfg: kind, seed, validation fraction, fold, block size.
        root: dataset root stored with the split (for relative paths in its file).

    Returns:
        A :class:`Split`; its records carry the groups the split respected (block ids for
        ``"block"``).

    Raises:
        ValueError: no records, duplicate paths, or a fold outside ``0..n_folds-1``.
    """
    if not records:
        raise ValueError("cannot split an empty list of records")
    records = sorted(records, key=lambda r: r.path)
    dup = [p for p, n in Counter(r.path for r in records).items() if n > 1]
    if dup:
        raise ValueError(f"{len(dup)} paths are listed twice, e.g. {dup[0]}")
    cfg = split_cfg
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    rng = np.random.default_rng(cfg.seed)
    labels = np.array([r.label for r in records])
    if cfg.kind == "block":
        groups = _block_groups(records, cfg.block_size)
        records = [dataclasses.replace(r, group=g) for r, g in zip(records, groups, strict=True)]
    else:
        groups = [r.group for r in records]
    everything = list(range(len(records)))
    excluded_idx: list[int] = []

    if cfg.kind == "contiguous":
        train_idx, val_idx, test_idx, excluded_idx = _contiguous_parts(records, groups, cfg)
    elif cfg.kind == "kfold":
        if not 0 <= cfg.fold < cfg.n_folds:
            raise ValueError(f"fold must be in 0..{cfg.n_folds - 1}, got {cfg.fold}")
        from sklearn.model_selection import StratifiedGroupKFold

        folds = StratifiedGroupKFold(n_splits=cfg.n_folds, shuffle=True, random_state=cfg.seed)
        group_ids = np.unique(groups, return_inverse=True)[1]
        try:
            train_idx, test_idx = list(folds.split(everything, labels, group_ids))[cfg.fold]
        except ValueError as e:
            raise ValueError(f"cannot make {cfg.n_folds} group folds: {e}") from None
        train_idx, test_idx = sorted(train_idx.tolist()), sorted(test_idx.tolist())
    else:
        train_idx, test_idx = stratified_group_take(labels, groups, everything,
                                                    cfg.test_fraction, rng)
    if cfg.kind != "contiguous":
        train_idx, val_idx = stratified_group_take(labels, groups, train_idx, cfg.val_fraction,
                                                   rng)

    def pick(idx):
        return [records[k] for k in idx]

    split = Split(pick(train_idx), pick(val_idx), pick(test_idx), kind=cfg.kind, seed=cfg.seed,
                  params=dataclasses.asdict(cfg), root=str(root) if root is not None else None,
                  excluded=pick(excluded_idx))
    split.check_disjoint()
    return split
