"""The models released in ``saved_models/`` and their integrity check.

Each release is a folder ``saved_models/<name>/`` with ``config.json`` (model, preprocessing,
temperature), ``gate.json`` + ``ood.npz`` (the input gate), ``split.json``, ``metrics.json``,
``MODEL_CARD.md``, ``SHA256SUMS`` (checked on every load) and the weights in one of two forms:

* ``keras``: ``model.keras``, the best checkpoint without optimizer state (``light``).
* ``float16-parts``: for models whose ``.keras`` file exceeds git hosting's 50 MB file limit
  (``paper``).
  ``weights.json`` lists every array of ``model.weights`` in order (name, shape, dtype, stored
  dtype, part file); ``weights.partNN.npz`` hold them as float16, split by whole arrays into
  files under :data:`PART_LIMIT_BYTES`. Loading rebuilds the model from ``config.json`` with
  :func:`all_tf.models.build_from_config` (float32 policy, no pretrained weights) and assigns
  the arrays cast back to each variable's dtype. :func:`released_model_path` writes an
  equivalent ``model.keras`` (with the release's other files beside it) into
  ``$ALL_TF_CACHE_DIR/released/`` or ``~/.cache/all_tf/released/`` for code that needs a file.

Releasing a new model is one line in :data:`RELEASED` once its folder exists (made by
``all-tf release``; ``--weights-format float16-parts`` for the parts form).

Example:
    >>> from all_tf.models.released import RELEASED, released_dir
    >>> sorted(RELEASED)
    ['light', 'paper']
    >>> released_dir("light").name
    'mobilenetv3small_all4'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SAVED_MODELS = Path(os.environ.get("ALL_TF_SAVED_MODELS",
                                   Path(__file__).resolve().parents[2] / "saved_models"))
RELEASED = {"light": "mobilenetv3small_all4", "paper": "efficientnetv2s_cbam_all4"}
"""Short name -> folder in ``saved_models/``."""
DEFAULT_MODEL = "light"
CHECKSUM_FILE = "SHA256SUMS"
KERAS_FILE = "model.keras"
MANIFEST_FILE = "weights.json"
PART_PATTERN = "weights.part*.npz"
PART_LIMIT_BYTES = 45_000_000
"""Largest size of one ``weights.partNN.npz`` file in bytes (git hosts refuse > 50 MB)."""
PARTS_FORMAT = "all_tf-float16-parts-1"
WEIGHT_FORMATS = ("keras", "float16-parts")
COMPANION_FILES = ("config.json", "gate.json", "ood.npz", "split.json", "metrics.json",
                   "MODEL_CARD.md")
"""The files of a release besides its weights."""
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same weights give the same bytes


class ReleasedModelError(ValueError):
    """A released model that is unknown, missing or fails its checksum."""


def released_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of a released model (short name or folder name), checksums verified.

    Raises:
        ReleasedModelError: unknown name, missing folder or a file whose SHA-256 differs.
    """
    folder_name = RELEASED.get(name, name)
    if folder_name not in RELEASED.values():
        raise ReleasedModelError(f"unknown released model {name!r}; choose one of "
                                 f"{', '.join(sorted(RELEASED))} or pass a model path")
    folder = SAVED_MODELS / folder_name
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        raise ReleasedModelError(f"{folder}: released model not found (expected {CHECKSUM_FILE}; "
                                 "set ALL_TF_SAVED_MODELS to the saved_models folder of a "
                                 "checkout)")
    verify_checksums(folder)
    return folder


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_parts(folder: str | Path) -> list[Path]:
    """The ``weights.partNN.npz`` files in ``folder``, in order."""
    return sorted(Path(folder).glob(PART_PATTERN))


def weights_format(folder: str | Path) -> str:
    """``"float16-parts"`` when ``folder`` has ``weights.json``, else ``"keras"``."""
    return "float16-parts" if (Path(folder) / MANIFEST_FILE).is_file() else "keras"


def write_checksums(folder: str | Path, names=None) -> Path:
    """Write ``SHA256SUMS`` for the files of a release (those present).

    Args:
        folder: the release folder.
        names: file names relative to ``folder``; default ``model.keras``, ``weights.json``,
            the ``weights.partNN.npz`` files, ``config.json``, ``gate.json``, ``ood.npz``.
    """
    folder = Path(folder)
    if names is None:
        names = [KERAS_FILE, MANIFEST_FILE, *(p.name for p in weight_parts(folder)),
                 "config.json", "gate.json", "ood.npz"]
    lines = [f"{file_sha256(folder / n)}  {n}\n" for n in names if (folder / n).is_file()]
    (folder / CHECKSUM_FILE).write_text("".join(lines))
    return folder / CHECKSUM_FILE


def verify_checksums(folder: str | Path) -> None:
    """Raise ReleasedModelError if a file listed in ``SHA256SUMS`` is missing or differs."""
    folder = Path(folder)
    for number, line in enumerate((folder / CHECKSUM_FILE).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            digest, name = line.split(maxsplit=1)
        except ValueError:
            raise ReleasedModelError(f"{folder / CHECKSUM_FILE}: line {number} is not "
                                     "'<sha256>  <file name>'") from None
        path = folder / name.strip()
        if not path.is_file():
            raise ReleasedModelError(f"{path}: listed in {CHECKSUM_FILE} but missing")
        if file_sha256(path) != digest:
            raise ReleasedModelError(f"{path}: SHA-256 differs from {CHECKSUM_FILE} (a corrupt "
                                     "download, or a Git LFS pointer instead of the file)")


def load_released(name: str = DEFAULT_MODEL):
    """``(keras model, Config)`` of a released model, after its checksum check."""
    return load_release(released_dir(name), verify=False)


def load_release(folder: str | Path, verify: bool = True):
    """``(keras model, Config)`` of a release folder in either weights form.

    Args:
        folder: a release folder (``config.json`` and ``model.keras`` or ``weights.json`` +
            parts).
        verify: check ``SHA256SUMS`` first (when the folder has one).

    Raises:
        ReleasedModelError: a checksum differs, or the parts do not fit the model that
            ``config.json`` builds.
    """
    import keras

    import all_tf.models  # noqa: F401  (registers the custom layers)
    from all_tf.config import Config

    folder = Path(folder)
    if verify and (folder / CHECKSUM_FILE).is_file():
        verify_checksums(folder)
    cfg = Config.load(folder / "config.json")
    if weights_format(folder) == "keras":
        model = keras.saving.load_model(str(folder / KERAS_FILE), compile=False)
    else:
        model = _load_parts(folder, cfg)
    return model, cfg


def write_weight_parts(model, folder: str | Path,
                       part_bytes: int = PART_LIMIT_BYTES) -> list[Path]:
    """Write ``model.weights`` as float16 ``weights.partNN.npz`` files + ``weights.json``.

    Arrays go into parts in the order of ``model.weights``, whole, a new part starting when
    the next array would take the file past ``part_bytes``. Float arrays are stored as float16;
    one with a finite value beyond float16's range (|x| > 65504) and non-float arrays keep
    their dtype. Old parts in ``folder`` are removed first.

    Args:
        model: a Keras model (float32 variables).
        folder: the release folder (created if needed).
        part_bytes: upper bound on each part file's size in bytes.

    Returns:
        The part files written, in order.

    Raises:
        ValueError: one array alone does not fit in ``part_bytes``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in weight_parts(folder):
        old.unlink()
    entries, parts, current, size = [], [], [], 0
    overhead = 512  # .npy header + zip headers of one array, bytes (generous)
    for i, variable in enumerate(model.weights):
        value = np.asarray(variable.numpy())
        stored = _storage_array(value)
        need = stored.nbytes + overhead
        if need + overhead > part_bytes:
            raise ValueError(f"weight {variable.path} {value.shape} takes {stored.nbytes} bytes, "
                             f"more than one part may hold ({part_bytes})")
        if current and size + need + overhead > part_bytes:  # + the end of the zip
            parts.append(current)
            current, size = [], 0
        key = f"w{i:05d}"
        current.append((key, stored))
        size += need
        entries.append({"name": variable.path, "shape": list(value.shape),
                        "dtype": str(value.dtype), "stored": str(stored.dtype),
                        "part": len(parts), "key": key})
    if current:
        parts.append(current)
    paths = []
    for k, arrays in enumerate(parts):
        path = folder / f"weights.part{k:02d}.npz"
        _write_npz(path, arrays)
        if path.stat().st_size > part_bytes:
            raise ValueError(f"{path}: {path.stat().st_size} bytes, over the {part_bytes} limit")
        paths.append(path)
    for entry in entries:
        entry["part"] = paths[entry["part"]].name
    head = {"format": PARTS_FORMAT, "model": model.name,
            "input_shape": list(model.input_shape), "output_shape": list(model.output_shape),
            "parts": [p.name for p in paths]}
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    weights = ",\n".join(f"  {json.dumps(e)}" for e in entries)  # one line per array
    (folder / MANIFEST_FILE).write_text("{\n" + "\n".join(lines) + f'\n "weights": [\n{weights}\n ]\n}}\n')
    return paths


def released_model_path(name: str = DEFAULT_MODEL) -> Path:
    """A ``.keras`` file of a released model, with its ``config.json`` and gate beside it.

    ``model.keras`` in the release folder for the keras form; for the parts form the file
    written by :func:`materialize_keras` into the cache.
    """
    return release_keras_file(released_dir(name), verify=False)


def is_release(folder: str | Path) -> bool:
    """Whether ``folder`` looks like a release (``SHA256SUMS`` and ``config.json`` in it)."""
    folder = Path(folder)
    return (folder / CHECKSUM_FILE).is_file() and (folder / "config.json").is_file()


def release_keras_file(folder: str | Path, verify: bool = True) -> Path:
    """The ``.keras`` file of any release folder (see :func:`released_model_path`).

    Raises:
        ReleasedModelError: with ``verify``, a file whose SHA-256 differs.
    """
    folder = Path(folder)
    if verify:
        verify_checksums(folder)
    if weights_format(folder) == "keras":
        return folder / KERAS_FILE
    return materialize_keras(folder, verify=False)


def materialize_keras(folder: str | Path, cache_dir: str | Path | None = None,
                      verify: bool = True) -> Path:
    """Write a parts release as ``model.keras`` into a cache folder, once; return its path.

    The cache folder ``<cache_dir>/<release>-<first 16 hex of SHA-256 of SHA256SUMS>/`` also
    gets the release's ``config.json``, ``gate.json``, ``ood.npz`` (and the other
    :data:`COMPANION_FILES`), so predict and export find them beside the model. A cached
    folder is reused while its own checksums hold.

    Args:
        folder: a release folder in the float16-parts form.
        cache_dir: default ``$ALL_TF_CACHE_DIR/released`` or ``~/.cache/all_tf/released``.
        verify: check the release's ``SHA256SUMS`` first.

    Raises:
        ReleasedModelError: a checksum differs, or the parts do not fit the model.
    """
    folder = Path(folder)
    if verify:
        verify_checksums(folder)
    if cache_dir is None:
        cache_dir = Path(os.environ.get("ALL_TF_CACHE_DIR")
                         or Path.home() / ".cache" / "all_tf") / "released"
    cache_dir = Path(cache_dir)
    key = hashlib.sha256((folder / CHECKSUM_FILE).read_bytes()).hexdigest()[:16]
    target = cache_dir / f"{folder.name}-{key}"
    if (target / CHECKSUM_FILE).is_file():
        try:
            verify_checksums(target)
            return target / KERAS_FILE
        except ReleasedModelError:
            shutil.rmtree(target, ignore_errors=True)
    model, _ = load_release(folder, verify=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{target.name}."))
    try:
        model.save(tmp / KERAS_FILE)
        for name in COMPANION_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, tmp / name)
        write_checksums(tmp, [KERAS_FILE, *COMPANION_FILES])
        try:
            tmp.rename(target)
        except OSError:  # another process got there first
            if not (target / KERAS_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / KERAS_FILE


def _storage_array(value: np.ndarray) -> np.ndarray:
    if not np.issubdtype(value.dtype, np.floating):
        return value
    finite = value[np.isfinite(value)]
    if finite.size and float(np.abs(finite).max()) > _FLOAT16_MAX:
        return value
    return value.astype(np.float16)


def _write_npz(path: Path, arrays) -> None:
    """An uncompressed ``.npz`` (readable by ``np.load``) with fixed timestamps."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, array in arrays:
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def _load_parts(folder: Path, cfg):
    """Build ``cfg``'s model (float32, weights=None) and assign the float16 parts."""
    import keras

    from all_tf.config import Config
    from all_tf.models.build import build_from_config

    manifest_path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["weights"]
    except (OSError, ValueError, KeyError) as e:
        raise ReleasedModelError(f"{manifest_path}: not an all_tf weights manifest ({e})") from None
    if manifest.get("format") != PARTS_FORMAT:
        raise ReleasedModelError(f"{manifest_path}: format {manifest.get('format')!r}, "
                                 f"expected {PARTS_FORMAT!r}")
    build_cfg = Config.from_dict(cfg.to_dict())
    build_cfg.model.weights = None  # the parts hold every weight; never download
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = build_from_config(build_cfg)
    except ValueError as e:
        raise ReleasedModelError(f"{folder}: cannot build the model of config.json ({e})") from e
    finally:
        keras.mixed_precision.set_global_policy(policy)
    variables = model.weights
    if len(variables) != len(entries):
        raise ReleasedModelError(f"{manifest_path}: {len(entries)} arrays, but config.json "
                                 f"builds {model.name!r} with {len(variables)} weights")
    by_part: dict[str, list] = {}
    for variable, entry in zip(variables, entries, strict=True):
        # shapes and the last name component (kernel, gamma, ...) must match: layer names
        # may carry counters that differ between processes
        short = entry["name"].rsplit("/", 1)[-1]
        if tuple(variable.shape) != tuple(entry["shape"]) \
                or variable.path.rsplit("/", 1)[-1] != short:
            raise ReleasedModelError(f"{manifest_path}: array {entry['name']} "
                                     f"{tuple(entry['shape'])} does not fit weight "
                                     f"{variable.path} {tuple(variable.shape)} of {model.name!r}")
        by_part.setdefault(entry["part"], []).append((variable, entry))
    for part, items in by_part.items():
        path = folder / part
        try:
            with np.load(path, allow_pickle=False) as z:
                for variable, entry in items:
                    value = z[entry["key"]]
                    if value.shape != tuple(entry["shape"]):
                        raise ValueError(f"{entry['key']} has shape {value.shape}")
                    variable.assign(value.astype(variable.dtype))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise ReleasedModelError(f"{path}: cannot read weights ({e})") from None
    return model


def main(argv: list[str] | None = None) -> None:
    """``python -m all_tf.models.released [NAME]``: print a released model's ``.keras`` path.

    For a float16-parts release this writes the cached ``model.keras`` first; the path can
    be passed to ``python -m all_tf.export`` or any tool that needs a file.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        print(released_model_path(args[0] if args else DEFAULT_MODEL))
    except ReleasedModelError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
