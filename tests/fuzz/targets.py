"""Fuzz targets (issue 22): each takes the fuzzer's bytes and feeds them to the code that meets
hostile input, the way the application does.  A target returns when the input was read or
refused clearly (the project's own refusals: ``ImagingError`` for a file, ``PacsError`` for a
server, a refusal recorded in a ``GetResult``); any other exception is a finding.

- ``dicom_reader``: ``imaging.io.load_slices`` on the bytes as a file (what opening a file does);
- ``raster_pipeline``: the same, then the model's input and the gate for each slice (what
  classifying it does), with the chest crop and with the lung-only input: since issue 24 PNG and
  JPEG are decoded by Pillow and every image operation is the project's own NumPy code, so a
  hostile image reaches our code, not OpenCV's; seeded with PNG/JPEG of every mode;
- ``series_scanner``: ``studies.scan`` on a folder holding the bytes as a DICOMDIR and as a
  slice (what opening a folder does); it never raises, it lists refusals;
- ``pacs_replies``: the first byte picks the reply: a QIDO search answer, a study listing, a
  WADO-RS multipart series (through ``DicomWebNode``, ``_bounded`` and dicomweb-client's decoder,
  with a fake transport instead of a socket), or a DIMSE C-STORE data set received during C-GET
  (``client.received_c_store`` with pynetdicom's decoder) in one of four transfer syntaxes.

``python -m tests.fuzz TARGET`` runs one under atheris (coverage-guided); ``./dev.sh fuzz``
runs all three for a bounded time; ``tests/test_fuzz_regressions.py`` replays the kept findings.
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path

TARGETS = ("dicom_reader", "series_scanner", "pacs_replies", "raster_pipeline")


def _opened(data: bytes) -> list:
    """The slices ``load_slices`` reads from the bytes as a file ([] when it refuses them)."""
    from ctviewer.imaging.errors import ImagingError
    from ctviewer.imaging.io import load_slices

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "slice.dcm"
        path.write_bytes(data)
        try:
            slices = load_slices(str(path))
        except ImagingError:
            return []
    for s in slices:
        assert s.pixels is not None and s.pixels.ndim == 2, "a slice without a 2-D image"
    return slices


def dicom_reader(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _opened(data)


def raster_pipeline(data: bytes) -> None:
    import numpy as np

    from ctviewer.imaging.preprocess import PreprocessParams, model_input_and_box
    from ctviewer.studies.batch import gated_input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in _opened(data)[:1]:
            for params in (PreprocessParams(), PreprocessParams(input="lungs", raster_intensity="landmarks")):
                x, box = model_input_and_box(s, params)
                assert x.shape == (params.size, params.size, 3) and np.isfinite(x).all(), "a bad model input"
                x0, y0, x1, y1 = box
                assert 0 <= x0 < x1 <= s.shape[1] and 0 <= y0 < y1 <= s.shape[0], f"crop box {box} outside {s.shape}"
                gated_input(s, params)


def series_scanner(data: bytes) -> None:
    from ctviewer.studies import scan

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (Path(d) / "DICOMDIR").write_bytes(data)
        (Path(d) / "series").mkdir()
        (Path(d) / "series" / "IM0001").write_bytes(data)
        patients, errors = scan([d])
        for e in errors:
            assert e.reason, "a refusal without a reason"


# --- PACS replies ------------------------------------------------------------------------------

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
LISTING = json.dumps([{"0020000E": {"vr": "UI", "Value": [SERIES]},
                       "00080018": {"vr": "UI", "Value": [f"{SERIES}.{k}"]}} for k in (1, 2)]).encode()
_NODE = {}


def _node():
    """One DicomWebNode whose transport answers from ``_NODE['reply']`` instead of a socket."""
    if "node" not in _NODE:
        import requests
        from requests.structures import CaseInsensitiveDict

        from ctviewer.pacs import DicomWebNode

        node = DicomWebNode("http://127.0.0.1:9/dicom-web", timeout=5)
        node.max_instance_bytes = 1 << 20

        def transport(method, url, **kw):
            body, content_type = _NODE["reply"](url)
            r = requests.models.Response()
            r.status_code, r.url, r.encoding = 200, url, None
            r.headers = CaseInsensitiveDict({"Content-Type": content_type})
            r.raw = io.BytesIO(body)
            return r

        node._orig_request = transport
        _NODE["node"] = node
    return _NODE["node"]


def pacs_replies(data: bytes) -> None:
    from ctviewer.pacs import PacsError

    if not data:
        return
    kind, body = data[0] % 4, data[1:]
    if kind == 3:
        return _dimse_store(data[1:2], data[2:])
    node = _node()
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if kind == 0:
                _NODE["reply"] = lambda url: (body, "application/dicom+json")
                node.find()
            elif kind == 1:
                _NODE["reply"] = lambda url: (body, "application/dicom+json")
                node.instances(STUDY)
            else:  # the listing is well formed; the series' multipart answer is the fuzzer's
                boundary = "FUZZB"
                _NODE["reply"] = lambda url: ((body, f'multipart/related; type="application/dicom"; boundary={boundary}')
                                              if "/series/" in url else (LISTING, "application/dicom+json"))
                result = node.get(STUDY, Path(d) / "study")
                assert result.received + len(result.refused) <= 2 or result.refused, "more kept than listed"
        except PacsError:
            return


def _dimse_store(selector: bytes, body: bytes) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                             ImplicitVRLittleEndian)
    from pynetdicom.dsutils import decode

    from ctviewer.pacs.client import GetResult, received_c_store

    ts = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
          ExplicitVRBigEndian)[(selector or b"\0")[0] % 4]
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ts
    result = GetResult(STUDY, expected=1)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = received_c_store(io.BytesIO(body), ts, f"{SERIES}.1",
                                  lambda: decode(io.BytesIO(body), ts.is_implicit_VR, ts.is_little_endian,
                                                 ts.is_deflated),
                                  lambda: meta, 1 << 20, Path(d), set(), {f"{SERIES}.1"}, result)
        assert status in (0x0000, 0xA700, 0xC210)
