"""Specification of the DICOM reader on synthetic datasets (and a few real files)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MPEG2MPML,
    generate_uid,
)

from ctviewer.imaging import ImagingError, dicom, load_slices, read_dicom

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


def make_ct(pixels: np.ndarray | None = None, **attrs) -> Dataset:
    """A minimal CT Image dataset around ``pixels`` (frames x rows x cols or rows x cols)."""
    if pixels is None:
        pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.InstanceNumber = 7
    ds.SeriesDescription = "Chest 1mm"
    ds.ImagePositionPatient = [-100.0, -120.5, 33.0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.8]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated = 8 * pixels.dtype.itemsize
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def save(ds: Dataset, path, *, meta: bool = True, implicit: bool = False) -> str:
    """Write ``ds`` as a Part 10 file, or (``meta=False``) as a bare data set without preamble."""
    if meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    return str(path)


def read_one(ds: Dataset, tmp_path, **kw):
    slices = read_dicom(save(ds, tmp_path / "x.dcm", **kw))
    assert len(slices) == 1
    return slices[0]


def refusal(path) -> ImagingError:
    with pytest.raises(ImagingError) as info:
        load_slices(path)
    assert info.value.reason
    return info.value


# --- Hounsfield units --------------------------------------------------------------------------


def test_rescale_slope_intercept_gives_hu(tmp_path):
    raw = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    s = read_one(make_ct(raw, RescaleSlope=2.5, RescaleIntercept=-1024), tmp_path)
    assert s.is_hu and s.pixels.dtype == np.float32 and s.shape == (64, 64)
    np.testing.assert_allclose(s.pixels, raw * 2.5 - 1024)


def test_no_rescale_means_identity(tmp_path):
    raw = np.full((32, 32), 40, dtype=np.uint16)
    assert np.all(read_one(make_ct(raw), tmp_path).pixels == 40)


def test_signed_pixels(tmp_path):
    raw = np.linspace(-1024, 3000, 64 * 64).astype(np.int16).reshape(64, 64)
    s = read_one(make_ct(raw, RescaleSlope=1, RescaleIntercept=0), tmp_path)
    np.testing.assert_array_equal(s.pixels, raw.astype(np.float32))
    assert s.pixels.min() == -1024


def test_bits_stored_12_ignores_garbage_high_bits(tmp_path):
    values = np.array([0x0F0F, 0xFFFF, 0x1234, 0x0001] * 256, dtype=np.uint16).reshape(32, 32)
    ds = make_ct(values, BitsStored=12, HighBit=11, RescaleIntercept=-1024, RescaleSlope=1)
    s = read_one(ds, tmp_path)
    np.testing.assert_array_equal(s.pixels, (values & 0x0FFF).astype(np.float32) - 1024)


def test_signed_12_bit_uses_bit_11_as_sign(tmp_path):
    values = np.array([0x0F0F, 0xFFFF, 0x07FF, 0x0800] * 256, dtype=np.uint16).reshape(32, 32)
    ds = make_ct(values, BitsStored=12, HighBit=11, PixelRepresentation=1)
    s = read_one(ds, tmp_path)
    assert sorted(set(s.pixels.ravel().tolist())) == [-2048.0, -241.0, -1.0, 2047.0]


def test_monochrome1_sets_invert_and_keeps_values(tmp_path):
    raw = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    s = read_one(make_ct(raw, PhotometricInterpretation="MONOCHROME1"), tmp_path)
    assert s.invert is True
    np.testing.assert_array_equal(s.pixels, raw.astype(np.float32))
    assert read_one(make_ct(raw), tmp_path).invert is False


def test_modality_lut_sequence(tmp_path):
    raw = np.tile(np.arange(6, dtype=np.uint16), (16, 1))  # values 0..5, LUT starts at 1
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4, 1, 16])
    item.add_new("LUTData", "US", [100, 200, 300, 400])
    item.ModalityLUTType = "HU"
    ds = make_ct(raw, ModalityLUTSequence=Sequence([item]), RescaleSlope=5, RescaleIntercept=7)
    s = read_one(ds, tmp_path)
    lut = {0: 100, 1: 100, 2: 200, 3: 300, 4: 400, 5: 400}  # below first mapped / above last: clamped
    expected = np.vectorize(lut.get)(raw)
    np.testing.assert_array_equal(s.pixels, expected.astype(np.float32))


def test_window_first_value_and_invalid_width(tmp_path):
    s = read_one(make_ct(WindowCenter=[-600, 40], WindowWidth=[1500, 400]), tmp_path)
    assert s.window == (-600.0, 1500.0)
    assert read_one(make_ct(WindowCenter=40, WindowWidth=0), tmp_path).window is None
    assert read_one(make_ct(), tmp_path).window is None


def test_metadata(tmp_path):
    ds = make_ct(PatientID="P1", StudyDate="20200401", Manufacturer="ACME", SliceThickness=1.25,
                 ConvolutionKernel=["B70f", "sharp"])
    s = read_one(ds, tmp_path)
    assert s.sop_instance_uid == ds.SOPInstanceUID and s.series_instance_uid == ds.SeriesInstanceUID
    assert s.study_instance_uid == ds.StudyInstanceUID and s.instance_number == 7
    assert s.position == (-100.0, -120.5, 33.0) and s.orientation == (1, 0, 0, 0, 1, 0)
    assert s.pixel_spacing == (0.7, 0.8) and s.modality == "CT" and s.description == "Chest 1mm"
    assert s.frame is None
    assert s.meta["PatientID"] == "P1" and s.meta["StudyDate"] == "20200401"
    assert s.meta["ConvolutionKernel"] == "B70f\\sharp" and s.meta["SliceThickness"] == "1.25"
    assert s.meta["TransferSyntax"] == "Explicit VR Little Endian"
    assert all(isinstance(v, str) for v in s.meta.values())


# --- multi-frame and Enhanced CT -----------------------------------------------------------------


def test_multiframe_gives_one_slice_per_frame(tmp_path):
    raw = np.stack([np.full((16, 16), i, dtype=np.uint16) for i in range(4)])
    slices = read_dicom(save(make_ct(raw, RescaleIntercept=-1000, RescaleSlope=1), tmp_path / "m.dcm"))
    assert [s.frame for s in slices] == [0, 1, 2, 3]
    assert [float(s.pixels[0, 0]) for s in slices] == [-1000.0, -999.0, -998.0, -997.0]
    assert slices[2].label == "m.dcm [frame 3]"


def _fg(**sequences) -> Dataset:
    item = Dataset()
    for name, attrs in sequences.items():
        inner = Dataset()
        for k, v in attrs.items():
            setattr(inner, k, v)
        setattr(item, name, Sequence([inner]))
    return item


def test_enhanced_ct_functional_groups(tmp_path):
    raw = np.stack([np.full((16, 16), 1000, dtype=np.uint16)] * 3)
    ds = make_ct(raw, SOPClassUID=EnhancedCTImageStorage)
    for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, k)
    ds.SharedFunctionalGroupsSequence = Sequence([_fg(
        PixelValueTransformationSequence={"RescaleSlope": 1, "RescaleIntercept": -1024, "RescaleType": "HU"},
        PlaneOrientationSequence={"ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
        PixelMeasuresSequence={"PixelSpacing": [0.5, 0.5], "SliceThickness": 1},
        FrameVOILUTSequence={"WindowCenter": -600, "WindowWidth": 1500},
    )])
    per = [_fg(PlanePositionSequence={"ImagePositionPatient": [0, 0, z]}) for z in (10, 11, 12)]
    per[2] = _fg(
        PlanePositionSequence={"ImagePositionPatient": [0, 0, 12]},
        PixelValueTransformationSequence={"RescaleSlope": 2, "RescaleIntercept": -1000},
        FrameVOILUTSequence={"WindowCenter": 40, "WindowWidth": 400},
    )
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.RescaleIntercept = 0  # a top-level value must not win over the functional groups
    ds.RescaleSlope = 1
    slices = read_dicom(save(ds, tmp_path / "e.dcm"))
    assert [s.frame for s in slices] == [0, 1, 2]
    assert [float(s.pixels[0, 0]) for s in slices] == [-24.0, -24.0, 1000.0]
    assert [s.position for s in slices] == [(0, 0, 10), (0, 0, 11), (0, 0, 12)]
    assert slices[0].orientation == (1, 0, 0, 0, 1, 0) and slices[0].pixel_spacing == (0.5, 0.5)
    assert [s.window for s in slices] == [(-600, 1500), (-600, 1500), (40, 400)]


# --- encodings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [True, False])
def test_no_preamble_no_file_meta(tmp_path, implicit):
    raw = np.arange(32 * 32, dtype=np.int16).reshape(32, 32) - 500
    path = save(make_ct(raw, RescaleIntercept=-1024, RescaleSlope=1), tmp_path / "bare", meta=False,
                implicit=implicit)
    with open(path, "rb") as fh:
        assert fh.read(132)[128:] != b"DICM"
    (s,) = load_slices(path)
    np.testing.assert_array_equal(s.pixels, raw.astype(np.float32) - 1024)


def test_invalid_transfer_syntax_uid_on_native_pixels_is_guessed(tmp_path):
    ds = make_ct(np.full((16, 16), 5, dtype=np.uint16))
    path = save(ds, tmp_path / "x.dcm")
    data = open(path, "rb").read().replace(ExplicitVRLittleEndian.encode(), b"9.8.7.6.5.4.3.2.1.0")
    open(path, "wb").write(data)
    (s,) = load_slices(path)
    assert np.all(s.pixels == 5)


def test_syntax_nothing_installed_decodes_is_named(tmp_path):
    ds = make_ct(np.zeros((16, 16), dtype=np.uint16))
    path = save(ds, tmp_path / "mpeg.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\0" * 60])
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path)
    err = refusal(path)
    assert "MPEG2" in err.reason and "cannot decode" in err.reason


# --- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sop, modality, words",
    [
        (BASIC_TEXT_SR, "SR", "not an image: DICOM Structured Report"),
        (RT_STRUCTURE_SET, "RTSTRUCT", "not an image: RT structure set"),
        (ENCAPSULATED_PDF, "DOC", "not an image: encapsulated PDF document"),
        (SEGMENTATION, "SEG", "not an image: segmentation"),
        ("1.2.3.4.5", "KO", "not an image: key object selection"),
    ],
)
def test_non_image_objects_are_refused(tmp_path, sop, modality, words):
    ds = make_ct(SOPClassUID=sop, Modality=modality)
    if modality != "SEG":
        del ds.PixelData
    err = refusal(save(ds, tmp_path / "obj.dcm"))
    assert err.reason == words


def test_missing_pixel_data_is_refused(tmp_path):
    ds = make_ct()
    del ds.PixelData
    assert refusal(save(ds, tmp_path / "summary.dcm")).reason.startswith("no standard pixel data")


def test_rgb_is_refused(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    ds = make_ct(np.zeros((16, 16), dtype=np.uint8), SamplesPerPixel=3, PhotometricInterpretation="RGB",
                 PlanarConfiguration=0)
    ds.PixelData = rgb.tobytes()
    assert "colour image (RGB)" in refusal(save(ds, tmp_path / "rgb.dcm")).reason


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.3, 0.5, 0.9, 0.999])
def test_truncated_file_is_refused(tmp_path, fraction):
    path = save(make_ct(), tmp_path / "full.dcm")
    data = open(path, "rb").read()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: int(len(data) * fraction)])
    err = refusal(cut)
    assert str(err).startswith("cut.dcm: ")


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    path = save(make_ct(np.zeros((3, 64, 64), dtype=np.uint16)), tmp_path / "big.dcm")
    decoded = []
    monkeypatch.setattr(dicom, "_decode", lambda p, ds: decoded.append(p))
    monkeypatch.setattr(dicom, "MAX_TOTAL_PIXELS", 2 * 64 * 64)
    assert refusal(path).reason == "image is too large (3 frames of 64x64 pixels)"
    monkeypatch.setattr(dicom, "MAX_PIXELS_PER_FRAME", 100)
    assert refusal(path).reason == "image is too large (64x64 pixels)"
    assert decoded == []


def test_file_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    path = save(make_ct(), tmp_path / "x.dcm")
    monkeypatch.setattr(dicom, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: pytest.fail("read a file over the limit"))
    assert refusal(path).reason.startswith("file is too large")


@pytest.mark.parametrize("exc", [RecursionError, TypeError, AttributeError, OSError, KeyError, MemoryError])
def test_any_parser_exception_becomes_imaging_error(tmp_path, monkeypatch, exc):
    path = save(make_ct(), tmp_path / "x.dcm")

    def boom(*args, **kwargs):
        raise exc("boom")

    monkeypatch.setattr(pydicom, "dcmread", boom)
    err = refusal(path)
    assert "boom" not in err.reason


def test_keyboard_interrupt_is_not_swallowed(tmp_path, monkeypatch):
    path = save(make_ct(), tmp_path / "x.dcm")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pydicom, "dcmread", interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_slices(path)


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes"
    path.write_text("Patient notes: nothing to see here.\n" * 10)
    assert refusal(path).reason == "not a DICOM or PNG/JPEG image"


def test_missing_file(tmp_path):
    assert refusal(tmp_path / "gone.dcm").reason == "file not found"


# --- real files ----------------------------------------------------------------------------------------


def test_real_enhanced_ct_uses_functional_group_rescale(SHARED_DATA):
    path = SHARED_DATA / "dicom/pydicom-data/data_store/data/eCT_Supplemental.dcm"
    slices = read_dicom(path)
    raw = pydicom.dcmread(path).pixel_array
    assert [s.frame for s in slices] == [0, 1]
    for s, frame in zip(slices, raw):
        np.testing.assert_array_equal(s.pixels, frame.astype(np.float32) - 1024)
    assert slices[0].position != slices[1].position


def test_real_signed_12_bit(SHARED_DATA):
    (s,) = read_dicom(SHARED_DATA / "dicom/dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm")
    assert s.pixels.min() == -2048 and s.pixels.max() == 2047


def test_real_monochrome1(SHARED_DATA):
    (s,) = read_dicom(SHARED_DATA / "dicom/pydicom-data/data_store/data/RG3_J2KR.dcm")
    assert s.invert and s.modality == "CR"
