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
import secrets
import threading
from datetime import date
from pathlib import Path

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


def mark_deidentified(ds: Dataset) -> None:
    """Patient Identity Removed, the method and its codes (113100, 113107, 113105)."""
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = METHOD
    seq = []
    for code, meaning in PROFILE_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq


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

    def __init__(self, secret: bytes | None = None, key_file: str | os.PathLike | None = None):
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
        """De-identify ``ds`` in place (and return it): the profile through dicognito, then
        private tags removed, descriptors cleaned, the method recorded.  Raises
        ``BurnedInAnnotation`` for images whose pixels may show text, unless allowed."""
        reason = burned_in_reason(ds)
        if reason and not allow_burned_in:
            raise BurnedInAnnotation(reason)
        originals = {}
        for e in ds.iterall():
            if e.VR == "UI" and e.value and e.keyword not in ("SOPClassUID", "ReferencedSOPClassUID",
                                                               "TransferSyntaxUID", "MediaStorageSOPClassUID"):
                originals[str(e.value)] = True
        if not hasattr(ds, "file_meta"):
            ds.file_meta = FileMetaDataset()
        self._anonymizer(patient).anonymize(ds)
        ds.remove_private_tags()
        holders = [ds]
        for e in list(ds.iterall()):  # one pass: descriptors cleaned, the sequences' items collected
            if e.VR == "SQ":
                holders.extend(e.value)
            elif e.keyword in DESCRIPTORS and e.VR in ("LO", "SH", "ST", "LT", "UT", "UC") and e.value:
                e.value = _clean_text(e.value)
        for holder in holders:
            for kw in REMOVE_ALSO:
                if kw in holder:
                    delattr(holder, kw)
        ds.PatientID = self.patient_id(patient)
        ds.PatientName = ds.PatientID
        mark_deidentified(ds)
        if reason:
            ds.BurnedInAnnotation = "YES"
        for uid in originals:  # record the mapping (the same derivation as dicognito's)
            self.uid(uid, patient)
        if ds.file_meta.get("MediaStorageSOPInstanceUID") and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

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
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.key_file.with_name(f".{self.key_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"secret": self.secret.hex(), **self.mapping}, fh, indent=1, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.key_file)
        return self.key_file


def _tiny(**elements) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    for k, v in elements.items():
        setattr(ds, k, v)
    return ds
