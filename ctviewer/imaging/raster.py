"""PNG/JPEG slices: already windowed grey images."""

from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import ImagingError
from .limits import MAX_FILE_BYTES, MAX_PIXELS_PER_FRAME
from .slice import Slice

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


def looks_like_raster(head: bytes) -> bool:
    """True when the first bytes are a PNG or JPEG signature."""
    return head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC)


def to_grey8(image: np.ndarray) -> np.ndarray:
    """Any decoded PNG/JPEG array (grey, BGR, BGRA; 8 or 16 bit) -> 2-D uint8.

    Colour files whose channels are equal (the usual export of a grey CT
    slice) keep exactly their grey values; true colour content is converted
    to luminance.  Alpha is composited over black, so an opaque RGBA file
    equals its grey twin.  16-bit files are scaled to 8 bit (v / 257).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    alpha = None
    if img.ndim == 3:
        if img.shape[2] == 4:
            alpha = img[:, :, 3]
            img = img[:, :, :3]
        elif img.shape[2] != 3:
            raise ValueError(f"unsupported number of channels: {img.shape[2]}")
        b, g, r = img[:, :, 0], img[:, :, 1], img[:, :, 2]
        if np.array_equal(b, g) and np.array_equal(g, r):
            img = b
        else:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)
    if img.ndim != 2:
        raise ValueError(f"unsupported image shape {image.shape}")
    if img.dtype == np.uint16:
        grey = np.rint(img.astype(np.float32) / 257.0).astype(np.uint8)
        if alpha is not None:
            alpha = np.rint(alpha.astype(np.float32) / 257.0).astype(np.uint8)
    elif img.dtype == np.uint8:
        grey = img
    else:
        raise ValueError(f"unsupported pixel type {img.dtype}")
    if alpha is not None and not np.all(alpha == 255):
        grey = np.rint(grey.astype(np.float32) * (alpha.astype(np.float32) / 255.0)).astype(np.uint8)
    return np.ascontiguousarray(grey)


def read_raster(path: str | os.PathLike) -> Slice:
    """Read a PNG or JPEG file as one already windowed slice."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ImagingError(path, f"file is too large ({size / 2**20:.0f} MB)")
        with open(path, "rb") as fh:
            data = fh.read()
    except ImagingError:
        raise
    except OSError as exc:
        raise ImagingError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if not looks_like_raster(data[:8]):
        raise ImagingError(path, "not a PNG or JPEG image")
    buf = np.frombuffer(data, dtype=np.uint8)
    # Read the header dimensions before decoding, to refuse decompression bombs.
    dims = _png_dims(data)
    if dims is not None and dims[0] * dims[1] > MAX_PIXELS_PER_FRAME:
        raise ImagingError(path, f"image is too large ({dims[0]}x{dims[1]} pixels)")
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImagingError(path, "the image is damaged or truncated and cannot be decoded")
    try:
        grey = to_grey8(image)
    except ValueError as exc:
        raise ImagingError(path, str(exc)) from None
    if grey.shape[0] < 16 or grey.shape[1] < 16:
        raise ImagingError(path, f"image is too small to be a CT slice ({grey.shape[1]}x{grey.shape[0]})")
    return Slice(pixels=grey, path=path, is_hu=False, modality="OT")


def _png_dims(data: bytes) -> tuple[int, int] | None:
    if data.startswith(_PNG_MAGIC) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None
