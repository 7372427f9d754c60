"""``ctviewer.imaging.polygons`` against OpenCV, pixel for pixel.

The NumPy ports replace cv2.findContours (as a hull input), cv2.convexHull,
cv2.fillConvexPoly and CLAHE in the app; OpenCV stays a test dependency to check them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctviewer.imaging.polygons import clahe, convex_hull, fill_convex_poly, outline_points

cv2 = pytest.importorskip("cv2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cv_fill(shape, hull, value=1):
    img = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(img, np.asarray(hull, np.int32).reshape(-1, 1, 2), value)
    return img


def vertex_set(h):
    return sorted(map(tuple, np.asarray(h).reshape(-1, 2).tolist()))


def assert_same_fill(shape, cv_hull, ours_hull, context=""):
    ref = cv_fill(shape, cv_hull)
    got = fill_convex_poly(shape, cv_hull)
    diff = np.argwhere(ref != got)
    assert diff.size == 0, f"{context}: fill of cv2's hull differs at {diff[:5].tolist()} ({len(diff)} px)"
    got2 = fill_convex_poly(shape, ours_hull)
    diff = np.argwhere(ref != got2)
    assert diff.size == 0, f"{context}: fill of our hull differs at {diff[:5].tolist()} ({len(diff)} px)"


def random_blob_mask(rng, h, w):
    m = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        c = (int(rng.integers(-w // 8, w + w // 8)), int(rng.integers(-h // 8, h + h // 8)))
        ax = (int(rng.integers(1, max(2, w // 2))), int(rng.integers(1, max(2, h // 2))))
        cv2.ellipse(m, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    if rng.random() < 0.5:  # ragged edges
        m &= (rng.random((h, w)) > 0.2).astype(np.uint8) | cv2.erode(m, np.ones((5, 5), np.uint8))
    return m


# ----------------------------------------------------------------------------- outline


def test_outline_points_have_the_hull_and_box_of_the_mask():
    rng = np.random.default_rng(10)
    for _ in range(100):
        h, w = (int(s) for s in rng.integers(1, 200, 2))
        m = random_blob_mask(rng, h, w) if rng.random() < 0.7 else (rng.random((h, w)) < 0.01).astype(np.uint8)
        pts = outline_points(m)
        assert pts.dtype == np.int32 and pts.shape[1] == 2
        if not m.any():
            assert pts.shape == (0, 2)
            continue
        assert m[pts[:, 1], pts[:, 0]].all()
        assert cv2.boundingRect(pts) == cv2.boundingRect(m)
        every = cv2.findNonZero(m)
        assert vertex_set(convex_hull(pts)) == vertex_set(cv2.convexHull(every))


def test_outline_points_of_an_empty_or_single_pixel_mask():
    assert outline_points(np.zeros((4, 5), np.uint8)).shape == (0, 2)
    m = np.zeros((4, 5), np.uint8)
    m[2, 3] = 1
    assert outline_points(m).tolist() == [[3, 2]]


# ----------------------------------------------------------------------------- hull


def test_convex_hull_matches_cv2_on_random_point_sets():
    rng = np.random.default_rng(11)
    for t in range(1500):
        n = int(rng.integers(1, 40))
        span = int(rng.choice([3, 8, 50, 600]))
        pts = rng.integers(-span // 4, span, (n, 2)).astype(np.int32)
        if t % 3 == 0:
            pts = np.unique(pts, axis=0)
            rng.shuffle(pts)
        for cw in (False, True):
            ref = cv2.convexHull(pts, clockwise=cw).reshape(-1, 2)
            got = convex_hull(pts, clockwise=cw)
            assert got.dtype == np.int32
            if len(np.unique(pts, axis=0)) == len(pts):
                # without repeated points: the same array, order and first vertex included
                np.testing.assert_array_equal(got, ref, err_msg=str(pts.tolist()))
            else:
                # repeated points: cv2's unstable sort may start the cycle elsewhere
                assert len(got) == len(ref) and any(
                    np.array_equal(np.roll(got, -k, axis=0), ref) for k in range(len(got))
                ), (pts.tolist(), ref.tolist(), got.tolist())


def test_convex_hull_drops_collinear_and_repeated_points_like_cv2():
    square_with_edge_points = np.array([[0, 0], [2, 0], [4, 0], [4, 2], [4, 4], [2, 4], [0, 4], [0, 2], [2, 2]], np.int32)
    got = convex_hull(square_with_edge_points)
    assert vertex_set(got) == [(0, 0), (0, 4), (4, 0), (4, 4)]
    np.testing.assert_array_equal(got, cv2.convexHull(square_with_edge_points).reshape(-1, 2))
    line = np.array([[0, 0], [3, 3], [1, 1], [2, 2], [3, 3]], np.int32)
    assert vertex_set(convex_hull(line)) == vertex_set(cv2.convexHull(line)) == [(0, 0), (3, 3)]
    same = np.array([[5, 7]] * 4, np.int32)
    assert convex_hull(same).tolist() == [[5, 7]]
    assert convex_hull(np.zeros((0, 2), np.int32)).shape == (0, 2)


def test_convex_hull_of_many_pixels_matches_cv2():
    rng = np.random.default_rng(12)
    for _ in range(40):
        h, w = (int(s) for s in rng.integers(20, 300, 2))
        m = random_blob_mask(rng, h, w)
        if not m.any():
            continue
        pts = cv2.findNonZero(m)
        rng.shuffle(pts)
        ref = cv2.convexHull(pts).reshape(-1, 2)
        got = convex_hull(pts)
        np.testing.assert_array_equal(got, ref)


# ----------------------------------------------------------------------------- fill


def test_fill_matches_cv2_on_random_point_sets():
    rng = np.random.default_rng(13)
    for t in range(2000):
        h, w = (int(s) for s in rng.integers(1, 70, 2))
        n = int(rng.integers(1, 30))
        kind = t % 4
        if kind == 0:  # inside the image
            pts = np.stack([rng.integers(0, w, n), rng.integers(0, h, n)], 1)
        elif kind == 1:  # a coarse lattice: collinear, repeated, degenerate hulls
            pts = rng.integers(0, 4, (n, 2)) * int(rng.integers(1, 8))
            pts = np.minimum(pts, [w - 1, h - 1])
        elif kind == 2:  # touching and crossing the border
            pts = np.stack([rng.integers(-15, w + 15, n), rng.integers(-15, h + 15, n)], 1)
            pts = np.clip(pts, [0, 0], [w - 1, h - 1]) if t % 8 == 2 else pts
        else:  # thin: near-horizontal or near-vertical slivers
            a = rng.integers(0, max(w, h), n)
            b = rng.integers(0, 3, n)
            pts = np.stack([a, b], 1) if t % 8 == 3 else np.stack([b, a], 1)
        pts = pts.astype(np.int32)
        assert_same_fill((h, w), cv2.convexHull(pts), convex_hull(pts), f"case {t} {(h, w)} {pts.tolist()}")


def test_fill_of_random_blob_hulls_matches_cv2_up_to_512():
    rng = np.random.default_rng(14)
    for t in range(300):
        h, w = (int(s) for s in rng.integers(8, 513, 2))
        m = random_blob_mask(rng, h, w)
        if not m.any():
            continue
        contour = np.vstack(cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0])
        ref_hull = cv2.convexHull(contour)
        ours = convex_hull(outline_points(m))
        assert vertex_set(ours) == vertex_set(ref_hull)
        assert_same_fill((h, w), ref_hull, ours, f"blob {t} {(h, w)}")


@pytest.mark.parametrize(
    "shape, vertices",
    [
        ((10, 10), [[4, 5]]),  # one point
        ((10, 10), [[0, 0]]),
        ((10, 10), [[9, 9]]),
        ((10, 10), [[2, 3], [7, 5]]),  # two points
        ((10, 10), [[1, 4], [8, 4]]),  # horizontal segment
        ((10, 10), [[6, 0], [6, 9]]),  # vertical segment, border to border
        ((10, 10), [[0, 0], [9, 0], [9, 9], [0, 9]]),  # the whole image
        ((10, 12), [[0, 0], [11, 9], [0, 9]]),  # touching three borders
        ((10, 10), [[-5, -5], [20, 3], [4, 30]]),  # clipped on every side
        ((10, 10), [[-5, 2], [-1, 8], [-3, 9]]),  # entirely left of the image
        ((10, 10), [[2, 12], [8, 15], [5, 20]]),  # entirely below the image
        ((7, 9), [[4, -3], [8, 3], [4, 9], [0, 3]]),  # a diamond larger than the image
        ((1, 1), [[0, 0], [0, 0], [0, 0]]),
        ((1, 8), [[0, 0], [7, 0], [3, 0]]),
    ],
)
def test_fill_degenerate_and_clipped_polygons(shape, vertices):
    v = np.array(vertices, np.int32)
    np.testing.assert_array_equal(fill_convex_poly(shape, v), cv_fill(shape, v))
    np.testing.assert_array_equal(fill_convex_poly(shape, v, 255), cv_fill(shape, v, 255))


def test_fill_rejects_no_vertices():
    with pytest.raises(ValueError):
        fill_convex_poly((4, 4), np.zeros((0, 2), np.int32))


# ----------------------------------------------------------------------------- fill: vectorised vs the per-edge reference

# The per-edge reference shares the module's line helpers (C division, clipLine, the LINE_8 walk),
# which the vectorisation did not change and the cv2 comparisons above pin; what it keeps of its
# own is the per-edge scan that the vectorised spans and outline replaced.
from ctviewer.imaging.polygons import _XY_ONE, _XY_SHIFT  # noqa: E402
from ctviewer.imaging.polygons import _line8 as _ref_line8  # noqa: E402
from ctviewer.imaging.polygons import _trunc_div as _ref_trunc_div  # noqa: E402


def ref_fill_convex_poly(shape: tuple[int, int], vertices: np.ndarray, value: int = 1) -> np.ndarray:
    """The per-edge implementation that ``fill_convex_poly`` replaced (kept as a reference)."""
    h, w = (int(s) for s in shape)
    v = np.asarray(vertices)
    if v.size == 0:
        raise ValueError("fill_convex_poly needs at least one vertex")
    v = v.reshape(-1, 2).astype(np.int64)
    if not 0 <= int(value) <= 255:
        raise ValueError(f"value {value} does not fit uint8")
    vx = v[:, 0].tolist()
    vy = v[:, 1].tolist()
    n = len(vx)
    out = np.zeros((h, w), np.uint8)
    if h <= 0 or w <= 0:
        return out
    value = int(value)

    # --- the spans (FillConvexPoly's scan), as (first row, rows, x0, dx) per walker state
    ymin = min(vy)
    imin = vy.index(ymin)
    ymax, xmin, xmax = max(vy), min(vx), max(vx)
    if n >= 3 and not (xmax < 0 or ymax < 0 or xmin >= w or ymin >= h):
        ymax = min(ymax, h - 1)
        e_idx = [imin, imin]
        e_di = [1, n - 1]
        e_x = [-_XY_ONE, -_XY_ONE]
        e_dx = [0, 0]
        e_ye = [ymin, ymin]
        edges = n
        y = ymin
        row_parts = []
        x0_parts = []
        x1_parts = []
        while True:
            for i in (0, 1):
                if y >= e_ye[i]:
                    idx0 = e_idx[i]
                    di = e_di[i]
                    idx = idx0 + di
                    if idx >= n:
                        idx -= n
                    while True:
                        ok = edges > 0
                        edges -= 1
                        if not ok:
                            break
                        ty = vy[idx]
                        if ty > y:
                            xs = vx[idx0] << _XY_SHIFT
                            xe = vx[idx] << _XY_SHIFT
                            e_ye[i] = ty
                            e_dx[i] = _ref_trunc_div((xe - xs) * 2 + (ty - y), 2 * (ty - y))
                            e_x[i] = xs
                            e_idx[i] = idx
                            break
                        idx0 = idx
                        idx += di
                        if idx >= n:
                            idx -= n
            if edges < 0:
                break
            y_next = min(e_ye[0], e_ye[1], ymax + 1)
            lo = max(y, 0)
            if lo < y_next:
                k = np.arange(lo - y, y_next - y, dtype=np.int64)
                row_parts.append(k + y)
                x0_parts.append(e_x[0] + k * e_dx[0])
                x1_parts.append(e_x[1] + k * e_dx[1])
            e_x[0] += (y_next - y) * e_dx[0]
            e_x[1] += (y_next - y) * e_dx[1]
            y = y_next
            if y > ymax:
                break
        if row_parts:
            rows = np.concatenate(row_parts)
            xa = np.concatenate(x0_parts)
            xb = np.concatenate(x1_parts)
            half = _XY_ONE >> 1
            xx1 = (np.minimum(xa, xb) + half) >> _XY_SHIFT
            xx2 = (np.maximum(xa, xb) + half) >> _XY_SHIFT
            ok = (xx2 >= 0) & (xx1 < w)
            rows, xx1, xx2 = rows[ok], np.maximum(xx1[ok], 0), np.minimum(xx2[ok], w - 1)
            if rows.size:
                r0, r1 = int(rows.min()), int(rows.max()) + 1
                band = np.zeros((r1 - r0, w + 1), np.int8)
                band[rows - r0, xx1] = 1
                band[rows - r0, xx2 + 1] -= 1
                out[r0:r1] = np.cumsum(band[:, :w], axis=1, dtype=np.int8).view(np.uint8) * np.uint8(value)

    # --- the LINE_8 outline, drawn for every edge v[i-1] -> v[i]
    px, py = [], []
    for i in range(n):
        seg = _ref_line8(w, h, vx[i - 1], vy[i - 1], vx[i], vy[i])
        if seg is not None:
            px.append(seg[0])
            py.append(seg[1])
    if px:
        out[np.concatenate(py), np.concatenate(px)] = value
    return out


def test_fill_matches_the_per_edge_reference_for_any_vertex_order():
    # arbitrary vertex lists (not convex, repeated, crossing and outside the image): the
    # vectorised walk and outline must give what the per-edge port gave, pixel for pixel
    rng = np.random.default_rng(17)
    for t in range(1500):
        h, w = (int(s) for s in rng.integers(1, 90, 2))
        n = int(rng.integers(1, 14))
        m = int(rng.choice([0, 3, 40, 400]))
        pts = np.stack([rng.integers(-m, w + m, n), rng.integers(-m, h + m, n)], 1).astype(np.int32)
        value = int(rng.choice([1, 255, 9]))
        np.testing.assert_array_equal(
            fill_convex_poly((h, w), pts, value), ref_fill_convex_poly((h, w), pts, value), err_msg=f"{t} {(h, w)} {pts.tolist()}"
        )


def test_fill_of_random_hulls_matches_cv2_and_the_reference_up_to_512():
    rng = np.random.default_rng(18)
    for t in range(300):
        h, w = (int(s) for s in rng.integers(1, 513, 2))
        n = int(rng.integers(3, 300))
        th = rng.uniform(0, 2 * np.pi, n)
        c = rng.uniform(-0.2, 1.2, 2) * [w, h]
        r = rng.uniform(1, 1.2 * max(w, h), 2)
        pts = np.stack([c[0] + r[0] * np.cos(th), c[1] + r[1] * np.sin(th)], 1).round().astype(np.int32)
        if t % 3 == 0:
            pts = np.clip(pts, 0, [w - 1, h - 1]).astype(np.int32)
        hull = cv2.convexHull(pts)
        got = fill_convex_poly((h, w), hull, 255)
        np.testing.assert_array_equal(got, cv_fill((h, w), hull, 255), err_msg=f"{t} {(h, w)}")
        np.testing.assert_array_equal(got, ref_fill_convex_poly((h, w), hull, 255), err_msg=f"{t} {(h, w)}")


# ----------------------------------------------------------------------------- CLAHE


def _smooth_noise(rng, h, w, sigma):
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (0, 0), sigma)


def test_clahe_matches_cv2_at_the_app_setting():
    rng = np.random.default_rng(15)
    images = [
        rng.integers(0, 256, (256, 256), dtype=np.uint8),
        _smooth_noise(rng, 256, 256, 2),
        _smooth_noise(rng, 256, 256, 8),
        rng.integers(100, 104, (256, 256), dtype=np.uint8),
        np.full((256, 256), 37, np.uint8),
        np.tile(np.arange(256, dtype=np.uint8), (256, 1)),
        np.zeros((256, 256), np.uint8),
        np.full((256, 256), 255, np.uint8),
    ]
    app = cv2.createCLAHE(clipLimit=7.0, tileGridSize=(8, 8))
    for i, img in enumerate(images):
        np.testing.assert_array_equal(clahe(img), app.apply(img), err_msg=f"image {i}")


def test_clahe_matches_cv2_on_random_sizes_grids_and_limits():
    rng = np.random.default_rng(16)
    for t in range(120):
        h, w = (int(s) for s in rng.integers(16, 200, 2))
        tiles = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        limit = float(rng.choice([0.0, 1.0, 2.5, 7.0, 40.0, 300.0]))
        img = _smooth_noise(rng, h, w, float(rng.uniform(0.5, 6))) if t % 2 else rng.integers(0, 256, (h, w), dtype=np.uint8)
        ref = cv2.createCLAHE(clipLimit=limit, tileGridSize=tiles).apply(img)
        np.testing.assert_array_equal(clahe(img, limit, tiles), ref, err_msg=f"{(h, w)} {tiles} {limit}")


def test_clahe_rejects_what_it_does_not_port():
    with pytest.raises(ValueError):
        clahe(np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError):
        clahe(np.zeros((3, 3), np.uint8), tiles=(8, 8))  # padding larger than the image


# ----------------------------------------------------------------------------- real slices


def _real_slices(n_each=12):
    if not SHARED.is_dir():
        pytest.skip(f"shared data not available at {SHARED}")
    pngs = sorted((SHARED / "sarscov2-dev" / "COVID").glob("*.png"))
    jpgs = sorted((SHARED / "foreign-dev" / "mosmed").glob("*/*.jpg"))
    files = pngs[:: max(1, len(pngs) // n_each)][:n_each] + jpgs[:: max(1, len(jpgs) // n_each)][:n_each]
    if not files:
        pytest.skip("no PNG/JPEG slices in the shared data")
    out = []
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is not None:
            out.append((p.name, img))
    return out


@pytest.mark.shared_data
def test_clahe_on_real_slices():
    app = cv2.createCLAHE(clipLimit=7.0, tileGridSize=(8, 8))
    for name, img in _real_slices():
        small = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(clahe(small), app.apply(small), err_msg=name)


@pytest.mark.shared_data
def test_hull_fill_of_the_largest_otsu_blob_on_real_slices():
    for name, img in _real_slices():
        _, bright = cv2.threshold(img, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
        if n <= 1:
            continue
        blob = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
        contour = np.vstack(cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0])
        ref_hull = cv2.convexHull(contour)
        ours = convex_hull(outline_points(blob))
        assert vertex_set(ours) == vertex_set(ref_hull), name
        assert_same_fill(blob.shape, ref_hull, ours, name)
