"""DICOM outputs of a study review: a Comprehensive SR and a heatmap Secondary Capture.

Decisions:

- **Comprehensive SR** (1.2.840.10008.5.1.4.1.1.88.33), not Basic Text SR:
  the probabilities, confidence and counts are NUM items (machine readable,
  with a ``FloatingPointValue`` that reads back exactly beside the 16-char
  ``NumericValue``), which Basic Text SR forbids; every PACS/viewer that shows
  SR handles Comprehensive.  No SCOORDs are used.  The tree follows no
  standard template (it claims none):

  CONTAINER "CT Viewer AI second opinion" (99CTVIEWER CTV0001), CONTAINS:
  CODE "Study verdict" (CTV0010 → CTV0101 COVID / CTV0102 non-COVID /
  CTV0103 indeterminate / CTV0104 not classified), NUM "Verdict confidence"
  (CTV0011), NUM "Verdict score" (CTV0012), NUM "Lung slices classified",
  "Lung slices called COVID", "Slices without lung excluded", "Slices refused"
  (CTV0014..17, unit {slices}), TEXT "Verdict rule" (CTV0013), TEXT
  "Algorithm Name" and "Algorithm Version" (DCM 111001, 111003), TEXT "Model
  SHA-256" (CTV0022), TEXT "Software version" (CTV0023), TEXT "Incomplete"
  (CTV0024, only for a cancelled batch), then one CONTAINER "Slice finding"
  (CTV0030) per classified slice holding NUM "p(COVID)" (CTV0031, UCUM "1"),
  CODE "Slice label" (CTV0032), CODE "Lung present" (CTV0033 → SCT 373066001
  Yes / 373067005 No) and, when the slice has a SOP Instance UID, an IMAGE
  item (ReferencedSOPSequence: SOP Class, SOP Instance, 1-based frame number
  for multi-frame objects).  Refused slices get no finding (they are counted).
  The private designator "99CTVIEWER" is used because no standard code names
  these AI outputs; the standard DCM/SCT/UCUM codes are used where they fit.
- Same study as the images: StudyInstanceUID = ``result.study.uid`` when it
  is a valid DICOM UID; otherwise (a "folder:" pseudo-study) a UUID-derived
  UID "2.25.<uuid5 of the key>" (PS3.5 B.2), stable, so the SR and SC of one
  folder land in one study.  New Series and SOP Instance
  UIDs on every call.  The referenced SOP Class is read from the slice's
  file header when it can be, else CT Image Storage.
- CurrentRequestedProcedureEvidenceSequence lists every referenced instance
  by study and series (omitted when nothing is referenced).
- ``anonymize``: PatientName, PatientID, PatientBirthDate, PatientSex and
  AccessionNumber are present but empty; no file names or paths appear.
- Files: explicit VR little endian with a File Meta group, UTF-8
  (ISO_IR 192), written atomically.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from ctviewer.reports import atomic_path, deidentified, software_version
from ctviewer.studies import SliceResult, StudyResult, Thumbnail

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SCHEME = "99CTVIEWER"
TITLE = "CT Viewer AI second opinion"
SC_CAPTION = "AI heatmap, not for diagnosis"

C = {  # concept name codes: key -> (value, designator, meaning)
    "root": ("CTV0001", SCHEME, TITLE), "verdict": ("CTV0010", SCHEME, "Study verdict"),
    "confidence": ("CTV0011", SCHEME, "Verdict confidence"), "score": ("CTV0012", SCHEME, "Verdict score"),
    "rule": ("CTV0013", SCHEME, "Verdict rule"), "n_lung": ("CTV0014", SCHEME, "Lung slices classified"),
    "n_positive": ("CTV0015", SCHEME, "Lung slices called COVID"),
    "n_excluded": ("CTV0016", SCHEME, "Slices without lung excluded"),
    "n_refused": ("CTV0017", SCHEME, "Slices refused"),
    "algorithm": ("111001", "DCM", "Algorithm Name"), "version": ("111003", "DCM", "Algorithm Version"),
    "sha256": ("CTV0022", SCHEME, "Model SHA-256"), "software": ("CTV0023", SCHEME, "Software version"),
    "incomplete": ("CTV0024", SCHEME, "Incomplete"), "finding": ("CTV0030", SCHEME, "Slice finding"),
    "p": ("CTV0031", SCHEME, "p(COVID)"), "label": ("CTV0032", SCHEME, "Slice label"),
    "lung": ("CTV0033", SCHEME, "Lung present"), "image": ("CTV0034", SCHEME, "Source image"),
}
LABELS = {"COVID": ("CTV0101", SCHEME, "COVID"), "non-COVID": ("CTV0102", SCHEME, "non-COVID"),
          "indeterminate": ("CTV0103", SCHEME, "indeterminate"),
          "": ("CTV0104", SCHEME, "not classified")}
YES, NO = ("373066001", "SCT", "Yes"), ("373067005", "SCT", "No")
UNIT_ONE, UNIT_SLICES = ("1", "UCUM", "no units"), ("{slices}", "UCUM", "slices")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def study_uid(result: StudyResult) -> str:
    """The Study Instance UID the outputs go into (see the module docstring)."""
    uid = result.study.uid
    if len(uid) <= 64 and _UID.match(uid):
        return uid
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "ctviewer:" + uid).int)


def _code(code: tuple[str, str, str]) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = code
    return ds


def _item(kind: str, name: str, relationship: str | None = "CONTAINS") -> Dataset:
    ds = Dataset()
    if relationship:
        ds.RelationshipType = relationship
    ds.ValueType = kind
    ds.ConceptNameCodeSequence = [_code(C[name])]
    return ds


def _text(name: str, value: str) -> Dataset:
    ds = _item("TEXT", name)
    ds.TextValue = value
    return ds


def _codeitem(name: str, value: tuple[str, str, str]) -> Dataset:
    ds = _item("CODE", name)
    ds.ConceptCodeSequence = [_code(value)]
    return ds


def _num(name: str, value: float, unit=UNIT_ONE) -> Dataset:
    ds = _item("NUM", name)
    mv = Dataset()
    mv.NumericValue = pydicom.valuerep.format_number_as_ds(float(value))
    mv.FloatingPointValue = float(value)
    mv.MeasurementUnitsCodeSequence = [_code(unit)]
    ds.MeasuredValueSequence = [mv]
    return ds


def _container(name: str, children: list[Dataset], relationship: str | None = "CONTAINS") -> Dataset:
    ds = _item("CONTAINER", name, relationship)
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = children
    return ds


_SOP_CLASS_CACHE: dict[str, str] = {}


def _sop_class(path: str) -> str:
    """The SOP Class UID in the slice's file header, else CT Image Storage."""
    if path not in _SOP_CLASS_CACHE:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            _SOP_CLASS_CACHE[path] = str(ds.SOPClassUID) if _UID.match(str(ds.SOPClassUID)) else CT_IMAGE
        except Exception:  # PNG, missing, damaged: the documented default
            _SOP_CLASS_CACHE[path] = CT_IMAGE
    return _SOP_CLASS_CACHE[path]


def _image_ref(s: SliceResult, frame: bool = True) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = _sop_class(s.path)
    ref.ReferencedSOPInstanceUID = s.sop_instance_uid
    if frame and s.frame is not None:
        ref.ReferencedFrameNumber = s.frame + 1
    return ref


def _base(result: StudyResult, sop_class: str, modality: str, anonymize: bool) -> Dataset:
    """Patient, study, series, equipment and SOP common modules with file meta."""
    now = datetime.now(timezone.utc)
    ds = Dataset()
    ds.file_meta = meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = ("CTVIEWER_" + software_version())[:16]
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    p = result.patient
    ds.PatientName = p.patient_id if anonymize else p.name  # a de-identified record: its pseudonym
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = "" if anonymize else p.birth_date.replace("-", "")
    ds.PatientSex = "" if anonymize else p.sex
    if anonymize:
        from ctviewer.privacy import mark_deidentified

        mark_deidentified(ds)
    st = result.study
    ds.StudyInstanceUID = study_uid(result)
    ds.StudyDate, ds.StudyTime = st.date.replace("-", ""), ""
    ds.ReferringPhysicianName, ds.StudyID = "", ""
    ds.AccessionNumber = "" if anonymize else st.accession
    ds.StudyDescription = st.description
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9901 if modality == "SR" else 9902
    ds.InstanceNumber = 1
    ds.Manufacturer = "CT Viewer"
    ds.SoftwareVersions = software_version()
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    return ds


def _save(ds: Dataset, dest) -> Path:
    dest = Path(dest)
    with atomic_path(dest, ".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return dest


def _finding(s: SliceResult) -> Dataset:
    children = [_num("p", s.p_covid), _codeitem("label", LABELS.get(s.label, (s.label[:16], SCHEME, s.label[:64]))),
                _codeitem("lung", YES if s.has_lung else NO)]
    if s.sop_instance_uid:
        img = _item("IMAGE", "image")
        img.ReferencedSOPSequence = [_image_ref(s)]
        children.append(img)
    return _container("finding", children)


def write_sr(result: StudyResult, dest, anonymize: bool = False) -> Path:
    """Write the Comprehensive SR of ``result`` to ``dest`` (atomically); return its path."""
    result = deidentified(result, anonymize)
    ds = _base(result, COMPREHENSIVE_SR, "SR", anonymize)
    ds.SeriesDescription = TITLE
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.PerformedProcedureCodeSequence = []
    ds.CompletionFlag = "PARTIAL" if result.cancelled else "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    v = result.verdict
    items = [_codeitem("verdict", LABELS.get(v.label if v else "", LABELS[""]))]
    if v is not None:
        items += [_num("confidence", v.confidence), _num("score", v.score)]
        items += [_num(k, getattr(v, k), UNIT_SLICES) for k in ("n_lung", "n_positive", "n_excluded", "n_refused")]
        items.append(_text("rule", v.rule))
    name, _, version = (result.model or "").strip().rpartition(" ")
    items += [_text("algorithm", name or version or "unknown"), _text("version", version if name else "unknown"),
              _text("sha256", result.model_sha256 or "unknown"), _text("software", f"CT Viewer {software_version()}")]
    if result.cancelled:
        items.append(_text("incomplete", "The batch was cancelled before every slice was classified."))
    items += [_finding(s) for s in result.slices if s.judged]
    root = _container("root", items, relationship=None)
    ds.ValueType, ds.ConceptNameCodeSequence = root.ValueType, root.ConceptNameCodeSequence
    ds.ContinuityOfContent, ds.ContentSequence = "SEPARATE", root.ContentSequence
    series: dict[str, dict[str, Dataset]] = {}
    for s in result.slices:
        if s.ok and s.sop_instance_uid and _UID.match(s.series_uid or ""):
            series.setdefault(s.series_uid, {}).setdefault(s.sop_instance_uid, _image_ref(s, frame=False))
    if series:
        study = Dataset()
        study.StudyInstanceUID = ds.StudyInstanceUID
        study.ReferencedSeriesSequence = [Dataset() for _ in series]
        for item, (uid, refs) in zip(study.ReferencedSeriesSequence, series.items()):
            item.SeriesInstanceUID, item.ReferencedSOPSequence = uid, list(refs.values())
        ds.CurrentRequestedProcedureEvidenceSequence = [study]
    return _save(ds, dest)


def read_sr(path) -> dict:
    """The main values of an SR written by ``write_sr`` (for tests and tools)."""
    ds = pydicom.dcmread(path)
    out: dict = {"study_uid": str(ds.StudyInstanceUID), "findings": []}
    for item in ds.ContentSequence:
        meaning = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "CONTAINER":
            f = {}
            for child in item.ContentSequence:
                m = child.ConceptNameCodeSequence[0].CodeMeaning
                if child.ValueType == "NUM":
                    f[m] = float(child.MeasuredValueSequence[0].FloatingPointValue)
                elif child.ValueType == "CODE":
                    f[m] = str(child.ConceptCodeSequence[0].CodeMeaning)
                elif child.ValueType == "IMAGE":
                    ref = child.ReferencedSOPSequence[0]
                    f["sop_class_uid"] = str(ref.ReferencedSOPClassUID)
                    f["sop_instance_uid"] = str(ref.ReferencedSOPInstanceUID)
                    f["frame"] = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None
            out["findings"].append(f)
        elif item.ValueType == "NUM":
            out[meaning] = float(item.MeasuredValueSequence[0].FloatingPointValue)
        elif item.ValueType == "CODE":
            out[meaning] = str(item.ConceptCodeSequence[0].CodeMeaning)
        else:
            out[meaning] = str(item.TextValue)
    return out


def heatmap_rgb(image, heatmap, alpha: float = 0.6) -> np.ndarray:
    """(H, W, 3) uint8: the grey slice with the jet heatmap blended in (alpha x value)."""
    grey = np.asarray(image, dtype=np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if heatmap is not None:
        from matplotlib import colormaps

        h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
        a = (alpha * h)[..., None]
        rgb = rgb * (1 - a) + colormaps["jet"](h)[..., :3] * 255.0 * a
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def write_heatmap_sc(result: StudyResult, thumb: Thumbnail, dest, anonymize: bool = False) -> Path:
    """Write a Secondary Capture of ``thumb`` with its heatmap burned in, in the study of ``result``."""
    if anonymize and not result.deidentified:
        from ctviewer.privacy import Deidentifier

        d = Deidentifier()
        result = d.study_result(result)
        thumb = d.thumbnails([thumb], result)[0]
    rgb = heatmap_rgb(thumb.image, thumb.heatmap)
    ds = _base(result, SECONDARY_CAPTURE, "OT", anonymize)
    s = thumb.slice
    p = "" if s.p_covid is None else f"; p(COVID) {s.p_covid:.3f}"
    ds.SeriesDescription = "CT Viewer AI heatmap"
    ds.Laterality = ""  # General Series, Type 2C: a chest is not a paired body part (dciodvfy wants it present)
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ImageComments = f"{SC_CAPTION} ({result.model or 'model unknown'}{p})"
    ds.DerivationDescription = f"{SC_CAPTION}: Grad-CAM heatmap (jet) blended over the lung-window slice"
    ds.BurnedInAnnotation, ds.PatientOrientation = "NO", ""
    ds.LossyImageCompression = "00"
    if s.sop_instance_uid:
        ds.SourceImageSequence = [_image_ref(s)]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    return _save(ds, dest)
