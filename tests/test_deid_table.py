"""Issue 22: de-identification implements the whole of PS3.15 Table E.1-1 (``ctviewer.privacy.table``,
the current edition as transcribed by dicom-anonymizer), at every depth, with the options actually
applied recorded; and the checker finds a marker in every attribute the table names, and in file
and folder names.

The specimen: a real-looking CT slice that carries a distinct marker in *every* attribute of the
table (654 of them, top level), in overlays, curves, the icon image, a private tag, text content
items, graphic annotation text, the original attributes and a Retrieve URL holding the study UID.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ctviewer import cli
from ctviewer.privacy import Deidentifier, find, identifying_values
from ctviewer.privacy.table import CHARACTERISTICS, EXACT, action, is_overlay_or_curve

from .test_deid import identified_ct

TEXT = {"AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC", "PN"}
NUMBERS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}
BINARY = {"OB", "OW", "UN", "OF", "OD", "OL", "OV"}
KEEP_STRUCTURE = {0x0002, 0x0000}  # file meta and command groups: not part of a stored dataset's body


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:  # newer than pydicom's dictionary: written with an explicit VR
        return "LO"


def _marker(n: int, vr: str, study_uid: str):
    """A value for attribute number ``n`` that no other attribute and no de-identified output has."""
    # 800 days apart: a date moved by the patient's offset (62-730 days) never lands on another marker
    day = dt.date(1900, 1, 1) + dt.timedelta(days=800 * n)
    if vr in TEXT:
        return "F" if vr == "CS" and n < 0 else f"QZM{n:04d}"
    return {
        "UR": f"https://pacs.example/wado?studyUID={study_uid}&m=QZM{n:04d}",
        "DA": day.strftime("%Y%m%d"),
        "DT": day.strftime("%Y%m%d") + "101500",
        # minutes and seconds unique to the attribute: a time moved by whole hours never lands on another
        "TM": f"{8 + n % 12:02d}{n // 12 % 60:02d}{n % 60:02d}",
        "UI": generate_uid(),
        "AS": "093Y",
        "DS": f"{7000 + n}.25",
        "IS": f"{880000 + n}",
    }.get(vr, 4711 if vr in NUMBERS else f"QZM{n:04d}B".encode() if vr in BINARY else f"QZM{n:04d}")


def _item(n: int) -> Dataset:
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = f"QZM{n:04d}T free text in a content item"
    item.PersonName = f"Itemperson{n:04d}^Zed"
    item.ReferencedSOPInstanceUID = generate_uid()
    return item


def marked_slice(path: Path) -> tuple[Path, dict[int, object]]:
    """A CT slice with a marker in every attribute Table E.1-1 names; (path, {tag: marker})."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    identified_ct(path, 1, study, series, frame)
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = study
    markers: dict[int, object] = {}
    keep = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"}
    for n, tag in enumerate(sorted(EXACT)):
        if tag >> 16 in KEEP_STRUCTURE or pydicom.datadict.keyword_for_tag(tag) in keep:
            continue
        vr = _vr(tag)
        if vr == "SQ":
            value = [_item(n)]
        elif tag == 0x00100040:  # Patient's Sex: a coded string
            value = "F"
        else:
            value = _marker(n, vr, study)
        ds.add_new(tag, vr, value)
        markers[tag] = value
    ds.RetrieveURL = f"https://pacs.example/studies/{study}"
    text_object = Dataset()
    text_object.UnformattedTextValue = "QZMGRAPHIC annotation naming the patient"
    annotation = Dataset()
    annotation.TextObjectSequence = [text_object]
    ds.GraphicAnnotationSequence = [annotation]
    ds.ContentSequence = [_item(9001)]
    icon = Dataset()
    icon.Rows = icon.Columns = 2
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.add_new(0x7FE00010, "OB", b"QZMICON!")
    ds.IconImageSequence = [icon]
    original = Dataset()
    original.ModifiedAttributesSequence = [Dataset()]
    original.ModifiedAttributesSequence[0].PatientName = "Original^Qzmoriginal"
    ds.OriginalAttributesSequence = [original]
    ds.add_new(0x60000010, "US", 2)
    ds.add_new(0x60000011, "US", 2)
    ds.add_new(0x60000022, "LO", "QZMOVERLAY description")
    ds.add_new(0x60001500, "LO", "QZMOVERLAYLABEL")
    ds.add_new(0x60003000, "OW", b"QZMOVLDT")
    ds.add_new(0x60004000, "LT", "QZMOVERLAY comments")
    ds.add_new(0x50002500, "LO", "QZMCURVELABEL")
    ds.add_new(0x50003000, "OB", b"QZMCURVE")
    ds.add_new(0x00991010, "LO", "QZMPRIVATE")
    ds.save_as(path, enforce_file_format=False)
    return path, markers


def _contains_marker(value) -> bool:
    if isinstance(value, bytes):
        return b"QZM" in value
    return "QZM" in str(value).upper()


@pytest.fixture()
def marked(tmp_path):
    return marked_slice(tmp_path / "src" / "Qzmfolder_PIDQ8812" / "QZMFILE_001.dcm")


def test_the_table_is_the_current_edition_and_complete():
    from ctviewer.privacy.table import EDITION, MASKED

    assert EDITION == "2026c"
    assert len(EXACT) > 600 and len(MASKED) == 3
    assert action(0x00100010) == "Z"  # Patient's Name
    assert action(0x00100020) == "Z/D"  # Patient ID
    assert action(0x00081190) is None or action(0x00081190) != "K"
    assert action(0x60003000) == "X" and action(0x60224000) == "X" and action(0x50003000) == "X"
    assert is_overlay_or_curve(0x60000010) and is_overlay_or_curve(0x501E0005)
    assert not is_overlay_or_curve(0x60010010)  # odd group: private


def test_the_checker_finds_every_marker_of_the_specimen(marked):
    """Before de-identification the checker collects the marker of every table attribute that can
    carry text, a date, a time, a UID, a long number or bytes, at every depth, and the names."""
    path, markers = marked
    values = identifying_values([path.parent])
    missing = []
    for tag, value in markers.items():
        vr = _vr(tag)
        if vr in NUMBERS or (vr == "CS" and value == "F") or vr == "SQ" or tag > 0x7FE00010:
            continue  # (after Pixel Data: the checker reads headers; the copy is checked below)
        if pydicom.datadict.keyword_for_tag(tag) in CHARACTERISTICS:
            continue
        wanted = value.decode().strip() if isinstance(value, bytes) else str(value)
        if vr in ("TM", "DT"):
            wanted = wanted.split(".")[0]
        if wanted not in values:
            missing.append((f"{tag:08X}", vr, wanted))
    assert missing == []
    for nested in ("QZM9001T free text in a content item", "Itemperson9001^Zed", "QZMPRIVATE", "093Y",
                   "QZMFILE_001", "Qzmfolder_PIDQ8812"):
        assert nested in values, nested
    # and it finds them in an output that kept them, file and folder names included
    leak = path.parent.parent / "leak" / "Qzmfolder_PIDQ8812"
    leak.mkdir(parents=True)
    (leak / "report.txt").write_text("QZM0042 was here")
    findings = find(values, [path.parent.parent / "leak"])
    wheres = {f.where for f in findings}
    assert any("folder name" in w for w in wheres) and "text" in wheres


@pytest.mark.parametrize("keep", [False, True], ids=["basic", "keep-characteristics"])
def test_no_marker_survives_anonymize(marked, tmp_path, keep):
    """``ctviewer anonymize``: no marker anywhere in the copy (any element, any depth, the names),
    the checker finds nothing, and only the options applied are claimed."""
    path, markers = marked
    out = tmp_path / "out"
    args = ["anonymize", str(path.parent), "--to", str(out)] + (["--keep-characteristics"] if keep else [])
    assert cli.main(args) == 0
    [copy] = list(out.rglob("*.dcm"))
    ds = pydicom.dcmread(copy)
    survivors = [f"{e.tag} {e.keyword} {e.value!r}"[:120] for e in ds.iterall()
                 if e.tag != 0x7FE00010 and e.VR != "SQ" and _contains_marker(e.value)
                 and not (keep and e.keyword in CHARACTERISTICS)]  # kept as asked
    assert survivors == []
    assert not any(is_overlay_or_curve(e.tag) or e.tag.is_private for e in ds.iterall())
    for kw in ("IconImageSequence", "OriginalAttributesSequence", "PatientAddress", "AdmissionID",
               "OrderCallbackPhoneNumber", "ReasonForVisit", "CommentsOnRadiationDose", "ServiceEpisodeID",
               "PatientBirthName", "InstitutionCodeSequence", "AdmittingDiagnosesCodeSequence"):
        assert kw not in ds, kw
    assert ds.StudyInstanceUID not in (markers.get(0x0020000D), "") and ds.StudyInstanceUID in str(
        ds.get("RetrieveURL", ds.StudyInstanceUID))
    text = ds.GraphicAnnotationSequence[0].TextObjectSequence[0].get("UnformattedTextValue", "")
    assert "QZM" not in text
    assert ds.ContentSequence[0].get("TextValue", "") == "" and ds.ContentSequence[0].ValueType == "TEXT"
    codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
    if keep:
        assert codes == ["113100", "113107", "113105", "113108"]
        assert ds.PatientAge == "090Y" and ds.PatientSex == "F"  # 93 years: coarsened even when kept
        assert "Retain Patient Characteristics" in ds.DeidentificationMethod
    else:
        assert codes == ["113100", "113107", "113105"]
        assert "PatientAge" not in ds and ds.get("PatientSex", "") == "" and "PatientWeight" not in ds
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientBirthDate == ""
    findings = find(identifying_values([path.parent]), [out])
    assert findings == [], "\n".join(f"{f.output}: {f.where}: {f.value} ({f.what})" for f in findings[:20])


def test_every_action_of_the_table_at_depth():
    """The same actions inside a sequence item as at the top (X removed, Z emptied, U replaced
    consistently with the top level, D given a dummy), and an age under 90 kept as it was."""
    d = Deidentifier(secret=b"s" * 32, keep_characteristics=True)
    top_uid = generate_uid()
    item = Dataset()
    item.PatientAddress = "QZM street"  # X
    item.AccessionNumber = "QZMACC"  # Z
    item.ReferencedSOPInstanceUID = top_uid  # U
    item.RequestAttributesSequence = [Dataset()]  # X: removed whole
    item.ReferencedImageSequence = [Dataset()]  # X/Z/U*: kept, its content de-identified
    item.ReferencedImageSequence[0].ScheduledProcedureStepID = "QZMSPS"  # X
    item.ReferencedImageSequence[0].ReferencedSOPInstanceUID = top_uid
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.PatientAge = "QZMPID", "Qzm^Name", "045Y"
    ds.SOPInstanceUID = top_uid
    ds.ReferencedStudySequence = [Dataset()]
    ds.SourceImageSequence = [item]
    d.dataset(ds, "patient-1")
    inner = ds.SourceImageSequence[0]
    assert "PatientAddress" not in inner
    assert "QZM" not in str(inner.get("AccessionNumber", ""))
    assert inner.ReferencedSOPInstanceUID == ds.SOPInstanceUID != top_uid  # consistent at every depth
    assert "RequestAttributesSequence" not in inner
    deeper = inner.ReferencedImageSequence[0]
    assert "ScheduledProcedureStepID" not in deeper and deeper.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PatientAge == "045Y" and "ReferencedStudySequence" not in ds


def test_broken_dates_are_emptied_not_fatal():
    """Hostile or broken dates and times stopped dicognito (a ValueError: the whole file refused);
    they are now emptied first, and the rest of the file is de-identified as usual.  The specimen
    found one of them: a DA whose name lacks "Date" (Selector DA Value) made dicognito pair it with
    itself as its own time."""
    d = Deidentifier(secret=b"s" * 32)
    ds = Dataset()
    ds.PatientID, ds.PatientName = "QZMPID", "Qzm^Name"
    ds.StudyDate, ds.StudyTime = "20191345", "99:99"
    ds.SeriesDate, ds.SeriesTime = "20190317", "134733.25"
    ds.AcquisitionDateTime = "not a date"
    ds.add_new(0x00720061, "DA", "20190317")  # Selector DA Value
    d.dataset(ds, "patient-1")
    assert ds.get("StudyDate", "") == "" and ds.get("StudyTime", "") == ""
    assert ds.get("AcquisitionDateTime", "") == "" and ds.get(0x00720061).value in ("", None)
    assert ds.SeriesDate not in ("", "20190317") and ds.SeriesTime != "134733.25"  # moved, as usual
    assert ds.PatientID.startswith("ANON-")


def test_the_key_is_never_written_into_the_folder_to_share(marked, tmp_path, capsys):
    """Issue 22: ``--key`` inside ``--to`` is refused before anything is written; the key file
    goes through an unpredictable, exclusively created temporary name and ends 0600."""
    import os
    import stat

    path, _markers = marked
    out = tmp_path / "share"
    assert cli.main(["anonymize", str(path.parent), "--to", str(out), "--key", str(out / "key.json")]) == 2
    assert "folder to share" in capsys.readouterr().err and not out.exists()
    key = tmp_path / "private" / "key.json"
    seen = []
    real_mkstemp = __import__("tempfile").mkstemp

    def spy(*a, **kw):
        fd, name = real_mkstemp(*a, **kw)
        seen.append(name)
        return fd, name

    import tempfile
    tempfile.mkstemp = spy
    try:
        assert cli.main(["anonymize", str(path.parent), "--to", str(out), "--key", str(key)]) == 0
    finally:
        tempfile.mkstemp = real_mkstemp
    assert seen and str(os.getpid()) not in Path(seen[0]).name and not Path(seen[0]).exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
