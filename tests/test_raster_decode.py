"""PNG/JPEG decoding with Pillow (issue 24: the app has no OpenCV) gives what OpenCV's
``imdecode(IMREAD_UNCHANGED)`` gave through ``to_grey8``, refuses bombs from the header, and
reports damaged files by name."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ctviewer.imaging import ImagingError
from ctviewer.imaging.raster import decode_raster, read_raster, to_grey8

cv2 = pytest.importorskip("cv2")


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _cv2_grey(data: bytes) -> np.ndarray:
    return to_grey8(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))


def _variants() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    colour = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    pal = Image.fromarray(grey).convert("P")
    pal_t = pal.copy()
    pal_t.info["transparency"] = 0
    jpg = io.BytesIO()
    Image.fromarray(colour).convert("CMYK").save(jpg, format="JPEG")
    grey_jpg = io.BytesIO()
    Image.fromarray(grey).save(grey_jpg, format="JPEG", quality=90)
    return {
        "grey": _png(Image.fromarray(grey)),
        "grey16": _png(Image.fromarray((grey.astype(np.uint16) * 257 + 3))),
        "rgb": _png(Image.fromarray(colour)),
        "rgba": _png(Image.fromarray(np.dstack([colour, alpha]))),
        "la": _png(Image.fromarray(np.dstack([grey, alpha]), "LA")),
        "palette": _png(pal),
        "palette+transparency": _png(pal_t, transparency=0),
        "1-bit": _png(Image.fromarray(grey > 128)),
        "cmyk.jpg": jpg.getvalue(),
        "grey.jpg": grey_jpg.getvalue(),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_pillow_decodes_like_opencv(name):
    data = _variants()[name]
    assert np.array_equal(to_grey8(decode_raster(data)), _cv2_grey(data)), name


def test_bgr_to_grey_is_opencvs():
    from ctviewer.imaging.raster import bgr_to_grey

    v = np.arange(256, dtype=np.uint8)
    every = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(4096, 4096, 3)  # all 2**24 colours
    assert np.array_equal(bgr_to_grey(every), cv2.cvtColor(every, cv2.COLOR_BGR2GRAY))


def test_a_jpeg_that_claims_huge_dimensions_is_refused_before_decoding(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(ImagingError, match="too large"):
        read_raster(path)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9])
def test_truncated_files_are_reported_by_name(tmp_path, cut):
    for name, data in (("t.png", _variants()["grey"]), ("t.jpg", _variants()["grey.jpg"])):
        path = tmp_path / name
        path.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(ImagingError) as err:
            read_raster(path)
        assert str(err.value).startswith(name) and "damaged or truncated" in str(err.value)
