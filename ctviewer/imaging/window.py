"""Windowing: Hounsfield units -> 8-bit grey levels."""

from __future__ import annotations

import numpy as np

# (center, width) in HU, the usual chest presets.
PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (500.0, 2000.0),
}


def apply_window(hu: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Map values linearly so that ``center ± width/2`` spans 0..255; clip outside.

    A plain linear ramp (DICOM's LINEAR_EXACT): the model's window is a model-card
    parameter, so it must be exactly reproducible.
    """
    if not width > 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    # In place on one float32 buffer: the same arithmetic as (hu - low) * k, clip, rint,
    # without three temporary 512x512 arrays (it runs for every slice of a batch).
    buf = np.subtract(np.asarray(hu, dtype=np.float32), np.float32(low), dtype=np.float32)
    np.multiply(buf, np.float32(255.0 / width), out=buf)
    np.clip(buf, 0.0, 255.0, out=buf)
    np.rint(buf, out=buf)
    out = buf.astype(np.uint8)
    if invert:
        out = 255 - out
    return out


def jet_rgb(values: np.ndarray) -> np.ndarray:
    """The jet colour map (blue - cyan - yellow - red) of uint8 values as (..., 3) uint8 RGB:
    each channel a clipped triangle, ``1.5 - |4x - c|`` with c = 3, 2, 1 for red, green, blue
    (MATLAB's jet; within one level of OpenCV's COLORMAP_JET).  Display only."""
    x = np.asarray(values, np.float32) / 255.0
    rgb = np.stack([1.5 - np.abs(4.0 * x - c) for c in (3.0, 2.0, 1.0)], axis=-1)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
