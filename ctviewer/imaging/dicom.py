"""DICOM objects -> one ``Slice`` per frame, pixels in Hounsfield units.

Decisions:

- Every file is hostile.  The whole read runs under one boundary that turns
  *any* ``Exception`` (pydicom raises RecursionError, TypeError, OSError,
  struct.error, ... on broken files, and malformed elements often only fail
  when first accessed) into ``ImagingError(path, reason)``.  ``BaseException``
  (KeyboardInterrupt, SystemExit) is never caught.
- Files are read with ``force=True``, so objects without preamble or file meta
  load; a missing or unknown Transfer Syntax is replaced by the encoding
  pydicom found while parsing (``ds.original_encoding``), unless the pixel data
  is encapsulated (compressed by an unknown method: refused, named).
- Refusals, in order: file too large (before reading); non-image objects (by
  SOP Class UID, then Modality); no standard Pixel Data; colour objects (RGB,
  YBR, PALETTE COLOR: exam summaries and screenshots, not CT slices); absurd
  geometry or too many pixels (from the header, before decoding); transfer
  syntaxes no installed plugin decodes; pixel data that fails to decode.
- Modality transform: Modality LUT Sequence (pydicom's ``apply_modality_lut``)
  else Rescale Slope/Intercept from the per-frame, then shared functional
  groups (Enhanced CT), else the top-level attributes, else identity.  The
  result is float32; pixels are decoded once and converted once.
- MONOCHROME1 keeps its values (HU) and sets ``Slice.invert``.
- The file's window (first value when multi-valued, functional groups first)
  goes to ``Slice.window`` when its width is a positive finite number.
- Objects of any modality (MR, CR, ...) load when they are greyscale images;
  the caller decides what to do with ``Slice.modality``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import ImagingError
from .limits import MAX_FILE_BYTES, MAX_PIXELS_PER_FRAME, MAX_TOTAL_PIXELS
from .slice import Slice

DAMAGED = "damaged or truncated DICOM file"
DAMAGED_PIXELS = "damaged or truncated pixel data (the image cannot be decoded)"
NO_PIXELS = "no standard pixel data (nothing to display)"

# SOP Class UID (longest prefix wins) -> what the object is, for "not an image: ...".
_NON_IMAGE_SOP: dict[str, str] = {
    "1.2.840.10008.1.3.10": "DICOMDIR (an index of other files)",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.30": "parametric map",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.66.1": "spatial registration",
    "1.2.840.10008.5.1.4.1.1.66.2": "spatial fiducials",
    "1.2.840.10008.5.1.4.1.1.66.3": "deformable registration",
    "1.2.840.10008.5.1.4.1.1.66.4": "segmentation",
    "1.2.840.10008.5.1.4.1.1.66.5": "surface segmentation",
    "1.2.840.10008.5.1.4.1.1.66.6": "tractography results",
    "1.2.840.10008.5.1.4.1.1.67": "real world value mapping",
    "1.2.840.10008.5.1.4.1.1.68.": "surface scan",
    "1.2.840.10008.5.1.4.1.1.88.": "DICOM Structured Report",
    "1.2.840.10008.5.1.4.1.1.88.59": "key object selection",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF document",
    "1.2.840.10008.5.1.4.1.1.104.2": "encapsulated CDA document",
    "1.2.840.10008.5.1.4.1.1.200.": "acquisition protocol",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT dose",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT structure set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT plan",
    "1.2.840.10008.5.1.4.34.": "radiotherapy object",
    "1.2.840.10008.5.1.4.38.": "hanging protocol",
    "1.2.840.10008.5.1.4.39.": "colour palette",
}
_IMAGE_SOP_EXCEPTIONS = ("1.2.840.10008.5.1.4.1.1.481.1",)  # RT Image is an image
_NON_IMAGE_MODALITY: dict[str, str] = {
    "SR": "DICOM Structured Report", "KO": "key object selection", "PR": "presentation state",
    "SEG": "segmentation", "DOC": "encapsulated document", "REG": "spatial registration",
    "FID": "spatial fiducials", "RTSTRUCT": "RT structure set", "RTPLAN": "RT plan",
    "RTDOSE": "RT dose", "RTRECORD": "RT treatment record", "PLAN": "plan",
    "RWV": "real world value mapping", "ECG": "waveform", "HD": "waveform", "AU": "audio",
}
# Standard transfer syntaxes newer than pydicom 3.0.2's dictionary.
_NEW_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}


def read_dicom(path: str | os.PathLike) -> list[Slice]:
    """Read a DICOM file as slices (one per frame); refuse with ``ImagingError``."""
    path = os.fspath(path)
    check_file_size(path)
    try:
        ds = _read_dataset(path)
        _refuse_non_image(path, ds)
        rows, cols, frames = check_geometry(path, ds)
        ts_name = _ensure_transfer_syntax(path, ds)
        raw = _decode(path, ds).reshape(frames, rows, cols)
        return _build_slices(path, ds, raw, ts_name)
    except ImagingError:
        raise
    except MemoryError:
        raise ImagingError(path, "too large to load into memory") from None
    except Exception:  # hostile input: any parser failure is a damaged file
        raise ImagingError(path, DAMAGED) from None


def check_file_size(path: str) -> None:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise ImagingError(path, "file not found") from None
    except OSError as exc:
        raise ImagingError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise ImagingError(path, f"file is too large ({size / 2**20:.0f} MB)")


def _read_dataset(path: str) -> Dataset:
    try:
        ds = pydicom.dcmread(path, force=True)
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise ImagingError(path, "cannot read the file (permission denied)") from None
        raise ImagingError(path, DAMAGED) from None
    if len(ds) == 0:  # pydicom gives up silently on some truncated files
        meta = getattr(ds, "file_meta", None)
        raise ImagingError(path, DAMAGED if meta else "not a DICOM image (no data elements)")
    return ds


def dicom_text(value: Any) -> str:
    """A DICOM value as plain text; multi-values joined with backslashes."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip(" \0")


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    meta = getattr(ds, "file_meta", None)
    if not uid and meta is not None:
        uid = meta.get("MediaStorageSOPClassUID")
    return dicom_text(uid)


def non_image_kind(ds: Dataset) -> str | None:
    """What the object is when it is not an image, else None."""
    sop = _sop_class(ds)
    if sop and not sop.startswith(_IMAGE_SOP_EXCEPTIONS):
        best = max((p for p in _NON_IMAGE_SOP if sop == p or (p.endswith(".") and sop.startswith(p))),
                   key=len, default=None)
        if best is not None:
            return _NON_IMAGE_SOP[best]
    return _NON_IMAGE_MODALITY.get(dicom_text(ds.get("Modality")).upper())


def _refuse_non_image(path: str, ds: Dataset) -> None:
    kind = non_image_kind(ds)
    if kind is not None:
        raise ImagingError(path, f"not an image: {kind}")
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImagingError(path, "no standard pixel data (floating-point pixel data is not a CT slice)")
        raise ImagingError(path, NO_PIXELS)
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = dicom_text(ds.get("PhotometricInterpretation")).upper() or "MONOCHROME2"
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImagingError(
            path, f"colour image ({photometric}), not a greyscale CT slice (screenshots and exam summaries are not read)"
        )


def check_geometry(path: str, ds: Dataset) -> tuple[int, int, int]:
    """Rows, columns, frames from the header; refuse absurd or too large images before decoding."""
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    frames = int(dicom_text(ds.get("NumberOfFrames")) or 1) if "NumberOfFrames" in ds else 1
    bits = int(ds.get("BitsAllocated") or 0)
    if rows <= 0 or cols <= 0 or frames <= 0 or bits not in (1, 8, 16, 32):
        raise ImagingError(path, f"{DAMAGED} (invalid image size or bit depth)")
    if rows * cols > MAX_PIXELS_PER_FRAME:
        raise ImagingError(path, f"image is too large ({cols}x{rows} pixels)")
    if rows * cols * frames > MAX_TOTAL_PIXELS:
        raise ImagingError(path, f"image is too large ({frames} frames of {cols}x{rows} pixels)")
    return rows, cols, frames


def syntax_name(uid: str) -> str:
    """Human name of a transfer syntax UID (falls back to the UID itself)."""
    uid = str(uid)
    if uid in _NEW_SYNTAX_NAMES:
        return _NEW_SYNTAX_NAMES[uid]
    name = UID(uid).name
    return name if name and name != uid else uid


def _ensure_transfer_syntax(path: str, ds: Dataset) -> str:
    """Make ``file_meta.TransferSyntaxUID`` decodable or refuse; return its name.

    A missing or unknown syntax on native (not encapsulated) pixel data is
    replaced by the encoding the parser found; an unknown one on encapsulated
    pixel data, or a known one no installed plugin decodes, is refused by name.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    uid = UID(dicom_text(meta.get("TransferSyntaxUID")))
    if not uid.is_transfer_syntax:
        encapsulated = ds["PixelData"].is_undefined_length
        if uid in _NEW_SYNTAX_NAMES or (encapsulated and uid):
            raise ImagingError(path, f"compressed with {syntax_name(uid)}, which this installation cannot decode")
        uid = _guess_syntax(ds)
        meta.TransferSyntaxUID = uid
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise ImagingError(path, f"compressed with {syntax_name(uid)}, which this installation cannot decode")
    return syntax_name(uid)


def _guess_syntax(ds: Dataset) -> UID:
    implicit, little = ds.original_encoding
    if little is False:
        return ExplicitVRBigEndian
    return ExplicitVRLittleEndian if implicit is False else ImplicitVRLittleEndian


def _decode(path: str, ds: Dataset) -> np.ndarray:
    try:
        return ds.pixel_array
    except MemoryError:
        raise ImagingError(path, "too large to load into memory") from None
    except Exception:
        raise ImagingError(path, DAMAGED_PIXELS) from None


# --- functional groups and the modality transform -------------------------------------------


def _group_items(ds: Dataset, frame: int) -> list[Dataset]:
    """Per-frame functional group item for ``frame`` (if any), then the shared one."""
    items: list[Dataset] = []
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and frame < len(per):
        items.append(per[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        items.append(shared[0])
    return items


def _fg_value(groups: list[Dataset], sequence: str, keyword: str) -> Any:
    """First ``keyword`` found in ``sequence`` of the given functional group items."""
    for item in groups:
        seq = item.get(sequence)
        if seq and keyword in seq[0]:
            return seq[0].get(keyword)
    return None


def _first_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        value = value[0]
    result = float(value)
    return result if math.isfinite(result) else None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    """``n`` finite floats from a multi-valued element, or None when absent or malformed."""
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _rescale(path: str, ds: Dataset, groups: list[Dataset]) -> tuple[float, float]:
    slope = _fg_value(groups, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _fg_value(groups, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None and intercept is None:
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    try:
        s = _first_float(slope)
        i = _first_float(intercept)
    except (TypeError, ValueError):
        raise ImagingError(path, f"{DAMAGED} (invalid rescale slope or intercept)") from None
    s = 1.0 if s is None else s
    if s == 0.0:
        raise ImagingError(path, f"{DAMAGED} (rescale slope is zero)")
    return s, (0.0 if i is None else i)


def _to_hu(path: str, ds: Dataset, raw: np.ndarray, groups: list[list[Dataset]]) -> np.ndarray:
    """Modality transform of all frames at once (``raw`` is frames x rows x cols) -> float32."""
    if ds.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
    params = [_rescale(path, ds, g) for g in groups]
    if all(p == params[0] for p in params):
        return _linear(raw, *params[0])
    hu = np.empty(raw.shape, dtype=np.float32)
    for i, (slope, intercept) in enumerate(params):
        hu[i] = _linear(raw[i], slope, intercept)
    return hu


def _linear(raw: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    hu = raw.astype(np.float32)  # the one copy
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    return hu


def _window(ds: Dataset, groups: list[Dataset]) -> tuple[float, float] | None:
    center = _fg_value(groups, "FrameVOILUTSequence", "WindowCenter")
    width = _fg_value(groups, "FrameVOILUTSequence", "WindowWidth")
    if center is None or width is None:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        c, w = _first_float(center), _first_float(width)
    except (TypeError, ValueError):
        return None
    if c is None or w is None or not w > 0:
        return None
    return (c, w)


# --- slices ----------------------------------------------------------------------------------


def _optional_int(value: Any) -> int | None:
    try:
        return int(float(dicom_text(value)))
    except (TypeError, ValueError, OverflowError):
        return None


def _uid(ds: Dataset, keyword: str) -> str | None:
    return dicom_text(ds.get(keyword)) or None


_META_FIELDS = ("PatientID", "StudyDate", "Manufacturer", "ManufacturerModelName",
                "SliceThickness", "ConvolutionKernel", "PatientName", "PatientBirthDate",
                "StudyDescription", "InstitutionName", "SeriesNumber", "StudyTime", "ImageType")


def _meta(ds: Dataset, ts_name: str) -> dict[str, str]:
    meta = {"TransferSyntax": ts_name}
    for keyword in _META_FIELDS:
        text = dicom_text(ds.get(keyword))
        if text:
            meta[keyword] = text
    return meta


def _geometry(ds: Dataset, groups: list[Dataset]) -> tuple[Any, Any, Any]:
    """Position, orientation and pixel spacing of one frame (functional groups first)."""
    position = _fg_value(groups, "PlanePositionSequence", "ImagePositionPatient")
    orientation = _fg_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _fg_value(groups, "PixelMeasuresSequence", "PixelSpacing")
    return (
        _floats(position if position is not None else ds.get("ImagePositionPatient"), 3),
        _floats(orientation if orientation is not None else ds.get("ImageOrientationPatient"), 6),
        _floats(spacing if spacing is not None else ds.get("PixelSpacing"), 2),
    )


def _build_slices(path: str, ds: Dataset, raw: np.ndarray, ts_name: str) -> list[Slice]:
    frames = raw.shape[0]
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    groups = [_group_items(ds, i) if enhanced else [] for i in range(frames)]
    hu = _to_hu(path, ds, raw, groups)
    common = dict(
        path=path,
        is_hu=True,
        invert=dicom_text(ds.get("PhotometricInterpretation")).upper() == "MONOCHROME1",
        sop_instance_uid=_uid(ds, "SOPInstanceUID"),
        series_instance_uid=_uid(ds, "SeriesInstanceUID"),
        study_instance_uid=_uid(ds, "StudyInstanceUID"),
        instance_number=_optional_int(ds.get("InstanceNumber")),
        modality=dicom_text(ds.get("Modality")) or None,
        description=dicom_text(ds.get("SeriesDescription")),
    )
    meta = _meta(ds, ts_name)
    slices = []
    for i in range(frames):
        position, orientation, spacing = _geometry(ds, groups[i])
        slices.append(Slice(
            pixels=hu[i],
            frame=i if frames > 1 else None,
            window=_window(ds, groups[i]),
            position=position,  # type: ignore[arg-type]
            orientation=orientation,
            pixel_spacing=spacing,  # type: ignore[arg-type]
            meta=dict(meta),
            **common,  # type: ignore[arg-type]
        ))
    return slices
