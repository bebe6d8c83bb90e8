"""Bad files: read_image converts or refuses them by name; scan and pipeline go on."""

import io
import logging
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from all_tf.io import MAX_PIXELS, ImageReadError, read_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (40, 48, 3), dtype=np.uint8)


def pil_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def jpeg_bytes(rgb=RGB) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds a few bytes of pixel data: the size
    check must refuse it from the header, before decoding."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


BAD = {
    "corrupt.jpg": b"\xff\xd8\xff\xe0" + RNG.integers(0, 256, 400, dtype=np.uint8).tobytes(),
    "truncated.jpg": jpeg_bytes()[: len(jpeg_bytes()) // 2],
    "truncated.png": pil_bytes(Image.fromarray(RGB))[:300],
    "empty.jpg": b"",
    "text.jpg": b"this is a text file, not an image\n",
    "tiny.png": pil_bytes(Image.fromarray(RGB[:8, :8])),
    "huge.png": png_header_only(9000, 9000),
}
REASONS = {
    "corrupt.jpg": "",
    "truncated.jpg": "truncated",
    "truncated.png": "",
    "empty.jpg": "empty file",
    "text.jpg": "not a recognised image format",
    "tiny.png": "too small",
    "huge.png": "too large",
}


def write(folder, name, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_raise_naming_the_file(tmp_path, name):
    path = write(tmp_path, name, BAD[name])
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert str(path) in str(err.value)
    assert REASONS[name] in err.value.reason


def test_huge_image_is_refused_from_its_header(tmp_path):
    assert 9000 * 9000 > MAX_PIXELS
    path = write(tmp_path, "huge.png", png_header_only(9000, 9000))
    with pytest.raises(ImageReadError, match="too large"):
        read_image(path)


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageReadError, match="x.jpg: cannot read file"):
        read_image(tmp_path / "x.jpg")


def test_dangling_symlink(tmp_path):
    os.symlink(tmp_path / "gone.jpg", tmp_path / "link.jpg")
    with pytest.raises(ImageReadError, match="link.jpg: cannot read file"):
        read_image(tmp_path / "link.jpg")


def test_grayscale_png_becomes_rgb(tmp_path):
    grey = RGB[..., 0]
    out = read_image(write(tmp_path, "g.png", pil_bytes(Image.fromarray(grey))))
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])
    rgba[0, 0, 3] = 0  # one transparent pixel: composited on white
    out = read_image(write(tmp_path, "a.png", pil_bytes(Image.fromarray(rgba))))
    assert out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out[1:], RGB[1:])
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])


def test_palette_png_is_expanded(tmp_path):
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    expected = np.asarray(pal.convert("RGB"))
    out = read_image(write(tmp_path, "p.png", pil_bytes(pal)))
    np.testing.assert_array_equal(out, expected)


def test_16bit_png_is_scaled_to_8_bits(tmp_path):
    rgb16 = RGB.astype(np.uint16) * 257
    data = cv2.imencode(".png", cv2.cvtColor(rgb16, cv2.COLOR_RGB2BGR))[1].tobytes()
    out = read_image(write(tmp_path, "16.png", data))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, RGB)


def test_16bit_grayscale_png(tmp_path):
    data = cv2.imencode(".png", RGB[..., 1].astype(np.uint16) * 257)[1].tobytes()
    out = read_image(write(tmp_path, "g16.png", data))
    np.testing.assert_array_equal(out[..., 2], RGB[..., 1])


def test_jpeg_channel_order_is_rgb(tmp_path):
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 200
    out = read_image(write(tmp_path, "red.jpg", jpeg_bytes(red)))
    assert out[..., 0].mean() > 180 and out[..., 2].mean() < 20


def make_tree(root, bad: bool = True):
    good = {}
    for cls in ("Benign", "Pro"):
        (root / cls).mkdir(parents=True)
        for k in range(3):
            rgb = RNG.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            p = root / cls / f"{cls}-{k:03d}.png"
            cv2.imwrite(str(p), rgb)
            good[str(p)] = cls
    if bad:
        for name, data in BAD.items():
            write(root / "Pro", name, data)
        (root / "Pro" / "dir.jpg").mkdir()
        os.symlink(root / "nowhere.jpg", root / "Pro" / "dangling.jpg")
        write(root / "Pro", "notes.txt", b"hello")
    return good


def test_scan_skips_bad_files_with_reasons(tmp_path):
    from all_tf.data import scan_dataset

    good = make_tree(tmp_path)
    scan = scan_dataset(tmp_path)
    assert sorted(r.path for r in scan.records) == sorted(good)
    skipped = dict(scan.skipped)
    names = {os.path.basename(p) for p in skipped}
    assert names == set(BAD) | {"dir.jpg", "dangling.jpg", "notes.txt"}
    for path, reason in skipped.items():
        assert reason, path
    assert skipped[str(tmp_path / "Pro" / "empty.jpg")] == "empty file (0 bytes)"


def test_pipeline_yields_every_good_image_despite_bad_files(tmp_path, caplog):
    from all_tf.config import Config
    from all_tf.data import make_dataset, scan_dataset

    good = make_tree(tmp_path)
    scanned = scan_dataset(tmp_path, verify="none")  # let the bad files reach the pipeline
    records = scanned.records
    assert len(records) > len(good)
    cfg = Config.preset("quick")
    cfg.preprocess.image_size = 32
    ds = make_dataset(records, cfg, training=True, batch_size=4, cache=False)
    with caplog.at_level(logging.WARNING, logger="all_tf.data.pipeline"):
        for _ in range(2):  # two epochs: each bad file is logged once only
            n = sum(int(x.shape[0]) for x, _ in ds)
            assert n == len(good)
    bad_paths = {r.path for r in records} - set(good)
    messages = [rec.getMessage() for rec in caplog.records]
    for p in bad_paths:
        assert sum(p in m for m in messages) == 1, p


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    import io as _io

    from PIL import Image, ImageOps

    from all_tf.io import read_image

    stored = np.random.default_rng(orientation).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.png"
    im.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(_io.BytesIO(path.read_bytes()))))
    assert np.array_equal(read_image(path), expected)


def test_a_corrupt_cache_file_is_computed_again(tmp_path, caplog):
    from all_tf.io import cached_json

    path = tmp_path / "cache.json"
    path.write_text('{"cut": ')  # a write cut short
    assert cached_json(path, lambda: {"value": 1}) == {"value": 1}
    assert "unreadable cache" in caplog.text and str(path) in caplog.text
    assert cached_json(path, lambda: {"value": 2}) == {"value": 1}  # stored this time


def test_atomic_path_keeps_double_suffixes(tmp_path):
    from all_tf.io import atomic_path

    with atomic_path(tmp_path / "model.weights.h5") as tmp:
        assert tmp.name.endswith(".model.weights.h5") and tmp.name.startswith(".")
        tmp.write_bytes(b"x")
    assert (tmp_path / "model.weights.h5").read_bytes() == b"x"
    assert [p.name for p in tmp_path.iterdir()] == ["model.weights.h5"]
