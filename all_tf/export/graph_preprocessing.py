"""TensorFlow-ops twin of :func:`all_tf.preprocessing.preprocess_image`, for in-graph serving.

A SavedModel that takes encoded image bytes must resize, equalise, normalise and convert colour
inside the graph, with no Python or OpenCV. This module re-implements each OpenCV step with
TensorFlow ops, following OpenCV 4.x's own 8-bit algorithms so the served model sees the same
pixels as the trained one. After the resize, every step is built from ops that have TFLite
builtin kernels -- int32 arithmetic with floor division by powers of two (no int64 or
``RightShift``), ``gather`` on constant tables, histograms by ``unsorted_segment_sum`` (no
``bincount`` or ``sort``) -- so the edge TFLite file (:mod:`all_tf.export.edge`) runs these same
functions; ``float64=False`` leaves out the two float64 steps TFLite cannot run.

* 8-bit RGB -> LAB: OpenCV's fixed-point path (sRGB gamma table, 12-bit matrix, cube-root
  table); bit-exact with ``cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)`` on all 2^24 colours.
* 8-bit LAB -> RGB: OpenCV's bit-exact integer path (``Lab2RGBinteger``); bit-exact on all
  2^24 LAB triples.
* CLAHE: ``cv2.createCLAHE(clip, (n, n)).apply`` -- reflect-101 padding to whole tiles, per-tile
  histograms, integer clip limit and redistribution (batch + residual step), rounded CDF lookup
  tables, bilinear interpolation between the four nearest tile mappings; bit-exact.
* Label corner: the same median fill, the median read from per-channel histograms; bit-exact.
* Reinhard: per-image mean/std (float64, as ``cv2.meanStdDev``; float32 with ``float64=False``)
  and the same float32 multiply-add and rounding as
  :func:`all_tf.preprocessing.reinhard.reinhard_lab`.
* Colour spaces: ``rgb`` exact; ``hsv`` follows OpenCV's float formula (its hue factor in
  float64 as OpenCV, float32 with ``float64=False``); ``lab`` uses the exact CIE formulas
  (OpenCV's float path interpolates a 33^3 table, so it differs slightly); ``hed`` follows
  ``skimage.color.rgb2hed``.
* Resize: ``tf.image.resize`` (``area`` when shrinking both sides, else ``bilinear``), rounded
  to uint8 -- not bit-exact with ``cv2.resize`` (fixed-point weights), off by at most a few
  levels. The shipped data are already at model size, where resizing is the identity. It
  takes any image size and gives the static S x S that CLAHE and the label corner need.

The measured differences to the OpenCV pipeline are in ``tests/test_export.py`` and
docs/deployment.md.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from all_tf.config import PreprocessConfig
    >>> from all_tf.export.graph_preprocessing import preprocess_graph
    >>> rgb = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    >>> x = preprocess_graph(tf.constant(rgb), PreprocessConfig(image_size=64))
    >>> tuple(x.shape), x.dtype.name
    ((64, 64, 3), 'float32')
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from all_tf.config import PreprocessConfig
from all_tf.preprocessing.colour_spaces import COLOUR_SPACE_RANGES
from all_tf.preprocessing.label_corner import label_box_mask
from all_tf.preprocessing.reinhard import _MIN_STD, check_target

_F32 = np.float32

# ----------------------------------------------------------------------------- OpenCV tables
# Constants of OpenCV's modules/imgproc/src/color_lab.cpp (4.x).
_LAB_SHIFT = 12  # xyz_shift
_GAMMA_SHIFT = 3
_LAB_SHIFT2 = _LAB_SHIFT + _GAMMA_SHIFT
_LUT_BASE = 1 << 14
_MIN_AB = -8145
_INV_GAMMA_TAB_SIZE = 1 << 12
_D65 = np.array([0.950456, 1.0, 1.088754])
_RGB2XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_XYZ2RGB = np.array(
    [[3.240479, -1.53715, -0.498535], [-0.969256, 1.875991, 0.041556], [0.055648, -0.204043, 1.057311]]
)


def _srgb_gamma(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 809 / 20000, x / (323 / 25), ((x + 11 / 200) / (1 + 11 / 200)) ** 2.4)


@functools.lru_cache(maxsize=1)
def _lab_tables() -> dict[str, np.ndarray]:
    """OpenCV's 8-bit LAB tables, rebuilt in numpy (float32 where OpenCV uses softfloat);
    int32, like every integer the conversions compute."""
    i256 = np.arange(256)
    gamma_b = np.rint(255.0 * (1 << _GAMMA_SHIFT) * _srgb_gamma(i256 / 255.0)).astype(np.int32)
    n_cbrt = 256 * 3 // 2 * (1 << _GAMMA_SHIFT)
    x = np.arange(n_cbrt).astype(_F32) * _F32(1.0 / (255.0 * (1 << _GAMMA_SHIFT)))
    # The cube root rounded once from float64: numpy's float32 cbrt is SIMD code whose last
    # bit depends on the CPU and the numpy version. OpenCV's softfloat cbrt is one float32 ulp
    # below that at i = 324, where 2^15 * cbrt falls exactly on a .5 tie (checked on all 2^24
    # RGB colours against OpenCV 4.12-4.14).
    cube_root = np.cbrt(x.astype(np.float64)).astype(_F32)
    cube_root[324] = np.nextafter(cube_root[324], _F32(0))
    f = np.where(x < _F32(0.008856), x * _F32(7.787) + _F32(16.0 / 116.0), cube_root).astype(_F32)
    cbrt_b = np.rint(_F32(1 << _LAB_SHIFT2) * f).astype(np.int32)
    xyz_coeffs = np.rint((1 << _LAB_SHIFT) * _RGB2XYZ / _D65[:, None]).astype(np.int32)

    # Lab2RGBinteger
    y_tab = np.zeros(256, np.int64)
    fy_tab = np.zeros(256, np.int64)
    for i in range(256):
        if i <= 20:
            y_tab[i] = np.rint(_F32(i * _LUT_BASE * 20 * 9) / _F32(17 * 29 * 29 * 29))
            fy_tab[i] = np.rint(_F32(_LUT_BASE) * (_F32(16) / _F32(116) + _F32(i * 5) / _F32(3 * 17 * 29)))
        else:
            fy = _F32(i * 100 * _LUT_BASE) / _F32(255 * 116) + _F32(16 * _LUT_BASE) / _F32(116)
            fy_tab[i] = np.rint(fy)
            y_tab[i] = np.rint(fy * fy * fy / _F32(_LUT_BASE * _LUT_BASE))
    ii = np.arange(_MIN_AB, _LUT_BASE * 9 // 4 + _MIN_AB, dtype=np.int64)
    lo = np.sign(ii * 108) * (np.abs(ii * 108) // 841) - (_LUT_BASE * 16 // 116) * 108 // 841
    hi = (ii * ii // _LUT_BASE) * ii // _LUT_BASE
    ab_to_xz = np.where(ii <= 3390, lo, hi)
    xg = (np.arange(_INV_GAMMA_TAB_SIZE, dtype=_F32) * _F32(1.0 / _INV_GAMMA_TAB_SIZE)).astype(np.float64)
    inv_gamma = np.where(
        xg <= 7827 / 2500000, xg * (323 / 25), np.power(xg, 5 / 12) * (1 + 11 / 200) - 11 / 200
    ).astype(_F32)
    inv_gamma_b = np.rint(_F32(255) * inv_gamma).astype(np.int64)
    rgb_coeffs = np.rint((1 << _LAB_SHIFT) * _XYZ2RGB * _D65[None, :]).astype(np.int64)
    tables = {
        "gamma_b": gamma_b,
        "cbrt_b": cbrt_b,
        "xyz_coeffs": xyz_coeffs,
        "y_tab": y_tab,
        "fy_tab": fy_tab,
        "ab_to_xz": ab_to_xz,
        "inv_gamma_b": inv_gamma_b,
        "rgb_coeffs": rgb_coeffs,
    }
    return {k: v.astype(np.int32) for k, v in tables.items()}


def _descale(x: tf.Tensor, n: int) -> tf.Tensor:
    # (x + 2^(n-1)) >> n; floor division by 2^n is the same for negative x too.
    return tf.math.floordiv(x + (1 << (n - 1)), 1 << n)


def _planes(x: tf.Tensor) -> list[tf.Tensor]:
    """(..., 3) -> three int32 (...) planes (one transpose; slicing the last axis is slow in
    LiteRT)."""
    x = tf.cast(x, tf.int32)
    perm = [x.shape.rank - 1] + list(range(x.shape.rank - 1))
    return tf.unstack(tf.transpose(x, perm), axis=0)


def _rgb_to_lab_planes(r: tf.Tensor, g: tf.Tensor, b: tf.Tensor) -> list[tf.Tensor]:
    """int32 R, G, B planes in [0, 255] -> OpenCV 8-bit L, a, b planes (int32 in [0, 255])."""
    t = _lab_tables()
    gamma = tf.constant(t["gamma_b"])
    r, g, b = (tf.gather(gamma, p) for p in (r, g, b))
    c = t["xyz_coeffs"]
    cbrt = tf.constant(t["cbrt_b"])
    fx, fy, fz = (
        tf.gather(cbrt, _descale(r * int(c[k, 0]) + g * int(c[k, 1]) + b * int(c[k, 2]), _LAB_SHIFT))
        for k in range(3)
    )
    lscale = (116 * 255 + 50) // 100
    lshift = -((16 * 255 * (1 << _LAB_SHIFT2) + 50) // 100)
    big = 128 * (1 << _LAB_SHIFT2)
    L = _descale(lscale * fy + lshift, _LAB_SHIFT2)
    a = _descale(500 * (fx - fy) + big, _LAB_SHIFT2)
    bb = _descale(200 * (fy - fz) + big, _LAB_SHIFT2)
    return [tf.clip_by_value(p, 0, 255) for p in (L, a, bb)]


def _lab_to_rgb_planes(L: tf.Tensor, a: tf.Tensor, b: tf.Tensor) -> list[tf.Tensor]:
    """int32 8-bit L, a, b planes -> R, G, B planes (int32 in [0, 255]), ``Lab2RGBinteger``.

    Every intermediate fits in int32 for 8-bit input (largest magnitude about 4.1e8).
    """
    t = _lab_tables()
    y = tf.gather(tf.constant(t["y_tab"]), L)
    ify = tf.gather(tf.constant(t["fy_tab"]), L)
    adiv = tf.math.floordiv(5 * a * 53687 + (1 << 7), 1 << 13) - 128 * _LUT_BASE // 500
    bdiv = tf.math.floordiv(b * 41943 + (1 << 4), 1 << 9) - 128 * _LUT_BASE // 200 + 1
    ab_to_xz = tf.constant(t["ab_to_xz"])
    x = tf.gather(ab_to_xz, ify + adiv - _MIN_AB)
    z = tf.gather(ab_to_xz, ify - bdiv - _MIN_AB)
    c = t["rgb_coeffs"]
    inv_gamma = tf.constant(t["inv_gamma_b"])
    out = []
    for k in range(3):
        v = _descale(int(c[k, 0]) * x + int(c[k, 1]) * y + int(c[k, 2]) * z, 14)
        out.append(tf.gather(inv_gamma, tf.clip_by_value(v, 0, _INV_GAMMA_TAB_SIZE - 1)))
    return [tf.clip_by_value(p, 0, 255) for p in out]


def rgb_to_lab8(rgb: tf.Tensor) -> tf.Tensor:
    """RGB uint8 (..., 3) -> OpenCV 8-bit LAB uint8 (L*255/100, a+128, b+128), bit-exact."""
    return tf.cast(tf.stack(_rgb_to_lab_planes(*_planes(rgb)), axis=-1), tf.uint8)


def lab8_to_rgb(lab: tf.Tensor) -> tf.Tensor:
    """OpenCV 8-bit LAB uint8 (..., 3) -> RGB uint8, bit-exact with ``cv2.COLOR_LAB2RGB``."""
    return tf.cast(tf.stack(_lab_to_rgb_planes(*_planes(lab)), axis=-1), tf.uint8)


# ----------------------------------------------------------------------------- CLAHE
@functools.lru_cache(maxsize=16)
def _clahe_plan(height: int, width: int, tiles: int):
    """Static geometry of OpenCV's CLAHE for an image size (all numpy, built once)."""
    pad_h, pad_w = (tiles - height % tiles) % tiles, (tiles - width % tiles) % tiles
    th, tw = (height + pad_h) // tiles, (width + pad_w) // tiles
    ys = np.arange(height, dtype=_F32) * _F32(1.0 / th) - _F32(0.5)
    xs = np.arange(width, dtype=_F32) * _F32(1.0 / tw) - _F32(0.5)
    y1, x1 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    ya, xa = (ys - y1).astype(_F32), (xs - x1).astype(_F32)
    y2, x2 = np.minimum(y1 + 1, tiles - 1), np.minimum(x1 + 1, tiles - 1)
    y1, x1 = np.maximum(y1, 0), np.maximum(x1, 0)
    tile_of_pixel = (np.arange(height + pad_h)[:, None] // th) * tiles + (
        np.arange(width + pad_w)[None, :] // tw
    )
    return {
        "pad": (pad_h, pad_w),
        "area": th * tw,
        "tile_of_pixel": tile_of_pixel.astype(np.int32),
        # (H, W) flat indices of the four neighbouring tiles, times 256 for the LUT rows
        "i11": ((y1[:, None] * tiles + x1[None, :]) * 256).astype(np.int32),
        "i12": ((y1[:, None] * tiles + x2[None, :]) * 256).astype(np.int32),
        "i21": ((y2[:, None] * tiles + x1[None, :]) * 256).astype(np.int32),
        "i22": ((y2[:, None] * tiles + x2[None, :]) * 256).astype(np.int32),
        "xa": np.broadcast_to(xa[None, :], (height, width)).astype(_F32),
        "ya": np.broadcast_to(ya[:, None], (height, width)).astype(_F32),
    }


def clahe_uint8(channel: tf.Tensor, clip_limit: float = 2.0, tile_grid: int = 8) -> tf.Tensor:
    """OpenCV CLAHE of one uint8 channel (H, W) with a static shape; bit-exact with cv2.

    Args:
        channel: uint8 (H, W), H and W known when the graph is built.
        clip_limit: ``cv2.createCLAHE`` clip limit.
        tile_grid: tiles per side.

    Returns:
        uint8 (H, W).
    """
    return tf.cast(_clahe_plane(tf.cast(channel, tf.int32), clip_limit, tile_grid), tf.uint8)


def _clahe_plane(v: tf.Tensor, clip_limit: float, tile_grid: int) -> tf.Tensor:
    """CLAHE of an int32 (H, W) plane in [0, 255] (static shape) -> int32 (H, W)."""
    height, width = (int(d) for d in v.shape)
    plan = _clahe_plan(height, width, int(tile_grid))
    n_bins = int(tile_grid) * int(tile_grid) * 256
    pad_h, pad_w = plan["pad"]
    padded = tf.pad(v, [[0, pad_h], [0, pad_w]], mode="REFLECT") if pad_h or pad_w else v
    ids = tf.reshape(tf.constant(plan["tile_of_pixel"]) * 256 + padded, [-1])
    hist = tf.math.unsorted_segment_sum(tf.ones_like(ids), ids, n_bins)
    hist = tf.reshape(hist, [-1, 256])
    area = plan["area"]
    limit = max(int(clip_limit * area / 256), 1)
    excess = tf.reduce_sum(tf.maximum(hist - limit, 0), axis=1, keepdims=True)
    hist = tf.minimum(hist, limit)
    batch = tf.math.floordiv(excess, 256)
    residual = excess - batch * 256
    step = tf.maximum(tf.math.floordiv(256, tf.maximum(residual, 1)), 1)
    i = tf.range(256, dtype=tf.int32)[None, :]
    extra = tf.cast((residual > 0) & (tf.math.floormod(i, step) == 0)
                    & (tf.math.floordiv(i, step) < residual), tf.int32)
    hist = hist + batch + extra
    cdf = tf.cast(tf.cumsum(hist, axis=1), tf.float32)
    lut = tf.reshape(tf.clip_by_value(tf.round(cdf * _F32(255.0 / area)), 0.0, 255.0), [-1])
    a = tf.gather(lut, tf.constant(plan["i11"]) + v)
    b = tf.gather(lut, tf.constant(plan["i12"]) + v)
    c = tf.gather(lut, tf.constant(plan["i21"]) + v)
    d = tf.gather(lut, tf.constant(plan["i22"]) + v)
    xa, ya = tf.constant(plan["xa"]), tf.constant(plan["ya"])
    xa1, ya1 = 1.0 - xa, 1.0 - ya
    res = (a * xa1 + b * xa) * ya1 + (c * xa1 + d * xa) * ya
    return tf.cast(tf.clip_by_value(tf.round(res), 0.0, 255.0), tf.int32)


# ----------------------------------------------------------------------------- Reinhard
def _reinhard_planes(planes: list[tf.Tensor], target: dict, float64: bool) -> list[tf.Tensor]:
    """Reinhard on int32 L, a, b planes (H, W) in [0, 255] -> int32 planes."""
    t_mean, t_std = check_target(target)
    out = []
    for k, x in enumerate(planes):
        mean, std = _mean_std(x, float64)
        scale = _F32(t_std[k]) / tf.maximum(std, _F32(_MIN_STD))
        offset = _F32(t_mean[k]) - mean * scale
        y = tf.cast(x, tf.float32) * scale + offset
        out.append(tf.cast(tf.floor(tf.clip_by_value(y + 0.5, 0.0, 255.0)), tf.int32))
    return out


def _mean_std(x: tf.Tensor, float64: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """float32 mean and std of an int32 plane in [0, 255].

    float64: as ``cv2.meanStdDev`` (exact sums, float64 mean and variance). Otherwise float32
    only, for TFLite (no float64): exact int32 sums of ``x - m0`` (m0 = the integer mean), so
    only the last division and square root round; the std agrees with float64's to about 1 ulp
    (measured effect in :mod:`all_tf.export.edge`).
    """
    if float64:
        x = tf.cast(x, tf.float64)  # the sums of squares stay exact below 2^53
        n = tf.cast(tf.size(x), tf.float64)
        mean = tf.reduce_sum(x) / n
        std = tf.sqrt(tf.maximum(tf.reduce_sum(x * x) / n - mean * mean, 0.0))
        return tf.cast(mean, tf.float32), tf.cast(std, tf.float32)
    n = x.shape.num_elements()
    if n is None or n * 128 * 128 >= 2**31:
        raise ValueError(f"float32 Reinhard needs a static size up to 362 x 362 px, got {x.shape}")
    m0 = tf.math.floordiv(tf.reduce_sum(x), n)  # exact
    d = x - m0
    d_mean = tf.cast(tf.reduce_sum(d), tf.float32) / _F32(n)  # in [0, 1)
    d_sq = tf.cast(tf.reduce_sum(d * d), tf.float32) / _F32(n)
    return tf.cast(m0, tf.float32) + d_mean, tf.sqrt(tf.maximum(d_sq - d_mean * d_mean, 0.0))


# ----------------------------------------------------------------------------- colour spaces
def _map_range(native: tf.Tensor, space: str) -> tf.Tensor:
    ranges = np.asarray(COLOUR_SPACE_RANGES[space], _F32)
    lo, hi = ranges[:, 0], ranges[:, 1]
    return tf.clip_by_value((native - lo) / (hi - lo), 0.0, 1.0)


def _rgb01_to_hsv(rgb: tf.Tensor, float64: bool = True) -> tf.Tensor:
    # OpenCV's float RGB2HSV: H in degrees [0, 360), S = (V - min) / (V + eps), V = max. The
    # hue factor 60 / (diff + eps) is a double in OpenCV; float32 (for TFLite) is within 1.2e-7.
    eps = np.finfo(_F32).eps
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = tf.maximum(tf.maximum(r, g), b)
    vmin = tf.minimum(tf.minimum(r, g), b)
    diff = v - vmin
    s = diff / (tf.abs(v) + eps)
    if float64:
        k = tf.cast(60.0 / (tf.cast(diff, tf.float64) + float(eps)), tf.float32)
    else:
        k = 60.0 / (diff + eps)
    h = tf.where(
        tf.equal(v, r), (g - b) * k, tf.where(tf.equal(v, g), (b - r) * k + 120.0, (r - g) * k + 240.0)
    )
    h = tf.where(h < 0, h + 360.0, h)
    return tf.stack([h, s, v], axis=-1)


def _rgb01_to_lab(rgb: tf.Tensor) -> tf.Tensor:
    # CIE L*a*b* (D65) by the exact formulas, in float32.
    lin = tf.where(rgb <= 0.04045, rgb / 12.92, tf.pow((rgb + 0.055) / 1.055, 2.4))
    m = (_RGB2XYZ / _D65[:, None]).astype(_F32)
    xyz = tf.tensordot(lin, tf.constant(m.T), axes=1)
    f = tf.where(xyz > 0.008856, tf.pow(tf.maximum(xyz, 1e-12), 1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    L = tf.where(xyz[..., 1] > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * xyz[..., 1])
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return tf.stack([L, a, b], axis=-1)


def _rgb01_to_hed(rgb: tf.Tensor) -> tf.Tensor:
    from skimage.color import hed_from_rgb

    # all_tf.preprocessing floors at 1/255 before skimage's rgb2hed, which floors at 1e-6.
    rgb = tf.maximum(tf.maximum(rgb, 1.0 / 255.0), 1e-6)
    od = tf.math.log(rgb) / np.log(1e-6).astype(_F32)
    stains = tf.tensordot(od, tf.constant(np.asarray(hed_from_rgb, _F32)), axes=1)
    return tf.maximum(stains, 0.0)


def to_colour_space_graph(rgb01: tf.Tensor, space: str, float64: bool = True) -> tf.Tensor:
    """RGB float32 (..., 3) in [0, 1] -> ``space`` mapped to [0, 1] by the fixed ranges
    (``float64=False``: no float64 op, for TFLite; see :func:`_rgb01_to_hsv`)."""
    if space == "rgb":
        return tf.clip_by_value(rgb01, 0.0, 1.0)
    if space == "hsv":
        return _map_range(_rgb01_to_hsv(rgb01, float64), space)
    if space == "lab":
        return _map_range(_rgb01_to_lab(rgb01), space)
    if space == "hed":
        return _map_range(_rgb01_to_hed(rgb01), space)
    raise ValueError(f"colour space must be one of {tuple(COLOUR_SPACE_RANGES)}, got {space!r}")


# ----------------------------------------------------------------------------- pipeline
def resize_uint8(rgb: tf.Tensor, size: int) -> tf.Tensor:
    """Resize uint8 (H, W, 3) to (size, size, 3) like ``all_tf.preprocessing.resize_to``.

    Identity at the target size; area averaging when both sides shrink; bilinear otherwise.
    """
    shape = tf.shape(rgb)
    h, w = shape[0], shape[1]

    def resized(method):
        def fn():
            out = tf.image.resize(tf.cast(rgb, tf.float32), [size, size], method=method)
            return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

        return fn

    same = tf.logical_and(tf.equal(h, size), tf.equal(w, size))
    shrink = tf.logical_and(h > size, w > size)
    out = tf.cond(
        same,
        lambda: tf.cast(rgb, tf.uint8),
        lambda: tf.cond(shrink, resized("area"), resized("bilinear")),
    )
    return tf.ensure_shape(out, [size, size, 3])


def mask_label_corner_graph(rgb: tf.Tensor) -> tf.Tensor:
    """In-graph :func:`all_tf.preprocessing.label_corner.mask_label_corner` for uint8
    (S, S, 3) with a static S; bit-exact (integer median, a half rounds down).

    The per-channel median of the pixels outside the box is read from their histograms
    (one ``unsorted_segment_sum`` weighted by the constant outside mask, then ``cumsum``):
    the j-th smallest value is the number of levels whose cumulative count is <= j.
    """
    inside = label_box_mask(tuple(rgb.shape))
    n = int((~inside).sum())
    keep = np.broadcast_to((~inside)[..., None], rgb.shape).astype(np.int32)
    x = tf.cast(rgb, tf.int32)
    ids = tf.reshape(x + tf.constant([0, 256, 512], tf.int32), [-1])
    hist = tf.math.unsorted_segment_sum(tf.constant(keep.reshape(-1)), ids, 3 * 256)
    cdf = tf.cumsum(tf.reshape(hist, [3, 256]), axis=1)

    def ranked(j: int) -> tf.Tensor:  # (3,) the j-th smallest value per channel (0-based)
        return tf.reduce_sum(tf.cast(cdf <= j, tf.int32), axis=1)

    if n % 2:
        median = ranked(n // 2)
    else:
        median = tf.math.floordiv(ranked(n // 2 - 1) + ranked(n // 2), 2)
    keep_px = tf.constant((~inside).astype(np.int32)[..., None])  # (S, S, 1)
    return tf.cast(x * keep_px + median * (1 - keep_px), tf.uint8)


def preprocess_graph(rgb: tf.Tensor, cfg: PreprocessConfig) -> tf.Tensor:
    """In-graph :func:`all_tf.preprocessing.preprocess_image` for one image.

    Args:
        rgb: uint8 (H, W, 3) RGB tensor (any size).
        cfg: the run's preprocessing settings (read when the graph is built).

    Returns:
        float32 (S, S, 3) in [0, 1], S = ``cfg.image_size``.
    """
    size = int(cfg.image_size)
    x = preprocess_resized_graph(resize_uint8(rgb, size), cfg)
    return tf.ensure_shape(x, [size, size, 3])


def preprocess_resized_graph(rgb: tf.Tensor, cfg: PreprocessConfig,
                             float64: bool = True) -> tf.Tensor:
    """:func:`preprocess_graph` after the resize: uint8 (S, S, 3), static S, -> float32
    (S, S, 3) in [0, 1]. ``float64=False`` builds no float64 op (for TFLite): the Reinhard
    statistics and the HSV hue factor are then float32 (see :func:`_mean_std`)."""
    x = rgb
    if cfg.mask_label_corner:
        x = mask_label_corner_graph(x)
    use_reinhard = cfg.reinhard and cfg.reinhard_target is not None
    if cfg.clahe or use_reinhard:
        lab = _rgb_to_lab_planes(*_planes(x))
        if cfg.clahe:
            lab[0] = _clahe_plane(lab[0], cfg.clahe_clip_limit, cfg.clahe_tile_grid)
        if use_reinhard:
            lab = _reinhard_planes(lab, cfg.reinhard_target, float64)
        x = tf.stack(_lab_to_rgb_planes(*lab), axis=-1)
    rgb01 = tf.cast(x, tf.float32) * _F32(1.0 / 255.0)
    return to_colour_space_graph(rgb01, cfg.colour_space, float64)
