"""DICOM tag browser rows and the viewer's corner annotations (pure: pydicom + stdlib).

Decisions:

- ``read_tags`` reads with ``stop_before_pixels`` (Pixel Data is never read,
  let alone decoded, and is not listed) and ``force=True``; File Meta
  Information (group 0002) comes first, then the data set in tag order.
- Every file is hostile.  A failure to parse the file (pydicom raises
  RecursionError, TypeError, AttributeError, OSError, ValueError, KeyError,
  struct.error, ...) becomes ``ImagingError(path, reason)``; ``BaseException``
  is never caught.  A single element whose value cannot be converted after
  the file parsed is listed with the value ``"<unreadable value>"`` instead
  of losing the whole listing (the browser is the tool to inspect odd files);
  a value cut short by the end of the file reads ``"<truncated: N of M bytes>"``.
- Sequences: the sequence row's value is ``"<N items>"``; each item gets an
  item row (tag ``(FFFE,E000)``, keyword ``Item``, name ``Item k``) at
  depth + 1, followed by the item's elements, also at depth + 1.  Sequences
  at depth ``MAX_DEPTH`` are not expanded (value ``"<N items, nested too
  deep>"``).  At most ``max_rows`` rows are returned; when the listing is cut
  the last row says so (tag ``""``, name ``"(more elements not shown)"``).
- ``identifying`` is True for keywords in ``IDENTIFYING_KEYWORDS``, for any
  person name (VR PN, private ones included) and for everything inside an
  identifying sequence.
- PNG/JPEG files give ``[]``; other non-DICOM content is refused, and so is
  a file whose data set holds no readable element (garbage after "DICM").
- ``annotations`` builds the four corner texts of the viewer from a ``Slice``
  (its ``meta`` dict, filled by ``dicom._META_FIELDS``); with
  ``hide_identifying`` nothing from the patient, the institution or the
  file name appears.  Texts are single-line, control characters removed,
  capped at ``MAX_ANNOTATION_CHARS``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterable

import pydicom
from pydicom.datadict import dictionary_description, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from .dicom import DAMAGED, check_file_size
from .errors import ImagingError
from .io import looks_like_dicom, sniff
from .raster import looks_like_raster
from .slice import Slice

MAX_VALUE_CHARS = 200
MAX_DEPTH = 8
MAX_ANNOTATION_CHARS = 80
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG = "(FFFE,E000)"
_UNREADABLE = "<unreadable value>"
_BROKEN = (_UNREADABLE, "<truncated: ")
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})

# DICOM PS3.15 Annex E basic application level confidentiality profile: the
# attributes that name or describe the patient, the people involved and the
# institution, or identify the visit/order (dates of the study, UIDs and
# device/acquisition details are not in this list).
IDENTIFYING_KEYWORDS: frozenset[str] = frozenset({
    # patient
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientBirthName",
    "PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar",
    "PatientAlternativeCalendar", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation",
    "PatientMotherBirthName", "MedicalRecordLocator", "PatientAge", "PatientSex", "PatientSize",
    "PatientWeight", "PatientSexNeutered", "EthnicGroup", "Occupation", "MilitaryRank",
    "BranchOfService", "CountryOfResidence", "RegionOfResidence", "PatientReligiousPreference",
    "PatientInsurancePlanCodeSequence", "PatientPrimaryLanguageCodeSequence",
    "PatientPrimaryLanguageModifierCodeSequence", "AdditionalPatientHistory", "PatientComments",
    "MedicalAlerts", "Allergies", "SmokingStatus", "LastMenstrualDate", "PregnancyStatus",
    "SpecialNeeds", "PatientState", "PatientInstitutionResidence", "CurrentPatientLocation",
    "PatientTransportArrangements", "ResponsiblePerson", "ResponsiblePersonRole",
    "ResponsibleOrganization", "ReferencedPatientSequence", "ReferencedPatientPhotoSequence",
    "ReferencedPatientAliasSequence",
    "AdmissionID", "IssuerOfAdmissionIDSequence", "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence", "ServiceEpisodeID", "ServiceEpisodeDescription",
    "IssuerOfServiceEpisodeIDSequence", "VisitComments",
    # institution, station
    "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionalDepartmentName", "InstitutionalDepartmentTypeCodeSequence", "StationName",
    "DeviceSerialNumber",
    # people
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName",
    "ConsultingPhysicianIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "RequestingPhysician",
    "RequestingPhysicianIdentificationSequence", "ScheduledPerformingPhysicianName",
    "ScheduledPerformingPhysicianIdentificationSequence", "PersonName", "PersonAddress",
    "PersonTelephoneNumbers", "PersonTelecomInformation", "PersonIdentificationCodeSequence",
    "ReviewerName", "VerifyingObserverName", "VerifyingObserverIdentificationCodeSequence",
    "ContentCreatorName", "ContentCreatorIdentificationCodeSequence", "OrderEnteredBy",
    "OrderEntererLocation", "OrderCallbackPhoneNumber", "OrderCallbackTelecomInformation",
    "RequestingService", "HumanPerformerName", "HumanPerformerOrganization",
    "EvaluatorName", "InterpretationRecorder", "InterpretationTranscriber", "InterpretationAuthor",
    "InterpretationApproverSequence", "PhysicianApprovingInterpretation", "DistributionName",
    "DistributionAddress",
    # visit, order, study identifiers
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyID", "RequestedProcedureID",
    "ScheduledProcedureStepID", "PerformedProcedureStepID", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberProcedure",
    "FillerOrderNumberProcedure", "RequestAttributesSequence",
})


@dataclass(frozen=True)
class TagRow:
    """One row of the tag browser."""

    tag: str  # "(0010,0010)"
    keyword: str  # "PatientName" ('' for private/unknown)
    name: str  # "Patient's Name"; 'Private tag' / 'Private Creator' / 'Unknown' otherwise
    vr: str
    value: str  # printable, single line, at most MAX_VALUE_CHARS
    depth: int  # 0 top level; elements of sequence items: sequence depth + 1
    identifying: bool


# --- tag browser -----------------------------------------------------------------------------


def read_tags(path: str | os.PathLike, max_rows: int = 5000) -> list[TagRow]:
    """Rows for the tag browser (file meta first); ``[]`` for PNG/JPEG; ``ImagingError`` otherwise."""
    path = os.fspath(path)
    max_rows = max(1, int(max_rows))
    check_file_size(path)
    head = sniff(path)
    if looks_like_raster(head):
        return []
    if not looks_like_dicom(head):
        raise ImagingError(path, "not a DICOM or PNG/JPEG image")
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None)
        if len(ds) == 0:  # pydicom gives up silently on some truncated files
            raise ImagingError(path, DAMAGED if meta else "not a DICOM file (no data elements)")
        rows = _Rows(max_rows)
        if meta:
            rows.add_dataset(meta, depth=0, identifying=False)
        first = len(rows.rows)
        rows.add_dataset(ds, depth=0, identifying=False)
        if not rows.full and not any(r.depth == 0 and not r.value.startswith(_BROKEN)
                                     for r in rows.rows[first:]):
            raise ImagingError(path, DAMAGED)  # nothing but garbage after the file meta
        return rows.rows
    except ImagingError:
        raise
    except MemoryError:
        raise ImagingError(path, "too large to load into memory") from None
    except RecursionError:
        raise ImagingError(path, f"{DAMAGED} (sequences nested too deeply)") from None
    except Exception:  # hostile input: any parser failure is a damaged file
        raise ImagingError(path, DAMAGED) from None


class _Full(Exception):
    """The row limit is reached."""


class _Rows:
    def __init__(self, max_rows: int):
        self.max_rows = max_rows
        self.rows: list[TagRow] = []
        self.full = False

    def _append(self, row: TagRow) -> None:
        if self.full:
            raise _Full
        if len(self.rows) == self.max_rows - 1:
            self.rows.append(TagRow("", "", "(more elements not shown)", "",
                                    f"listing cut at {self.max_rows} rows", 0, False))
            self.full = True
            raise _Full
        self.rows.append(row)

    def add_dataset(self, ds: Dataset, depth: int, identifying: bool) -> None:
        try:
            self._add_dataset(ds, depth, identifying)
        except _Full:
            pass

    def _add_dataset(self, ds: Dataset, depth: int, identifying: bool) -> None:
        if self.full:
            raise _Full
        for tag in sorted(ds.keys()):
            self._add_element(ds, BaseTag(tag), depth, identifying)

    def _add_element(self, ds: Dataset, tag: BaseTag, depth: int, parent_identifying: bool) -> None:
        raw = ds.get_item(tag)
        try:
            elem = ds[tag]
            vr = str(elem.VR or "")
            value_is_seq = vr == "SQ"
            value = "" if value_is_seq else _format_value(elem, raw)
        except (RecursionError, MemoryError):
            raise
        except Exception:  # one unconvertible value: list it, keep the rest
            elem = None
            vr = _raw_vr(raw, tag)
            value_is_seq = False
            value = _UNREADABLE
        keyword, name = _names(tag, elem)
        identifying = parent_identifying or keyword in IDENTIFYING_KEYWORDS or vr == "PN"
        if not value_is_seq:
            self._append(TagRow(_tag_text(tag), keyword, name, vr, value, depth, identifying))
            return
        items = list(elem.value) if elem is not None and elem.value is not None else []
        too_deep = depth >= MAX_DEPTH and items
        value = f"<{len(items)} items, nested too deep>" if too_deep else f"<{len(items)} items>"
        self._append(TagRow(_tag_text(tag), keyword, name, vr, value, depth, identifying))
        if too_deep:
            return
        for number, item in enumerate(items, start=1):
            count = len(item) if isinstance(item, Dataset) else 0
            self._append(TagRow(_ITEM_TAG, "Item", f"Item {number}", "",
                                f"<{count} elements>", depth + 1, identifying))
            if isinstance(item, Dataset):
                self._add_dataset(item, depth + 1, identifying)


def _tag_text(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _names(tag: BaseTag, elem: DataElement | None) -> tuple[str, str]:
    """(keyword, name) of a tag: '' and 'Private tag' / 'Private Creator' / 'Unknown' when not standard."""
    if tag.is_private:
        if tag.is_private_creator:
            return "", "Private Creator"
        name = ""
        if elem is not None:
            try:
                name = str(elem.name)
            except Exception:
                name = ""
        # pydicom names known private tags "[Description]"; unknown ones "Private tag data".
        return "", name if name.startswith("[") and len(name) > 2 else "Private tag"
    try:
        keyword = keyword_for_tag(tag) or ""
    except Exception:
        keyword = ""
    try:
        name = dictionary_description(tag) or "Unknown"
    except (KeyError, ValueError):
        name = "Group Length" if tag.element == 0 else "Unknown"
    return keyword, name


def _raw_vr(raw: Any, tag: BaseTag) -> str:
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except (KeyError, ValueError):
        return "UN"


def _clean(text: str) -> str:
    """Single-line printable text: control characters become spaces."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else " " for c in text)


def _cap(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _format_value(elem: DataElement, raw: Any) -> str:
    """A value as one printable line of at most MAX_VALUE_CHARS characters."""
    if isinstance(raw, RawDataElement) and raw.value is not None and raw.length != _UNDEFINED_LENGTH:
        got = len(raw.value)
        if got < raw.length:  # the file ended inside this value
            return f"<truncated: {got} of {raw.length} bytes>"
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if str(elem.VR) in _BINARY_VRS and not isinstance(value, str):
        try:
            return f"<{len(value)} values>"
        except TypeError:
            return _cap(_clean(str(value)))
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return _join(value)
    return _cap(_clean(_one(value)))


def _one(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text.strip(" \0") if isinstance(value, str) else text


def _join(values: Iterable[Any]) -> str:
    """Multi-values joined with backslashes; stops early once past the cap (huge value lists)."""
    parts: list[str] = []
    size = 0
    for v in values:
        text = _one(v)
        parts.append(text)
        size += len(text) + 1
        if size > MAX_VALUE_CHARS:
            break
    return _cap(_clean("\\".join(parts)))


# --- corner annotations ----------------------------------------------------------------------


def annotations(
    s: Slice,
    index: int,
    count: int,
    window: tuple[float, float] | None,
    hide_identifying: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    """The viewer's four corner texts for slice ``index`` (0-based) of ``count``.

    ``window`` is the displayed (center, width) (HU for DICOM), None when
    unknown.  ``extra`` adds lines: a key naming a corner ("top_left",
    "top_right", "bottom_left", "bottom_right") appends its value (lines
    split at newlines) to that corner; any other key appends "key: value" to
    the bottom right corner.
    """
    out: dict[str, list[str]] = {"top_left": [], "top_right": [], "bottom_left": [], "bottom_right": []}
    meta = s.meta or {}
    name = os.path.basename(s.path) if s.path else ""

    def text(key: str) -> str:
        return _short(meta.get(key, ""))

    if s.is_hu:
        if not hide_identifying:
            _add(out["top_left"], _person_name(text("PatientName")))
            _add(out["top_left"], "ID " + text("PatientID") if text("PatientID") else "")
            _add(out["top_left"], "Born " + _date(text("PatientBirthDate")) if text("PatientBirthDate") else "")
        study = " ".join(p for p in (_date(text("StudyDate")), _time(text("StudyTime"))) if p)
        _add(out["top_right"], study)
        _add(out["top_right"], text("StudyDescription"))
        series = _short(s.description)
        number = text("SeriesNumber")
        if number:
            series = f"Series {number}: {series}" if series else f"Series {number}"
        _add(out["top_right"], series)
        if not hide_identifying:
            _add(out["top_right"], text("InstitutionName"))

    _add(out["bottom_left"], f"Slice {index + 1}/{count}")
    if s.position is not None and math.isfinite(s.position[2]):
        _add(out["bottom_left"], f"Pos {s.position[2]:.1f} mm")
    if s.frame is not None:
        _add(out["bottom_left"], f"Frame {s.frame + 1}")
    if s.pixel_spacing is not None:
        _add(out["bottom_left"], _pixel_size(s.pixel_spacing))
    thickness = _number(meta.get("SliceThickness", "")) if s.is_hu else None
    if thickness is not None and thickness > 0:
        _add(out["bottom_left"], f"Thickness {thickness:g} mm")
    if not s.is_hu and not hide_identifying:
        _add(out["bottom_left"], _short(name))

    if window is not None and all(math.isfinite(float(v)) for v in window):
        center, width = window
        _add(out["bottom_right"], f"W {width:.0f} L {center:.0f}")
    else:
        _add(out["bottom_right"], "W/L —")
    for key, value in (extra or {}).items():
        if key in out:
            for line in str(value).splitlines():
                _add(out[key], _short(line))
        else:
            _add(out["bottom_right"], _short(f"{key}: {value}"))
    if s.is_hu and not hide_identifying:
        _add(out["bottom_right"], _short(name))
    return out


def _add(lines: list[str], line: str) -> None:
    if line:
        lines.append(line)


def _short(text: Any) -> str:
    return _cap(_clean(str(text or "")).strip(), MAX_ANNOTATION_CHARS)


def _person_name(text: str) -> str:
    """DICOM PN "Family^Given^Middle^Prefix^Suffix" (first component group) -> "Family, Given Middle"."""
    if not text:
        return ""
    parts = [p.strip() for p in text.split("=")[0].split("^")]
    family = parts[0] if parts else ""
    rest = " ".join(p for p in parts[1:] if p)
    if family and rest:
        return f"{family}, {rest}"
    return family or rest or text


def _date(text: str) -> str:
    """DICOM DA "YYYYMMDD" -> "YYYY-MM-DD"; anything else unchanged."""
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def _time(text: str) -> str:
    """DICOM TM "HHMMSS.frac" -> "HH:MM"; anything else unchanged."""
    if len(text) >= 4 and text[:4].isdigit():
        return f"{text[:2]}:{text[2:4]}"
    return text


def _number(text: str) -> float | None:
    try:
        value = float(str(text).split("\\")[0])
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _pixel_size(spacing: tuple[float, float]) -> str:
    row, col = spacing
    if math.isclose(row, col, rel_tol=1e-6):
        return f"Pixel {row:.2f} mm"
    return f"Pixel {row:.2f} × {col:.2f} mm"
