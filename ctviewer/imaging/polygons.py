"""Convex hulls, convex polygon filling and CLAHE in NumPy, bit-exact with OpenCV.

These replace the OpenCV calls the app used (``cv2.findContours`` as a hull input,
``cv2.convexHull``, ``cv2.fillConvexPoly``, ``cv2.createCLAHE(...).apply``) so that the
bundle does not need OpenCV.  Each function is a port of the OpenCV source it names
(modules/imgproc/src/convhull.cpp, drawing.cpp, clahe.cpp) and is tested pixel for pixel
against ``cv2`` in ``tests/test_ops_polygons.py``.

Only NumPy and the standard library are used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["outline_points", "convex_hull", "fill_convex_poly", "clahe"]


# --------------------------------------------------------------------------- outline


def outline_points(mask: np.ndarray) -> np.ndarray:
    """Points (N, 2) int32 as (x, y): each row's leftmost and rightmost nonzero pixel.

    Their convex hull is the convex hull of all nonzero pixels of ``mask`` (and their
    bounding box its bounding box), so this replaces
    ``np.vstack(cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0])``
    where that is only the input of a convex hull: ``convex_hull(outline_points(m))``
    has the same vertices as ``cv2.convexHull`` of the contour points (the order or the
    first vertex may differ; ``fill_convex_poly`` fills the same pixels either way).
    The point list itself is not the contour.  A row with a single pixel gives one point;
    an all-zero mask gives an empty (0, 2) array.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"outline_points needs a 2-D mask, got shape {m.shape}")
    nz = m != 0
    rows = np.flatnonzero(nz.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 2), np.int32)
    sub = nz[rows]
    left = sub.argmax(axis=1)
    right = m.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    two = right != left
    xs = np.concatenate([left, right[two]])
    ys = np.concatenate([rows, rows[two]])
    return np.stack([xs, ys], axis=1).astype(np.int32)


# --------------------------------------------------------------------------- convex hull


def _sklansky(X, Y, start: int, end: int, nsign: int, sign2: int) -> list[int]:
    """OpenCV's ``Sklansky_<int, int64>`` over the x-sorted points ``X``, ``Y`` (Python ints).

    Returns the stack (indices into the sorted arrays), ``len`` being OpenCV's count."""
    incr = 1 if end > start else -1
    pprev, pcur, pnext = start, start + incr, start + 2 * incr
    if start == end or (X[start] == X[end] and Y[start] == Y[end]):
        return [start]
    stack = [pprev, pcur, pnext]
    size = 3
    end += incr
    while pnext != end:
        xc, yc, xn, yn = X[pcur], Y[pcur], X[pnext], Y[pnext]
        if xc == xn and yc == yn:
            pnext += incr
            stack[size - 1] = pnext
            continue
        by = yn - yc
        if (by > 0) - (by < 0) != nsign:
            ax, ay = xc - X[pprev], yc - Y[pprev]
            bx = xn - xc
            conv = ay * bx - ax * by
            if (conv > 0) - (conv < 0) == sign2 and (ax != 0 or ay != 0):
                pprev, pcur = pcur, pnext
                pnext += incr
                if size < len(stack):
                    stack[size] = pnext
                else:
                    stack.append(pnext)
                size += 1
            elif pprev == start:
                pcur = pnext
                stack[1] = pcur
                pnext += incr
                stack[2] = pnext
            else:
                stack[size - 2] = pnext
                pcur = pprev
                pprev = stack[size - 4]
                size -= 1
        else:
            pnext += incr
            stack[size - 1] = pnext
    return stack[: size - 1]


def _column_extremes(pts: np.ndarray) -> np.ndarray:
    """Indices of the points whose y is the least or the greatest of their column (x):
    every vertex of the convex hull is one of them (duplicates kept)."""
    x = pts[:, 0].astype(np.int64)
    y = pts[:, 1].astype(np.int64)
    order = np.lexsort((y, x))
    xs, ys = x[order], y[order]
    first = np.ones(len(xs), bool)
    first[1:] = xs[1:] != xs[:-1]
    last = np.ones(len(xs), bool)
    last[:-1] = xs[1:] != xs[:-1]
    col = np.cumsum(first) - 1
    ymin_col = ys[first][col]
    ymax_col = ys[last][col]
    keep = (ys == ymin_col) | (ys == ymax_col)
    return np.sort(order[keep])


def convex_hull(points: np.ndarray, clockwise: bool = False) -> np.ndarray:
    """Vertices (M, 2) int32 of the convex hull of integer points, as ``cv2.convexHull``.

    A port of OpenCV's ``convexHull`` (convhull.cpp) for CV_32S points with
    ``returnPoints=True``: points sorted by (x, y, input index), Sklansky's scan over the
    four chains between the leftmost, topmost, rightmost and bottommost points, the
    degenerate-hull rules (all points equal: one vertex; all on a line: its two ends) and
    the final cyclic shift that makes the input indices of the vertices ascend or descend.
    Like cv2 it drops collinear points (a point inside a hull edge is not a vertex) and
    repeated points.  The output is the same array as ``cv2.convexHull(points,
    clockwise=clockwise)[:, 0]``, order included.

    For more than 64 points the scan runs only over the points that are the top or bottom
    of their column (x), which include every hull vertex and all their duplicates, and
    keeps their input indices; the result is unchanged (tested against cv2).

    ``points``: (N, 2) or (N, 1, 2) integers.  No points gives a (0, 2) array.
    """
    pts = np.asarray(points)
    if pts.size == 0:
        return np.zeros((0, 2), np.int32)
    pts = pts.reshape(-1, 2)
    if not np.issubdtype(pts.dtype, np.integer):
        raise TypeError(f"convex_hull needs integer points, got {pts.dtype}")
    pts = pts.astype(np.int64)
    cand = _column_extremes(pts) if len(pts) > 64 else np.arange(len(pts))
    sub = pts[cand]
    # std::sort with CHullCmpPoints: x, then y, then the point's address (its input index).
    order = np.lexsort((cand, sub[:, 1], sub[:, 0]))
    orig = cand[order].tolist()
    X = sub[order, 0].tolist()
    Y = sub[order, 1].tolist()
    total = len(X)
    ys = np.asarray(Y)
    miny_ind = int(np.argmin(ys))
    maxy_ind = int(np.argmax(ys))

    if X[0] == X[-1] and Y[0] == Y[-1]:
        hull = [0]  # OpenCV writes index 0 of the input: all points are equal
    else:
        tl = _sklansky(X, Y, 0, maxy_ind, -1, 1)
        tr = _sklansky(X, Y, total - 1, maxy_ind, -1, -1)
        if not clockwise:
            tl, tr = tr, tl
        hull = [orig[tl[i]] for i in range(len(tl) - 1)]
        hull += [orig[tr[i]] for i in range(len(tr) - 1, 0, -1)]
        stop_idx = tr[1] if len(tr) > 2 else tl[len(tl) - 2] if len(tl) > 2 else -1

        bl = _sklansky(X, Y, 0, miny_ind, 1, -1)
        br = _sklansky(X, Y, total - 1, miny_ind, 1, 1)
        if clockwise:
            bl, br = br, bl
        if stop_idx >= 0:
            both = bl + br  # OpenCV's shared stack: br_stack[2 - bl_count] is both[2]
            check_idx = bl[1] if len(bl) > 2 else both[2] if len(bl) + len(br) > 2 else -1
            if check_idx == stop_idx or (
                check_idx >= 0 and X[check_idx] == X[stop_idx] and Y[check_idx] == Y[stop_idx]
            ):
                # all points on one line: the lower part mirrors the upper one
                bl, br = bl[:2], br[:2]
        hull += [orig[bl[i]] for i in range(len(bl) - 1)]
        hull += [orig[br[i]] for i in range(len(br) - 1, 0, -1)]

        nout = len(hull)
        if nout >= 3:
            # cyclic shift so the input indices form an ascending or descending sequence
            min_idx = max_idx = lt = 0
            for i in range(1, nout):
                idx = hull[i]
                lt += hull[i - 1] < idx
                if 1 < lt <= i - 2:
                    break
                if idx < hull[min_idx]:
                    min_idx = i
                if idx > hull[max_idx]:
                    max_idx = i
            mmdist = abs(max_idx - min_idx)
            if (mmdist == 1 or mmdist == nout - 1) and (lt <= 1 or lt >= nout - 2):
                ascending = (max_idx + 1) % nout == min_idx
                i0 = min_idx if ascending else max_idx
                if i0 > 0:
                    j = i0
                    rotated = []
                    complete = True
                    for i in range(nout):
                        cur = hull[j]
                        rotated.append(cur)
                        nj = j + 1 if j + 1 < nout else 0
                        if i < nout - 1 and ascending != (cur < hull[nj]):
                            complete = False
                            break
                        j = nj
                    if complete:
                        hull = rotated
    return pts[np.asarray(hull, np.intp)].astype(np.int32)


# --------------------------------------------------------------------------- fill

_XY_SHIFT = 16
_XY_ONE = 1 << _XY_SHIFT


def _trunc_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _clip_line(w: int, h: int, x1: int, y1: int, x2: int, y2: int):
    """OpenCV's ``clipLine(Size2l, Point2l&, Point2l&)``: the clipped ends, or None."""
    if w <= 0 or h <= 0:
        return None
    right, bottom = w - 1, h - 1
    c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8
    c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * (y2 - y1) / (x2 - x1))
                x1 = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * (y2 - y1) / (x2 - x1))
                x2 = a
                c2 = 0
    if c1 | c2:
        return None
    return x1, y1, x2, y2


def _line8(w: int, h: int, x1: int, y1: int, x2: int, y2: int):
    """Pixels (xs, ys) of OpenCV's ``Line(img, pt1, pt2, color, 8)``: a LineIterator with
    8-connectivity, left to right, after ``clipLine`` when an end is outside the image.

    The Bresenham walk (err = dx - 2dy; step the minor axis when err < 0) is evaluated in
    closed form: after k steps along the major axis the minor one has moved
    ceil((2 dy k - dx) / (2 dx)) times."""
    if not (0 <= x1 < w and 0 <= x2 < w and 0 <= y1 < h and 0 <= y2 < h):
        c = _clip_line(w, h, x1, y1, x2, y2)
        if c is None:
            return None
        x1, y1, x2, y2 = c
    dx, dy = x2 - x1, y2 - y1
    if dx < 0:  # left_to_right
        dx, dy = -dx, -dy
        x1, y1 = x2, y2
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    vert = dy > dx
    if vert:
        dx, dy = dy, dx
    k = np.arange(dx + 1, dtype=np.int64)
    m = -((dx - 2 * dy * k) // (2 * dx)) if dx > 0 else np.zeros(1, np.int64)
    if vert:
        return x1 + m, y1 + sy * k
    return x1 + k, y1 + sy * m


def fill_convex_poly(shape: tuple[int, int], vertices: np.ndarray, value: int = 1) -> np.ndarray:
    """A new uint8 image of ``shape`` (2-D), zero except the pixels that
    ``cv2.fillConvexPoly(np.zeros(shape, np.uint8), vertices, value)`` sets to ``value``
    (lineType LINE_8, shift 0).

    A port of drawing.cpp's ``FillConvexPoly``: the LINE_8 outline it draws first (each
    edge v[i-1] -> v[i] with ``Line``, i.e. a left-to-right Bresenham LineIterator clipped by
    ``clipLine``), then its two edge walkers from the first top-most vertex, one forward and
    one backward through the vertex list, with x in 16.16 fixed point (XY_SHIFT),
    dx = ((xe - xs)*2 + (ty - y)) / (2*(ty - y)) with C truncation, spans
    ((x_left + XY_ONE/2) >> 16 .. (x_right + XY_ONE/2) >> 16) clipped to the image, the
    shared vertex budget whose exhaustion ends the scan (so a hull's bottom row comes from
    its outline only), rows above 0 skipped and rows below the image cut off.  Fewer than 3
    vertices draw only the outline (a point or a segment), as in OpenCV.  The vertices are
    used in the order given, as OpenCV does; for the convex polygons OpenCV is meant for
    (``cv2.convexHull`` / ``convex_hull`` output) the result is exact.  The edge walk runs
    in plain Python over the vertices (one step per edge); the spans and the outline of all
    edges at once are evaluated with NumPy (see ``_outline8``).

    ``vertices``: (N, 2) or (N, 1, 2) integers, N >= 1 (cv2 rejects an empty array).
    """
    h, w = (int(s) for s in shape)
    v = np.asarray(vertices)
    if v.size == 0:
        raise ValueError("fill_convex_poly needs at least one vertex")
    v = v.reshape(-1, 2).astype(np.int64)
    if not 0 <= int(value) <= 255:
        raise ValueError(f"value {value} does not fit uint8")
    out = np.zeros((h, w), np.uint8)
    if h <= 0 or w <= 0:
        return out
    value = int(value)
    vx = v[:, 0].tolist()
    vy = v[:, 1].tolist()
    n = len(vx)

    # --- the spans (FillConvexPoly's scan): per walker state (first row, end row, x, dx)
    ymin = min(vy)
    ymax0, xmin, xmax = max(vy), min(vx), max(vx)
    ymax = ymax0
    if n >= 3 and not (xmax < 0 or ymax < 0 or xmin >= w or ymin >= h):
        ymax = min(ymax, h - 1)
        imin = vy.index(ymin)
        # the two walkers as plain locals: index, direction, x, dx and end row of each
        idx_l = idx_r = imin
        x_l = x_r = -_XY_ONE
        dx_l = dx_r = 0
        ye_l = ye_r = ymin
        edges = n
        y = ymin
        seg_y, seg_lo, seg_hi, seg_xl, seg_dl, seg_xr, seg_dr = [], [], [], [], [], [], []
        while True:
            if y >= ye_l:  # walker 0: forward through the vertex list
                idx_l, x_l, dx_l, ye_l, edges = _walk(vx, vy, idx_l, 1, y, edges, idx_l, x_l, dx_l, ye_l)
            if y >= ye_r:  # walker 1: backward (di = n - 1)
                idx_r, x_r, dx_r, ye_r, edges = _walk(vx, vy, idx_r, n - 1, y, edges, idx_r, x_r, dx_r, ye_r)
            if edges < 0:
                break
            y_next = min(ye_l, ye_r, ymax + 1)
            lo = y if y > 0 else 0
            if lo < y_next:
                seg_y.append(y)
                seg_lo.append(lo)
                seg_hi.append(y_next)
                seg_xl.append(x_l)
                seg_dl.append(dx_l)
                seg_xr.append(x_r)
                seg_dr.append(dx_r)
            x_l += (y_next - y) * dx_l
            x_r += (y_next - y) * dx_r
            y = y_next
            if y > ymax:
                break
        if seg_y:
            _fill_spans(out, value, seg_y, seg_lo, seg_hi, seg_xl, seg_dl, seg_xr, seg_dr)

    # --- the LINE_8 outline, drawn for every edge v[i-1] -> v[i]
    inside = xmin >= 0 and ymin >= 0 and xmax < w and ymax0 < h
    flat = _outline8(w, h, v, inside)
    if flat is not None:
        out.ravel()[flat] = value
    return out


def _walk(vx, vy, idx0, step, y, edges, idx_keep, x_keep, dx_keep, ye_keep):
    """One FillConvexPoly walker moving on from vertex ``idx0`` by ``step`` (1 forward, n - 1
    backward) to the next edge that ends below row ``y``, spending the shared ``edges``
    budget: (vertex index, x, dx in 16.16 fixed point, end row, edges left).  When the budget
    runs out the walker keeps its state (the ``*_keep`` values)."""
    n = len(vx)
    idx = idx0 + step
    if idx >= n:
        idx -= n
    while True:
        ok = edges > 0
        edges -= 1
        if not ok:
            return idx_keep, x_keep, dx_keep, ye_keep, edges
        ty = vy[idx]
        if ty > y:
            xs = vx[idx0] << _XY_SHIFT
            num = ((vx[idx] << _XY_SHIFT) - xs) * 2 + (ty - y)
            den = 2 * (ty - y)
            dx = num // den if num >= 0 else -((-num) // den)  # C division
            return idx, xs, dx, ty, edges
        idx0 = idx
        idx += step
        if idx >= n:
            idx -= n


def _fill_spans(out, value, seg_y, seg_lo, seg_hi, seg_xl, seg_dl, seg_xr, seg_dr) -> None:
    """Set the rows lo..hi-1 of each walker segment of ``out`` to ``value`` between its two
    walkers' x (16.16 fixed point, x + (row - y) * dx; rounded and clipped as FillConvexPoly
    does) and to 0 elsewhere.  The segments' rows are contiguous and ascending."""
    w = out.shape[1]
    r0 = seg_lo[0]
    total = seg_hi[-1] - r0
    rows = np.arange(r0, r0 + total, dtype=np.int64)
    if len(seg_y) == 1:
        k = rows - seg_y[0]
        xa = seg_xl[0] + k * seg_dl[0]
        xb = seg_xr[0] + k * seg_dr[0]
    else:
        cnt = np.subtract(seg_hi, seg_lo)
        rep = np.repeat(np.array([seg_y, seg_xl, seg_dl, seg_xr, seg_dr], np.int64).T, cnt, axis=0)
        k = rows - rep[:, 0]
        xa = rep[:, 1] + k * rep[:, 2]
        xb = rep[:, 3] + k * rep[:, 4]
    half = _XY_ONE >> 1
    xx1 = (np.minimum(xa, xb) + half) >> _XY_SHIFT
    xx2 = (np.maximum(xa, xb) + half) >> _XY_SHIFT
    np.maximum(xx1, 0, out=xx1)
    np.minimum(xx2, w - 1, out=xx2)
    width = xx2 - xx1
    empty = width < 0  # also the spans entirely left or right of the image
    xx1[empty] = w
    width[empty] = 0
    # column c is in the span when (c - xx1) as an unsigned number is <= width
    if w < (1 << 15):
        it, ut = np.int16, np.uint16
    else:
        it, ut = np.int64, np.uint64
    cols = np.arange(w, dtype=it)
    diff = np.subtract(cols, xx1.astype(it)[:, None])
    band = out[r0 : r0 + total]
    np.less_equal(diff.view(ut), width.astype(ut)[:, None], out=band.view(np.bool_))
    if value != 1:
        band *= np.uint8(value)


def _outline8(w: int, h: int, v: np.ndarray, inside: bool):
    """Flat indices (into a C-ordered h x w image) of the pixels of OpenCV's
    ``Line(img, v[i-1], v[i], color, 8)`` for every i: the pixels ``_line8`` gives edge by
    edge, evaluated for all the edges at once (some may repeat); None when nothing is
    drawn.  ``inside``: every vertex is in the image, so no edge needs ``clipLine``;
    otherwise the edges with an end outside are clipped one by one first."""
    x2 = v[:, 0]
    y2 = v[:, 1]
    x1 = np.concatenate([x2[-1:], x2[:-1]])
    y1 = np.concatenate([y2[-1:], y2[:-1]])
    if not inside:
        ok = (x1 >= 0) & (x1 < w) & (x2 >= 0) & (x2 < w) & (y1 >= 0) & (y1 < h) & (y2 >= 0) & (y2 < h)
        keep = ok.copy()
        x1, y1, x2, y2 = x1.copy(), y1.copy(), x2.copy(), y2.copy()
        for i in np.flatnonzero(~ok).tolist():
            c = _clip_line(w, h, int(x1[i]), int(y1[i]), int(x2[i]), int(y2[i]))
            if c is not None:
                x1[i], y1[i], x2[i], y2[i] = c
                keep[i] = True
        if not keep.any():
            return None
        x1, y1, x2, y2 = x1[keep], y1[keep], x2[keep], y2[keep]
    dx = x2 - x1
    dy = y2 - y1
    swap = dx < 0  # left_to_right: walk from the end with the smaller x
    base = np.where(swap, y2 * w + x2, y1 * w + x1)
    ystep = np.where(swap == (dy > 0), -w, w)  # the sign of y's step (irrelevant when dy = 0)
    dx = np.abs(dx)
    dy = np.abs(dy)
    vert = dy > dx
    major = np.maximum(dx, dy)[:, None]
    minor2 = 2 * np.minimum(dx, dy)[:, None]
    den = np.maximum(2 * major, 1)
    kstep = np.where(vert, ystep, 1)[:, None]  # one step along the major axis
    mstep = np.where(vert, 1, ystep)[:, None]  # one step along the minor axis
    # pixel k of an edge, for k past its end the last pixel again
    k = np.minimum(np.arange(int(major.max()) + 1), major)
    # after k steps along the major axis the minor one has moved ceil((2 dy k - dx) / (2 dx))
    # times (0 for a single-pixel edge, where dx = dy = k = 0), i.e. -m with m = (dx - 2 dy k) // (2 dx)
    m = (major - minor2 * k) // den
    return (base[:, None] + k * kstep - m * mstep).ravel()


# --------------------------------------------------------------------------- CLAHE


def clahe(img: np.ndarray, clip_limit: float = 7.0, tiles: tuple[int, int] = (8, 8)) -> np.ndarray:
    """``cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tiles).apply(img)``, bit-exact,
    for a 2-D uint8 image; ``tiles`` is (tiles across, tiles down) like tileGridSize.

    A port of clahe.cpp (CPU path).  ``CLAHE_CalcLut_Body``: per tile a 256-bin histogram,
    clipped at ``int(clip_limit * tile_area / 256)`` (at least 1; no clipping when
    clip_limit <= 0), the clipped excess spread as ``excess // 256`` on every bin plus the
    residual one by one on bins 0, step, 2*step, ... with step = max(256 // residual, 1);
    LUT = saturate_cast<uchar>(cumsum * lutScale) in float32 with lutScale =
    255.0f / tile_area (round half to even, as cvRound).  ``CLAHE_Interpolation_Body``:
    tx = x * (1.0f / tile_w) - 0.5f, ty likewise, the four neighbouring tile LUTs blended as
    (L11*(1-xa) + L12*xa)*(1-ya) + (L21*(1-xa) + L22*xa)*ya in float32 and rounded the same
    way.  When the image size is not a multiple of the grid, the LUTs are computed on the
    image padded at the bottom and right with BORDER_REFLECT_101 (np.pad 'reflect') by
    ``tiles - size % tiles``, as OpenCV does.
    """
    src = np.asarray(img)
    if src.ndim != 2 or src.dtype != np.uint8:
        raise ValueError(f"clahe needs a 2-D uint8 image, got {src.dtype} {src.shape}")
    tx_n, ty_n = (int(t) for t in tiles)
    if tx_n <= 0 or ty_n <= 0:
        raise ValueError(f"bad tile grid {tiles}")
    h, w = src.shape
    if h == 0 or w == 0:
        return src.copy()
    if w % tx_n == 0 and h % ty_n == 0:
        ext = src
    else:
        pad_y, pad_x = ty_n - h % ty_n, tx_n - w % tx_n
        if pad_y >= h or pad_x >= w:
            raise ValueError(f"image {w}x{h} too small for a {tx_n}x{ty_n} grid")
        ext = np.pad(src, ((0, pad_y), (0, pad_x)), mode="reflect")
    th, tw = ext.shape[0] // ty_n, ext.shape[1] // tx_n
    area = th * tw
    hist_size = 256

    # histograms: tile index * 256 + value, one bincount
    tiles_v = ext.reshape(ty_n, th, tx_n, tw).transpose(0, 2, 1, 3).reshape(ty_n * tx_n, area)
    keys = tiles_v.astype(np.int64) + (np.arange(ty_n * tx_n, dtype=np.int64) * hist_size)[:, None]
    hist = np.bincount(keys.ravel(), minlength=ty_n * tx_n * hist_size).reshape(-1, hist_size)

    if clip_limit > 0.0:
        limit = max(int(clip_limit * area / hist_size), 1)
        clipped = np.maximum(hist - limit, 0).sum(axis=1)
        hist = np.minimum(hist, limit)
        batch = clipped // hist_size
        residual = clipped - batch * hist_size
        hist += batch[:, None]
        step = np.maximum(hist_size // np.maximum(residual, 1), 1)
        bins = np.arange(hist_size)
        extra = (bins[None, :] % step[:, None] == 0) & (bins[None, :] // step[:, None] < residual[:, None])
        hist += extra

    lut_scale = np.float32(hist_size - 1) / np.float32(area)
    cdf = np.cumsum(hist, axis=1).astype(np.float32)
    lut = np.clip(np.rint(cdf * lut_scale), 0, 255).astype(np.float32).reshape(ty_n, tx_n, hist_size)

    def axis_weights(n: int, size: int, count: int):
        inv = np.float32(1.0) / np.float32(size)
        f = np.arange(n, dtype=np.float32) * inv - np.float32(0.5)
        t1 = np.floor(f).astype(np.int64)
        a = (f - t1.astype(np.float32)).astype(np.float32)
        a1 = (np.float32(1.0) - a).astype(np.float32)
        return np.maximum(t1, 0), np.minimum(t1 + 1, count - 1), a, a1

    tx1, tx2, xa, xa1 = axis_weights(w, tw, tx_n)
    ty1, ty2, ya, ya1 = axis_weights(h, th, ty_n)
    v = src.astype(np.intp)
    l11 = lut[ty1[:, None], tx1[None, :], v]
    l12 = lut[ty1[:, None], tx2[None, :], v]
    l21 = lut[ty2[:, None], tx1[None, :], v]
    l22 = lut[ty2[:, None], tx2[None, :], v]
    res = (l11 * xa1 + l12 * xa) * ya1[:, None] + (l21 * xa1 + l22 * xa) * ya[:, None]
    return np.clip(np.rint(res), 0, 255).astype(np.uint8)
