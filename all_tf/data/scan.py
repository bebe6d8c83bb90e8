"""Find the labelled images of a dataset folder.

Accepted layouts (folder names matched through :data:`CLASS_ALIASES`)::

    root/<class>/*.jpg                    e.g. all4/Benign, all4/Early, all4/Pre, all4/Pro
    root/Original/<class>/*.jpg           the Kaggle layout; a Segmented/ sibling is ignored

Images may sit in sub-folders of a class folder. Every file under a class folder that cannot be
decoded is listed in :attr:`ScanResult.skipped` with the reason, and the scan goes on. Folders
whose name is not a known class are listed in :attr:`ScanResult.unknown_dirs`; their class is
never guessed.

Example:
    >>> from all_tf.data import scan_dataset
    >>> scan = scan_dataset("all_tf/sample_data/all4")
    >>> len(scan.records), scan.skipped, scan.unknown_dirs
    (48, [], [])
    >>> scan.records[0].label, scan.records[0].path.endswith("WBC-Benign-001.jpg")
    (0, True)
"""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from all_tf import CLASS_NAMES
from all_tf.io import IMAGE_EXTENSIONS, ImageReadError, read_image

SAMPLE_ALL4_DIR = Path(__file__).resolve().parents[1] / "sample_data" / "all4"
"""The 4-class sample shipped with the package (12 images per class)."""

CLASS_ALIASES: dict[str, int] = {
    # Benign (hematogones)
    "benign": 0,
    # Malignant early Pre-B
    "early": 1,
    "earlypreb": 1,
    "malignantearlypreb": 1,
    # Malignant Pre-B
    "pre": 2,
    "preb": 2,
    "malignantpreb": 2,
    # Malignant Pro-B
    "pro": 3,
    "prob": 3,
    "malignantprob": 3,
}
"""Normalised folder name (see :func:`normalise_name`) -> class index into ``CLASS_NAMES``."""

_CONTAINER_DIRS = {"original"}  # descended into: root/Original/<class>
_IGNORED_DIRS = {"segmented"}  # the Kaggle release's segmented copies of the same images
VERIFY_MODES = ("decode", "header", "none")


def normalise_name(name: str) -> str:
    """Lowercase ``name`` and drop spaces, underscores, hyphens and brackets.

    >>> normalise_name("[Malignant] early Pre-B")
    'malignantearlypreb'
    """
    return re.sub(r"[\s_\-\[\]\(\)\{\}]+", "", name.lower())


def class_index(folder_name: str) -> int | None:
    """The class index of a folder name, or None when the name is not a known alias."""
    return CLASS_ALIASES.get(normalise_name(folder_name))


@dataclass(frozen=True)
class Record:
    """One labelled image.

    Attributes:
        path: image file path (as found by the scan, or as resolved from a split file).
        label: class index into ``all_tf.CLASS_NAMES``.
        group: images sharing a group are kept on the same side of every split (duplicates,
            blocks of one slide). Defaults to ``path`` (every image its own group).
    """

    path: str
    label: int
    group: str = ""

    def __post_init__(self):
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "label", int(self.label))
        if not self.group:
            object.__setattr__(self, "group", self.path)
        if not 0 <= self.label < len(CLASS_NAMES):
            raise ValueError(f"{self.path}: label {self.label} outside 0..{len(CLASS_NAMES) - 1}")


@dataclass
class ScanResult:
    """What :func:`scan_dataset` found.

    Attributes:
        records: usable images, sorted by class then path.
        skipped: ``(path, reason)`` for every file under a class folder that was not used.
        unknown_dirs: folders whose name is not a known class (not scanned).
        notes: other remarks (ignored ``Segmented/`` folders, merged alias folders).
    """

    records: list[Record]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unknown_dirs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def class_counts(self) -> dict[str, int]:
        """Images per class name, in ``CLASS_NAMES`` order (0 for absent classes)."""
        counts = Counter(r.label for r in self.records)
        return {name: counts.get(i, 0) for i, name in enumerate(CLASS_NAMES)}

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        return (f"{len(self.records)} images ({counts}); {len(self.skipped)} skipped; "
                f"{len(self.unknown_dirs)} unknown folders")


def _check_file(path: str, verify: str) -> str | None:
    """None when ``path`` is usable, else the reason."""
    if verify == "none":
        return None
    try:
        if verify == "decode":
            read_image(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.verify()
    except ImageReadError as e:
        return e.reason
    except Exception as e:  # PIL's header check raises many types
        return f"unreadable image ({e})"
    return None


def scan_dataset(root: str | os.PathLike, verify: str = "decode", workers: int = 2) -> ScanResult:
    """List the labelled images under ``root``.

    Args:
        root: dataset folder (layouts in the module docstring).
        verify: ``"decode"`` fully decodes every image (about 1 ms per 224x224 JPEG) so that
            corrupt or truncated files are skipped here rather than during training;
            ``"header"`` only checks the header; ``"none"`` trusts the extension.
        workers: decoding threads (OpenCV releases the GIL).

    Returns:
        A :class:`ScanResult`; records sorted by class index, then path.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")

    class_dirs: list[tuple[Path, int]] = []
    unknown, notes = [], []

    def visit(folder: Path, depth: int) -> None:
        for child in sorted(p for p in folder.iterdir() if p.is_dir()):
            if child.name.startswith("."):
                continue
            norm = normalise_name(child.name)
            if norm in CLASS_ALIASES:
                class_dirs.append((child, CLASS_ALIASES[norm]))
            elif norm in _IGNORED_DIRS:
                notes.append(f"{child}: ignored (segmented copies of the same images)")
            elif norm in _CONTAINER_DIRS and depth == 0:
                visit(child, depth + 1)
            else:
                unknown.append(str(child))

    visit(root_path, 0)
    by_label = Counter(label for _, label in class_dirs)
    for label, n in by_label.items():
        if n > 1:
            names = [str(d) for d, lab in class_dirs if lab == label]
            notes.append(f"{n} folders map to class {CLASS_NAMES[label]}, merged: {names}")

    candidates: list[tuple[str, int]] = []
    skipped: list[tuple[str, str]] = []
    for folder, label in class_dirs:
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or name in ("Thumbs.db", "desktop.ini"):
                    continue
                path = os.path.join(dirpath, name)
                if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    skipped.append((path, "not an image file extension"))
                else:
                    candidates.append((path, label))
            # a folder named like an image (x.jpg/) is a bad entry, not a sub-folder to walk
            for d in list(dirnames):
                if os.path.splitext(d)[1].lower() in IMAGE_EXTENSIONS:
                    dirnames.remove(d)
                    skipped.append((os.path.join(dirpath, d), "is a directory, not an image"))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = list(pool.map(lambda c: _check_file(c[0], verify), candidates))
    records = []
    for (path, label), reason in zip(candidates, reasons, strict=True):
        if reason is None:
            records.append(Record(path, label))
        else:
            skipped.append((path, reason))
    records.sort(key=lambda r: (r.label, r.path))
    skipped.sort()
    return ScanResult(records, skipped, unknown, notes)


def file_number(path: str | os.PathLike) -> int | None:
    """The last run of digits in a file name's stem (``WBC-Malignant-Pro-042.jpg`` -> 42)."""
    digits = re.findall(r"\d+", Path(path).stem)
    return int(digits[-1]) if digits else None


def collect_inputs(items, labelled: bool = True) -> list[tuple[str, int | None]]:
    """Expand image files, folders and globs to ``(path, label)`` pairs, in a stable order.

    A folder whose sub-folders are class folders (see :func:`all_tf.data.scan_dataset`) gives
    labelled images; any other folder gives its images (recursively) with label None. A path
    that matches nothing is returned as is (with label None) so the caller can report it.

    Args:
        items: paths, folders or glob patterns.
        labelled: look for class folders (set False to never attach labels).
    """
    import glob

    out: list[tuple[str, int | None]] = []
    for item in items:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            records = []
            if labelled:
                try:
                    records = scan_dataset(path, verify="none").records
                except (FileNotFoundError, ValueError):
                    records = []
            if records:
                out.extend((r.path, r.label) for r in records)
            else:
                out.extend(
                    # a broken or looping link is listed too, so the caller reports it
                    (str(p), None) for p in sorted(path.rglob("*"))
                    if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_EXTENSIONS
                )
        elif path.exists():
            out.append((item, None))
        else:
            matches = sorted(glob.glob(item, recursive=True))
            out.extend((m, None) for m in matches if Path(m).is_file() or Path(m).is_symlink())
            if not matches:
                out.append((item, None))
    return out
