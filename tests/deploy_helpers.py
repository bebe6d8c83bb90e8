"""Shared by tests/test_export.py and tests/test_predict.py: a tiny trained run, bad images."""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ALL4 = REPO / "all_tf" / "sample_data" / "all4"
TINY_SIZE = 64


def make_tiny_run(run_dir: Path, size: int = TINY_SIZE, epochs: int = 15):
    """A run directory with a small CBAM model trained on the shipped sample.

    Two strided conv blocks, each followed by the real :class:`all_tf.models.CBAM`, behind the
    real ``InputScaling`` layer: it converts in seconds, but has CBAM's ops (mean/max pooling,
    shared MLP, concat, 7x7 conv, sigmoid gates) and non-trivial outputs (training=False
    predictions differ per image). Writes ``config.json`` (quick preset at ``size`` px with a
    fitted Reinhard target), ``split.json`` and ``checkpoints/best.keras``.

    Returns:
        (run_dir, config, split).
    """
    import keras
    from keras import layers

    from all_tf.config import Config, SplitConfig
    from all_tf.data import assign_groups, make_split, scan_dataset
    from all_tf.io import read_image
    from all_tf.models import CBAM, InputScaling
    from all_tf.preprocessing import fit_reinhard_target, preprocess_image

    cfg = Config.preset("quick")
    cfg.preprocess.image_size = size
    cfg.model.name = "tiny_cbam"
    cfg.data_dir = str(SAMPLE_ALL4)
    records = assign_groups(scan_dataset(SAMPLE_ALL4).records)
    split = make_split(records, SplitConfig(kind="70:30", seed=0))
    train_images = [read_image(r.path) for r in split.train]
    cfg.preprocess.reinhard_target = fit_reinhard_target(train_images, cfg.preprocess)
    x = np.stack([preprocess_image(im, cfg.preprocess) for im in train_images])
    y = keras.utils.to_categorical([r.label for r in split.train], 4)

    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3), name="pixels")
    h = InputScaling("tf", name="input_scaling")(inp)
    for i, channels in enumerate((8, 16)):
        h = layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization(momentum=0.5)(h)
        h = layers.ReLU()(h)
        h = CBAM(reduction=4, name=f"cbam{i}")(h)
    h = layers.GlobalAveragePooling2D(name="head_pool")(h)
    out = layers.Dense(4, activation="softmax", dtype="float32")(h)
    model = keras.Model(inp, out, name="tiny_cbam")
    model.compile(keras.optimizers.Adam(3e-3), "categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)

    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "checkpoints" / "best.keras")
    cfg.save(run_dir / "config.json")
    split.save(run_dir / "split.json", root=str(SAMPLE_ALL4))
    return run_dir, cfg, split


def png_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 (H, W), (H, W, 3) RGB or (H, W, 4) RGBA as PNG with OpenCV."""
    import cv2

    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def constant_png(height: int, width: int, value: int = 200) -> bytes:
    """A valid grayscale PNG of a constant image, built with zlib (cheap for 10000 x 10000)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + bytes([value]) * width  # filter type 0, then the pixels
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def rest_body(images: list[bytes], named: str | None = None) -> str:
    """A TF Serving REST predict body, ``{"instances": [{"b64": ...}, ...]}``.

    With ``named``, the row format with a named input: ``[{named: {"b64": ...}}]``.
    """
    items = [{"b64": base64.b64encode(b).decode("ascii")} for b in images]
    if named:
        items = [{named: item} for item in items]
    return json.dumps({"instances": items})


def decode_rest_body(body: str, input_name: str) -> list[bytes]:
    """Turn a REST body into the string tensor TF Serving builds for a single string input.

    TF Serving's JSON parser replaces every ``{"b64": s}`` object by the bytes it encodes;
    it accepts the row format (``instances``, each a value or ``{input_name: value}``) and
    the columnar format (``inputs``, a list or ``{input_name: list}``).
    """
    doc = json.loads(body)

    def value(v):
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        if isinstance(v, str):
            return v.encode()
        raise ValueError(f"not a string or b64 value: {v!r}")

    if "instances" in doc:
        return [value(i[input_name] if isinstance(i, dict) and input_name in i else i)
                for i in doc["instances"]]
    inputs = doc["inputs"]
    if isinstance(inputs, dict):
        inputs = inputs[input_name]
    return [value(v) for v in inputs]


def write_bad_images(folder: Path) -> dict[str, Path]:
    """Files that predict must survive: each kind in ``folder``; returns {kind: path}."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "not_image": folder / "not_image.jpg",
        "empty": folder / "empty.png",
        "one_px": folder / "one_px.png",
        "huge": folder / "huge.png",
        "gray": folder / "gray.png",
        "rgba": folder / "rgba.png",
    }
    files["not_image"].write_bytes(b"this is not an image\n" * 10)
    files["empty"].write_bytes(b"")
    files["one_px"].write_bytes(png_bytes(np.full((1, 1, 3), 128, np.uint8)))
    files["huge"].write_bytes(constant_png(10000, 10000))
    files["gray"].write_bytes(png_bytes(rng.integers(0, 256, (80, 80), dtype=np.uint8)))
    rgba = rng.integers(0, 256, (80, 80, 4), dtype=np.uint8)
    rgba[:40, :, 3] = 0  # top half fully transparent: must become white
    files["rgba"].write_bytes(png_bytes(rgba))
    return files


def quiet_env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


# The bad-input sweep: every kind, what every entry point must make of it.
ERROR, REJECTED, CLASSIFIED = "error", "rejected", "classified"


def write_input_sweep(folder: Path, field_path: Path) -> dict[str, tuple[Path, str]]:
    """At least 15 kinds of awkward input in ``folder``, made from the smear field at
    ``field_path``; returns ``{kind: (path, expected)}`` with expected one of ERROR (a clear
    error naming the file), REJECTED (a ``rejected:<reason>`` status) or CLASSIFIED (a valid
    encoding of a real field: it must be classified like the field)."""
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    field = cv2.cvtColor(cv2.imread(str(field_path)), cv2.COLOR_BGR2RGB)
    grey = cv2.cvtColor(field, cv2.COLOR_RGB2GRAY)
    out: dict[str, tuple[Path, str]] = {}

    def put(kind, name, expected, data=None, image=None, **save):
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        else:
            image.save(path, **save)
        out[kind] = (path, expected)

    good = cv2.imencode(".jpg", cv2.cvtColor(field, cv2.COLOR_RGB2BGR))[1].tobytes()
    put("empty", "empty.jpg", ERROR, data=b"")
    put("truncated", "truncated.jpg", ERROR, data=good[: len(good) // 3])
    put("not_an_image", "notes.png", ERROR, data=b"smear field notes\n" * 20)
    put("one_pixel", "one_px.png", ERROR, data=png_bytes(field[:1, :1]))
    put("huge_10k", "huge.png", ERROR, data=constant_png(10000, 10000))
    put("black", "black.jpg", REJECTED, image=Image.fromarray(np.zeros((600, 800, 3), np.uint8)))
    put("white", "white.png", REJECTED,
        image=Image.fromarray(np.full((300, 300, 3), 255, np.uint8)))
    put("grayscale", "grey.png", REJECTED, image=Image.fromarray(grey))
    put("inverted", "inverted.png", REJECTED, image=Image.fromarray(255 - field))
    put("sixteen_bit", "field16.png", CLASSIFIED,
        data=cv2.imencode(".png", cv2.cvtColor(field, cv2.COLOR_RGB2BGR).astype(np.uint16)
                          * 257)[1].tobytes())
    put("palette", "palette.png", CLASSIFIED,
        image=Image.fromarray(field).quantize(256, method=Image.Quantize.MEDIANCUT))
    put("cmyk_jpeg", "cmyk.jpg", CLASSIFIED, image=Image.fromarray(field).convert("CMYK"),
        quality=95)
    rgba = np.dstack([field, np.full(field.shape[:2], 255, np.uint8)])
    put("rgba", "rgba.png", CLASSIFIED, image=Image.fromarray(rgba))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees when displayed
    put("exif_rotated", "exif.jpg", CLASSIFIED, image=Image.fromarray(np.rot90(field, 1).copy()),
        exif=exif, quality=95)
    put("unicode_name", "féld_血液_😀.png", CLASSIFIED, image=Image.fromarray(field))
    loop_a, loop_b = folder / "loop_a.png", folder / "loop_b.png"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    out["symlink_loop"] = (loop_a, ERROR)
    return out
