"""Finding slice files and grouping slices into sorted series."""

from __future__ import annotations

import os
import random

import numpy as np
from pydicom.fileset import FileSet

from ctviewer.imaging import Slice, find_series, group_series, iter_files, load_slices
from ctviewer.imaging.series import is_dicomdir, sort_slices

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PIX = np.zeros((2, 2), dtype=np.float32)


def sl(path="a.dcm", uid="1.2.3", position=None, orientation=(1, 0, 0, 0, 1, 0), number=None, frame=None):
    return Slice(pixels=PIX, path=path, is_hu=True, frame=frame, series_instance_uid=uid,
                 position=position, orientation=orientation, instance_number=number, sop_instance_uid=path)


def projection(s: Slice) -> float:
    """Position along the slice normal turned toward the head (+z)."""
    o = np.asarray(s.orientation, dtype=float)
    n = np.cross(o[:3], o[3:])
    return float(np.dot(s.position, -n if n[2] < 0 else n))


# --- sorting -----------------------------------------------------------------------------------------


def test_sorted_along_tilted_normal_not_by_z_or_number():
    tilt = np.radians(20)
    orientation = (1, 0, 0, 0, np.cos(tilt), -np.sin(tilt))
    normal = np.cross(orientation[:3], orientation[3:])
    slices = [sl(f"{i}.dcm", position=tuple(normal * d + (0, 30 * i, 0)), number=100 - i, orientation=orientation)
              for i, d in enumerate([5, 1, 3, 2, 4])]
    random.Random(1).shuffle(slices)
    ordered = sort_slices(slices)
    assert [projection(s) for s in ordered] == sorted((projection(s) for s in slices), reverse=True)


def test_head_at_the_top_of_the_stack():
    """Issue 13: as radiologists' viewers show a series: the most cranial slice (highest z in
    DICOM's LPS coordinates) first, whichever way the orientation's normal points."""
    for orientation in ((1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, 1, 0)):  # normal +z, and normal -z
        slices = [sl(f"{i}.dcm", position=(0.0, 0.0, z), orientation=orientation) for i, z in enumerate([-50, 10, -20])]
        assert [s.position[2] for s in sort_slices(slices)] == [10, -20, -50]


def test_instance_number_is_the_fallback():
    slices = [sl(f"{n}.dcm", number=n, position=None) for n in (3, 1, 10, 2)]
    assert [s.instance_number for s in sort_slices(slices)] == [1, 2, 3, 10]


def test_paths_in_natural_order_when_nothing_else():
    slices = [sl(p, uid=None, orientation=None) for p in ("x/Covid (10).png", "x/Covid (9).png", "x/Covid (100).png")]
    assert [s.path for s in sort_slices(slices)] == ["x/Covid (9).png", "x/Covid (10).png", "x/Covid (100).png"]


def test_multiframe_frames_stay_in_frame_order():
    frames = [sl("mf.dcm", position=(0, 0, z), frame=i) for i, z in enumerate([5, 3, 9])]
    assert [s.frame for s in sort_slices(reversed(frames))] == [0, 1, 2]


def test_group_by_series_uid_and_folder_for_raster():
    slices = [sl("a/1.dcm", uid="A", position=(0, 0, 2)), sl("b/1.dcm", uid="B", position=(0, 0, 1)),
              sl("a/2.dcm", uid="A", position=(0, 0, 1)),
              Slice(pixels=PIX, path="png/2.png", is_hu=False), Slice(pixels=PIX, path="png/1.png", is_hu=False),
              Slice(pixels=PIX, path="other/1.png", is_hu=False)]
    series = group_series(slices)
    assert [len(s) for s in series] == [2, 1, 2, 1]
    assert [s.path for s in series[0].slices] == ["a/1.dcm", "a/2.dcm"]  # z = 2 (cranial) first
    assert series[2].uid == f"folder:{os.path.abspath('png')}"
    assert [s.path for s in series[2].slices] == ["png/1.png", "png/2.png"]


# --- finding files ---------------------------------------------------------------------------------------


def test_iter_files_walks_sorted_and_skips_documents(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for name in ("a/2.dcm", "a/10.dcm", "b/IM0001", "README.md", "LICENSE", "notes.txt", "index.json",
                 "scan.png", ".hidden.dcm"):
        (tmp_path / name).write_bytes(b"x")
    found = [os.path.relpath(p, tmp_path) for p in iter_files([tmp_path])]
    assert found == ["scan.png", os.path.join("a", "10.dcm"), os.path.join("a", "2.dcm"), os.path.join("b", "IM0001")]


def test_iter_files_yields_given_files_once(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("given explicitly")
    assert list(iter_files([f, tmp_path, f])) == [str(f)]


def _ct(i: int, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1", series_uid
    ds.PatientID, ds.PatientName, ds.Modality, ds.InstanceNumber = "P", "X^Y", "CT", i + 1
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.SeriesNumber = "20200101", "120000", "1", "", 1
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(10 - i)], [1, 0, 0, 0, 1, 0]
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.full((8, 8), i, dtype="<u2").tobytes()
    return ds


def _file_set(tmp_path, n=3):
    """A DICOM media folder (DICOMDIR + files) written by pydicom's FileSet."""
    fs = FileSet()
    series_uid = generate_uid()
    for i in range(n):
        fs.add(_ct(i, series_uid))
    out = tmp_path / "media"
    fs.write(out)
    return out


def test_dicomdir_expands_to_referenced_files(tmp_path):
    root = _file_set(tmp_path)
    dicomdir = root / "DICOMDIR"
    assert is_dicomdir(str(dicomdir))
    refs = list(iter_files([dicomdir]))
    assert len(refs) == 3 and all(os.path.isfile(p) for p in refs)
    walked = list(iter_files([root]))
    assert sorted(walked) == sorted(refs)  # no duplicates, no DICOMDIR
    series, errors = find_series([root])
    assert errors == [] and len(series) == 1
    assert [s.instance_number for s in series[0].slices] == [1, 2, 3]  # instance 1 is the most cranial


def test_dicomdir_missing_reference_is_yielded_for_reporting(tmp_path):
    root = _file_set(tmp_path)
    refs = list(iter_files([root / "DICOMDIR"]))
    os.remove(refs[1])
    assert list(iter_files([root / "DICOMDIR"])) == refs
    series, errors = find_series([root])
    assert [e.reason for e in errors] == ["file not found"] and len(series[0]) == 2


# --- real data --------------------------------------------------------------------------------------------


def test_dcm_qa_ct_gantry_tilt_sorted_along_normal(SHARED_DATA):
    root = SHARED_DATA / "dicom/dcm_qa_ct"
    files = list(iter_files([root]))
    assert len(files) == len(set(files))
    assert not any(os.path.basename(f) in ("DICOMDIR", "DIRFILE") and os.path.isfile(f) for f in files)
    assert not any(f.endswith(("LICENSE", "README.md")) for f in files)
    ge = [s for f in files if os.sep + "GE" + os.sep in f for s in load_slices(f)]
    (series,) = group_series(ge)
    assert len(series) == 28
    positions = [projection(s) for s in series.slices]
    assert all(b < a for a, b in zip(positions, positions[1:]))  # head first


def test_dcm_qa_ct_dicomdir_dangling_references_are_reported(SHARED_DATA):
    root = SHARED_DATA / "dicom/dcm_qa_ct"
    files = list(iter_files([root]))
    missing = [f for f in files if not os.path.exists(f)]
    assert len(missing) > 400  # the top DICOMDIR references series that were not copied
    philips = [f for f in files if "Philips" in f and os.path.exists(f)]
    assert sorted(os.path.relpath(f, root) for f in philips) == [
        os.path.join("In", "Philips", "S21570", "S1000", "I10"),
        os.path.join("In", "Philips", "S21570", "S4010", "I10"),
        os.path.join("In", "Philips", "S21570", "S4010", "I40"),
    ]


def test_lung_pet_ct_dx_three_series(SHARED_DATA):
    series, errors = find_series([SHARED_DATA / "dicom/Lung-PET-CT-Dx"])
    assert errors == []
    by_size = sorted(series, key=lambda s: (-len(s), s.description))
    assert [len(s) for s in by_size] == [32, 16, 16]
    assert by_size[0].slices[0].meta["Manufacturer"].startswith("Philips")
    kernels = sorted(s.slices[0].meta.get("ConvolutionKernel", "") for s in by_size[1:])
    assert kernels == ["B40f", "B70f"]
    for s in series:
        positions = [projection(x) for x in s.slices]
        assert all(b < a for a, b in zip(positions, positions[1:])), s.description  # head first
