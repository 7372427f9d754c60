"""De-identification of everything CT Viewer exports: DICOM PS3.15 Annex E, the Basic
Application Level Confidentiality Profile, with the *Retain Longitudinal Temporal Information
with Modified Dates* option (one date shift per patient) and *Clean Descriptors* (free text
removed unless it is on a short allow-list).

The profile's attribute handling comes from a maintained library, ``dicognito`` (chosen over
``deid``: it implements Annex E's actions element by element, for every VR, at any depth of
sequences, with consistent UIDs and per-seed date shifts, and is released regularly; ``deid``
is a recipe engine whose default recipe one would have to keep in step with the standard).
On top of it this module adds what the library leaves out: private tags removed, descriptors
cleaned, burned-in annotation flagged, and the same pseudonyms for what the reports carry
outside DICOM (study records, file names, dates in the PDF and CSV).

One ``Deidentifier`` is one export: UIDs are replaced consistently within it (an SR's
references point at the new image UIDs, whether the images or the SR were written first),
file names become stable pseudonyms, and each patient gets one date shift.  The secret that
derives all of it is random, unless a key file (``--key``) holds one: then the same key gives
the same pseudonyms in later exports, and the file records the mapping for the user's own
re-identification (mode 0600; never logged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from datetime import date, datetime
from pathlib import Path

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset

#: Descriptors kept when their whole value (case-insensitive) is one of these: they say what the
#: images are, never who.  Everything else in a descriptor is removed (Clean Descriptors).
DESCRIPTOR_ALLOW = frozenset({
    "CHEST", "THORAX", "LUNG", "LUNGS", "CT", "CT CHEST", "CHEST CT", "CT THORAX", "THORAX CT", "AXIAL",
    "LUNG WINDOW", "MEDIASTINUM", "HIGH RESOLUTION", "HRCT", "LOW DOSE", "CONTRAST", "NON CONTRAST",
    "COVID-19 AI SECOND OPINION", "CT VIEWER AI RESULT", "CT VIEWER HEATMAP",
    "HEAD", "NECK", "BRAIN", "ABDOMEN", "PELVIS", "CHEST ABDOMEN PELVIS", "WHOLE BODY", "SPINE",
})
#: Free-text attributes of Annex E whose action is X/Z/D for the profile but that Clean
#: Descriptors lets one keep when harmless (here: only allow-listed values).
DESCRIPTORS = (
    "StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "StudyComments",
    "RequestedProcedureDescription", "PerformedProcedureStepDescription", "ScheduledProcedureStepDescription",
    "AcquisitionComments", "AdditionalPatientHistory", "PatientComments", "DerivationDescription",
    "ContrastBolusAgent", "BodyPartExamined", "ReasonForStudy", "ReasonForTheRequestedProcedure",
    "RequestedProcedureComments", "ImagingServiceRequestComments", "InterpretationText", "TextComments",
    "VisitComments", "ServiceEpisodeDescription", "Allergies", "MedicalAlerts", "AdmittingDiagnosesDescription",
    "DischargeDiagnosisDescription", "ClinicalTrialProtocolName", "ClinicalTrialSiteName", "CommentsOnThePerformedProcedureStep",
    "FrameComments", "IdentifyingComments", "LabelText", "ImagePresentationComments",
)
#: Annex E attributes the library keeps but the Basic Profile removes (device identity: the
#: Retain Device Identity Option is not claimed); found by the checker (tests/test_deid.py).
REMOVE_ALSO = ("DeviceSerialNumber", "DetectorID", "GantryID", "PlateID", "CassetteID", "SoftwareVersions",
               "DeviceDescription", "SpecimenAccessionNumber", "ScheduledStationName", "PerformedStationName")
METHOD = "PS3.15 Basic Profile, Modified Dates, Clean Descriptors"
PROFILE_CODES = (("113100", "Basic Application Confidentiality Profile"),
                 ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
                 ("113105", "Clean Descriptors Option"))
CHARACTERISTICS_CODE = ("113108", "Retain Patient Characteristics Option")
#: Inside a sequence whose action is D (Content Sequence, Graphic Annotation Sequence, ...): the
#: structure stays, every free text goes, except what names a coded concept.
CODE_KEYWORDS = frozenset({"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
                           "LongCodeValue", "URNCodeValue", "ContextIdentifier", "MappingResource",
                           "TemplateIdentifier", "ContextGroupExtensionFlag"})
FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "UR"})
#: Prose and names: removed wherever they are, named by the table or not (Clean Descriptors keeps
#: only the allow-listed descriptors).
PROSE_VRS = frozenset({"ST", "LT", "UT", "UC", "PN"})
_DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y", "IS": "0", "DS": "0",
          "CS": "ANONYMOUS", "AE": "ANONYMOUS"}
_MISSING = object()


def mark_deidentified(ds: Dataset, keep_characteristics: bool = False) -> None:
    """Patient Identity Removed, the method and the codes of the options applied (113100, 113107,
    113105, and 113108 when the patient's characteristics were kept)."""
    codes = PROFILE_CODES + ((CHARACTERISTICS_CODE,) if keep_characteristics else ())
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = METHOD + (", Retain Patient Characteristics" if keep_characteristics else "")
    seq = []
    for code, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq


def coarsen_age(value) -> str:
    """An Age String of 90 years or more becomes 090Y (PS3.15: such an age identifies)."""
    text = str(value or "").strip()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        years = int(text[:3]) / {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[text[3]]
        if years >= 90:
            return "090Y"
    return text


def _plain(value):
    """A value in a form that compares equal before and after a library rewrote it."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(str(v) for v in value)
    return value if isinstance(value, (bytes, int, float)) else str(value)


def _snapshot(ds: Dataset, path: tuple = (), out: dict | None = None) -> dict:
    """{path: value} of every element at every depth; a path is (tag, item index, ..., tag)."""
    out = {} if out is None else out
    for e in ds:
        if e.VR == "SQ":
            for i, item in enumerate(e.value or []):
                _snapshot(item, path + (int(e.tag), i), out)
        elif e.tag != 0x7FE00010:
            out[path + (int(e.tag),)] = _plain(e.value)
    return out


class BurnedInAnnotation(Exception):
    """The image may carry identifying text in its pixels."""


def burned_in_reason(ds: Dataset) -> str:
    """Why the pixels may show identifying text ("" when nothing says so)."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation is YES: the pixels carry text"
    sop = str(ds.get("SOPClassUID", ""))
    if sop.startswith("1.2.840.10008.5.1.4.1.1.7"):
        return "a secondary capture (a screenshot): its pixels may carry names"
    image_type = str(ds.get("ImageType", "")).upper()
    if "SCREEN" in image_type or "SECONDARY" in image_type and "DERIVED" in image_type and sop.endswith(".7"):
        return "a screen capture: its pixels may carry names"
    return ""


def _clean_text(value) -> str:
    text = str(value).strip()
    return text if text.upper() in DESCRIPTOR_ALLOW else ""


class Deidentifier:
    """One export's pseudonyms (see the module docstring)."""

    def __init__(self, secret: bytes | None = None, key_file: str | os.PathLike | None = None,
                 keep_characteristics: bool = False):
        self.keep_characteristics = keep_characteristics
        self.key_file = Path(key_file) if key_file else None
        self.mapping: dict[str, dict[str, str]] = {"patients": {}, "uids": {}, "files": {}, "date_shift_days": {}}
        if secret is None and self.key_file is not None and self.key_file.exists():
            data = json.loads(self.key_file.read_text(encoding="utf-8"))
            secret = bytes.fromhex(data["secret"])
            for k in self.mapping:
                self.mapping[k].update(data.get(k, {}))
        self.secret = secret or secrets.token_bytes(32)
        self._anonymizers: dict[str, object] = {}
        self._uids: dict[tuple[str, str], str] = {}  # (patient, uid) -> new uid: a study's files share most
        self._lock = threading.Lock()

    # --- derivations ---------------------------------------------------------------------------
    def _digest(self, kind: str, value: str) -> str:
        return hmac.new(self.secret, f"{kind}\0{value}".encode("utf-8"), hashlib.sha256).hexdigest()

    def _anonymizer(self, patient: str):
        with self._lock:
            a = self._anonymizers.get(patient)
            if a is None:
                from dicognito.anonymizer import Anonymizer

                a = Anonymizer(seed=self._patient_seed(patient))
                self._anonymizers[patient] = a
            return a

    def _patient_seed(self, patient: str) -> str:
        """The patient's dicognito seed.  dicognito shifts dates and times by one offset in hours
        (62-730 days); a whole number of days (1 seed in 24) would leave every time of day as it
        was, and acquisition times identify a scan.  Such seeds are skipped, deterministically."""
        from dicognito.randomizer import Randomizer

        seed = self._digest("patient", patient)
        for n in range(1, 100):
            hours = Randomizer(seed).to_int("date_offset") % ((730 - 62) * 24) + 62 * 24
            if hours % 24:
                break
            seed = self._digest("patient", f"{patient}\0{n}")
        return seed

    def patient_id(self, patient: str) -> str:
        pseudo = "ANON-" + self._digest("id", patient)[:10].upper()
        self.mapping["patients"][pseudo] = patient
        return pseudo

    def uid(self, uid: str, patient: str) -> str:
        """The UID this export gives ``uid`` (the same inside every dataset of the patient)."""
        if not uid:
            return uid
        cached = self._uids.get((patient, uid))
        if cached is not None:
            return cached
        if uid.startswith("folder:"):  # a folder of PNGs: no UID, a path
            new = "folder:" + self._digest("folder", uid)[:12]
        else:
            ds = _tiny(StudyInstanceUID=uid)
            self._anonymizer(patient).anonymize(ds)
            new = str(ds.StudyInstanceUID)
        self.mapping["uids"][new] = uid
        self._uids[(patient, uid)] = new
        return new

    def date(self, value: str, patient: str) -> str:
        """A date (YYYYMMDD or YYYY-MM-DD) shifted by the patient's offset, in the same format."""
        if not value:
            return value
        dashed = "-" in value
        raw = value.replace("-", "")
        ds = _tiny(StudyDate=raw)
        self._anonymizer(patient).anonymize(ds)
        new = str(ds.StudyDate)
        try:
            shift = (date(int(new[:4]), int(new[4:6]), int(new[6:8]))
                     - date(int(raw[:4]), int(raw[4:6]), int(raw[6:8]))).days
            self.mapping["date_shift_days"][self.patient_id(patient)] = str(shift)
        except ValueError:
            pass
        return f"{new[:4]}-{new[4:6]}-{new[6:8]}" if dashed and len(new) == 8 else new

    def file_name(self, path: str) -> str:
        """A stable pseudonym for a file name (its extension kept)."""
        ext = os.path.splitext(path)[1].lower()
        new = "img-" + self._digest("file", os.path.abspath(path))[:16] + ext
        self.mapping["files"][new] = os.path.abspath(path)
        return new

    # --- DICOM ---------------------------------------------------------------------------------
    def dataset(self, ds: Dataset, patient: str, allow_burned_in: bool = False) -> Dataset:
        """De-identify ``ds`` in place (and return it).  Raises ``BurnedInAnnotation`` for images
        whose pixels may show text, unless allowed.

        1. dicognito: consistent pseudonyms for names, IDs and UIDs, dates and times shifted by the
           patient's offset (the Modified Dates option);
        2. private tags, overlays (60xx), curves (50xx) removed at every depth;
        3. every attribute that PS3.15 Table E.1-1 names (``table.action``), at every depth, gets its
           action: X removed; Z emptied; D a dummy; U a consistent new UID; where the table lets
           one choose, what dicognito made of the value is kept (a pseudonym or a shifted date is a
           dummy), otherwise it is removed or emptied; sequences whose action is D keep their
           structure and lose every free text; the Retain Patient Characteristics option only when
           asked (ages >= 90 coarsened); descriptors cleaned (allow-list);
        4. an original UID that is still written inside any other value (a Retrieve URL, a text)
           is replaced by its new UID;
        5. the method and the options applied are recorded."""
        reason = burned_in_reason(ds)
        if reason and not allow_burned_in:
            raise BurnedInAnnotation(reason)
        originals = _snapshot(ds)
        uids = {str(v) for k, v in originals.items() if isinstance(v, str) and _is_instance_uid(k[-1], v)}
        uids |= {str(x) for k, v in originals.items() if isinstance(v, tuple) for x in v if _is_instance_uid(k[-1], x)}
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        _defuse_dates(ds)
        self._anonymizer(patient).anonymize(ds)
        ds.remove_private_tags()
        self._apply_table(ds, originals, (), patient, strip_text=False)
        ds.PatientID = self.patient_id(patient)
        ds.PatientName = ds.PatientID
        for kw in ("PatientBirthDate", "PatientBirthTime"):  # an age in disguise: never kept, even shifted
            if kw in ds:
                setattr(ds, kw, "")
        self._replace_uids_in_text(ds, {u: self.uid(u, patient) for u in uids})
        mark_deidentified(ds, self.keep_characteristics)
        if reason:
            ds.BurnedInAnnotation = "YES"
        if ds.file_meta.get("MediaStorageSOPInstanceUID") and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    def _apply_table(self, ds: Dataset, originals: dict, path: tuple, patient: str, strip_text: bool) -> None:
        from .table import CHARACTERISTICS, action, is_overlay_or_curve

        for e in list(ds):
            tag = int(e.tag)
            kw = e.keyword
            # device identity (REMOVE_ALSO) too: the Retain Device Identity Option is not claimed
            if e.tag.is_private or is_overlay_or_curve(tag) or kw in REMOVE_ALSO:
                del ds[tag]
                continue
            if kw in CHARACTERISTICS and self.keep_characteristics:
                if kw == "PatientAge" and e.value:
                    e.value = coarsen_age(e.value)
                continue
            if kw in DESCRIPTORS and e.VR in FREE_TEXT_VRS:
                if e.value:
                    e.value = _clean_text(e.value)
                continue
            act = action(tag)
            if e.VR == "SQ":
                if act in ("X", "X/D", "X/Z", "X/Z/D"):  # removal: an emptied Type 3 sequence is invalid
                    del ds[tag]
                elif act in ("Z", "Z/D"):
                    e.value = []
                else:  # None, "X/Z/U*" (UIDs inside replaced), "D" (structure kept, no free text)
                    for i, item in enumerate(e.value or []):
                        self._apply_table(item, originals, path + (tag, i), patient, strip_text or act == "D")
                continue
            if act is None:  # not in the table: free text and person names go anyway, at any depth
                if e.value and kw not in CODE_KEYWORDS and (e.VR in PROSE_VRS or strip_text and e.VR in FREE_TEXT_VRS):
                    e.value = ""
                continue
            changed = originals.get(path + (tag,), _MISSING) != _plain(e.value)
            if act == "X" or (act == "X/D" and not changed):
                del ds[tag]
            elif "U" in act or e.VR == "UI":
                if not changed and e.value:
                    e.value = ([self.uid(str(v), patient) for v in e.value] if e.VM > 1
                               else self.uid(str(e.value), patient))
            elif changed and (act != "X/Z" or e.VR in ("DA", "DT", "TM")):
                continue  # dicognito's pseudonym, or a date moved by the patient's offset
            elif "Z" in act:
                e.value = b"" if e.VR in ("OB", "OW", "UN", "OF", "OD", "OL", "OV") else None if e.VR in (
                    "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV") else ""
            else:  # D: a dummy of the VR
                e.value = _dummy(e.VR)

    @staticmethod
    def _replace_uids_in_text(ds: Dataset, new: dict[str, str]) -> None:
        if not new:
            return
        pattern = re.compile("|".join(rf"(?<![\d.]){re.escape(u)}(?![\d])" for u in sorted(new, key=len, reverse=True)))
        for e in ds.iterall():
            if e.VR in ("SQ", "UI") or e.tag == 0x7FE00010 or not isinstance(e.value, str) or not e.value:
                continue
            if pattern.search(e.value):
                e.value = pattern.sub(lambda m: new[m.group(0)], e.value)

    # --- CT Viewer's records ---------------------------------------------------------------------
    def study_result(self, result):
        """A de-identified copy of a ``studies.StudyResult``: what every report writer reads."""
        from ctviewer.studies import PatientNode, SeriesNode, StudyNode

        key = result.patient.key
        pid = self.patient_id(key)
        st = result.study
        study = StudyNode(
            uid=self.uid(st.uid, key), date=self.date(st.date, key), description=_clean_text(st.description),
            accession="", patient_key=pid,
            series=tuple(SeriesNode(uid=self.uid(s.uid, key), files=tuple(self.file_name(f) for f in s.files),
                                    modality=s.modality, description=_clean_text(s.description), number=s.number,
                                    n_frames=s.n_frames, study_uid=self.uid(s.study_uid, key))
                         for s in st.series))
        patient = PatientNode(key=pid, name="", patient_id=pid, birth_date="", sex="", studies=(study,))
        slices = [dataclasses.replace(
            s, path=self.file_name(s.path), sop_instance_uid=self.uid(s.sop_instance_uid, key),
            series_uid=self.uid(s.series_uid, key), error=self.text(s.error, s.path))
            for s in result.slices]
        return dataclasses.replace(result, study=study, patient=patient, slices=slices, deidentified=True)

    def thumbnails(self, thumbs, deidentified_result):
        """The report's thumbnails re-pointed at the de-identified slice records."""
        out = []
        for t in thumbs:
            new_slice = next((s for s in deidentified_result.slices
                              if s.path == self.file_name(t.slice.path) and s.frame == t.slice.frame), None)
            out.append(dataclasses.replace(t, slice=new_slice or t.slice))
        return out

    def text(self, text: str, path: str) -> str:
        """A message with the file's path and name replaced by its pseudonym."""
        if not text or not path:
            return text
        new = self.file_name(path)
        for p in sorted({path, os.path.abspath(path), os.path.basename(path)}, key=len, reverse=True):
            text = text.replace(p, new)
        return text

    # --- the key file --------------------------------------------------------------------------
    def save_key(self) -> Path | None:
        """Write the secret and the mapping to the key file (mode 0600, atomically); None without one."""
        if self.key_file is None:
            return None
        import tempfile

        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        # an unpredictable temporary name, created exclusively (0600): another user of the folder
        # cannot place a link where the secret is about to be written
        fd, tmp = tempfile.mkstemp(dir=self.key_file.parent, prefix=f".{self.key_file.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"secret": self.secret.hex(), **self.mapping}, fh, indent=1, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.key_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.key_file


_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?")
_DT = re.compile(r"(\d{4}(?:\d{2}){0,5})(\.\d{1,6})?([+-]\d{4})?")


def _valid_datetime(vr: str, value: str) -> bool:
    v = value.strip().replace(".", "") if vr == "DA" else value.strip().replace(":", "")
    try:
        if vr == "DA":
            datetime.strptime(v, "%Y%m%d")
        elif vr == "TM":
            m = _TM.fullmatch(v)
            return bool(m) and int(m[1]) < 24 and int(m[2] or 0) < 60 and int(m[3] or 0) < 61
        else:
            m = _DT.fullmatch(v)
            if not m:
                return False
            digits = m[1]
            datetime.strptime(digits[:10], "%Y%m%d%H"[: len(digits[:10]) - 2])
    except ValueError:
        return False
    return True


def _defuse_dates(ds: Dataset) -> None:
    """Dates and times that would stop dicognito are emptied first (they are hostile input, or
    broken; the table empties or removes them anyway): values that are not a date, a time or a
    date-time, and a DA whose name lacks "Date" (dicognito pairs it with itself as its time)."""
    for e in ds.iterall():
        if e.VR not in ("DA", "DT", "TM") or not e.value:
            continue
        values = list(e.value) if e.VM > 1 else [e.value]
        if (e.VR == "DA" and "Date" not in (e.keyword or "")) or not all(
                _valid_datetime(e.VR, str(v)) for v in values):
            e.value = ""


def _is_instance_uid(tag: int, value) -> bool:
    text = str(value)
    return bool(text) and not text.startswith("1.2.840.10008.") and keyword_for_tag(tag) not in (
        "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
        "ReferencedSOPClassUIDInFile", "CodingSchemeUID", "ImplementationClassUID") and _looks_like_uid(text)


def _looks_like_uid(text: str) -> bool:
    return 8 <= len(text) <= 64 and text[0].isdigit() and all(c.isdigit() or c == "." for c in text) and "." in text


def _dummy(vr: str):
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        return 0
    if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return b""
    return _DUMMY.get(vr, "ANONYMOUS")


def _tiny(**elements) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    for k, v in elements.items():
        setattr(ds, k, v)
    return ds
