"""The lung mask and the lung-only model input, as a specification.

On real data (``../shared/data/lung-masks``: 404 real COVID slices with expert lung masks,
ground glass, consolidation and white lungs among them): the segmenter's mask against the
experts' (Dice, median and 10th percentile printed), on the volumes it never trained on and on
all of them; the gate admits the slices as lung slices.  Without data: the segmenter's file is
verified before it is parsed, and the lung-only view keeps nothing but lung.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctviewer.imaging.io import load_slices
from ctviewer.imaging.lungs import LungSegmenter, SegmenterError, default_model_dir, fill_holes, lung_mask
from ctviewer.imaging.preprocess import PreprocessParams, crop_resize, dark_lungs, display8, lung_view, segment_chest
from ctviewer.studies.verdict import LUNG_MIN_FRACTION, lung_fraction
from training.lung_seg import dice

from .synthetic import chest_png8

P = PreprocessParams()


@pytest.fixture(scope="module")
def expert(SHARED_DATA):
    root = SHARED_DATA / "lung-masks"
    files = sorted((root / "ct").glob("*.png"))
    assert len(files) == 404
    out = []
    for f in files:
        s = load_slices(f)[0]
        out.append((f.name, s, display8(s, P), cv2.imread(str(root / "lungs" / f.name), cv2.IMREAD_GRAYSCALE) > 127))
    return out


@pytest.mark.shared_data
def test_the_lung_mask_matches_the_experts_in_diseased_lungs(expert, capsys):
    card = json.loads((default_model_dir() / "card.json").read_text())
    held_from = card["training"]["held_out_files"].split("..")[0]
    d = np.array([dice(lung_mask(img8), gt) for _, _, img8, gt in expert])
    held = np.array([name >= held_from for name, *_ in expert])
    with capsys.disabled():
        for label, m in (("never trained on", held), ("all", np.ones_like(held))):
            print(f"\nlung mask Dice vs experts, {label} ({m.sum()} slices): median {np.median(d[m]):.3f}, "
                  f"10th percentile {np.percentile(d[m], 10):.3f}, min {d[m].min():.3f}")
    assert held.sum() >= 200
    assert np.median(d[held]) >= 0.90 and np.percentile(d[held], 10) >= 0.90
    assert np.median(d) >= 0.90 and np.percentile(d, 10) >= 0.90


@pytest.mark.shared_data
def test_the_gate_admits_the_diseased_lungs_as_lung_slices(expert, capsys):
    fr = np.array([lung_fraction(s, img8) for _, s, img8, _ in expert])
    with capsys.disabled():
        print(f"\ngate: {np.mean(fr >= LUNG_MIN_FRACTION):.3f} of the 404 expert-masked slices admitted")
    assert np.mean(fr >= LUNG_MIN_FRACTION) >= 0.99


@pytest.mark.shared_data
def test_head_slices_have_no_lungs(SHARED_DATA):
    files = sorted((SHARED_DATA / "dicom" / "dcm_qa_ct" / "In" / "GE").glob("*.dcm"))
    assert files
    for f in files:
        img8 = display8(load_slices(f)[0], P)
        assert lung_mask(img8).mean() < 0.005, f.name


@pytest.mark.shared_data
def test_lung_only_input_holds_only_lung_on_real_slices(expert):
    lungs = PreprocessParams(input="lungs")
    for name, s, img8, gt in expert[::20]:
        view, box = lung_view(img8, lungs)
        outside = cv2.dilate(gt.view(np.uint8), np.ones((25, 25), np.uint8)) == 0
        assert (view[outside] == 0).mean() > 0.98, name  # chest wall, spine, table: blanked
        x0, y0, x1, y1 = box
        inside = gt[y0:y1, x0:x1].sum() / gt.sum()
        assert inside > 0.95, name  # the crop holds the lungs


def test_lung_view_blanks_everything_but_the_mask_and_crops_to_it():
    img = chest_png8(300, 240, lesion=True, seed=3)
    mask = np.zeros(img.shape, bool)
    mask[60:180, 40:130] = True
    view, box = lung_view(img, PreprocessParams(input="lungs", margin=0.1), mask=mask)
    assert box == (31, 48, 139, 192)
    grown = cv2.dilate(mask.view(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert (view[~grown] == 0).all() and np.array_equal(view[mask], img[mask])
    # the segmenter finds nothing (an apex): the dark lung components of the chest segmentation
    seg = segment_chest(img)
    dark_view, dark_box = lung_view(img, PreprocessParams(input="lungs"), seg, mask=np.zeros(img.shape, bool))
    dark = dark_lungs(seg)
    assert dark is not None and (dark_view[dark] == img[dark]).all() and (dark_view == 0).mean() > 0.3
    # no lungs at all (a blank image): the chest crop of the whole image, nothing blanked
    flat = np.full((120, 100), 90, np.uint8)
    flat_view, flat_box = lung_view(flat, PreprocessParams(input="lungs"))
    assert flat_view is flat and flat_box == lung_view(flat, PreprocessParams(input="chest"))[1]
    x = crop_resize(view, box, 80)
    assert x.shape == (80, 80, 3) and x.dtype == np.float32


def test_cards_without_the_input_key_keep_the_chest_crop():
    assert PreprocessParams.from_dict({"size": 80}).input == "chest"
    assert PreprocessParams.from_dict({"size": 80, "input": "lungs"}).input == "lungs"
    assert PreprocessParams(input="lungs").to_dict()["input"] == "lungs"
    with pytest.raises(ValueError):
        PreprocessParams.from_dict({"input": "abdomen"})


def test_the_segmentation_runs_the_segmenter_once_for_input_and_gate():
    img = chest_png8(260, 200, lesion=False, seed=1)
    seg = segment_chest(img)
    a = seg.lungs()
    assert seg.lungs() is a and a.shape == img.shape
    view, _ = lung_view(img, PreprocessParams(input="lungs"), seg)
    assert seg.lungs() is a


def test_the_segmenter_file_is_verified_before_it_is_parsed(tmp_path):
    d = tmp_path / "seg"
    shutil.copytree(default_model_dir(), d)
    LungSegmenter(d)  # as shipped
    onnx = d / json.loads((d / "card.json").read_text())["file"]
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(SegmenterError, match="SHA-256"):
        LungSegmenter(d)
    card = json.loads((d / "card.json").read_text())
    card["file"] = "../model.onnx"
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(SegmenterError):
        LungSegmenter(d)
    with pytest.raises(SegmenterError, match="card.json"):
        LungSegmenter(tmp_path / "nowhere")


def test_fill_holes_fills_enclosed_regions_only():
    m = np.zeros((20, 20), np.uint8)
    m[2:12, 2:12] = 1
    m[5:8, 5:8] = 0  # an opacity enclosed by lung
    m[15:20, 15:20] = 1
    m[17:20, 17:19] = 0  # open to the border: not a hole
    f = fill_holes(m)
    assert f[5:8, 5:8].all() and not f[17:20, 17:19].any() and f.sum() == m.sum() + 9
