"""Reports of a batch study review: CSV, PDF, DICOM SR and Secondary Capture."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pydicom
import pytest

from ctviewer import __version__
from ctviewer.inference.card import ModelCard
from ctviewer.reports import CSV_COLUMNS, read_sr, write_csv, write_heatmap_sc, write_pdf, write_sr
from ctviewer.reports.dicom_sr import COMPREHENSIVE_SR, CT_IMAGE, SECONDARY_CAPTURE, study_uid
from ctviewer.reports.pdf import page_count
from ctviewer.studies import PatientNode, SeriesNode, SliceResult, StudyNode, StudyResult, Thumbnail, Verdict

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "samples" / "lung-pet-ct-dx-A0002-siemens-b40f-1-08.dcm"
MODEL = "ct-resnet50 1.1.0"


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.load(ROOT / "resources" / "models" / "ct-resnet50")


def _slices(series_uid: str, folder: str, uid_root: str) -> list[SliceResult]:
    """Three lung slices (one multi-frame object, two frames), one without lung, one refused."""
    mf = f"{uid_root}.100"
    return [
        SliceResult(f"{folder}/IM1.dcm", None, f"{uid_root}.1", series_uid, -100.0, 1, 0.91, "COVID", True, 0.4),
        SliceResult(f"{folder}/IM2.dcm", None, f"{uid_root}.2", series_uid, -110.5, 2, 0.12, "non-COVID", True, 0.35),
        SliceResult(f"{folder}/MF.dcm", 0, mf, series_uid, -120.0, 3, 0.77, "COVID", True, 0.3),
        SliceResult(f"{folder}/MF.dcm", 2, mf, series_uid, -125.0, 3, 0.42, "non-COVID", True, 0.25),
        SliceResult(f"{folder}/IM5.dcm", None, f"{uid_root}.5", series_uid, 60.0, 5, 0.55, "COVID", False, 0.0),
        SliceResult(f"{folder}/IM6.dcm", None, f"{uid_root}.6", series_uid, None, 6, None, "", True, 0.0,
                    error=f"{folder}/IM6.dcm: damaged file"),
    ]


def _verdict() -> Verdict:
    return Verdict("COVID", 0.83, 0.5, n_lung=4, n_positive=2, n_excluded=1, n_refused=1,
                   rule="COVID when at least 40% of the lung slices score above the threshold.")


def _result(patient: PatientNode, study_uid_: str, series_uid: str, folder: str, uid_root: str,
            date: str = "2020-05-01") -> StudyResult:
    slices = _slices(series_uid, folder, uid_root)
    series = SeriesNode(series_uid, tuple(sorted({s.path for s in slices})), "CT", "Chest", 2, len(slices),
                        study_uid_)
    study = StudyNode(study_uid_, (series,), date, "CT chest", "ACC-778899", patient.key)
    return StudyResult(study, patient, slices, _verdict(), MODEL, "ab" * 32, 0.5)


@pytest.fixture
def synthetic() -> StudyResult:
    patient = PatientNode("PAT-12345", "Doe^Jane", "PAT-12345", "1960-01-02", "F")
    return _result(patient, "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2",
                   "/data/Doe_Jane/ct", "1.2.826.0.1.3680043.8.498.3")


@pytest.fixture
def real() -> StudyResult:
    """UIDs and patient module of the real Lung-PET-CT-Dx sample; the first slice is the sample itself."""
    ds = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    born = str(ds.get("PatientBirthDate", "") or "")
    patient = PatientNode(str(ds.PatientID), str(ds.PatientName), str(ds.PatientID),
                          f"{born[:4]}-{born[4:6]}-{born[6:]}" if len(born) == 8 else "", str(ds.PatientSex))
    r = _result(patient, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(SAMPLE.parent),
                "1.2.826.0.1.3680043.8.498.9")
    r.slices[0] = SliceResult(str(SAMPLE), None, str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID),
                              float(ds.ImagePositionPatient[2]), int(ds.InstanceNumber), 0.91, "COVID", True, 0.4)
    return r


def _thumbs(result: StudyResult, n: int = 3) -> list[Thumbnail]:
    yy, xx = np.mgrid[0:48, 0:64]
    image = ((xx * 4) % 256).astype(np.uint8)
    ok = [s for s in result.slices if s.ok]
    out = []
    for i in range(n):
        heat = np.exp(-((xx - 20 - 3 * i) ** 2 + (yy - 24) ** 2) / 80.0).astype(np.float32)
        out.append(Thumbnail(ok[i % len(ok)], image, heat if i % 3 != 2 else None))
    return out


# --- CSV -------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def test_csv_round_trip(tmp_path, synthetic, real):
    dest = tmp_path / "slices.csv"
    n = write_csv([synthetic, real], dest)
    rows = _read_csv(dest)
    assert n == len(rows) == len(synthetic.slices) + len(real.slices)
    assert list(tmp_path.iterdir()) == [dest]  # no temporary file left behind
    for row, s in zip(rows, synthetic.slices + real.slices):
        assert row["path"] == s.path and row["sop_instance_uid"] == s.sop_instance_uid
        assert row["frame"] == ("" if s.frame is None else str(s.frame + 1))
        assert row["p_covid"] == ("" if s.p_covid is None else repr(s.p_covid))
        if s.p_covid is not None:
            assert float(row["p_covid"]) == s.p_covid
        assert row["position"] == ("" if s.position is None else repr(s.position))
        assert row["has_lung"] == ("1" if s.has_lung else "0") and row["label"] == s.label
        assert row["study_verdict"] == "COVID" and float(row["study_confidence"]) == 0.83
        assert row["model"] == MODEL
    first = rows[0]
    assert (first["patient_name"], first["patient_id"]) == ("Doe^Jane", "PAT-12345")
    assert first["study_uid"] == synthetic.study.uid and first["study_date"] == "2020-05-01"
    assert rows[3]["frame"] == "3" and rows[5]["error"].endswith("damaged file") and rows[5]["p_covid"] == ""
    assert rows[6]["patient_id"] == real.patient.patient_id


def test_csv_anonymized(tmp_path, synthetic):
    folder = StudyResult(StudyNode("folder:/data/Smith_John", ()), PatientNode("folder:/data/Smith_John", "Smith_John"),
                         [SliceResult("/data/Smith_John/a.png", series_uid="folder:/data/Smith_John",
                                      p_covid=0.3, label="non-COVID")])
    dest = tmp_path / "anon.csv"
    assert write_csv([synthetic, folder], dest, anonymize=True) == 7
    rows = _read_csv(dest)
    # issue 16: pseudonymous patient IDs, file names and UIDs (ctviewer.privacy.deid), no names
    assert all(r["patient_name"] == "" and r["patient_id"].startswith("ANON-") for r in rows)
    assert all(r["path"].startswith("img-") for r in rows) and rows[0]["path"].endswith(".dcm")
    assert rows[5]["error"] == f"{rows[5]['path']}: damaged file"
    assert rows[6]["study_uid"].startswith("folder:") and rows[6]["study_uid"] == rows[6]["series_uid"]
    assert rows[0]["sop_instance_uid"] not in ("", synthetic.slices[0].sop_instance_uid)
    assert rows[0]["study_uid"] != synthetic.study.uid
    text = dest.read_text(encoding="utf-8")
    for secret in ("Doe", "PAT-12345", "Smith_John", "/data/", "IM1.dcm", synthetic.study.uid):
        assert secret not in text


# --- PDF -------------------------------------------------------------------------------------


def _pdf_text(data: bytes) -> str:
    """Text shown on the pages of an uncompressed PDF: one line per Tj/TJ operator (image streams skipped).

    Ligatures ("fi") and characters above U+00FF are drawn apart, so searched texts avoid them.
    """
    out, pos = [], 0
    while (start := data.find(b"stream\n", pos)) >= 0:
        end = data.find(b"endstream", start)
        pos = end + 9
        if b"/Image" in data[max(0, data.rfind(b"obj", 0, start)):start]:
            continue
        buf = []
        # Bounded literals: an unbounded one makes the scan quadratic on binary streams.
        for m in re.finditer(rb"\((?:[^\\()\n]|\\.){0,400}\)|\bT[Jj]\b", data[start + 7:end]):
            if m.group().startswith(b"("):
                buf.append(re.sub(rb"\\(.)", rb"\1", m.group()[1:-1]))
            else:
                out.append(b"".join(buf).decode("latin-1"))
                buf = []
    return "\n".join(out)


def _pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def _write_pdf(*args, **kwargs) -> bytes:
    with matplotlib.rc_context({"pdf.compression": 0, "pdf.fonttype": 3}):
        return write_pdf(*args, **kwargs).read_bytes()


def test_pdf_pages_and_content(tmp_path, real, card):
    dest = tmp_path / "study.pdf"
    data = _write_pdf(real, dest, card, _thumbs(real), software_version="9.8.7")
    assert data.startswith(b"%PDF") and _pages(data) == page_count(3) == 3
    text = _pdf_text(data)
    for expected in (real.patient.name, real.patient.patient_id, "Verdict: COVID", "dence 83%", "another model",
                     "not judged (no lung, not axial)", "threshold 0.5", "slice position (mm)", "Most suspicious slices",
                     SAMPLE.name, "Model card summary", card.title, card.sha256[:16], "95% CI",
                     "Known limits", "CC BY-NC-SA 4.0", "CT Viewer 9.8.7", "page 3/3",
                     "At hospitals it never trained on: AUC 0.58 (ucsd), 0.48 (mosmed)"):
        assert expected in text, expected
    assert text.count("Research use only") >= 4  # footer on every page + the card page
    assert re.search(r"created \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert list(tmp_path.iterdir()) == [dest]


def test_pdf_page_count_follows_thumbnails(tmp_path, synthetic, card):
    for n, pages in ((0, 3), (6, 3), (7, 4), (13, 5)):
        data = write_pdf(synthetic, tmp_path / f"{n}.pdf", card, _thumbs(synthetic, n)).read_bytes()
        assert data.startswith(b"%PDF") and _pages(data) == page_count(n) == pages


def test_pdf_without_verdict_or_positions(tmp_path, synthetic, card):
    synthetic.verdict, synthetic.model_sha256 = None, card.sha256
    synthetic.slices = [SliceResult("/x/a.png", p_covid=0.7, label="COVID"), SliceResult("/x/b.png", error="bad")]
    text = _pdf_text(_write_pdf(synthetic, tmp_path / "r.pdf", card, software_version=__version__))
    assert "No verdict" in text and "slice index" in text and "No thumbnails" in text
    assert f"CT Viewer {__version__}" in text and "another model" not in text


def test_pdf_anonymized(tmp_path, synthetic, card):
    data = _write_pdf(synthetic, tmp_path / "anon.pdf", card, _thumbs(synthetic), anonymize=True)
    assert data.startswith(b"%PDF") and _pages(data) == 3
    text = _pdf_text(data)
    assert "anonymised" in text and "Verdict: COVID" in text
    for secret in ("Doe", "PAT-12345", "1960-01-02", "IM1.dcm", "MF.dcm", "/data/"):
        assert secret not in text and secret.encode() not in data, secret
    plain = _pdf_text(_write_pdf(synthetic, tmp_path / "plain.pdf", card, _thumbs(synthetic)))
    assert "Doe^Jane" in plain and "PAT-12345" in plain and "1960-01-02" in plain and "IM1.dcm" in plain


# --- DICOM SR --------------------------------------------------------------------------------


def test_sr_round_trip_real_sample(tmp_path, real):
    path = write_sr(real, tmp_path / "sr.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == COMPREHENSIVE_SR == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    src = pydicom.dcmread(SAMPLE, stop_before_pixels=True)
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.Modality == "SR"
    assert ds.SeriesInstanceUID not in (src.SeriesInstanceUID, "") and ds.SOPInstanceUID != src.SOPInstanceUID
    assert (ds.PatientName, ds.PatientID, ds.PatientSex) == (src.PatientName, src.PatientID, src.PatientSex)
    assert ds.ValueType == "CONTAINER" and ds.ConceptNameCodeSequence[0].CodeMeaning == "CT Viewer AI second opinion"
    assert ds.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99CTVIEWER"
    assert ds.CompletionFlag == "COMPLETE" and ds.SoftwareVersions == __version__
    sr = read_sr(path)
    assert sr["study_uid"] == src.StudyInstanceUID
    assert sr["Study verdict"] == "COVID" and sr["Verdict confidence"] == 0.83 and sr["Verdict score"] == 0.5
    assert (sr["Lung slices classified"], sr["Slices refused"]) == (4, 1)
    assert sr["Verdict rule"] == real.verdict.rule
    assert (sr["Algorithm Name"], sr["Algorithm Version"]) == ("ct-resnet50", "1.1.0")
    assert sr["Model SHA-256"] == "ab" * 32 and sr["Software version"] == f"CT Viewer {__version__}"
    ok = [s for s in real.slices if s.ok]
    assert len(sr["findings"]) == len(ok) == 5
    for f, s in zip(sr["findings"], ok):
        assert f["p(COVID)"] == s.p_covid and f["Slice label"] == s.label
        assert f["Lung present"] == ("Yes" if s.has_lung else "No")
        assert f["sop_instance_uid"] == s.sop_instance_uid
        assert f["frame"] == (None if s.frame is None else s.frame + 1)
    assert sr["findings"][0]["sop_class_uid"] == src.SOPClassUID  # read from the file
    assert sr["findings"][1]["sop_class_uid"] == CT_IMAGE  # no file: the default
    assert sr["findings"][0]["sop_instance_uid"] == src.SOPInstanceUID
    ev = ds.CurrentRequestedProcedureEvidenceSequence
    assert len(ev) == 1 and ev[0].StudyInstanceUID == src.StudyInstanceUID
    (series,) = ev[0].ReferencedSeriesSequence
    assert series.SeriesInstanceUID == src.SeriesInstanceUID
    refs = [r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence]
    assert refs == list(dict.fromkeys(s.sop_instance_uid for s in ok))  # multi-frame object once
    assert src.SOPInstanceUID in refs and real.slices[-1].sop_instance_uid not in refs  # refused slice


def test_sr_anonymized(tmp_path, synthetic):
    path = write_sr(synthetic, tmp_path / "anon.dcm", anonymize=True)
    ds = pydicom.dcmread(path)
    assert str(ds.PatientName) == ds.PatientID and ds.PatientID.startswith("ANON-")
    assert ds.PatientBirthDate == "" and ds.AccessionNumber == "" and ds.PatientIdentityRemoved == "YES"
    assert ds.StudyInstanceUID != synthetic.study.uid  # replaced (issue 16)
    raw = path.read_bytes()
    for secret in (b"Doe", b"PAT-12345", b"19600102", b"IM1.dcm", b"/data/", b"ACC-778899"):
        assert secret not in raw
    plain = pydicom.dcmread(write_sr(synthetic, tmp_path / "plain.dcm"))
    assert (plain.PatientName, plain.PatientID, plain.PatientBirthDate) == ("Doe^Jane", "PAT-12345", "19600102")


def test_sr_folder_study_and_cancelled(tmp_path):
    key = "folder:/data/Smith_John"
    r = StudyResult(StudyNode(key, ()), PatientNode(key, "Smith_John"),
                    [SliceResult("/data/Smith_John/a.png", series_uid=key, p_covid=0.25, label="non-COVID")],
                    None, "", "", cancelled=True)
    from ctviewer.privacy import Deidentifier

    shown = Deidentifier().study_result(r)  # one export: its SR and SC share the study
    ds = pydicom.dcmread(write_sr(shown, tmp_path / "sr.dcm", anonymize=True))
    assert ds.StudyInstanceUID == study_uid(shown) and ds.StudyInstanceUID.startswith("2.25.")
    assert ds.StudyInstanceUID != study_uid(r)
    assert pydicom.uid.UID(ds.StudyInstanceUID).is_valid
    assert ds.CompletionFlag == "PARTIAL" and "CurrentRequestedProcedureEvidenceSequence" not in ds
    assert b"Smith_John" not in (tmp_path / "sr.dcm").read_bytes()
    sr = read_sr(tmp_path / "sr.dcm")
    assert sr["Study verdict"] == "not classified" and "Incomplete" in sr
    assert sr["findings"] == [{"p(COVID)": 0.25, "Slice label": "non-COVID", "Lung present": "Yes"}]
    assert study_uid(shown) == ds.StudyInstanceUID  # stable: SR and SC of a folder share a study


# --- Secondary Capture -----------------------------------------------------------------------


def test_heatmap_sc(tmp_path, real):
    thumb = _thumbs(real, 1)[0]
    path = write_heatmap_sc(real, thumb, tmp_path / "sc.dcm")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.StudyInstanceUID == real.study.uid
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SeriesInstanceUID != real.slices[0].series_uid
    assert "AI heatmap, not for diagnosis" in ds.ImageComments
    assert "AI heatmap, not for diagnosis" in ds.DerivationDescription
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == thumb.slice.sop_instance_uid
    pixels = ds.pixel_array
    assert pixels.shape == (48, 64, 3) and pixels.dtype == np.uint8
    cold = pixels[0, 63]  # heatmap ~0: the grey slice unchanged
    assert cold[0] == cold[1] == cold[2] == thumb.image[0, 63]
    hot = pixels[24, 20].astype(int)  # heatmap 1: coloured
    assert hot.max() - hot.min() > 50
    anon = pydicom.dcmread(write_heatmap_sc(real, thumb, tmp_path / "anon.dcm", anonymize=True))
    assert str(anon.PatientName).startswith("ANON-") and anon.PatientID.startswith("ANON-")
    assert anon.PatientBirthDate == ""
    grey = pydicom.dcmread(write_heatmap_sc(real, Thumbnail(thumb.slice, thumb.image), tmp_path / "g.dcm"))
    assert np.array_equal(grey.pixel_array[..., 0], thumb.image)


def test_reports_import_neither_qt_nor_tensorflow():
    code = ("import sys, ctviewer.reports.csv_report, ctviewer.reports.pdf, ctviewer.reports.dicom_sr; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'PySide6')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_reports_are_ordinary_files_not_private_temporaries(tmp_path, synthetic):
    import os

    dest = tmp_path / "perm.csv"
    write_csv([synthetic], dest)
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask
