"""Pure-NumPy replacements for the OpenCV image operations the viewer uses.

Every function here reproduces one OpenCV call bit-exactly, so that removing
OpenCV from the application bundle changes no result; ``tests/test_ops_morphology.py``
checks each one against real ``cv2``.  Only NumPy and the standard library are
used (no ``cv2``, no ``scipy``).

* ``otsu_threshold``    - ``cv2.threshold(img, 0, 255, THRESH_BINARY + THRESH_OTSU)[0]``
* ``ellipse_kernel``    - ``cv2.getStructuringElement(MORPH_ELLIPSE, (n, n))``
* ``erode`` / ``dilate`` / ``opening`` - ``cv2.erode`` / ``cv2.dilate`` /
  ``cv2.morphologyEx(MORPH_OPEN)`` with the default anchor and border
* ``connected_components`` - ``cv2.connectedComponents`` (same labels; or,
  optionally, numbered in raster order of each component's first pixel)
* ``fill_holes``        - flood fill of the background from the border (``cv2.floodFill``)
* ``median_blur5``      - ``cv2.medianBlur(img, 5)``
* ``bounding_rect``     - ``cv2.boundingRect`` of a mask
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "bounding_rect",
    "connected_components",
    "dilate",
    "ellipse_kernel",
    "erode",
    "fill_holes",
    "median_blur5",
    "opening",
    "otsu_threshold",
]

# float FLT_EPSILON (2**-23) as OpenCV compares it against doubles.
_FLT_EPSILON = 1.1920928955078125e-07


def _as_2d(a: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    return a


# --------------------------------------------------------------------------- Otsu


def otsu_threshold(img: np.ndarray) -> float:
    """The threshold ``cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0]`` returns.

    ``img`` is a uint8 array of any shape (a 2-D slice, or a ``(N, 1)`` column of
    pixels); only its histogram matters.  This is a line-by-line port of OpenCV's
    ``getThreshVal_Otsu_8u`` (modules/imgproc/src/thresh.cpp) with the same double
    arithmetic in the same order, so ties and rounding behave identically: the
    first level ``i`` (0..255) with the strictly largest between-class variance
    wins; levels where either class weight is below ``FLT_EPSILON`` (or above
    ``1 - FLT_EPSILON``) are skipped, keeping OpenCV's quirk that the running mean
    is then left multiplied by the weight.  A constant image has no valid split and
    gives 0.0, as OpenCV does, and so does an empty array.
    """
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise TypeError(f"otsu_threshold needs a uint8 array, got {a.dtype}")
    total = a.size
    if total == 0:
        return 0.0
    hist = np.bincount(a.ravel(), minlength=256).tolist()
    scale = 1.0 / total
    mu = 0.0
    for i in range(256):
        mu += float(i) * float(hist[i])
    mu *= scale
    mu1 = 0.0
    q1 = 0.0
    max_sigma = 0.0
    max_val = 0.0
    eps = _FLT_EPSILON
    one_minus_eps = 1.0 - eps
    for i in range(256):
        p_i = hist[i] * scale
        mu1 *= q1
        q1 += p_i
        q2 = 1.0 - q1
        if min(q1, q2) < eps or max(q1, q2) > one_minus_eps:
            continue
        mu1 = (mu1 + i * p_i) / q1
        mu2 = (mu - q1 * mu1) / q2
        d = mu1 - mu2
        sigma = q1 * q2 * d * d
        if sigma > max_sigma:
            max_sigma = sigma
            max_val = float(i)
    return max_val


# --------------------------------------------------------------------------- structuring element


def ellipse_kernel(n: int) -> np.ndarray:
    """``cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (n, n))`` as a uint8 0/1 array.

    Port of ``getStructuringElement`` (modules/imgproc/src/morph.dispatch.cpp):
    ``r = c = n // 2``; row ``i`` with ``dy = i - r`` holds ones on
    ``[c - dx, c + dx]`` clipped to the kernel, where
    ``dx = saturate_cast<int>(c * sqrt((r*r - dy*dy) * (1 / r**2)))`` rounds half
    to even (Python's ``round`` on the same double); ``n == 1`` is the 1x1 rectangle.
    """
    n = int(n)
    if n < 1:
        raise ValueError("kernel size must be >= 1")
    k = np.zeros((n, n), np.uint8)
    if n == 1:
        k[:] = 1
        return k
    r = c = n // 2
    inv_r2 = 1.0 / (float(r) * r) if r else 0.0
    for i in range(n):
        dy = i - r
        if abs(dy) <= r:
            dx = int(round(c * math.sqrt((r * r - dy * dy) * inv_r2)))
            j1 = max(c - dx, 0)
            j2 = min(c + dx + 1, n)
            k[i, j1:j2] = 1
    return k


# --------------------------------------------------------------------------- erode / dilate


def _kernel_runs(kernel) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    if kernel is None:
        k = np.ones((3, 3), bool)
    else:
        k = _as_2d(kernel, "kernel") != 0
    if k.size == 0:
        k = np.ones((3, 3), bool)  # OpenCV: an empty kernel means a 3x3 rectangle
    runs = []
    for i in range(k.shape[0]):
        row = np.concatenate(([False], k[i], [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(row))
        for j1, j2 in zip(edges[0::2].tolist(), edges[1::2].tolist()):
            runs.append((i, j1, j2))
    return k, runs


def _identity(dtype: np.dtype, for_min: bool):
    if dtype == np.bool_:
        return for_min
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return info.max if for_min else info.min
    if np.issubdtype(dtype, np.floating):
        return np.inf if for_min else -np.inf
    raise TypeError(f"unsupported image dtype {dtype}")


def _morph(src: np.ndarray, kernel, erode_op: bool) -> np.ndarray:
    a = _as_2d(src)
    k, runs = _kernel_runs(kernel)
    if not runs:
        raise ValueError("kernel has no nonzero element")
    h, w = a.shape
    kh, kw = k.shape
    if h == 0 or w == 0 or (kh == 1 and kw == 1):
        return a.copy()
    ax, ay = kw // 2, kh // 2
    op = np.minimum if erode_op else np.maximum
    # Pixels outside the image are the identity of the operation, which is what
    # OpenCV's morphologyDefaultBorderValue() becomes (255 for erode, 0 for dilate).
    padded = np.full((h + kh - 1, w + kw - 1), _identity(a.dtype, erode_op), a.dtype)
    padded[ay:ay + h, ax:ax + w] = a
    wp = padded.shape[1]

    # Sliding-window op along rows for every width a kernel row needs, built from
    # power-of-two windows (van Herk-style doubling): O(log width) array ops.
    pow2 = {1: padded}

    def power(p: int) -> np.ndarray:
        if p not in pow2:
            half = power(p // 2)
            q = p // 2
            pow2[p] = op(half[:, :-q], half[:, q:])
        return pow2[p]

    windows: dict[int, np.ndarray] = {}

    def window(width: int) -> np.ndarray:
        if width not in windows:
            p = 1 << (width.bit_length() - 1)
            t = power(p)
            n = wp - width + 1
            windows[width] = t[:, :n] if p == width else op(t[:, :n], t[:, width - p:width - p + n])
        return windows[width]

    # dst(y, x) = op over kernel ones (i, j) of src(y + i - ay, x + j - ax); no reflection.
    out = None
    # Consecutive kernel rows with the same run are combined by one vertical window.
    by_run: dict[tuple[int, int], list[int]] = {}
    for i, j1, j2 in runs:
        by_run.setdefault((j1, j2), []).append(i)
    for (j1, j2), rows in by_run.items():
        horiz = window(j2 - j1)[:, j1:j1 + w]
        # split the rows into maximal blocks of consecutive indices
        start = prev = rows[0]
        blocks = []
        for i in rows[1:]:
            if i != prev + 1:
                blocks.append((start, prev + 1))
                start = i
            prev = i
        blocks.append((start, prev + 1))
        for i0, i1 in blocks:
            height = i1 - i0
            block = horiz[i0:i0 + h + height - 1]
            if height > 1:
                # vertical window of `height` rows by doubling
                p = 1
                acc = block
                while 2 * p <= height:
                    acc = op(acc[:-p], acc[p:])
                    p *= 2
                if p != height:
                    acc = op(acc[:h], acc[height - p:height - p + h])
                part = acc[:h]
            else:
                part = block[:h]
            out = part.copy() if out is None else op(out, part, out=out)
    return np.ascontiguousarray(out)


def erode(mask: np.ndarray, kernel=None) -> np.ndarray:
    """``cv2.erode(mask, kernel)`` with the default anchor (kernel centre), one
    iteration and the default border: pixels outside the image never shrink the
    result (OpenCV's ``morphologyDefaultBorderValue``).

    ``dst(y, x) = min over kernel ones (i, j) of src(y + i - kh//2, x + j - kw//2)``
    (OpenCV correlates; the kernel is not reflected), computed per kernel row as a
    sliding-window minimum.  Bit-exact for 0/1 masks and for any uint8 image; the
    result has the input's dtype.  ``kernel=None`` is the 3x3 rectangle.
    """
    return _morph(mask, kernel, erode_op=True)


def dilate(mask: np.ndarray, kernel=None) -> np.ndarray:
    """``cv2.dilate(mask, kernel)`` with the default anchor, one iteration and the
    default border: pixels outside the image never grow the result.

    ``dst(y, x) = max over kernel ones (i, j) of src(y + i - kh//2, x + j - kw//2)``
    (no kernel reflection, as in OpenCV).  Each kernel row is a horizontal run: the
    result is the max over kernel rows of a vertical shift of a horizontal
    sliding-window max (power-of-two doubling), a few ms for an ellipse of 25 on a
    512x512 mask.  Bit-exact for 0/1 masks and any uint8 image; same dtype out.
    """
    return _morph(mask, kernel, erode_op=False)


def opening(mask: np.ndarray, kernel=None) -> np.ndarray:
    """``cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)``: ``dilate(erode(mask))``
    with the default anchor and border, exactly as OpenCV composes it."""
    return dilate(erode(mask, kernel), kernel)


# --------------------------------------------------------------------------- connected components


def _row_runs(m: np.ndarray):
    """Runs of True along each row of a 2-D bool array, in raster order.

    Returns (starts, ends, rows, stride) where starts/ends are flat indices in an
    (h, w + 1) grid (end exclusive) and stride = w + 1."""
    h, w = m.shape
    stride = w + 1
    p = np.zeros((h, w + 2), np.bool_)
    p[:, 1:-1] = m
    trans = np.flatnonzero(p[:, 1:] != p[:, :-1])  # flat in the (h, w + 1) grid
    idx = np.int32 if h * stride < 2**31 - 1 else np.int64
    starts = trans[0::2].astype(idx)
    ends = trans[1::2].astype(idx)
    return starts, ends, stride


def _label_runs(starts: np.ndarray, ends: np.ndarray, stride: int, connectivity: int, order: str = "raster"):
    """Component label (1..k) of each run, and k.  ``order="raster"`` numbers components
    by their first pixel in raster order; ``order="opencv"`` as cv2.connectedComponents
    does (raster order for 4-conn, order of the first 2x2 block for 8-conn)."""
    n = starts.size
    if n == 0:
        return np.zeros(0, np.int32), 0
    rows = starts // stride
    s = starts - rows * stride
    e = ends - rows * stride
    prev_base = (rows - 1) * stride
    if connectivity == 8:
        # runs a (row r-1) and b (row r) touch when s_a <= e_b and s_b <= e_a
        lo = np.searchsorted(ends, prev_base + s, side="left")
        hi = np.searchsorted(starts, prev_base + e, side="right")
    else:
        # strict overlap: s_a < e_b and s_b < e_a
        lo = np.searchsorted(ends, prev_base + s, side="right")
        hi = np.searchsorted(starts, prev_base + e, side="left")
    idx = starts.dtype
    cnt = np.maximum(hi - lo, 0).astype(idx)
    total = int(cnt.sum())
    parent = np.arange(n, dtype=idx)
    if total:
        b = np.repeat(parent, cnt)
        offs = np.arange(total, dtype=idx) - np.repeat(np.cumsum(cnt, dtype=idx) - cnt, cnt)
        a = np.repeat(lo.astype(idx), cnt) + offs
        # Union-find by hooking the larger root onto the smaller one, then pointer
        # jumping; parent[x] <= x always, so each root is its component's first run.
        while a.size:
            ra = parent[a]
            rb = parent[b]
            live = ra != rb
            if not live.any():
                break
            a, b, ra, rb = a[live], b[live], ra[live], rb[live]
            np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
            while True:
                pp = parent[parent]
                if np.array_equal(pp, parent):
                    break
                parent = pp
    is_root = parent == np.arange(n, dtype=idx)
    if order == "opencv" and connectivity == 8:
        # cv2's 8-connectivity labelling (Spaghetti/BBDT) scans 2x2 blocks in raster
        # order and numbers components by their first block; two components never
        # share a block under 8-connectivity, so the key is unique per component.
        roots = np.flatnonzero(is_root)
        key = (rows // 2).astype(np.int64) * stride + s // 2
        first = np.full(n, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, parent, key)
        label_of = np.zeros(n, np.int32)
        label_of[roots[np.argsort(first[roots], kind="stable")]] = np.arange(1, roots.size + 1, dtype=np.int32)
        return label_of[parent], int(roots.size)
    # roots are the first run of their component, so this is raster order (also cv2's
    # order under 4-connectivity, whose SAUF scan is pixel by pixel)
    label_of = np.cumsum(is_root, dtype=np.int32)
    return label_of[parent], int(label_of[-1])


def _paint(starts, ends, values, h: int, stride: int) -> np.ndarray:
    d = np.zeros(h * stride + 1, np.int32)
    d[starts] = values
    d[ends] = -values
    return np.cumsum(d[:-1], dtype=np.int32).reshape(h, stride)[:, :-1]


def connected_components(mask: np.ndarray, connectivity: int = 8, order: str = "opencv") -> tuple[int, np.ndarray]:
    """``cv2.connectedComponents(mask, connectivity=connectivity)`` for a 2-D mask
    (nonzero = foreground): ``(number of labels including background 0, int32 labels)``.

    The partition is identical to OpenCV's (8- or 4-connectivity).  The numbering
    of the components 1..k depends on ``order``:

    * ``"opencv"`` (default): the same label image as OpenCV's default algorithms,
      bit for bit.  Under 4-connectivity (SAUF, a pixel raster scan) that is the
      raster order of each component's first pixel; under 8-connectivity
      (Spaghetti, a scan of 2x2 blocks) components are numbered by their first
      2x2 block in block raster order, i.e. by the smallest ``(y // 2, x // 2)``
      over their pixels.
    * ``"raster"``: raster order of each component's first pixel (top row
      first, left to right) for both connectivities.

    Row runs are joined between consecutive rows (8-conn: overlap after a
    one-pixel diagonal extension; 4-conn: strict overlap) with a vectorised
    union-find over runs; no Python loop over pixels or runs.
    """
    if connectivity not in (4, 8):
        raise ValueError("connectivity must be 4 or 8")
    if order not in ("opencv", "raster"):
        raise ValueError('order must be "opencv" or "raster"')
    m = _as_2d(mask, "mask") != 0
    h, w = m.shape
    if h == 0 or w == 0:
        return 1, np.zeros((h, w), np.int32)
    starts, ends, stride = _row_runs(m)
    labels, k = _label_runs(starts, ends, stride, connectivity, order)
    if k == 0:
        return 1, np.zeros((h, w), np.int32)
    return k + 1, np.ascontiguousarray(_paint(starts, ends, labels, h, stride))


# --------------------------------------------------------------------------- hole filling


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """A uint8 mask with every 0-pixel not 4-connected to the image border set to 1.

    Equal to this OpenCV recipe for any uint8 input: pad by one pixel of zeros,
    ``cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)`` on a copy
    of the padded image (4-connected fill of the zero region reached from the
    corner), and return ``(pad | (1 - flood))[1:-1, 1:-1]`` (uint8 arithmetic).  For
    a 0/1 mask that is the mask with its holes filled.
    """
    m = _as_2d(mask, "mask")
    if m.dtype == np.bool_:
        m = m.view(np.uint8)
    m = m.astype(np.uint8, copy=False)
    h, w = m.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = m
    zero = pad == 0
    starts, ends, stride = _row_runs(zero)
    labels, _ = _label_runs(starts, ends, stride, 4)
    # The first zero run starts at (0, 0) and is component 1: the border's background.
    outside = _paint(starts, ends, (labels == 1).astype(np.int32), h + 2, stride) != 0
    flood = pad.copy()
    flood[outside] = 1
    return np.ascontiguousarray((pad | (np.uint8(1) - flood))[1:-1, 1:-1])


# --------------------------------------------------------------------------- median


# OpenCV's 5x5 median sorting network (median_blur.simd.hpp, m == 5): op(a, b)
# leaves min in a and max in b; the median ends in p12.
_MEDIAN25_NET = (
    (1, 2), (0, 1), (1, 2), (4, 5), (3, 4), (4, 5), (0, 3), (2, 5), (2, 3), (1, 4),
    (1, 2), (3, 4), (7, 8), (6, 7), (7, 8), (10, 11), (9, 10), (10, 11), (6, 9), (8, 11),
    (8, 9), (7, 10), (7, 8), (9, 10), (0, 6), (4, 10), (4, 6), (2, 8), (2, 4), (6, 8),
    (1, 7), (5, 11), (5, 7), (3, 9), (3, 5), (7, 9), (1, 2), (3, 4), (5, 6), (7, 8),
    (9, 10), (13, 14), (12, 13), (13, 14), (16, 17), (15, 16), (16, 17), (12, 15), (14, 17), (14, 15),
    (13, 16), (13, 14), (15, 16), (19, 20), (18, 19), (19, 20), (21, 22), (23, 24), (21, 23), (22, 24),
    (22, 23), (18, 21), (20, 23), (20, 21), (19, 22), (22, 24), (19, 20), (21, 22), (23, 24), (12, 18),
    (16, 22), (16, 18), (14, 20), (20, 24), (14, 16), (18, 20), (22, 24), (13, 19), (17, 23), (17, 19),
    (15, 21), (15, 17), (19, 21), (13, 14), (15, 16), (17, 18), (19, 20), (21, 22), (23, 24), (0, 12),
    (8, 20), (8, 12), (4, 16), (16, 24), (12, 16), (2, 14), (10, 22), (10, 14), (6, 18), (6, 10),
    (10, 12), (1, 13), (9, 21), (9, 13), (5, 17), (13, 17), (3, 15), (11, 23), (11, 15), (7, 19),
    (7, 11), (11, 13), (11, 12),
)


def _prune_network(net, target: int):
    """Keep only the compare-exchanges the target output depends on, each tagged
    with which of its outputs (min, max) is still needed."""
    needed = {target}
    kept = []
    for a, b in reversed(net):
        need_min, need_max = a in needed, b in needed
        if need_min or need_max:
            kept.append((a, b, need_min, need_max))
            needed.add(a)
            needed.add(b)
    kept.reverse()
    return tuple(kept)


_MEDIAN25_OPS = _prune_network(_MEDIAN25_NET, 12)


def median_blur5(img: np.ndarray) -> np.ndarray:
    """``cv2.medianBlur(img, 5)`` for a 2-D uint8 image, bit-exact.

    Each output pixel is the median of its 5x5 neighbourhood with replicated
    borders (``BORDER_REPLICATE``, OpenCV's only border for medianBlur), evaluated
    with OpenCV's 25-input sorting network on whole shifted arrays (pruned to the
    comparisons the median needs).
    """
    a = _as_2d(img)
    if a.dtype != np.uint8:
        raise TypeError(f"median_blur5 needs a uint8 image, got {a.dtype}")
    h, w = a.shape
    if h == 0 or w == 0:
        return a.copy()
    p = np.pad(a, 2, mode="edge")
    v = [p[dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)]
    for i, j, need_min, need_max in _MEDIAN25_OPS:
        x, y = v[i], v[j]
        if need_min and need_max:
            v[i], v[j] = np.minimum(x, y), np.maximum(x, y)
        elif need_min:
            v[i] = np.minimum(x, y)
        else:
            v[j] = np.maximum(x, y)
    return np.ascontiguousarray(v[12])


# --------------------------------------------------------------------------- bounding box


def bounding_rect(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``cv2.boundingRect(mask)`` for a 2-D mask (uint8, or bool viewed as uint8):
    ``(x, y, w, h)`` of the smallest upright rectangle holding every nonzero pixel,
    ``(0, 0, 0, 0)`` when there is none."""
    m = _as_2d(mask, "mask")
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(m.any(axis=0))
    y0, y1 = int(rows[0]), int(rows[-1])
    x0, x1 = int(cols[0]), int(cols[-1])
    return (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
