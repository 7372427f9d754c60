"""The preprocessing contract: slice -> model input, shared by training and the app."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ctviewer.imaging import ImagingError
from ctviewer.imaging.preprocess import (
    PreprocessParams,
    chest_box,
    crop_resize,
    display8,
    heatmap_to_slice,
    model_input_and_box,
    to_model_input,
)
from ctviewer.imaging.raster import read_raster, to_grey8
from ctviewer.imaging.slice import Slice
from ctviewer.imaging.window import PRESETS, apply_window

from .synthetic import chest_hu, chest_png8, lung_mask

P = PreprocessParams()


def hu_slice(hu, **kw):
    return Slice(pixels=hu.astype(np.float32), path="x.dcm", is_hu=True, **kw)


def png_slice(img8):
    return Slice(pixels=img8, path="x.png", is_hu=False)


# --- windowing -------------------------------------------------------------

def test_presets_are_the_usual_chest_windows():
    assert PRESETS == {"lung": (-600.0, 1500.0), "mediastinum": (50.0, 350.0), "bone": (500.0, 2000.0)}


def test_window_maps_its_range_linearly_and_clips():
    hu = np.array([-2000, -1350, -600, 150, 3000], np.float32)
    assert apply_window(hu, -600, 1500).tolist() == [0, 0, 128, 255, 255]


def test_window_invert_for_monochrome1():
    hu = np.array([-1350, 150], np.float32)
    assert apply_window(hu, -600, 1500, invert=True).tolist() == [255, 0]


def test_window_rejects_non_positive_width():
    with pytest.raises(ValueError):
        apply_window(np.zeros(3), 0, 0)


# --- the model input -------------------------------------------------------

def test_model_input_shape_dtype_range_and_equal_channels():
    x = to_model_input(hu_slice(chest_hu()))
    assert x.shape == (80, 80, 3) and x.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 255
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])


def test_size_is_a_parameter():
    assert to_model_input(hu_slice(chest_hu()), PreprocessParams(size=64)).shape == (64, 64, 3)


def test_dicom_goes_through_the_models_window_not_the_display_window():
    hu = chest_hu()
    s = hu_slice(hu, window=(40.0, 400.0))  # the file's own (mediastinal) window is for display only
    assert np.array_equal(display8(s, P), apply_window(hu, -600, 1500))


def test_monochrome1_is_inverted_before_the_model_sees_it():
    hu = chest_hu()
    assert np.array_equal(display8(hu_slice(hu, invert=True), P), 255 - display8(hu_slice(hu), P))


def test_crop_finds_the_lungs_in_a_full_field_of_view():
    hu = chest_hu(512)
    x0, y0, x1, y1 = chest_box(display8(hu_slice(hu), P), margin=0)
    ly, lx = np.nonzero(lung_mask(512))
    assert abs(x0 - lx.min()) <= 6 and abs(x1 - 1 - lx.max()) <= 6
    assert abs(y0 - ly.min()) <= 6 and abs(y1 - 1 - ly.max()) <= 6


def test_crop_of_a_dataset_like_png_is_almost_the_whole_image():
    img = chest_png8()
    x0, y0, x1, y1 = chest_box(img, P.margin)
    h, w = img.shape
    assert (x1 - x0) >= 0.9 * w and (y1 - y0) >= 0.85 * h


def test_full_field_dicom_and_cropped_png_give_the_same_input():
    """The crop removes air, table and body outline: scale and intensities agree.  (Intensities
    as stored: the synthetic chest has no airway, the air landmark of ``standardise8``; its
    specification is tested on real DICOM in test_preprocess_real.py.)"""
    raw = PreprocessParams(raster_intensity="none")
    full = to_model_input(hu_slice(chest_hu(512)), raw)
    cropped = to_model_input(png_slice(chest_png8()), raw)
    assert np.abs(full - cropped).mean() < 12  # grey levels out of 255


def test_blank_or_tiny_contrast_image_falls_back_to_the_whole_image():
    img = np.full((100, 120), 7, np.uint8)
    assert chest_box(img) == (0, 0, 120, 100)
    assert to_model_input(png_slice(img)).shape == (80, 80, 3)


def test_resize_uses_area_interpolation():
    img = (np.indices((160, 160)).sum(0) % 2 * 255).astype(np.uint8)  # 1-px checkerboard
    x = crop_resize(img, (0, 0, 160, 160), 80)
    assert np.allclose(x, 127.5, atol=1)  # INTER_AREA averages; nearest/linear would alias


def test_padding_a_png_by_a_few_pixels_barely_moves_the_input():
    img = chest_png8()
    base = to_model_input(png_slice(img))
    for value in (0, 255):
        padded = cv2.copyMakeBorder(img, 4, 4, 4, 4, cv2.BORDER_CONSTANT, value=value)
        assert np.abs(to_model_input(png_slice(padded)) - base).mean() < 6


# --- PNG/JPEG modes --------------------------------------------------------

def test_grey_rgb_rgba_and_16bit_pngs_give_identical_pixels(tmp_path):
    grey = chest_png8()
    variants = {
        "grey.png": grey,
        "rgb.png": cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR),
        "rgba.png": cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA),
        "grey16.png": grey.astype(np.uint16) * 257,
    }
    for name, arr in variants.items():
        cv2.imwrite(str(tmp_path / name), arr)
        s = read_raster(tmp_path / name)
        assert s.pixels.dtype == np.uint8 and s.pixels.ndim == 2
        assert np.array_equal(s.pixels, grey), name
        assert not s.is_hu


def test_colour_content_becomes_luminance():
    bgr = np.zeros((20, 20, 3), np.uint8)
    bgr[..., 2] = 255  # pure red
    assert to_grey8(bgr)[0, 0] == 76


def test_transparent_pixels_composite_over_black():
    bgra = np.full((20, 20, 4), 200, np.uint8)
    bgra[..., 3] = 0
    assert to_grey8(bgra).max() == 0


def test_jpeg_reads(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), chest_png8())
    assert read_raster(tmp_path / "a.jpg").pixels.shape == (220, 300)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not a PNG or JPEG"),
        (b"hello world, not an image", "not a PNG or JPEG"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "damaged or truncated"),
    ],
)
def test_bad_raster_files_are_refused_with_name_and_reason(tmp_path, content, reason):
    f = tmp_path / "bad.png"
    f.write_bytes(content)
    with pytest.raises(ImagingError) as e:
        read_raster(f)
    assert reason in e.value.reason and "bad.png" in str(e.value)


def test_truncated_png_is_refused(tmp_path):
    ok = tmp_path / "ok.png"
    cv2.imwrite(str(ok), chest_png8())
    data = ok.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImagingError):
        read_raster(cut)


def test_png_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    import ctviewer.imaging.raster as raster

    monkeypatch.setattr(raster, "MAX_PIXELS_PER_FRAME", 100 * 100)
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((200, 200), np.uint8))
    with pytest.raises(ImagingError, match="too large"):
        raster.read_raster(tmp_path / "big.png")


# --- model input and its box; maps back onto the slice -------------------------

def off_centre_chest(h: int = 400, w: int = 460, x: int = 170, y: int = 40, size: int = 256):
    """``chest_hu(size)`` placed at (x, y) in a larger air-filled field, and its lung mask there."""
    hu = np.full((h, w), -1000.0, np.float32)
    hu += np.random.default_rng(5).normal(0, 15, hu.shape).astype(np.float32)
    hu[y : y + size, x : x + size] = chest_hu(size)
    mask = np.zeros((h, w), bool)
    mask[y : y + size, x : x + size] = lung_mask(size)
    return hu, mask


@pytest.mark.parametrize("make", [lambda: hu_slice(off_centre_chest()[0]), lambda: png_slice(chest_png8())])
def test_model_input_and_box_is_to_model_input_plus_the_chest_box(make):
    s = make()
    x, box = model_input_and_box(s, P)
    assert np.array_equal(x, to_model_input(s, P))
    assert box == chest_box(display8(s, P), P.margin)
    assert x.shape == (P.size, P.size, 3) and x.dtype == np.float32


def test_box_of_an_off_centre_body_is_around_its_lungs():
    hu, mask = off_centre_chest()
    _, (x0, y0, x1, y1) = model_input_and_box(hu_slice(hu), P)
    ly, lx = np.nonzero(mask)
    assert x0 <= lx.min() and x1 > lx.max() and y0 <= ly.min() and y1 > ly.max()
    assert x0 > 150 and y0 > 30  # follows the body, not the image centre


def test_heatmap_to_slice_puts_the_maps_top_left_at_the_boxs_top_left():
    hu, _ = off_centre_chest()
    s = hu_slice(hu)
    _, box = model_input_and_box(s, P)
    x0, y0, x1, y1 = box
    cam = np.zeros((P.size, P.size), np.float32)
    cam[: P.size // 2, : P.size // 2] = 1.0
    m = heatmap_to_slice(cam, box, s.shape)
    assert m.shape == s.shape == hu.shape and m.dtype == np.float32
    outside = np.ones(m.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert not m[outside].any()
    assert 0 <= m.min() and m.max() <= 1
    bw, bh = x1 - x0, y1 - y0
    inner = m[y0:y1, x0:x1]
    # well inside each quadrant of the box (away from the interpolated seam)
    assert np.all(inner[: int(0.4 * bh), : int(0.4 * bw)] == 1.0)
    assert not inner[int(0.6 * bh) :, :].any() and not inner[:, int(0.6 * bw) :].any()
    ys, xs = np.nonzero(m > 0.5)
    assert abs(ys.mean() - (y0 + bh / 4)) < 0.05 * bh and abs(xs.mean() - (x0 + bw / 4)) < 0.05 * bw


def test_heatmap_to_slice_round_trips_a_smooth_map():
    """Resampling the placed map back to the input size gives the map again."""
    s = png_slice(chest_png8())
    _, (x0, y0, x1, y1) = model_input_and_box(s, P)
    yy, xx = np.mgrid[0 : P.size, 0 : P.size] / (P.size - 1)
    cam = (0.25 * xx + 0.75 * yy).astype(np.float32)
    m = heatmap_to_slice(cam, (x0, y0, x1, y1), s.shape)
    back = cv2.resize(m[y0:y1, x0:x1], (P.size, P.size), interpolation=cv2.INTER_AREA)
    assert np.abs(back - cam).max() < 0.03


# --- standardise8 --------------------------------------------------------------------------

def test_standardise8_undoes_a_linear_change_of_window():
    from ctviewer.imaging.preprocess import PreprocessParams, display8, standardise8
    from ctviewer.imaging.window import apply_window

    hu = chest_hu(256, lesion=True, seed=1)
    lung = apply_window(hu, -600, 1500)
    for center, width in ((-500, 2000), (-200, 3000), (-450, 1500)):
        other = standardise8(apply_window(hu, center, width))
        assert np.abs(other.astype(int) - standardise8(lung).astype(int)).mean() < 4, (center, width)
    # the raster path applies it, the HU path does not need it
    raster = Slice(apply_window(hu, -200, 3000), "x.png", is_hu=False)
    assert np.array_equal(display8(raster, PreprocessParams()), standardise8(raster.pixels))
    assert np.array_equal(display8(raster, PreprocessParams(raster_intensity="none")), raster.pixels)


def test_standardise8_leaves_flat_and_bodiless_images_alone():
    from ctviewer.imaging.preprocess import standardise8

    for img in (np.full((64, 64), 90, np.uint8), np.random.default_rng(0).integers(0, 10, (64, 64)).astype(np.uint8)):
        assert np.array_equal(standardise8(img), img)


def test_cards_without_raster_intensity_take_8bit_slices_as_stored():
    """1.1.0 and older cards predate the option: their inputs must not change."""
    assert PreprocessParams.from_dict({"size": 80}).raster_intensity == "none"
    assert PreprocessParams.from_dict(PreprocessParams().to_dict()).raster_intensity == "landmarks"
    with pytest.raises(ValueError):
        PreprocessParams.from_dict({"raster_intensity": "histogram"})
