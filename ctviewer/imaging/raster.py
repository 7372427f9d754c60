"""PNG/JPEG slices: already windowed grey images."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image

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
            img = bgr_to_grey(img)
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


#: OpenCV's BGR -> grey weights (Rec. 601 luma) in its 15-bit fixed point (OpenCV 5: the three
#: sum to 2**15), so a colour slice gets the grey levels it had when OpenCV decoded it; found
#: and checked on all 2**24 colours (tests/test_raster_decode.py).
_B2Y, _G2Y, _R2Y, _Y_SHIFT = 3735, 19235, 9798, 15


def bgr_to_grey(img: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)`` of an (H, W, 3) uint8 array, bit for bit:
    (B*3735 + G*19235 + R*9798 + 2**14) >> 15.  uint16 input (which Pillow never delivers: it
    reads 48-bit PNGs as 8-bit RGB) gets the same formula, which matched OpenCV on random samples."""
    acc = (img[:, :, 0].astype(np.int64) * _B2Y + img[:, :, 1].astype(np.int64) * _G2Y
           + img[:, :, 2].astype(np.int64) * _R2Y + (1 << (_Y_SHIFT - 1))) >> _Y_SHIFT
    return acc.astype(img.dtype)


def decode_raster(data: bytes) -> np.ndarray:
    """Decode PNG or JPEG bytes with Pillow into what ``to_grey8`` takes: 2-D grey (uint8, or
    uint16 for 16-bit grey PNGs), or (H, W, 3) BGR / (H, W, 4) BGRA uint8 - the layout
    OpenCV's ``imdecode(IMREAD_UNCHANGED)`` gave, so every caller sees the same arrays.

    Only Pillow's PNG and JPEG decoders are used.  The dimensions are read from the header
    and checked against ``MAX_PIXELS_PER_FRAME`` before any pixel is decoded (a decompression
    bomb is refused, whatever the format).  Raises ValueError with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as im:
                w, h = im.size
                if w * h > MAX_PIXELS_PER_FRAME:
                    raise _TooLarge(f"image is too large ({w}x{h} pixels)")
                im.load()
                return _pillow_array(im)
    except _TooLarge:
        raise
    except Image.DecompressionBombError:  # Pillow's own header check, before ours could run
        raise _TooLarge("image is too large (a decompression bomb)") from None
    except Exception:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        raise ValueError("the image is damaged or truncated and cannot be decoded") from None


class _TooLarge(ValueError):
    pass


def _pillow_array(im: "Image.Image") -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":  # 16-bit grey PNGs may arrive as 32-bit integers
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))
    if mode == "LA":
        la = np.asarray(im)
        return np.ascontiguousarray(la[:, :, [0, 0, 0, 1]])
    if mode == "CMYK":
        # OpenCV's CMYK -> BGR (icvCvt_CMYK2BGR_8u_C4C3R) on libjpeg's values, which Pillow
        # hands over inverted (its "CMYK;I" raw mode)
        raw = 255 - np.asarray(im).astype(np.int32)
        k = raw[:, :, 3]
        bgr = [k - (((255 - raw[:, :, i]) * k) >> 8) for i in (2, 1, 0)]
        return np.ascontiguousarray(np.dstack(bgr).astype(np.uint8))
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode not in ("RGB", "RGBA"):
        im = im.convert("RGB")  # YCbCr, ...
    a = np.asarray(im)
    order = [2, 1, 0, 3] if a.shape[2] == 4 else [2, 1, 0]
    return np.ascontiguousarray(a[:, :, order])


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
    # decode_raster reads the dimensions from the header and refuses a bomb before decoding
    try:
        grey = to_grey8(decode_raster(data))
    except ValueError as exc:
        raise ImagingError(path, str(exc)) from None
    if grey.shape[0] < 16 or grey.shape[1] < 16:
        raise ImagingError(path, f"image is too small to be a CT slice ({grey.shape[1]}x{grey.shape[0]})")
    return Slice(pixels=grey, path=path, is_hu=False, modality="OT")
