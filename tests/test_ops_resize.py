"""ctviewer.imaging.resize against the real cv2.resize, pixel for pixel.

resize_area / resize_nearest must be bit-exact (uint8); resize_linear must agree to 1e-5
(float32) and, in the mode matching the installed cv2 (IPP on or off), bit for bit.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from ctviewer.imaging import resize as rz  # noqa: E402
from ctviewer.imaging.resize import resize_area, resize_linear, resize_nearest  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# (source (w, h), target (w, h)) pairs, grouped by the OpenCV path they take.
AREA_FAST = [
    ((512, 512), (256, 256)),  # 2x2: (a+b+c+d+2) >> 2
    ((512, 512), (128, 128)),  # 4x4
    ((1024, 1024), (256, 256)),
    ((510, 330), (170, 110)),  # 3x3
    ((640, 480), (80, 60)),  # 8x8
    ((400, 300), (200, 300)),  # 2x1
    ((90, 300), (90, 100)),  # 1x3
    ((256, 240), (128, 40)),  # 2x6
    ((8, 8), (1, 1)),
    ((6, 4), (3, 2)),
]
AREA_GENERAL = [
    ((512, 512), (80, 80)),
    ((400, 350), (256, 256)),
    ((1024, 1024), (200, 200)),
    ((300, 280), (80, 80)),
    ((511, 509), (255, 254)),
    ((345, 287), (128, 128)),
    ((1000, 600), (333, 200)),
    ((37, 411), (20, 80)),
    ((13, 9), (5, 7)),
    ((7, 8), (1, 1)),
    ((8, 5), (3, 1)),
    ((5, 1), (2, 1)),
    ((1, 7), (1, 3)),
]
AREA_ENLARGE = [
    ((80, 80), (256, 256)),
    ((128, 128), (512, 512)),
    ((100, 77), (300, 231)),
    ((37, 41), (411, 90)),
    ((3, 3), (80, 80)),
    ((1, 1), (5, 7)),
    ((1, 5), (4, 9)),
    ((8, 8), (13, 8)),
]
AREA_MIXED = [  # one axis shrinks, the other grows
    ((200, 60), (256, 256)),
    ((60, 200), (256, 128)),
    ((512, 100), (80, 256)),
    ((7, 2), (3, 5)),
    ((300, 8), (1, 40)),
]


def _u8(rng, w, h):
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def _assert_same(ours, ref):
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    n = int(np.count_nonzero(ours != ref))
    assert n == 0, f"{n} of {ref.size} pixels differ, max {np.abs(ours.astype(float) - ref).max()}"


@pytest.mark.parametrize("src,dst", AREA_FAST + AREA_GENERAL + AREA_ENLARGE + AREA_MIXED)
def test_area_matches_cv2(src, dst):
    rng = np.random.default_rng(sum(src) * 1000 + sum(dst))
    img = _u8(rng, *src)
    _assert_same(resize_area(img, dst), cv2.resize(img, dst, interpolation=cv2.INTER_AREA))


def test_area_random_sizes():
    rng = np.random.default_rng(20240601)
    for _ in range(120):
        sw, sh = (int(v) for v in rng.integers(1, 400, 2))
        kind = rng.integers(0, 4)
        if kind == 0:  # the app's proportional shrink
            f = rng.uniform(0.05, 1.0)
            dw, dh = max(1, round(sw * f)), max(1, round(sh * f))
        elif kind == 1:  # integer factors
            kx, ky = (int(v) for v in rng.integers(1, 6, 2))
            dw, dh = max(1, sw // kx), max(1, sh // ky)
            sw, sh = dw * kx, dh * ky
        else:  # anything, enlarging and mixed included
            dw, dh = (int(v) for v in rng.integers(1, 520, 2))
        img = _u8(rng, sw, sh)
        ref = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA)
        assert np.array_equal(resize_area(img, (dw, dh)), ref), ((sw, sh), (dw, dh))


def test_area_extremes_and_same_size():
    rng = np.random.default_rng(3)
    for img in (np.zeros((50, 70), np.uint8), np.full((50, 70), 255, np.uint8), _u8(rng, 70, 50)):
        for dst in ((70, 50), (23, 17), (35, 25), (140, 100), (1, 1), (70, 1), (1, 50)):
            _assert_same(resize_area(img, dst), cv2.resize(img, dst, interpolation=cv2.INTER_AREA))
    same = resize_area(img, (70, 50))
    assert same is not img and np.array_equal(same, img)
    # a non-contiguous view
    view = _u8(rng, 300, 200)[10:190:, 5:295]
    _assert_same(resize_area(view, (128, 128)), cv2.resize(view, (128, 128), interpolation=cv2.INTER_AREA))


def _area_tab_loop(ssize, dsize, scale):
    """The scalar ``computeResizeAreaTab`` port that ``rz._area_tab`` replaced (the reference
    for the vectorised table: same indices, same float32 weights, same padding)."""
    entries = []
    for dx in range(dsize):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell_width = min(scale, ssize - fsx1)
        sx1 = math.ceil(fsx1)
        sx2 = math.floor(fsx2)
        sx2 = min(sx2, ssize - 1)
        sx1 = min(sx1, sx2)
        row = []
        if sx1 - fsx1 > 1e-3:
            row.append((sx1 - 1, (sx1 - fsx1) / cell_width))
        for sx in range(sx1, sx2):
            row.append((sx, 1.0 / cell_width))
        if fsx2 - sx2 > 1e-3:
            row.append((sx2, min(min(fsx2 - sx2, 1.0), cell_width) / cell_width))
        entries.append(row)
    k = max(len(r) for r in entries)
    idx = np.zeros((dsize, k), dtype=np.intp)
    wgt = np.zeros((dsize, k), dtype=np.float32)
    for dx, row in enumerate(entries):
        for j, (si, a) in enumerate(row):
            idx[dx, j] = si
            wgt[dx, j] = a
    return idx, wgt


def _area_tab_pairs():
    pairs = [(s, d) for s in range(1, 65) for d in range(1, s + 1)]  # every shrink up to 64
    rng = np.random.default_rng(77)
    for _ in range(1500):  # the app's range: a PNG or crop box to 80..512, and odd ratios
        s = int(rng.integers(2, 1100))
        pairs.append((s, int(rng.integers(1, s + 1))))
    for s in (236, 343, 400, 518, 512, 1024):
        pairs += [(s, d) for d in (80, 128, 198, 200, 256) if d <= s]
    return pairs


def test_area_tab_matches_scalar_loop():
    vec = rz._area_tab.__wrapped__  # bypass the cache
    pairs = _area_tab_pairs()
    assert len(pairs) > 3000
    for ssize, dsize in pairs:
        scale = 1.0 / (dsize / ssize)  # as cv::hal::resize computes it
        ref_i, ref_w = _area_tab_loop(ssize, dsize, scale)
        idx, wgt = vec(ssize, dsize, scale)
        assert idx.dtype == np.intp and wgt.dtype == np.float32, (ssize, dsize)
        assert idx.shape == ref_i.shape and np.array_equal(idx, ref_i), (ssize, dsize)
        assert np.array_equal(wgt.view(np.uint32), ref_w.view(np.uint32)), (ssize, dsize)
    # scales below 1 never reach the table in resize_area, but the port agrees there too
    rng = np.random.default_rng(78)
    for _ in range(200):
        ssize = int(rng.integers(1, 300))
        dsize = int(rng.integers(ssize, 900))
        scale = 1.0 / (dsize / ssize)
        ref_i, ref_w = _area_tab_loop(ssize, dsize, scale)
        idx, wgt = vec(ssize, dsize, scale)
        assert np.array_equal(idx, ref_i) and np.array_equal(wgt.view(np.uint32), ref_w.view(np.uint32))


NEAREST = [
    ((128, 128), (400, 380)),
    ((512, 512), (80, 80)),
    ((80, 80), (37, 411)),
    ((3, 3), (512, 512)),
    ((7, 11), (13, 4)),
    ((1, 1), (5, 3)),
    ((9, 1), (1, 1)),
    ((100, 100), (250, 250)),  # 5:2 up (OpenCV has rational-up fast paths for other pixel sizes)
    ((100, 100), (130, 130)),
    ((100, 100), (240, 240)),
]


@pytest.mark.parametrize("src,dst", NEAREST)
def test_nearest_matches_cv2(src, dst):
    rng = np.random.default_rng(sum(src) + 7 * sum(dst))
    img = _u8(rng, *src)
    _assert_same(resize_nearest(img, dst), cv2.resize(img, dst, interpolation=cv2.INTER_NEAREST))
    mask = img > 127
    ref = cv2.resize(mask.view(np.uint8), dst, interpolation=cv2.INTER_NEAREST).astype(bool)
    out = resize_nearest(mask, dst)
    assert out.dtype == bool and np.array_equal(out, ref)


def test_nearest_random_sizes():
    rng = np.random.default_rng(11)
    for _ in range(150):
        sw, sh, dw, dh = (int(v) for v in rng.integers(1, 300, 4))
        img = _u8(rng, sw, sh)
        ref = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(resize_nearest(img, (dw, dh)), ref), ((sw, sh), (dw, dh))


LINEAR = [
    ((3, 3), (512, 512)),  # Grad-CAM grid to a slice
    ((3, 3), (37, 411)),
    ((80, 80), (512, 512)),
    ((80, 80), (411, 37)),
    ((128, 128), (512, 512)),  # probability map to a box
    ((128, 128), (300, 260)),
    ((128, 128), (90, 70)),  # shrinking
    ((128, 128), (64, 64)),  # 2x2: OpenCV's INTER_AREA fast path
    ((130, 90), (65, 45)),
    ((512, 512), (80, 80)),
    ((1024, 1024), (341, 341)),
    ((640, 480), (1920, 240)),
    ((1, 1), (7, 5)),
    ((1, 9), (4, 4)),
    ((9, 1), (20, 3)),
    ((2, 2), (5, 1)),
]


def _linear_ref(img, dst, use_ipp):
    old = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(use_ipp)
    try:
        return cv2.resize(img, dst, interpolation=cv2.INTER_LINEAR)
    finally:
        cv2.ipp.setUseIPP(old)


@pytest.mark.parametrize("src,dst", LINEAR)
def test_linear_matches_cv2(src, dst):
    rng = np.random.default_rng(sum(src) * 31 + sum(dst))
    img = rng.random((src[1], src[0]), dtype=np.float32)
    ref = cv2.resize(img, dst, interpolation=cv2.INTER_LINEAR)
    out = resize_linear(img, dst)
    assert out.dtype == np.float32 and out.shape == ref.shape
    if max(src) <= 128:  # the app's maps: within 1e-5 whichever implementation cv2 runs
        assert np.allclose(out, ref, rtol=0, atol=1e-5)
    # bit for bit in the mode the installed cv2 runs, and in each mode against cv2 forced to it
    assert np.array_equal(resize_linear(img, dst, ipp=cv2.ipp.useIPP()), ref)
    assert np.array_equal(resize_linear(img, dst, ipp=False), _linear_ref(img, dst, False))
    if cv2.ipp.useIPP():
        assert np.array_equal(out, ref)


def test_linear_random_sizes_and_float64():
    rng = np.random.default_rng(5)
    ipp = cv2.ipp.useIPP()
    for _ in range(80):
        sw, sh, dw, dh = (int(v) for v in rng.integers(1, 260, 4))
        img = rng.random((sh, sw), dtype=np.float32)
        ref = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(resize_linear(img, (dw, dh), ipp=ipp), ref), ((sw, sh), (dw, dh))
    for src, dst in LINEAR[:8]:
        img = rng.random((src[1], src[0]))  # float64
        ref = cv2.resize(img, dst, interpolation=cv2.INTER_LINEAR)
        out = resize_linear(img, dst)
        assert out.dtype == np.float64 and np.allclose(out, ref, rtol=0, atol=1e-6)


def test_linear_smooth_map_modes_agree():
    # A sigmoid-like probability map: the two OpenCV implementations agree far inside 1e-5.
    y, x = np.mgrid[0:128, 0:128].astype(np.float32)
    prob = (1 / (1 + np.exp(-((x - 60) ** 2 + (y - 70) ** 2 - 900) / -200.0))).astype(np.float32)
    for dst in ((411, 37), (300, 260), (90, 70), (512, 512)):
        a, b = resize_linear(prob, dst), resize_linear(prob, dst, ipp=False)
        assert np.abs(a - b).max() <= 1e-6
        assert np.allclose(a, cv2.resize(prob, dst, interpolation=cv2.INTER_LINEAR), rtol=0, atol=1e-5)


def _real_slices():
    if not DATA.is_dir():
        return []
    pngs = sorted((DATA / "sarscov2-dev" / "COVID").glob("*.png"))[:3]
    jpgs = sorted((DATA / "foreign-dev" / "mosmed").rglob("*.jpg"))[:3]
    return pngs + jpgs


def test_real_slices():
    paths = _real_slices()
    if not paths:
        pytest.skip(f"no real slices under {DATA}")
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert img is not None, path
        h, w = img.shape
        targets = [(80, 80), (128, 128), (256, 256), (512, 512), (w // 2, h // 2), (w // 4, h // 4)]
        targets += [(max(1, round(w * f)), max(1, round(h * f))) for f in (0.37, 0.61, 0.9)]
        targets += [(w * 2, h * 2), (w + 7, max(1, h - 5)), (w * 3 // 2, h // 3)]
        fimg = img.astype(np.float32) / 255
        for dst in targets:
            _assert_same(resize_area(img, dst), cv2.resize(img, dst, interpolation=cv2.INTER_AREA))
            _assert_same(resize_nearest(img, dst), cv2.resize(img, dst, interpolation=cv2.INTER_NEAREST))
            ref = cv2.resize(fimg, dst, interpolation=cv2.INTER_LINEAR)
            assert np.array_equal(resize_linear(fimg, dst, ipp=cv2.ipp.useIPP()), ref), (path.name, dst)


def test_bad_input():
    img = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError):
        resize_area(np.zeros((4, 4, 3), np.uint8), (2, 2))
    with pytest.raises(ValueError):
        resize_area(img, (0, 5))
    with pytest.raises(ValueError):
        resize_nearest(np.zeros((0, 5), np.uint8), (2, 2))
    with pytest.raises(TypeError):
        resize_area(img.astype(np.float32), (5, 5))
    with pytest.raises(TypeError):
        resize_linear(img, (5, 5))


def test_module_uses_numpy_and_stdlib_only():
    tree = ast.parse(Path(rz.__file__).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    assert names <= {"__future__", "math", "sys", "functools", "numpy"}, names
