"""The models released in ``saved_models/`` and their integrity check.

Each release is a folder ``saved_models/<name>/`` with ``model.keras``, ``config.json``
(preprocessing, temperature), ``gate.json`` + ``ood.npz`` (the input gate), ``split.json``,
``metrics.json``, ``MODEL_CARD.md`` and ``SHA256SUMS`` (checked on every load).

Example:
    >>> from all_tf.models.released import RELEASED, released_dir
    >>> sorted(RELEASED)
    ['light']
    >>> released_dir("light").name
    'mobilenetv3small_all4'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SAVED_MODELS = Path(os.environ.get("ALL_TF_SAVED_MODELS",
                                   Path(__file__).resolve().parents[2] / "saved_models"))
RELEASED = {"light": "mobilenetv3small_all4"}
"""Short name -> folder in ``saved_models/``."""
DEFAULT_MODEL = "light"
CHECKSUM_FILE = "SHA256SUMS"


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


def write_checksums(folder: str | Path, names=("model.keras", "config.json", "gate.json",
                                               "ood.npz")) -> Path:
    """Write ``SHA256SUMS`` for the files of a release (those present)."""
    folder = Path(folder)
    lines = [f"{file_sha256(folder / n)}  {n}\n" for n in names if (folder / n).is_file()]
    (folder / CHECKSUM_FILE).write_text("".join(lines))
    return folder / CHECKSUM_FILE


def verify_checksums(folder: str | Path) -> None:
    """Raise ReleasedModelError if a file listed in ``SHA256SUMS`` is missing or differs."""
    folder = Path(folder)
    for line in (folder / CHECKSUM_FILE).read_text().splitlines():
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file():
            raise ReleasedModelError(f"{path}: listed in {CHECKSUM_FILE} but missing")
        if file_sha256(path) != digest:
            raise ReleasedModelError(f"{path}: SHA-256 differs from {CHECKSUM_FILE} (a corrupt "
                                     "download, or a Git LFS pointer instead of the file)")


def load_released(name: str = DEFAULT_MODEL):
    """``(keras model, Config)`` of a released model, after its checksum check."""
    import keras

    import all_tf.models  # noqa: F401  (registers the custom layers)
    from all_tf.config import Config

    folder = released_dir(name)
    model = keras.saving.load_model(str(folder / "model.keras"), compile=False)
    return model, Config.load(folder / "config.json")
