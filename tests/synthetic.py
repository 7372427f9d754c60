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
