"""Header-only scan of folders, files and DICOMDIRs into a patient → study → series tree.

Decisions:

- Files come from ``imaging.series.iter_files`` (folders walked in sorted
  order, DICOMDIR/DIRFILE expanded, documentation skipped), collected first so
  that ``progress(done, total)`` knows the total.  ``cancelled()`` is asked
  before each file; a cancelled scan returns what it found so far.
- DICOM is read with ``dcmread(force=True, stop_before_pixels=True)`` from an
  open file: pixel data is never read, let alone decoded.  The parser stops
  *at* the Pixel Data tag, so the next four bytes tell whether the object has
  standard pixel data at all (checked except for deflated files, where the
  parser reads from a decompressed copy; the loader refuses those later).
- The refusals reuse the imaging layer's rules and words (``imaging.dicom``):
  file too large (``MAX_FILE_BYTES``, before reading), damaged/truncated, not an
  image (SOP Class, then Modality: SR, RT, PDF, presentation states...), no
  standard pixel data, colour objects, absurd geometry.  Transfer syntaxes are
  not checked here: an undecodable series still shows in the tree and its
  slices are refused, named, when they are loaded.  Every failure is an
  ``ImagingError`` in the returned list; no other exception escapes for a file.
- PNG/JPEG files are recognised by their signature (not decoded) and form one
  pseudo-series per folder, inside a pseudo-study and a pseudo-patient, all
  keyed ``"folder:<absolute folder>"``; the patient's name is the folder name.
- DICOM objects without a Series (Study) Instance UID fall back to the folder
  key like ``series.group_series`` does.  Patient key: Patient ID, else the
  name, else ``"unknown"``; a patient's other fields are the first non-empty
  values seen.  Dates are given as YYYY-MM-DD when they are valid DA values.
- Order is deterministic: patients by key, studies by (date, uid), series by
  (number, uid) with unnumbered series last, files in ``iter_files`` order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ctviewer.imaging.dicom import DAMAGED, NO_PIXELS, check_file_size, check_geometry, non_image_kind, dicom_text
from ctviewer.imaging.errors import ImagingError
from ctviewer.imaging.io import looks_like_dicom, sniff
from ctviewer.imaging.raster import looks_like_raster
from ctviewer.imaging.series import iter_files
from .records import PatientNode, SeriesNode, StudyNode

Progress = Callable[[int, int], None]
Cancelled = Callable[[], bool]

# Header elements the tree needs, plus those the refusals look at.  Reading only
# these (``specific_tags``) skips building the rest of the data set.
_TAGS = [
    "SOPClassUID", "Modality", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyDescription", "AccessionNumber",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "NumberOfFrames",
    "Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PhotometricInterpretation",
    "SOPInstanceUID",
]
_PIXEL_TAGS = {  # first four bytes of the Pixel Data tag (either byte order) -> None, float -> message
    b"\xe0\x7f\x10\x00": None, b"\x7f\xe0\x00\x10": None,
    b"\xe0\x7f\x08\x00": "float", b"\xe0\x7f\x09\x00": "float",
    b"\x7f\xe0\x00\x08": "float", b"\x7f\xe0\x00\x09": "float",
}


def _date(value: str) -> str:
    """A DICOM DA value (YYYYMMDD, or the old YYYY.MM.DD) as YYYY-MM-DD; other text as given."""
    digits = re.sub(r"[.\-/]", "", value.strip())
    if re.fullmatch(r"\d{8}", digits):
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    return value.strip()


def _int(value: object) -> int | None:
    try:
        return int(float(dicom_text(value)))
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass
class _Header:
    """What one file contributes to the tree."""

    path: str
    patient_id: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_uid: str = ""
    study_date: str = ""
    study_description: str = ""
    accession: str = ""
    series_uid: str = ""
    series_number: int | None = None
    modality: str = ""
    series_description: str = ""
    n_frames: int = 1
    key: str = ""  # patient key when not from the header (PNG folders)

    @property
    def patient_key(self) -> str:
        return self.key or self.patient_id or self.patient_name or "unknown"


def _folder_key(path: str) -> str:
    return f"folder:{os.path.dirname(os.path.abspath(path))}"


def _raster_header(path: str) -> _Header:
    folder = os.path.dirname(os.path.abspath(path))
    key = f"folder:{folder}"
    name = os.path.basename(folder) or folder
    return _Header(path, key=key, patient_name=name, study_uid=key, series_uid=key, series_description=name)


def _check_pixel_data(path: str, fp, ds: pydicom.Dataset) -> None:
    """Refuse an object with no standard Pixel Data: the parser stopped right before it, or at EOF."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and dicom_text(meta.get("TransferSyntaxUID")) == DeflatedExplicitVRLittleEndian:
        return  # parsed from a decompressed copy: the loader checks
    kind = _PIXEL_TAGS.get(fp.read(4), "none")
    if kind == "float":
        raise ImagingError(path, "no standard pixel data (floating-point pixel data is not a CT slice)")
    if kind == "none":
        raise ImagingError(path, NO_PIXELS)


def _dicom_header(path: str) -> _Header:
    """Header of one DICOM file, or ``ImagingError`` (the imaging layer's reasons)."""
    check_file_size(path)
    try:
        with open(path, "rb") as fp:
            try:
                ds = pydicom.dcmread(fp, force=True, stop_before_pixels=True, specific_tags=_TAGS)
            except PermissionError:
                raise ImagingError(path, "cannot read the file (permission denied)") from None
            if len(ds) == 0:
                meta = getattr(ds, "file_meta", None)
                raise ImagingError(path, DAMAGED if meta else "not a DICOM image (no data elements)")
            kind = non_image_kind(ds)
            if kind is not None:
                raise ImagingError(path, f"not an image: {kind}")
            _check_pixel_data(path, fp, ds)
        samples = int(ds.get("SamplesPerPixel") or 1)
        photometric = dicom_text(ds.get("PhotometricInterpretation")).upper() or "MONOCHROME2"
        if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise ImagingError(
                path, f"colour image ({photometric}), not a greyscale CT slice (screenshots and exam summaries are not read)"
            )
        _, _, frames = check_geometry(path, ds)
        folder = _folder_key(path)
        return _Header(
            path,
            patient_id=dicom_text(ds.get("PatientID")),
            patient_name=dicom_text(ds.get("PatientName")),
            birth_date=_date(dicom_text(ds.get("PatientBirthDate"))),
            sex=dicom_text(ds.get("PatientSex")),
            study_uid=dicom_text(ds.get("StudyInstanceUID")) or folder,
            study_date=_date(dicom_text(ds.get("StudyDate"))),
            study_description=dicom_text(ds.get("StudyDescription")),
            accession=dicom_text(ds.get("AccessionNumber")),
            series_uid=dicom_text(ds.get("SeriesInstanceUID")) or folder,
            series_number=_int(ds.get("SeriesNumber")),
            modality=dicom_text(ds.get("Modality")),
            series_description=dicom_text(ds.get("SeriesDescription")),
            n_frames=frames,
        )
    except ImagingError:
        raise
    except MemoryError:
        raise ImagingError(path, "too large to load into memory") from None
    except FileNotFoundError:
        raise ImagingError(path, "file not found") from None
    except Exception:  # hostile input: any parser failure is a damaged file
        raise ImagingError(path, DAMAGED) from None


def scan_file(path: str) -> _Header:
    """Sniff one file and read its header (never its pixels); ``ImagingError`` when refused."""
    head = sniff(path)
    if looks_like_raster(head):
        check_file_size(path)
        return _raster_header(path)
    if looks_like_dicom(head):
        return _dicom_header(path)
    raise ImagingError(path, "not a DICOM or PNG/JPEG image")


@dataclass
class _Acc:
    """Mutable accumulators while scanning (frozen nodes are built at the end)."""

    first: _Header
    files: list[str] = field(default_factory=list)
    frames: int = 0


def build_tree(headers: Iterable[_Header]) -> list[PatientNode]:
    """Group headers into the sorted patient → study → series tree."""
    patients: dict[str, dict] = {}
    for h in headers:
        p = patients.setdefault(h.patient_key, {"id": "", "name": "", "birth": "", "sex": "", "studies": {}})
        for k, v in (("id", h.patient_id), ("name", h.patient_name), ("birth", h.birth_date), ("sex", h.sex)):
            p[k] = p[k] or v
        study = p["studies"].setdefault(h.study_uid, {"first": h, "series": {}})
        acc = study["series"].setdefault(h.series_uid, _Acc(h))
        acc.files.append(h.path)
        acc.frames += h.n_frames
    tree = []
    for key in sorted(patients):
        p = patients[key]
        studies = []
        for uid, st in p["studies"].items():
            first: _Header = st["first"]
            date = next((a.first.study_date for a in st["series"].values() if a.first.study_date), "")
            series = [
                SeriesNode(uid=suid, files=tuple(a.files), modality=a.first.modality,
                           description=a.first.series_description, number=a.first.series_number,
                           n_frames=a.frames, study_uid=uid)
                for suid, a in st["series"].items()
            ]
            series.sort(key=lambda s: (s.number is None, s.number or 0, s.uid))
            studies.append(StudyNode(uid=uid, series=tuple(series), date=date,
                                     description=first.study_description, accession=first.accession,
                                     patient_key=key))
        studies.sort(key=lambda s: (s.date, s.uid))
        tree.append(PatientNode(key=key, name=p["name"], patient_id=p["id"], birth_date=p["birth"],
                                sex=p["sex"], studies=tuple(studies)))
    return tree


def scan(
    paths: Iterable[str | os.PathLike],
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> tuple[list[PatientNode], list[ImagingError]]:
    """The patient → study → series tree of everything under ``paths``, and the files refused.

    Headers only (see the module docstring).  ``progress(done, total)`` is called
    after each file; when ``cancelled()`` returns True the scan stops and returns
    the tree of the files read so far.
    """
    files = list(iter_files(paths))
    total = len(files)
    headers: list[_Header] = []
    errors: list[ImagingError] = []
    for done, path in enumerate(files, 1):
        if cancelled is not None and cancelled():
            break
        try:
            headers.append(scan_file(path))
        except ImagingError as exc:
            errors.append(exc)
        if progress is not None:
            progress(done, total)
    return build_tree(headers), errors
