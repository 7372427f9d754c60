"""Parity of ``ctviewer.imaging.morphology`` (pure NumPy) with the OpenCV calls it replaces.

OpenCV is no longer an application dependency but stays available to the tests,
which compare every function against real ``cv2``, bit-exactly.  Connected
components are also checked as a partition (equal up to a relabelling), and the
optional raster-order numbering is checked on its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctviewer.imaging import morphology as M

cv2 = pytest.importorskip("cv2")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

SHAPES = [(1, 1), (1, 37), (41, 1), (3, 3), (2, 5), (100, 73), (256, 256), (512, 512)]
DENSITIES = [0.0, 0.02, 0.3, 0.7, 0.98, 1.0]
K3 = np.ones((3, 3), np.uint8)


def _masks(seed: int, shapes=SHAPES, densities=DENSITIES):
    rng = np.random.default_rng(seed)
    for shape in shapes:
        for d in densities:
            yield (rng.random(shape) < d).astype(np.uint8)


def _blobby(seed: int, shape=(256, 256), n=12) -> np.ndarray:
    """A mask of overlapping filled ellipses and rings: holes, nesting, specks."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros(shape, bool)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(3, h / 4), rng.uniform(3, w / 4)
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        if rng.random() < 0.5:
            m ^= r < 1
        else:
            m |= (r < 1) & (r > rng.uniform(0.3, 0.8))
    m |= rng.random(shape) < 0.003
    return m.astype(np.uint8)


def _cv_fill_holes(m: np.ndarray) -> np.ndarray:
    h, w = m.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = m
    flood = pad.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    return (pad | (1 - flood))[1:-1, 1:-1]


def _cv_otsu(img: np.ndarray) -> float:
    return cv2.threshold(img, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0]


def _assert_same_partition(ours: np.ndarray, ref: np.ndarray) -> None:
    """The two label images are equal up to a bijection between their label sets."""
    assert ours.shape == ref.shape
    a, b = ours.ravel().astype(np.int64), ref.ravel().astype(np.int64)
    if a.size == 0:
        return
    mapping = np.full(int(a.max()) + 1, -1, np.int64)
    mapping[a] = b  # any pixel of each of our labels
    assert (mapping[a] == b).all(), "one of our components spans several cv2 labels"
    used = mapping[mapping >= 0]
    assert np.unique(used).size == used.size, "two of our components share one cv2 label"
    assert (mapping[0] == 0) if (a == 0).any() else True, "background must map to background"
    assert np.unique(b).size == used.size


def _assert_raster_order(labels: np.ndarray, n: int) -> None:
    """Labels 1..n-1 all used, numbered by the raster position of their first pixel."""
    flat = labels.ravel()
    assert flat.size == 0 or (flat.min() >= 0 and flat.max() == n - 1)
    first = np.full(n, flat.size, np.int64)
    np.minimum.at(first, flat, np.arange(flat.size))
    assert (first[1:] < flat.size).all(), "every label 1..n-1 must be used"
    assert (np.diff(first[1:]) > 0).all(), "labels must follow raster order of first pixels"


def _real_slices(max_png: int = 4, max_jpg: int = 3) -> list[tuple[str, np.ndarray]]:
    found = []
    covid = SHARED / "sarscov2-dev" / "COVID"
    mosmed = SHARED / "foreign-dev" / "mosmed"
    paths = sorted(covid.glob("*.png"))[:max_png] if covid.is_dir() else []
    paths += sorted(mosmed.rglob("*.jpg"))[:max_jpg] if mosmed.is_dir() else []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is not None and img.ndim == 2:
            found.append((p.name, img))
    return found


# --------------------------------------------------------------------------- ellipse kernel


@pytest.mark.parametrize("n", range(1, 82))
def test_ellipse_kernel_matches_cv2(n):
    ref = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (n, n))
    ours = M.ellipse_kernel(n)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, ref)


# --------------------------------------------------------------------------- Otsu


def test_otsu_random_images_match_cv2():
    rng = np.random.default_rng(11)
    for t in range(400):
        shape = tuple(int(v) for v in rng.integers(1, 70, 2))
        kind = t % 5
        if kind == 0:
            img = rng.integers(0, 256, shape)
        elif kind == 1:  # few distinct levels: ties between candidate thresholds
            img = rng.choice(rng.integers(0, 256, rng.integers(1, 5)), shape)
        elif kind == 2:  # narrow unimodal
            img = np.clip(rng.normal(rng.uniform(0, 255), rng.uniform(0, 20), shape), 0, 255)
        elif kind == 3:  # bimodal, like a chest slice
            a = rng.normal(rng.uniform(0, 80), 10, shape)
            b = rng.normal(rng.uniform(120, 255), 15, shape)
            img = np.clip(np.where(rng.random(shape) < rng.uniform(0.1, 0.9), a, b), 0, 255)
        else:  # a single pixel of another value: weights near FLT_EPSILON only at huge sizes
            img = np.full(shape, rng.integers(0, 256))
            img.flat[rng.integers(0, img.size)] = rng.integers(0, 256)
        img = img.astype(np.uint8)
        assert M.otsu_threshold(img) == _cv_otsu(img), (t, shape)


def test_otsu_symmetric_ties_and_columns_match_cv2():
    rng = np.random.default_rng(12)
    for lo, hi in [(0, 255), (10, 20), (100, 101), (0, 1), (254, 255)]:
        img = np.array([[lo, hi]] * 8, np.uint8)
        assert M.otsu_threshold(img) == _cv_otsu(img)
    for _ in range(50):  # the app thresholds an (N, 1) column of hull pixels
        col = rng.integers(0, 256, (int(rng.integers(1, 5000)), 1)).astype(np.uint8)
        assert M.otsu_threshold(col) == _cv_otsu(col)
    img = rng.integers(0, 256, (512, 512)).astype(np.uint8)
    assert M.otsu_threshold(img) == _cv_otsu(img)
    view = img[::3, 1::2]  # non-contiguous input
    assert M.otsu_threshold(view) == _cv_otsu(np.ascontiguousarray(view))


@pytest.mark.parametrize("value", [0, 1, 77, 254, 255])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (64, 64)])
def test_otsu_constant_images_match_cv2(value, shape):
    img = np.full(shape, value, np.uint8)
    assert M.otsu_threshold(img) == _cv_otsu(img) == 0.0


def test_otsu_empty_and_type():
    assert M.otsu_threshold(np.zeros((0, 0), np.uint8)) == _cv_otsu(np.zeros((0, 0), np.uint8)) == 0.0
    assert isinstance(M.otsu_threshold(np.zeros((2, 2), np.uint8)), float)
    with pytest.raises(TypeError):
        M.otsu_threshold(np.zeros((2, 2), np.float32))


# --------------------------------------------------------------------------- erode / dilate / opening


def _check_morph(m: np.ndarray, k: np.ndarray) -> None:
    np.testing.assert_array_equal(M.erode(m, k), cv2.erode(m, k))
    np.testing.assert_array_equal(M.dilate(m, k), cv2.dilate(m, k))
    np.testing.assert_array_equal(M.opening(m, k), cv2.morphologyEx(m, cv2.MORPH_OPEN, k))


def test_morphology_3x3_random_masks_match_cv2():
    for m in _masks(21):
        _check_morph(m, K3)
        assert M.dilate(m, K3).dtype == np.uint8


@pytest.mark.parametrize("n", range(3, 63, 2))
def test_morphology_ellipse_kernels_match_cv2(n):
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (n, n))
    for m in _masks(100 + n, shapes=[(1, 1), (1, 40), (40, 1), (3, 3), (100, 73)], densities=[0.02, 0.5, 0.97]):
        _check_morph(m, k)
    _check_morph(_blobby(n, (100, 73), n=6), k)


def test_morphology_512_masks_match_cv2():
    k25 = M.ellipse_kernel(25)
    for seed, m in enumerate([_blobby(3, (512, 512)), *_masks(22, shapes=[(512, 512)], densities=[0.01, 0.5, 0.99])]):
        np.testing.assert_array_equal(M.dilate(m, k25), cv2.dilate(m, k25), err_msg=str(seed))
        np.testing.assert_array_equal(M.erode(m, k25), cv2.erode(m, k25), err_msg=str(seed))
        np.testing.assert_array_equal(M.opening(m, K3), cv2.morphologyEx(m, cv2.MORPH_OPEN, K3))


def test_morphology_asymmetric_kernels_and_grey_images_match_cv2():
    """OpenCV correlates (no kernel reflection) with the anchor at (kw//2, kh//2)."""
    rng = np.random.default_rng(23)
    for _ in range(40):
        k = (rng.random(tuple(int(v) for v in rng.integers(1, 8, 2))) < 0.5).astype(np.uint8)
        k.flat[rng.integers(0, k.size)] = 1
        shape = tuple(int(v) for v in rng.integers(1, 50, 2))
        _check_morph((rng.random(shape) < 0.5).astype(np.uint8), k)
        _check_morph(rng.integers(0, 256, shape).astype(np.uint8), k)  # any uint8 image is exact too
    m = (rng.random((30, 30)) < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(M.erode(m, None), cv2.erode(m, None))
    np.testing.assert_array_equal(M.dilate(m, np.ones((1, 1), np.uint8)), m)


def test_morphology_keeps_input_unchanged():
    m = _blobby(4, (64, 64))
    before = m.copy()
    M.opening(m, M.ellipse_kernel(7))
    np.testing.assert_array_equal(m, before)


# --------------------------------------------------------------------------- connected components


def _check_cc(m: np.ndarray, connectivity: int) -> None:
    n_ref, ref = cv2.connectedComponents(m, connectivity=connectivity)
    n, labels = M.connected_components(m, connectivity)
    assert labels.dtype == np.int32 and labels.shape == m.shape
    assert n == n_ref
    _assert_same_partition(labels, ref)
    np.testing.assert_array_equal(labels, ref)  # cv2's own numbering, bit for bit
    n_r, raster = M.connected_components(m, connectivity, order="raster")
    assert n_r == n_ref
    _assert_same_partition(raster, ref)
    _assert_raster_order(raster, n_r)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_random_masks_match_cv2(connectivity):
    shapes = [(1, 1), (1, 37), (41, 1), (3, 3), (2, 5), (100, 73), (256, 256), (512, 512)]
    for m in _masks(31 + connectivity, shapes=shapes, densities=[0.0, 0.05, 0.4, 0.6, 0.95, 1.0]):
        _check_cc(m, connectivity)
    rng = np.random.default_rng(30 + connectivity)
    for _ in range(30):  # odd sizes: partial 2x2 blocks on the last row and column
        shape = tuple(int(v) for v in rng.integers(1, 90, 2))
        _check_cc((rng.random(shape) < rng.uniform(0.05, 0.95)).astype(np.uint8), connectivity)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_shapes_match_cv2(connectivity):
    h = w = 128
    serpentine = np.zeros((h, w), np.uint8)
    serpentine[::2] = 1
    for r in range(1, h, 2):
        serpentine[r, w - 1 if (r // 2) % 2 == 0 else 0] = 1
    checker = (np.add.outer(np.arange(h), np.arange(w)) % 2 == 0).astype(np.uint8)
    diagonal = np.eye(h, w, dtype=np.uint8) | np.eye(h, w, 2, dtype=np.uint8)[::-1]
    comb = np.zeros((h, w), np.uint8)
    comb[:, ::2] = 1
    comb[-1] = 1
    cases = [serpentine, checker, diagonal, comb, _blobby(5, (256, 256)), _blobby(6, (1024, 1024), n=30)]
    for m in cases:
        _check_cc(m, connectivity)


def test_connected_components_numbering():
    m = np.array(
        [
            [0, 0, 0, 1, 0, 0, 1],
            [1, 0, 0, 1, 0, 0, 0],
            [1, 0, 1, 1, 0, 1, 0],
            [0, 0, 0, 0, 0, 0, 1],
        ],
        np.uint8,
    )
    raster = np.array(
        [
            [0, 0, 0, 1, 0, 0, 2],
            [3, 0, 0, 1, 0, 0, 0],
            [3, 0, 1, 1, 0, 4, 0],
            [0, 0, 0, 0, 0, 0, 4],
        ],
        np.int32,
    )
    n, labels = M.connected_components(m, 8, order="raster")
    assert n == 5
    np.testing.assert_array_equal(labels, raster)
    # cv2 (8-conn) numbers by first 2x2 block: the component at (1, 0) shares block (0, 0)
    n, labels = M.connected_components(m, 8)
    expected = np.choose(raster, [0, 2, 3, 1, 4]).astype(np.int32)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(labels, cv2.connectedComponents(m, connectivity=8)[1])
    n4, labels4 = M.connected_components(m, 4)
    assert n4 == 6 and labels4[3, 6] == 5 and labels4[2, 5] == 4
    np.testing.assert_array_equal(labels4, cv2.connectedComponents(m, connectivity=4)[1])


def test_connected_components_accepts_bool_and_other_values():
    rng = np.random.default_rng(33)
    m = rng.random((60, 50)) < 0.4
    grey = (m * rng.integers(1, 256, m.shape)).astype(np.uint8)
    n_ref, ref = cv2.connectedComponents(m.view(np.uint8), connectivity=8)
    for x in (m, grey):
        n, labels = M.connected_components(x)
        assert n == n_ref
        _assert_same_partition(labels, ref)
    with pytest.raises(ValueError):
        M.connected_components(m.view(np.uint8), 6)
    with pytest.raises(ValueError):
        M.connected_components(m.view(np.uint8), 8, order="columns")


# --------------------------------------------------------------------------- fill holes


def test_fill_holes_matches_floodfill_reference():
    for m in _masks(41, densities=[0.0, 0.1, 0.45, 0.55, 0.9, 1.0]):
        np.testing.assert_array_equal(M.fill_holes(m), _cv_fill_holes(m))
    for seed in range(6):
        m = _blobby(50 + seed, (256, 256) if seed % 2 else (100, 73))
        out = M.fill_holes(m)
        np.testing.assert_array_equal(out, _cv_fill_holes(m))
        assert out.dtype == np.uint8


def test_fill_holes_rings_and_diagonal_leaks():
    m = np.zeros((9, 9), np.uint8)
    m[1:8, 1] = m[1:8, 7] = m[1, 1:8] = m[7, 1:8] = 1  # a closed ring: its inside is a hole
    m[3:6, 3:6] = 1
    m[4, 4] = 0  # a hole inside an island inside the hole
    out = M.fill_holes(m)
    np.testing.assert_array_equal(out, _cv_fill_holes(m))
    assert out[1:8, 1:8].all() and out[0].sum() == 0
    d = np.zeros((6, 6), np.uint8)  # a diagonal wall does not hold back a 4-connected fill... of zeros
    d[[1, 2, 3, 2], [2, 1, 2, 3]] = 1  # diamond: centre (2, 2) is 4-enclosed
    np.testing.assert_array_equal(M.fill_holes(d), _cv_fill_holes(d))
    assert M.fill_holes(d)[2, 2] == 1
    b = m.astype(bool)
    np.testing.assert_array_equal(M.fill_holes(b), _cv_fill_holes(m))


# --------------------------------------------------------------------------- median blur


def test_median_blur5_matches_cv2():
    rng = np.random.default_rng(61)
    shapes = [(1, 1), (1, 2), (2, 1), (1, 37), (41, 1), (2, 2), (3, 3), (4, 7), (5, 5), (100, 73), (256, 256)]
    for shape in shapes:
        for img in (
            rng.integers(0, 256, shape),
            rng.choice([0, 255], shape),
            np.clip(rng.normal(128, 30, shape), 0, 255),
            np.full(shape, 9),
        ):
            img = img.astype(np.uint8)
            out = M.median_blur5(img)
            assert out.dtype == np.uint8
            np.testing.assert_array_equal(out, cv2.medianBlur(img, 5), err_msg=str(shape))
    with pytest.raises(TypeError):
        M.median_blur5(np.zeros((5, 5), np.float32))


# --------------------------------------------------------------------------- bounding rect


def test_bounding_rect_matches_cv2():
    rng = np.random.default_rng(71)
    for m in _masks(72, densities=[0.0, 0.0005, 0.01, 0.5, 1.0]):
        assert M.bounding_rect(m) == tuple(cv2.boundingRect(m))
    for _ in range(100):
        h, w = (int(v) for v in rng.integers(1, 60, 2))
        m = np.zeros((h, w), bool)
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        m[y : y + int(rng.integers(1, 10)), x : x + int(rng.integers(1, 10))] = True
        assert M.bounding_rect(m) == tuple(cv2.boundingRect(m.view(np.uint8)))
        assert M.bounding_rect(m.view(np.uint8)) == M.bounding_rect(m)
    assert M.bounding_rect(np.zeros((5, 5), np.uint8)) == (0, 0, 0, 0)
    assert all(isinstance(v, int) for v in M.bounding_rect(np.ones((3, 4), np.uint8)))


# --------------------------------------------------------------------------- real slices


@pytest.mark.shared_data
def test_real_slices_pipeline_matches_cv2():
    slices = _real_slices()
    if not slices:
        pytest.skip(f"shared data not available at {SHARED}")
    k25 = M.ellipse_kernel(25)
    for name, img in slices:
        t = M.otsu_threshold(img)
        assert t == _cv_otsu(img), name
        bright = (img > t).astype(np.uint8)
        opened = M.opening(bright, K3)
        np.testing.assert_array_equal(opened, cv2.morphologyEx(bright, cv2.MORPH_OPEN, K3), err_msg=name)
        for mask in (opened, (1 - opened).astype(np.uint8)):
            _check_cc(mask, 8)
            np.testing.assert_array_equal(M.fill_holes(mask), _cv_fill_holes(mask), err_msg=name)
            np.testing.assert_array_equal(M.dilate(mask, k25), cv2.dilate(mask, k25), err_msg=name)
            np.testing.assert_array_equal(M.erode(mask, K3), cv2.erode(mask, K3), err_msg=name)
            assert M.bounding_rect(mask) == tuple(cv2.boundingRect(mask)), name
        # second Otsu on a column of pixels, as the app does inside the chest hull
        col = img[opened == 1].reshape(-1, 1)
        assert M.otsu_threshold(col) == _cv_otsu(col), name
        small = np.ascontiguousarray(img[:256, :256])
        np.testing.assert_array_equal(M.median_blur5(small), cv2.medianBlur(small, 5), err_msg=name)
