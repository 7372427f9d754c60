"""Image resizing in pure NumPy, bit for bit what OpenCV's ``cv2.resize`` returns.

The application used three ``cv2.resize`` modes; this module reproduces each one from
OpenCV's own algorithm (``modules/imgproc/src/resize.cpp``: ``cv::resize``,
``cv::hal::resize``, ``resizeNN``, ``resizeAreaFast_``, ``computeResizeAreaTab`` /
``ResizeArea_Invoker`` and the ``resizeGeneric_`` fixed-point linear path), with the same
coefficient tables, the same float32 rounding and the same summation order, so that
OpenCV can leave the bundle without a single output pixel changing:

* :func:`resize_area`    -- ``cv2.resize(img, dsize, interpolation=cv2.INTER_AREA)``, uint8;
* :func:`resize_linear`  -- ``cv2.resize(img, dsize, interpolation=cv2.INTER_LINEAR)``, float;
* :func:`resize_nearest` -- ``cv2.resize(img, dsize, interpolation=cv2.INTER_NEAREST)``.

``dsize`` is ``(width, height)`` as in OpenCV.  The per-axis index and weight tables
depend only on the source and target lengths and are cached; the pixel work is a few
separable, vectorised passes (no Python loop over pixels).

NumPy only: this module must not import cv2 (the tests compare against it).
"""

from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np

__all__ = ["resize_area", "resize_linear", "resize_nearest"]

_DBL_EPSILON = sys.float_info.epsilon
# OpenCV's INTER_RESIZE_COEF_BITS / INTER_RESIZE_COEF_SCALE (uint8 fixed-point linear path).
_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS
# Elements per block of rows in the multi-pass loops: small temporaries stay in cache (and
# in the allocator's pool) instead of costing a fresh, page-faulted buffer per pass.
_BLOCK = 1 << 14


# --------------------------------------------------------------------------- helpers


def _check(img: np.ndarray, dsize) -> tuple[np.ndarray, int, int, int, int]:
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    sh, sw = img.shape
    if sh == 0 or sw == 0:
        raise ValueError(f"empty image, shape {img.shape}")
    try:
        dw, dh = (int(v) for v in dsize)
    except (TypeError, ValueError):
        raise ValueError(f"dsize must be (width, height), got {dsize!r}") from None
    if dw <= 0 or dh <= 0:
        raise ValueError(f"dsize must be positive, got {dsize!r}")
    return img, sw, sh, dw, dh


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.setflags(write=False)
    return arrays


def _round_half_even_to_int(x: float) -> int:
    """``saturate_cast<int>(double)`` (cvRound: round half to even)."""
    return int(round(x))


# --------------------------------------------------------------------------- nearest


@lru_cache(maxsize=256)
def _nearest_index(ssize: int, dsize: int) -> np.ndarray:
    # resizeNN: ifx = 1./fx with fx = (double)dsize/ssize; x_ofs[x] = min(cvFloor(x*ifx), ssize-1)
    ifx = 1.0 / (dsize / ssize)
    idx = np.floor(np.arange(dsize, dtype=np.float64) * ifx).astype(np.intp)
    np.minimum(idx, ssize - 1, out=idx)
    return _readonly(idx)[0]


def resize_nearest(img: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, dsize, interpolation=cv2.INTER_NEAREST)``, bit-exact.

    OpenCV's ``resizeNN``: output pixel ``(x, y)`` takes source pixel
    ``(min(floor(x * ifx), sw-1), min(floor(y * ify), sh-1))`` where
    ``ifx = 1 / (dw / sw)`` and ``ify = 1 / (dh / sh)`` in double precision (the corner
    convention, not ``INTER_NEAREST_EXACT``'s pixel centres).  Any 2-D dtype works (uint8,
    bool, float...) because only indices are computed; the result has the input's dtype.
    A same-size request returns a copy, as OpenCV does.
    """
    img, sw, sh, dw, dh = _check(img, dsize)
    if (dw, dh) == (sw, sh):
        return img.copy()
    yi = _nearest_index(sh, dh)
    xi = _nearest_index(sw, dw)
    return img[yi[:, None], xi[None, :]]


# --------------------------------------------------------------------------- INTER_AREA


def _area_scales(sw: int, sh: int, dw: int, dh: int):
    """The scale factors and the area-fast test exactly as in ``cv::hal::resize``."""
    inv_scale_x = dw / sw
    inv_scale_y = dh / sh
    scale_x = 1.0 / inv_scale_x
    scale_y = 1.0 / inv_scale_y
    iscale_x = _round_half_even_to_int(scale_x)
    iscale_y = _round_half_even_to_int(scale_y)
    is_area_fast = abs(scale_x - iscale_x) < _DBL_EPSILON and abs(scale_y - iscale_y) < _DBL_EPSILON
    return inv_scale_x, inv_scale_y, scale_x, scale_y, iscale_x, iscale_y, is_area_fast


@lru_cache(maxsize=256)
def _area_tab(ssize: int, dsize: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``computeResizeAreaTab`` as a dense table: per output index, the source indices and
    float32 weights in OpenCV's accumulation order, right-padded with index 0 and weight 0
    (adding ``0 * pixel`` to a float32 sum leaves it bit-identical, so the padding is
    harmless).  Per output index ``dx``, in double as in OpenCV:

        fsx1 = dx*scale; fsx2 = fsx1 + scale; cellWidth = min(scale, ssize - fsx1)
        sx1 = ceil(fsx1); sx2 = min(floor(fsx2), ssize-1); sx1 = min(sx1, sx2)
        [sx1-1: (sx1 - fsx1)/cellWidth          if sx1 - fsx1 > 1e-3]
        sx1 .. sx2-1: 1/cellWidth
        [sx2: min(min(fsx2 - sx2, 1), cellWidth)/cellWidth   if fsx2 - sx2 > 1e-3]

    Vectorised over ``dx``: every double is the same IEEE operation on the same operands as
    the scalar loop (integers below 2**53 are exact in float64), then one float32 rounding.
    """
    fsx1 = np.arange(dsize, dtype=np.float64) * scale
    fsx2 = fsx1 + scale
    cell = np.minimum(scale, ssize - fsx1)
    sx2 = np.minimum(np.floor(fsx2), ssize - 1)
    sx1 = np.minimum(np.ceil(fsx1), sx2)
    left = sx1 - fsx1
    right = fsx2 - sx2
    has_l = left > 1e-3
    # A row's source indices are consecutive: [sx1-1 if has_l], sx1 .. sx2-1, [sx2 if has_r].
    first = sx1.astype(np.intp) - has_l
    rpos = (sx2 - first).astype(np.intp)  # the column of sx2 (kept where fsx2 - sx2 > 1e-3)
    count = rpos + (right > 1e-3)
    j = np.arange(int(count.max()), dtype=np.intp)
    inside = j < count[:, None]
    idx = np.where(inside, first[:, None] + j, 0)
    wr = np.minimum(np.minimum(right, 1.0), cell) / cell
    wgt = np.where(j < rpos[:, None], (1.0 / cell)[:, None], np.where(inside, wr[:, None], 0.0))
    wgt[:, 0] = np.where(has_l, left / cell, wgt[:, 0])
    return _readonly(idx, wgt.astype(np.float32))  # (float) cast: round to nearest


def _area_general(
    img: np.ndarray, sw: int, sh: int, dw: int, dh: int, scale_x: float, scale_y: float
) -> np.ndarray:
    """``ResizeArea_Invoker<uchar, float>``: per source row, ``buf[dx] += S[si] * alpha`` in
    float32 in table order; per output row, ``sum = beta0*buf0; sum += beta_k*buf_k``;
    then ``saturate_cast<uchar>`` (round half to even, clip)."""
    xidx, xw = _area_tab(sw, dw, scale_x)
    yidx, yw = _area_tab(sh, dh, scale_y)
    # Gather the uint8 columns first (a quarter of the memory traffic), then widen (the
    # uint8 -> float32 conversion is exact, so the products are OpenCV's); row blocks keep
    # the temporaries small.
    buf = np.empty((sh, dw), np.float32)
    step = max(1, _BLOCK // dw)
    for r in range(0, sh, step):
        blk = img[r : r + step]
        acc = blk[:, xidx[:, 0]].astype(np.float32)
        acc *= xw[:, 0]
        for k in range(1, xidx.shape[1]):
            tmp = blk[:, xidx[:, k]].astype(np.float32)
            tmp *= xw[:, k]
            acc += tmp
        buf[r : r + step] = acc
    acc = np.multiply(buf[yidx[:, 0]], yw[:, 0:1], dtype=np.float32)
    tmp = np.empty_like(acc)
    for k in range(1, yidx.shape[1]):
        np.multiply(buf[yidx[:, k]], yw[:, k : k + 1], out=tmp)
        acc += tmp
    np.rint(acc, out=acc)
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def _area_fast(img: np.ndarray, dw: int, dh: int, iscale_x: int, iscale_y: int) -> np.ndarray:
    """``resizeAreaFast_<uchar, int>`` for exact integer factors.  2x2 takes OpenCV's
    vector path ``(a+b+c+d+2) >> 2``; any other factor is ``saturate_cast<uchar>(sum *
    (1.f/area))`` in float32 (round half to even)."""
    ch, cw = dh * iscale_y, dw * iscale_x
    view = img[:ch, :cw]
    if iscale_x == 2 and iscale_y == 2:
        v = view.astype(np.uint16)
        s = v[0::2] + v[1::2]
        s = s[:, 0::2] + s[:, 1::2]
        s += 2
        s >>= 2
        return s.astype(np.uint8)
    wide = np.uint16 if iscale_x * iscale_y <= 257 else np.int32
    # Integer sums: exact in any order.  Strided slices beat a reduction over a short axis.
    s = view[:, 0::iscale_x].astype(wide)
    for i in range(1, iscale_x):
        s += view[:, i::iscale_x]
    if iscale_y > 1:
        rows = s[0::iscale_y].copy()
        for j in range(1, iscale_y):
            rows += s[j::iscale_y]
        s = rows
    area = iscale_x * iscale_y
    scale = np.float32(1.0) / np.float32(area)
    f = s.astype(np.float32)
    f *= scale
    np.rint(f, out=f)
    np.clip(f, 0, 255, out=f)
    return f.astype(np.uint8)


@lru_cache(maxsize=256)
def _area_linear_tab(ssize: int, dsize: int, scale: float, inv_scale: float, clamp: bool):
    """The INTER_AREA coefficients of the bilinear fallback in ``cv::hal::resize``
    (``area_mode``), in uint8 fixed point:

        s = cvFloor(d*scale); f = (float)((d+1) - (s+1)*inv_scale); f = f <= 0 ? 0 : f - cvFloor(f)
        a0 = saturate_cast<short>((1.f - f) * 2048), a1 = saturate_cast<short>(f * 2048)

    ``clamp`` (the x axis): where ``s >= ssize-1``, ``s = ssize-1`` and ``f = 0``.  The y
    axis keeps ``f`` and reads row ``min(s+1, ssize-1)``, as ``resizeGeneric_`` does.
    Returns the two source indices (already clipped into the image) and the two weights.
    """
    d = np.arange(dsize, dtype=np.float64)
    s = np.floor(d * scale).astype(np.int64)
    f = ((d + 1.0) - (s + 1).astype(np.float64) * inv_scale).astype(np.float32)
    f = np.where(f <= 0, np.float32(0.0), f - np.floor(f)).astype(np.float32)
    if clamp:
        last = s >= ssize - 1
        s = np.where(last, ssize - 1, s)
        f = np.where(last, np.float32(0.0), f).astype(np.float32)
    a0 = np.rint((np.float32(1.0) - f) * np.float32(_COEF_SCALE)).astype(np.int32)
    a1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int32)
    i0 = np.clip(s, 0, ssize - 1).astype(np.intp)
    i1 = np.clip(s + 1, 0, ssize - 1).astype(np.intp)
    return _readonly(i0, i1, a0, a1)


def _area_bilinear(img, sw, sh, dw, dh, scale_x, scale_y, inv_scale_x, inv_scale_y) -> np.ndarray:
    """INTER_AREA when an axis enlarges: ``resizeGeneric_`` with ``HResizeLinear<uchar, int,
    short, 2048>`` (exact integer products) and ``VResizeLinear<uchar, int, short, ...>``:

        dst = ((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16) + 2) >> 2
    """
    x0, x1, a0, a1 = _area_linear_tab(sw, dw, scale_x, inv_scale_x, True)
    y0, y1, b0, b1 = _area_linear_tab(sh, dh, scale_y, inv_scale_y, False)
    if sh <= 2 * dh:
        src = img.astype(np.int32)
        h = src[:, x0] * a0
        h += src[:, x1] * a1
        h >>= 4
        r0, r1 = h[y0], h[y1]
    else:  # shrinking rows: only the rows that are read
        def hrow(rows):
            src = img[rows].astype(np.int32)
            h = src[:, x0] * a0
            h += src[:, x1] * a1
            h >>= 4
            return h

        r0, r1 = hrow(y0), hrow(y1)
    out = r0 * b0[:, None]
    out >>= 16
    t = r1 * b1[:, None]
    t >>= 16
    out += t
    out += 2
    out >>= 2
    return out.astype(np.uint8)


def resize_area(img: np.ndarray, dsize: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(img, dsize, interpolation=cv2.INTER_AREA)`` for 2-D uint8, bit-exact.

    The same dispatch as ``cv::hal::resize`` (``scale = 1 / (dsize/ssize)`` per axis, in
    double):

    * same size: a copy;
    * both scales integers (within DBL_EPSILON) and >= 1 -- ``resizeAreaFast_``: a 2x2
      reduction is ``(a+b+c+d+2) >> 2``; other factors ``rint(float32(sum) *
      float32(1/area))``;
    * both scales >= 1 otherwise -- ``resizeArea_``: exact pixel-overlap weights from
      ``computeResizeAreaTab`` (float32), accumulated in OpenCV's order in float32, rounded
      half to even;
    * any axis enlarging (including the mixed shrink-one/grow-other case) -- OpenCV's
      bilinear path with INTER_AREA's own fractions ``f = (d+1) - (s+1)/scale`` (0 when
      <= 0, else its fractional part), 11-bit fixed-point weights and the
      ``VResizeLinear`` 8-bit rounding.
    """
    img, sw, sh, dw, dh = _check(img, dsize)
    if img.dtype != np.uint8:
        raise TypeError(f"resize_area expects uint8, got {img.dtype}")
    if (dw, dh) == (sw, sh):
        return img.copy()
    inv_x, inv_y, scale_x, scale_y, isx, isy, fast = _area_scales(sw, sh, dw, dh)
    if scale_x >= 1 and scale_y >= 1:
        if fast:
            return _area_fast(img, dw, dh, isx, isy)
        return _area_general(img, sw, sh, dw, dh, scale_x, scale_y)
    return _area_bilinear(img, sw, sh, dw, dh, scale_x, scale_y, inv_x, inv_y)


# --------------------------------------------------------------------------- INTER_LINEAR


@lru_cache(maxsize=256)
def _linear_tab(ssize: int, dsize: int, ipp: bool, clamp: bool = True):
    """Bilinear coefficients, half-pixel centres, source coordinate ``(d+0.5)*scale - 0.5``.

    ``ipp=False`` -- OpenCV's own code (``cv::hal::resize``): ``scale = 1/(dsize/ssize)``;
    ``f = (float)(coordinate)``; ``s = cvFloor(f)``; ``f -= s`` (so the fraction carries the
    float32 rounding of the whole coordinate).
    ``ipp=True`` -- Intel IPP's ``ippiResizeLinear`` (what x86 builds of cv2 run for float
    input): the fraction is taken in double and only then rounded to float32.

    ``clamp``: ``s < 0`` -> ``s = 0, f = 0``; ``s >= ssize-1`` -> ``s = ssize-1, f = 0`` (edge
    replication).  OpenCV's own code clamps only x; for y it keeps ``f`` and clips the two
    row indices (``resizeGeneric_``), so an edge row is ``r*(1-f) + r*f``.  Returns the
    indices of the two taps (inside the image) and the float32 weights (1-f, f).
    """
    d = np.arange(dsize, dtype=np.float64)
    if ipp:
        c = (d + 0.5) * (ssize / dsize) - 0.5
        s = np.floor(c)
        f = (c - s).astype(np.float32)
    else:
        c = ((d + 0.5) * (1.0 / (dsize / ssize)) - 0.5).astype(np.float32)
        s = np.floor(c)
        f = (c - s).astype(np.float32)
    s = s.astype(np.int64)
    if clamp:
        edge = (s < 0) | (s >= ssize - 1)
        f = np.where(edge, np.float32(0.0), f).astype(np.float32)
    i0 = np.clip(s, 0, ssize - 1).astype(np.intp)
    i1 = np.clip(s + 1, 0, ssize - 1).astype(np.intp)
    w0 = (np.float32(1.0) - f).astype(np.float32)
    return _readonly(i0, i1, w0, f)


def _lerp_ipp(a0: np.ndarray, a1: np.ndarray, f: np.ndarray, out: np.ndarray) -> None:
    """IPP's blend ``fma(f, a1 - a0, a0)`` into ``out``: the difference in the input's
    precision, then one rounding of ``a0 + f*diff``.  For float32 the product of two float32
    is exact in float64, and the float64 sum rounded to float32 is the fused result except
    when that sum falls exactly on a float32 rounding tie (about 2**-29 of the time).
    float64 input: plain float64 arithmetic.  ``a1`` is overwritten."""
    np.subtract(a1, a0, out=a1)
    t = np.multiply(a1, f, dtype=np.float64)
    t += a0
    out[...] = t


def _linear_ipp(img: np.ndarray, dw: int, dh: int, x0, x1, fx, y0, y1, fy) -> np.ndarray:
    sh = img.shape[0]
    h = np.empty((sh, dw), img.dtype)
    fx64 = fx.astype(np.float64)
    step = max(1, _BLOCK // dw)
    for r in range(0, sh, step):
        blk = img[r : r + step]
        _lerp_ipp(blk[:, x0], blk[:, x1], fx64, h[r : r + step])
    out = np.empty((dh, dw), img.dtype)
    fy64 = fy.astype(np.float64)[:, None]
    for r in range(0, dh, step):
        rows = slice(r, r + step)
        _lerp_ipp(h[y0[rows]], h[y1[rows]], fy64[rows], out[rows])
    return out


def resize_linear(img: np.ndarray, dsize: tuple[int, int], *, ipp: bool = True) -> np.ndarray:
    """``cv2.resize(img, dsize, interpolation=cv2.INTER_LINEAR)`` for 2-D float32 (or
    float64) arrays, enlarging or shrinking.  The result has the input's dtype.

    Bilinear with half-pixel centres (source coordinate ``(d + 0.5) * sw/dw - 0.5``), edge
    pixels replicated, a horizontal pass then a vertical pass.  OpenCV has two
    implementations and ``cv2.resize`` takes the first that applies:

    * ``ipp=True`` (default) -- Intel IPP, which the x86-64 ``opencv-python`` wheels (and
      so the application) use for float images whenever ``cv2.ipp.useIPP()`` is on (the
      default): fractions computed in double then rounded to float32, each pass
      ``fma(f, a1 - a0, a0)``.  Bit-exact against cv2 5.1 / IPP 2026.1 on every tested
      size pair (float32).  IPP declines a source one pixel wide or high; cv2 (and this
      function) then take OpenCV's own code.
    * ``ipp=False`` -- OpenCV's own code (builds without IPP, e.g. ARM, or after
      ``cv2.ipp.setUseIPP(False)``): float32 coordinate, weights ``(1.f - f, f)``,
      ``a0*w0 + a1*w1``.  Bit-exact against cv2 with IPP off (float32).

    An exact 2x2 reduction is, in both, OpenCV's INTER_AREA fast path (see ``_halve``).

    The two differ by the float32 rounding of the source coordinate: nothing for
    power-of-two ratios, up to ~4e-6 on a 128 px source and ~4e-5 on a 1024 px source of
    white noise in [0, 1] (a coordinate near 1000 has a float32 step of 6e-5), less on
    smooth maps.
    """
    img, sw, sh, dw, dh = _check(img, dsize)
    if img.dtype not in (np.float32, np.float64):
        raise TypeError(f"resize_linear expects float32 or float64, got {img.dtype}")
    if (dw, dh) == (sw, sh):
        return img.copy()
    dt = img.dtype.type
    ipp = bool(ipp) and sw > 1 and sh > 1  # IPP declines a single-row/column source
    if sw == 2 * dw and sh == 2 * dh:
        return _halve(img, dt, ipp)
    x0, x1, a0, a1 = _linear_tab(sw, dw, ipp)
    y0, y1, b0, b1 = _linear_tab(sh, dh, ipp, clamp=ipp)
    if ipp:
        return _linear_ipp(img, dw, dh, x0, x1, a1, y0, y1, b1)
    a0, a1 = a0.astype(dt), a1.astype(dt)
    h = img[:, x0] * a0
    h += img[:, x1] * a1
    out = h[y0] * b0.astype(dt)[:, None]
    out += h[y1] * b1.astype(dt)[:, None]
    return out


def _halve(img: np.ndarray, dt, ipp: bool) -> np.ndarray:
    """An exact 2x2 reduction under INTER_LINEAR: OpenCV turns it into INTER_AREA's fast
    path, ``((a+b) + (c+d)) * 0.25`` in its 4-wide vector loop and ``(((a+b)+c)+d) * 0.25``
    for the last ``dw % 4`` columns; with IPP on, cv2 5.1 gives the vector form everywhere."""
    a, b = img[0::2, 0::2], img[0::2, 1::2]
    c, d = img[1::2, 0::2], img[1::2, 1::2]
    out = a + b
    out += c + d
    out *= dt(0.25)
    dw = out.shape[1]
    tail = dw % 4
    if not ipp and tail:
        t = a[:, dw - tail :] + b[:, dw - tail :]
        t += c[:, dw - tail :]
        t += d[:, dw - tail :]
        t *= dt(0.25)
        out[:, dw - tail :] = t
    return out
