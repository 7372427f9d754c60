"""Synthetic chest-like slices for tests that must not depend on real data."""

from __future__ import annotations

import cv2
import numpy as np


def chest_hu(size: int = 256, lesion: bool = False, seed: int = 0) -> np.ndarray:
    """A full field of view in HU: air, a soft-tissue body on a table, two lungs.

    ``lesion`` adds ground-glass blobs (about -300 HU) in the lungs.
    """
    rng = np.random.default_rng(seed)
    img = np.full((size, size), -1000.0, np.float32)
    c = size // 2
    cv2.ellipse(img, (c, c), (int(size * 0.42), int(size * 0.30)), 0, 0, 360, 40.0, -1)  # body
    cv2.rectangle(img, (int(size * 0.1), int(size * 0.86)), (int(size * 0.9), int(size * 0.9)), 200.0, -1)  # table
    for dx in (-1, 1):
        cv2.ellipse(img, (c + dx * int(size * 0.18), c), (int(size * 0.14), int(size * 0.22)), 0, 0, 360, -850.0, -1)
    if lesion:
        for _ in range(4):
            dx = rng.choice([-1, 1])
            x = c + dx * int(size * 0.18) + int(rng.integers(-size // 20, size // 20))
            y = c + int(rng.integers(-size // 8, size // 8))
            cv2.circle(img, (x, y), int(size * 0.04), -300.0, -1)
    img += rng.normal(0, 15, img.shape).astype(np.float32)
    return img


def lung_mask(size: int = 256) -> np.ndarray:
    """Where ``chest_hu(size)`` drew the lungs."""
    m = np.zeros((size, size), np.uint8)
    c = size // 2
    for dx in (-1, 1):
        cv2.ellipse(m, (c + dx * int(size * 0.18), c), (int(size * 0.14), int(size * 0.22)), 0, 0, 360, 1, -1)
    return m.astype(bool)


def chest_png8(width: int = 300, height: int = 220, lesion: bool = False, seed: int = 0) -> np.ndarray:
    """A lung-windowed crop like the dataset's PNGs (lungs fill the frame)."""
    from ctviewer.imaging.window import apply_window

    hu = chest_hu(512, lesion=lesion, seed=seed)
    ys, xs = np.nonzero(lung_mask(512))
    y0, y1 = ys.min() - 15, ys.max() + 15
    x0, x1 = xs.min() - 15, xs.max() + 15
    crop = apply_window(hu[y0:y1, x0:x1], -600, 1500)
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def diseased_lungs(hu: np.ndarray, lungs: np.ndarray, consolidation: float, seed: int = 0) -> np.ndarray:
    """``hu`` with the pixels of ``lungs`` (bool mask) replaced by COVID-like disease, in HU:
    the dependent (posterior, lower rows) ``consolidation`` share of the lung becomes
    consolidation (0..50 HU), the rest ground glass (-700..-300 HU, smoothly varying), both with
    noise of 25 HU.  ``consolidation=1.0``: every lung pixel consolidated (a "white lung")."""
    rng = np.random.default_rng(seed)
    out = hu.astype(np.float32).copy()
    if not lungs.any():
        return out
    field = cv2.GaussianBlur(rng.random(hu.shape).astype(np.float32), (0, 0), 12)
    rows = np.linspace(0, 1, hu.shape[0], dtype=np.float32)[:, None]
    score = field / max(float(field.std()), 1e-6) * 0.5 + rows * 3
    cons = lungs & (score >= np.quantile(score[lungs], 1 - consolidation)) if consolidation > 0 else np.zeros_like(lungs)
    ggo = lungs & ~cons
    out[cons] = rng.uniform(0, 50) + rng.normal(0, 25, int(cons.sum()))
    level = cv2.GaussianBlur(rng.random(hu.shape).astype(np.float32), (0, 0), 8)
    level = (level - level.min()) / (float(np.ptp(level)) + 1e-6)
    out[ggo] = -700 + 400 * level[ggo] + rng.normal(0, 25, int(ggo.sum()))
    return out


def lung_pixels(s) -> np.ndarray:
    """Full-resolution mask of the lungs of a healthy HU slice: pixels under -400 HU inside the
    lung region that ``verdict.lung_mask`` finds (airways included)."""
    from ctviewer.imaging.preprocess import PreprocessParams, display8
    from ctviewer.studies.verdict import lung_mask

    lung, _ = lung_mask(img8 := display8(s, PreprocessParams()))
    from ctviewer.imaging.preprocess import content_box

    x0, y0, x1, y1 = content_box(img8)
    full = np.zeros(s.shape, np.uint8)
    full[y0:y1, x0:x1] = cv2.resize(lung.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return full.astype(bool) & (s.pixels < -400)
