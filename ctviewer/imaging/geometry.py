"""Boxes over slices (numpy only): shared by the preprocessing and the lung segmenter."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def content_box(img8: np.ndarray, tolerance: int = 2) -> Box:
    """The image without uniform borders (padding, frames): rows and columns at
    the edges whose grey levels vary by at most ``tolerance`` are stripped."""
    h, w = img8.shape
    rows = (img8.max(axis=1).astype(np.int16) - img8.min(axis=1)) > tolerance
    cols = (img8.max(axis=0).astype(np.int16) - img8.min(axis=0)) > tolerance
    if not rows.any() or not cols.any():
        return (0, 0, w, h)
    y = np.flatnonzero(rows)
    x = np.flatnonzero(cols)
    return (int(x[0]), int(y[0]), int(x[-1]) + 1, int(y[-1]) + 1)
