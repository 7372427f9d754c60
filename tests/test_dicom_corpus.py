"""The shared DICOM corpus (``../shared/data/dicom/MANIFEST.tsv``) as the expected result.

Rules derived from the manifest:

- A file "decoded there" when ``pydicom_decode`` says ``yes`` (also "yes after
  setting TransferSyntaxUID ..."): it must load, with as many slices as frames,
  each of the decoded shape; its pixels must be ``raw * slope + intercept``
  with the manifest's rescale values (or pydicom's modality LUT), and for
  lossless syntaxes ``raw`` must hash to ``pixel_sha256_16`` (the first 16 hex
  digits of sha256 over ``ds.pixel_array.tobytes()``).
- Deliberate exceptions: colour objects (RGB, YBR, PALETTE COLOR) are refused
  as "colour image" and segmentations/parametric maps as "not an image", even
  though pydicom decodes them: they are not CT slices.
- Every other file (malformed, non-image, undecodable, DICOMDIR) gets an
  ``ImagingError`` with a reason, and no other exception type.
- Documentation files are not candidates of a folder walk.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from ctviewer.imaging import ImagingError, is_candidate, load_slices
from ctviewer.imaging.dicom import _guess_syntax

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DICOM = SHARED / "dicom"
MANIFEST = DICOM / "MANIFEST.tsv"
NOT_CT = ("Segmentation Storage", "Parametric Map Storage")
LOSSY = ("JPEG Baseline", "JPEG Extended", "JPEG-LS Lossy", "JPEG 2000 Image Compression",
         "High-Throughput JPEG 2000 Image Compression")
LOSSLESS_ONLY = "(Lossless Only)"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not MANIFEST.is_file(), reason=f"shared data not available at {DICOM}"),
    pytest.mark.filterwarnings("ignore"),
]


def _rows() -> list[dict]:
    if not MANIFEST.is_file():
        return []
    with open(MANIFEST, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


ROWS = _rows()


def decoded(row: dict) -> bool:
    return row["pydicom_decode"].startswith("yes") or "; yes after" in row["pydicom_decode"]


def colour(row: dict) -> bool:
    return row["samples_per_pixel"] not in ("", "1") or row["photometric_interpretation"] not in (
        "MONOCHROME1", "MONOCHROME2")


def expected(row: dict) -> str:
    """'skip', 'load', 'colour', 'not-image' or 'refuse'."""
    if row["kind"].startswith("non-dicom"):
        return "skip"
    if not decoded(row):
        return "refuse"
    if colour(row):
        return "colour"
    if row["sop_class"] in NOT_CT:
        return "not-image"
    return "load"


def lossless(row: dict) -> bool:
    name = row["transfer_syntax_name"]
    return LOSSLESS_ONLY in name or not name.startswith(LOSSY)


def _number(text: str, default: float) -> float:
    return float(text.split()[0]) if text.strip() else default


def _raw_pixels(path: Path) -> tuple[np.ndarray, pydicom.Dataset]:
    """An independent decode with pydicom (transfer syntax fixed as the manifest did)."""
    ds = pydicom.dcmread(path, force=True)
    if not getattr(ds, "file_meta", None) or not ds.file_meta.get("TransferSyntaxUID", "") \
            or not pydicom.uid.UID(ds.file_meta.TransferSyntaxUID).is_transfer_syntax:
        ds.file_meta = ds.get("file_meta") or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = _guess_syntax(ds)
    return ds.pixel_array, ds


def _ids(rows):
    return [r["path"] for r in rows]


LOADS = [r for r in ROWS if expected(r) == "load"]
REFUSALS = [r for r in ROWS if expected(r) in ("refuse", "colour", "not-image")]


def test_manifest_rules_cover_the_corpus():
    kinds = [expected(r) for r in ROWS]
    assert kinds.count("load") > 250 and kinds.count("skip") == 5
    assert all((DICOM / r["path"]).exists() for r in ROWS)


@pytest.mark.parametrize("row", LOADS, ids=_ids(LOADS))
def test_decodable_file_loads_with_the_right_pixels(row):
    path = DICOM / row["path"]
    slices = load_slices(path)
    shape = tuple(int(v) for v in row["decoded_shape"].split("x"))
    frames, size = (shape[0], shape[1:]) if len(shape) == 3 else (1, shape)
    assert len(slices) == frames
    assert [s.frame for s in slices] == (list(range(frames)) if frames > 1 else [None])
    assert all(s.shape == size and s.is_hu and s.pixels.dtype == np.float32 for s in slices)
    assert all(s.invert == (row["photometric_interpretation"] == "MONOCHROME1") for s in slices)

    raw, ds = _raw_pixels(path)
    raw = raw.reshape(frames, *size)
    if lossless(row):
        assert hashlib.sha256(raw.tobytes()).hexdigest()[:16] == row["pixel_sha256_16"]
    if row["modality_lut_sequence"] == "yes":
        hu = apply_modality_lut(raw, ds)
    else:
        hu = raw * _number(row["rescale_slope"], 1.0) + _number(row["rescale_intercept"], 0.0)
    for s, frame in zip(slices, hu):
        np.testing.assert_allclose(s.pixels, frame, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("row", REFUSALS, ids=_ids(REFUSALS))
def test_other_files_are_refused_with_a_reason(row):
    path = DICOM / row["path"]
    with pytest.raises(ImagingError) as info:
        load_slices(path)
    err = info.value
    assert err.reason and str(err).startswith(os.path.basename(row["path"]) + ": ")
    assert "Traceback" not in err.reason and "pydicom" not in err.reason
    if expected(row) == "colour":
        assert err.reason.startswith("colour image")
    elif expected(row) == "not-image" or row["kind"] == "DICOMDIR":
        assert err.reason.startswith("not an image")


def test_documentation_is_not_a_candidate():
    docs = [r for r in ROWS if expected(r) == "skip"]
    assert docs and not any(is_candidate(DICOM / r["path"]) for r in docs)
    assert all(is_candidate(DICOM / r["path"]) for r in ROWS if expected(r) == "load")


def test_segmentation_in_a_new_syntax_is_refused_as_segmentation():
    """The what-is-it refusal comes before the can-we-decode-it one."""
    with pytest.raises(ImagingError) as info:
        load_slices(DICOM / "pydicom-data/data_store/data/liver_deflate.dcm")
    assert info.value.reason == "not an image: segmentation"


def test_whole_corpus_is_fast_and_never_raises_anything_else():
    start, slowest = time.perf_counter(), (0.0, "")
    for row in ROWS:
        if expected(row) == "skip":
            continue
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                load_slices(DICOM / row["path"])
            except ImagingError:
                pass
        slowest = max(slowest, (time.perf_counter() - t, row["path"]))
    assert time.perf_counter() - start < 30
    assert slowest[0] < 2.0, slowest
