"""Safe image decoding, atomic file writes and cached JSON results.

Every decoding error is an :class:`ImageReadError` whose message names the file and the
reason, so that a dataset scan can list skipped files and go on.

Example:
    >>> from all_tf.io import read_image
    >>> rgb = read_image("all_tf/sample_data/all4/Pro/WBC-Malignant-Pro-001.jpg")
    >>> rgb.shape, rgb.dtype
    ((224, 224, 3), dtype('uint8'))
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MIN_SIDE_PX = 16
MAX_PIXELS = 64_000_000  # 8000 x 8000; larger images are refused rather than risking OOM


class ImageReadError(ValueError):
    """An image that cannot be used; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 of shape (H, W, 3).

    Grayscale becomes RGB, alpha is dropped (composited on white where transparent),
    palette images are expanded, 16-bit images scaled to 8 bits and an EXIF orientation
    applied (pixels as a viewer shows them).

    Raises:
        ImageReadError: empty, not an image, truncated, too small (< 16 px a side) or too
            large (> 64 megapixels).
    """
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            mode = probe.mode
    except UnidentifiedImageError:
        raise ImageReadError(name, "not a recognised image format") from None
    except Exception as e:  # PIL raises many types on corrupt headers
        raise ImageReadError(name, f"unreadable image header ({e})") from None
    if width * height > MAX_PIXELS:
        raise ImageReadError(name, f"image too large ({width}x{height} > {MAX_PIXELS} pixels)")
    if min(width, height) < MIN_SIDE_PX:
        raise ImageReadError(name, f"image too small ({width}x{height}; need >= {MIN_SIDE_PX} px a side)")

    try:
        with Image.open(io.BytesIO(data)) as probe:
            orientation = probe.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # no or broken EXIF: pixels as stored
        orientation = 1
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or mode == "P":
        # OpenCV cannot decode it (or would ignore the palette): let PIL do it.
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if im.mode == "P" or im.mode == "PA":
                    im = im.convert("RGBA")
                array = np.asarray(im)
                if array.ndim == 3:  # PIL is RGB(A); OpenCV path below expects BGR(A)
                    array = array[..., ::-1] if array.shape[2] == 3 else array[..., [2, 1, 0, 3]]
        except Exception as e:
            raise ImageReadError(name, f"corrupt or truncated image data ({e})") from None
    return _apply_orientation(_to_rgb_uint8(np.ascontiguousarray(array), name), orientation)


_EXIF_ORIENTATION = 0x0112


def _apply_orientation(rgb: np.ndarray, orientation) -> np.ndarray:
    """Turn pixels as stored into pixels as displayed, by the EXIF orientation tag (1-8)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, 1)[:, ::-1], 8: lambda a: np.rot90(a, 1)}
    op = ops.get(orientation if isinstance(orientation, int) else 1)
    return rgb if op is None else np.ascontiguousarray(op(rgb))


def _to_rgb_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype in (np.int32, np.float32):  # PIL "I"/"F" modes
        lo, hi = float(array.min()), float(array.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        array = ((array - lo) * scale).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageReadError(name, f"unsupported pixel type {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 1:
        return cv2.cvtColor(array[..., 0], cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        bgr = array[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return cv2.cvtColor(bgr.round().astype(np.uint8), cv2.COLOR_BGR2RGB)
    raise ImageReadError(name, f"unsupported image shape {array.shape}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Raises :class:`ImageReadError`."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from None
    return decode_image(data, str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name next to ``path`` that replaces ``path`` when the block succeeds.

    For writers that need a file name (``model.save``); readers of ``path`` never see half a
    file. The name is unique, hidden (leading dot) and keeps the suffix (``.keras``); it is
    removed if the block raises. The parent folder is created.

    Example:
        >>> with atomic_path(run_dir / "last.keras") as tmp:  # doctest: +SKIP
        ...     model.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the whole name at the end: formats told by a double suffix (.weights.h5) stay whole
    tmp = path.with_name(f".{secrets.token_hex(4)}.tmp.{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename, so readers never see half."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def cached_json(path: str | os.PathLike, compute: Callable[[], dict | None]) -> dict | None:
    """The JSON object stored at ``path``, or ``compute()`` written there (atomically) first.

    A result of None is returned without being stored (nothing to cache), so ``compute`` runs
    again next time. A cache file that is not valid JSON is computed again (with a warning).
    """
    path = Path(path)
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError as e:
            import logging

            logging.getLogger(__name__).warning("%s: unreadable cache (%s); computing it again",
                                                path, e)
    result = compute()
    if result is not None:
        atomic_write_text(path, json.dumps(result, indent=2))
    return result
