"""Header-only scan (``ctviewer.studies.headers``): the patient → study → series tree, refusals, order,
progress/cancel, and that no pixel data is ever decoded."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ctviewer.imaging import ImagingError
from ctviewer.imaging.series import iter_files
from ctviewer.studies import scan

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _write(path: Path, *, patient="P1", name="Doe^Jane", study=None, date="20210301", series=None,
           number=1, frames=None, sop=CTImageStorage, modality="CT", pixels=True, **extra) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient, name, "19600102", "F"
    ds.StudyInstanceUID = study or generate_uid()
    ds.StudyDate, ds.StudyDescription, ds.AccessionNumber = date, "CHEST", "ACC1"
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SeriesNumber, ds.Modality, ds.SeriesDescription = number, modality, f"series {number}"
    if pixels:
        n = frames or 1
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        if frames:
            ds.NumberOfFrames = frames
        ds.PixelData = np.zeros((n, 8, 8), np.int16).tobytes()
    for k, v in extra.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def tree_dir(tmp_path: Path) -> dict:
    """Two patients, three studies, series out of order, a multi-frame object, refusals, PNGs."""
    root = tmp_path / "in"
    s_old, s_new, s_b = generate_uid(), generate_uid(), generate_uid()
    ser3, ser1, ser_mf, ser_b = generate_uid(), generate_uid(), generate_uid(), generate_uid()
    files = {
        "a3_1": _write(root / "a" / "new" / "s3_1.dcm", study=s_new, series=ser3, number=3),
        "a3_2": _write(root / "a" / "new" / "s3_2.dcm", study=s_new, series=ser3, number=3),
        "a1": _write(root / "a" / "new" / "s1.dcm", study=s_new, series=ser1, number=1),
        "old_mf": _write(root / "a" / "old" / "mf.dcm", study=s_old, series=ser_mf, date="20200115", frames=4),
        "b": _write(root / "b" / "x.dcm", patient="P0", name="Roe^Rick", study=s_b, series=ser_b, date="20190101"),
        "sr": _write(root / "a" / "sr.dcm", sop=BASIC_TEXT_SR, modality="SR", pixels=False),
        "nopix": _write(root / "a" / "nopix.dcm", pixels=False),
        "rgb": _write(root / "a" / "rgb.dcm", SamplesPerPixel=3, PhotometricInterpretation="RGB"),
    }
    whole = (root / "a" / "new" / "s1.dcm").read_bytes()
    trunc = root / "a" / "trunc.dcm"
    trunc.write_bytes(whole[:140])
    files["trunc"] = trunc
    garbage = root / "a" / "junk.dcm"
    garbage.write_bytes(b"\x00" * 40 + b"hello")
    files["junk"] = garbage
    png_dir = root / "pngs"
    png_dir.mkdir()
    for i in (2, 10, 1):
        cv2.imwrite(str(png_dir / f"Covid ({i}).png"), np.full((20, 30), 100, np.uint8))
    (root / "README.txt").write_text("not a slice")
    return {"root": root, "files": files, "studies": (s_old, s_new, s_b), "series": (ser3, ser1, ser_mf, ser_b),
            "png_dir": png_dir}


def test_scan_builds_sorted_tree(tree_dir):
    patients, errors = scan([tree_dir["root"]])
    s_old, s_new, s_b = tree_dir["studies"]
    ser3, ser1, ser_mf, ser_b = tree_dir["series"]
    keys = [p.key for p in patients]
    png_key = f"folder:{os.path.abspath(tree_dir['png_dir'])}"
    assert keys == sorted(keys) == ["P0", "P1", png_key]
    p0, p1, png = patients
    assert (p1.name, p1.patient_id, p1.birth_date, p1.sex) == ("Doe^Jane", "P1", "1960-01-02", "F")
    assert [st.uid for st in p1.studies] == [s_old, s_new]  # by date
    old, new = p1.studies
    assert (old.date, new.date, new.description, new.accession, new.patient_key) == (
        "2020-01-15", "2021-03-01", "CHEST", "ACC1", "P1")
    assert [s.uid for s in new.series] == [ser1, ser3]  # by number
    assert [s.number for s in new.series] == [1, 3]
    s3 = new.series[1]
    files = tree_dir["files"]
    assert s3.files == (str(files["a3_1"]), str(files["a3_2"]))
    assert (s3.modality, s3.description, s3.n_frames, s3.study_uid) == ("CT", "series 3", 2, s_new)
    assert old.series[0].n_frames == 4 and len(old.series[0].files) == 1
    assert p0.studies[0].series[0].uid == ser_b
    # PNG folder: one pseudo-patient/study/series named after the folder.
    assert png.name == "pngs"
    assert png.studies[0].uid == png_key and png.studies[0].series[0].uid == png_key
    assert png.studies[0].series[0].n_frames == 3
    reasons = {Path(e.path).name: e.reason for e in errors}
    assert all(isinstance(e, ImagingError) for e in errors)
    assert reasons["sr.dcm"].startswith("not an image: DICOM Structured Report")
    assert reasons["nopix.dcm"].startswith("no standard pixel data")
    assert reasons["rgb.dcm"].startswith("colour image (RGB)")
    assert "damaged or truncated" in reasons["trunc.dcm"]
    assert reasons["junk.dcm"] == "not a DICOM or PNG/JPEG image"
    assert "README.txt" not in reasons


def test_scan_is_deterministic(tree_dir):
    assert scan([tree_dir["root"]])[0] == scan([tree_dir["root"]])[0]


def test_scan_never_decodes_pixels(tree_dir, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("pixel data decoded during a header scan")

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(boom))
    monkeypatch.setattr(pydicom.Dataset, "convert_pixel_data", boom)
    monkeypatch.setattr(cv2, "imread", boom)
    monkeypatch.setattr(cv2, "imdecode", boom)
    monkeypatch.setattr("ctviewer.imaging.io.read_dicom", boom)
    monkeypatch.setattr("ctviewer.imaging.io.read_raster", boom)
    patients, _ = scan([tree_dir["root"]])
    assert len(patients) == 3


def test_scan_progress_and_cancel(tree_dir):
    calls: list[tuple[int, int]] = []
    scan([tree_dir["root"]], progress=lambda d, t: calls.append((d, t)))
    total = len(list(iter_files([tree_dir["root"]])))
    assert calls == [(i, total) for i in range(1, total + 1)]
    seen: list[int] = []
    patients, errors = scan([tree_dir["root"]], progress=lambda d, t: seen.append(d), cancelled=lambda: len(seen) >= 3)
    assert seen == [1, 2, 3]
    assert sum(len(s.files) for p in patients for st in p.studies for s in st.series) + len(errors) == 3


def test_scan_refuses_oversized_files(tree_dir, monkeypatch):
    monkeypatch.setattr("ctviewer.imaging.dicom.MAX_FILE_BYTES", 100)
    patients, errors = scan([tree_dir["files"]["a1"]])
    assert patients == [] and len(errors) == 1 and "too large" in errors[0].reason


def test_scan_missing_file_and_no_uids(tmp_path):
    f = _write(tmp_path / "d" / "bare.dcm", patient="", name="")
    ds = pydicom.dcmread(f)
    del ds.StudyInstanceUID, ds.SeriesInstanceUID
    ds.save_as(f)
    patients, errors = scan([f, tmp_path / "gone.dcm"])
    assert [e.reason for e in errors] == ["file not found"]
    folder = f"folder:{os.path.abspath(tmp_path / 'd')}"
    assert patients[0].key == "unknown"
    assert patients[0].studies[0].uid == folder and patients[0].studies[0].series[0].uid == folder


# --- the shared corpus -------------------------------------------------------------------------


def test_scan_shared_corpus(SHARED_DATA):
    """Every candidate file is in the tree or refused with an ImagingError; never another exception."""
    root = SHARED_DATA / "dicom"
    total = len(list(iter_files([root])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        patients, errors = scan([root])
        rate = total / (time.perf_counter() - t0)
    print(f"\nscan: {total} files, {rate:.0f} files/s")
    n_files = sum(len(s.files) for p in patients for st in p.studies for s in st.series)
    assert n_files + len(errors) == total
    assert all(isinstance(e, ImagingError) and e.reason for e in errors)
    by_key = {p.key: p for p in patients}
    a2 = by_key["Lung_Dx-A0002"]
    assert a2.sex == "F" and a2.studies[0].date == "2007-04-25"
    assert [len(s.files) for s in a2.studies[0].series] == [16, 16]
    assert sum(s.n_frames for s in by_key["Lung_Dx-A0001"].studies[0].series) == 32
    assert rate > 100  # thousands of files in well under a minute


def test_scan_shared_dicomdir(SHARED_DATA):
    """The Philips DICOMDIR (nested DIRFILEs) gives a tree; the top-level one references files that
    are not shipped: each is refused as "file not found", the scan goes on."""
    dicomdir = SHARED_DATA / "dicom" / "dcm_qa_ct" / "In" / "Philips" / "DICOMDIR"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patients, errors = scan([dicomdir])
        _, missing = scan([SHARED_DATA / "dicom" / "dcm_qa_ct" / "DICOMDIR"])
    assert missing and {e.reason for e in missing} <= {"file not found"}
    n_files = sum(len(s.files) for p in patients for st in p.studies for s in st.series)
    assert n_files > 0
    assert n_files + len(errors) == len(list(iter_files([dicomdir])))
    assert all(s.modality for p in patients for st in p.studies for s in st.series)


def test_scan_shared_malformed_only_imaging_errors(SHARED_DATA):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patients, errors = scan([SHARED_DATA / "dicom" / "malformed"])
    assert errors and all(type(e) is ImagingError for e in errors)
