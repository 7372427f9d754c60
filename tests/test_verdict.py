"""Lung detection and the study-level rule (``ctviewer.verdict``); no model is loaded."""

from __future__ import annotations

import glob
import warnings

import cv2
import numpy as np
import pytest

from ctviewer.imaging import load_slices
from ctviewer.imaging.slice import Slice
from ctviewer.studies import SliceResult
from ctviewer.verdict import (
    LUNG_MIN_FRACTION, MAX_CONFIDENCE, STUDY_MIN_POSITIVE, has_lung, is_scout, lung_fraction, study_verdict,
)
from tests.synthetic import chest_hu, chest_png8


def _hu(pixels: np.ndarray, **kw) -> Slice:
    return Slice(pixels=pixels.astype(np.float32), path="x.dcm", is_hu=True, **kw)


def _abdomen(size: int = 256) -> np.ndarray:
    """Body ellipse of soft tissue on a table, a little bowel gas, no lung."""
    img = np.full((size, size), -1000.0, np.float32)
    c = size // 2
    cv2.ellipse(img, (c, c), (int(size * 0.40), int(size * 0.30)), 0, 0, 360, 40.0, -1)
    cv2.rectangle(img, (int(size * 0.1), int(size * 0.86)), (int(size * 0.9), int(size * 0.9)), 200.0, -1)
    cv2.circle(img, (c - 20, c), 4, -900.0, -1)
    return img + np.random.default_rng(1).normal(0, 15, img.shape).astype(np.float32)


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


# --- lung detection: synthetic ------------------------------------------------------------------


def test_synthetic_chest_has_lung():
    for size in (256, 512):
        s = _hu(chest_hu(size, lesion=True), position=(0.0, 0.0, 0.0), orientation=AXIAL)
        assert lung_fraction(s) > 0.3 and has_lung(s)
    png = Slice(pixels=chest_png8(), path="x.png", is_hu=False)
    assert has_lung(png)


@pytest.mark.parametrize("name, pixels", [
    ("abdomen", _abdomen()),
    ("blank", np.full((256, 256), -1000.0)),
    ("uniform tissue", np.full((256, 256), 40.0)),
    ("noise", np.random.default_rng(0).normal(-1000, 5, (256, 256))),
])
def test_synthetic_non_lung(name, pixels):
    s = _hu(pixels)
    assert lung_fraction(s) < LUNG_MIN_FRACTION
    assert not has_lung(s)


def test_localizers_are_not_lung_slices():
    wide = np.hstack([chest_hu(256)] * 3)  # a scout-like wide image, lungs visible
    assert lung_fraction(_hu(wide)) > LUNG_MIN_FRACTION
    assert is_scout(_hu(wide)) and not has_lung(_hu(wide))
    tagged = _hu(chest_hu(256), meta={"ImageType": "ORIGINAL\\PRIMARY\\LOCALIZER"})
    assert not has_lung(tagged)
    coronal = _hu(chest_hu(256), position=(0.0, 0.0, 0.0), orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    assert not has_lung(coronal)
    axial = _hu(chest_hu(256), position=(0.0, 0.0, 0.0), orientation=AXIAL, meta={"ImageType": "ORIGINAL\\PRIMARY\\AXIAL"})
    assert has_lung(axial) and not is_scout(axial)


def test_has_lung_uses_given_fraction():
    s = _hu(chest_hu(256))
    assert has_lung(s, fraction=LUNG_MIN_FRACTION) and not has_lung(s, fraction=LUNG_MIN_FRACTION / 2)


# --- lung detection: real data ------------------------------------------------------------------


def test_lung_pet_ct_dx_lung_slices(SHARED_DATA):
    """Chest series: every slice from the level where the lungs are a tenth of the chest down is a
    lung slice; neck/shoulder slices above the apices are not."""
    files = sorted(glob.glob(str(SHARED_DATA / "dicom" / "Lung-PET-CT-Dx" / "**" / "*.dcm"), recursive=True))
    assert files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slices = [s for f in files for s in load_slices(f)]
    fractions = np.array([lung_fraction(s) for s in slices])
    flags = np.array([has_lung(s, f) for s, f in zip(slices, fractions)])
    print(f"\nLung-PET-CT-Dx: {flags.sum()}/{len(flags)} slices with lung")
    assert flags[fractions >= 0.08].all()
    assert flags.mean() >= 0.75  # 48/64: the rest are above the apices or lung slivers < 5 %
    philips = {s.instance_number: f for s, f in zip(slices, flags) if "5mm" in s.path}
    assert all(philips[i] for i in range(11, 33))  # Philips 5 mm: instances 11..32 through the lungs
    assert not any(philips[i] for i in range(1, 9))  # 1..8: neck and shoulders (checked by eye)
    assert not any(is_scout(s) for s in slices)


def test_dataset_pngs_have_lung(SHARED_DATA):
    root = SHARED_DATA / "sarscov2-dev"
    files = sorted(glob.glob(str(root / "*" / "*.png")))
    if not files:
        pytest.skip("no dataset PNGs")
    flags = [has_lung(load_slices(f)[0]) for f in files[::4]]  # every 4th slice keeps the test quick
    rate = float(np.mean(flags))
    print(f"\nsarscov2-dev: {sum(flags)}/{len(flags)} PNGs with lung ({rate:.1%})")
    assert rate >= 0.98


# --- the study rule -----------------------------------------------------------------------------


def _results(n_pos: int, n_neg: int, excluded: int = 0, refused: int = 0) -> list[SliceResult]:
    out = [SliceResult(path=f"p{i}", p_covid=0.9, label="COVID") for i in range(n_pos)]
    out += [SliceResult(path=f"n{i}", p_covid=0.1, label="non-COVID") for i in range(n_neg)]
    out += [SliceResult(path=f"x{i}", p_covid=0.99, has_lung=False) for i in range(excluded)]
    out += [SliceResult(path=f"r{i}", error="damaged") for i in range(refused)]
    return out


def test_no_lung_slice_is_indeterminate():
    for results in ([], _results(0, 0, excluded=5, refused=2)):
        v = study_verdict(results)
        assert v.label == "indeterminate" and v.confidence == 0.0 and v.n_lung == 0
    v = study_verdict(_results(0, 0, excluded=5, refused=2))
    assert (v.n_excluded, v.n_refused) == (5, 2) and "no slice showing lung" in v.rule


def test_excluded_and_refused_do_not_count():
    base = study_verdict(_results(2, 8))
    v = study_verdict(_results(2, 8, excluded=30, refused=4))
    assert (v.label, v.score, v.n_lung, v.n_positive) == (base.label, base.score, 10, 2)
    assert (v.n_excluded, v.n_refused) == (30, 4)
    assert v.label == "non-COVID"
    assert "2 of 10" in v.rule and "30" in v.rule and "4 refused" in v.rule


def test_rule_threshold_and_cutoff():
    assert study_verdict(_results(5, 5)).label == "COVID"  # score == cutoff
    assert study_verdict(_results(4, 6)).label == "non-COVID"
    results = [SliceResult(path=str(i), p_covid=p) for i, p in enumerate([0.6, 0.6, 0.6, 0.2])]
    assert study_verdict(results).label == "COVID"
    assert study_verdict(results, threshold=0.7).label == "non-COVID"
    assert STUDY_MIN_POSITIVE == 0.5


def test_monotone_in_positive_slices():
    n = 40
    verdicts = [study_verdict(_results(k, n - k)) for k in range(n + 1)]
    scores = [v.score for v in verdicts]
    assert scores == sorted(scores)
    covid = [v.label == "COVID" for v in verdicts]
    assert covid == sorted(covid)  # once COVID, stays COVID
    p_covid = [v.confidence if v.label == "COVID" else 1 - v.confidence for v in verdicts]
    assert all(b >= a - 1e-9 for a, b in zip(p_covid, p_covid[1:]))
    assert all(0.0 <= v.confidence <= MAX_CONFIDENCE for v in verdicts)


def test_confidence_grows_with_evidence():
    few, many = study_verdict(_results(3, 0)), study_verdict(_results(300, 0))
    assert 0.5 < few.confidence < many.confidence <= MAX_CONFIDENCE
    near, far = study_verdict(_results(21, 19)), study_verdict(_results(38, 2))
    assert near.confidence < far.confidence
    # A study like Lung-PET-CT-Dx's unseen hospital (19 of 64 false positives) stays non-COVID.
    fp = study_verdict(_results(19, 45))
    assert fp.label == "non-COVID" and fp.confidence > 0.9


def test_validation_pseudo_studies():
    """The model card's per-group slice accuracies (25-slice pseudo-studies): the rule calls
    10 of 11 COVID groups and 0 of 9 non-COVID groups COVID."""
    covid_shares = [0.0, 0.64, 0.76, 0.8, 0.96, 0.96, 1.0, 1.0, 1.0, 1.0, 1.0]
    non_covid_shares = [0.16, 0.16, 0.12, 0.08, 0.04, 0.04, 0.0, 0.0, 0.0]
    calls = lambda shares: sum(study_verdict(_results(round(25 * s), 25 - round(25 * s))).label == "COVID"
                               for s in shares)
    assert calls(covid_shares) == 10 and calls(non_covid_shares) == 0


def test_lung_fraction_from_the_shared_display_image_is_the_same():
    """The batch engine windows a slice once and hands the image to both the model input
    and the lung detection: same numbers as computing each from the slice."""
    from ctviewer.imaging.preprocess import (
        PreprocessParams,
        display8,
        input_from_display,
        model_input_and_box,
        segment_chest,
    )
    from ctviewer.verdict import LUNG_WINDOW
    from tests.synthetic import chest_hu

    params = PreprocessParams()
    assert (params.window_center, params.window_width) == LUNG_WINDOW
    for seed in range(3):
        s = Slice(pixels=chest_hu(256, lesion=bool(seed), seed=seed), path=f"s{seed}.dcm", is_hu=True)
        img8 = display8(s, params)
        seg = segment_chest(img8)
        assert lung_fraction(s, img8) == lung_fraction(s) == lung_fraction(s, seg=seg)
        x, box = input_from_display(img8, params)
        x_ref, box_ref = model_input_and_box(s, params)
        x_seg, box_seg = input_from_display(img8, params, seg)
        assert box == box_ref == box_seg and np.array_equal(x, x_ref) and np.array_equal(x, x_seg)


def test_component_areas_match_opencv_statistics():
    """``segment_chest`` counts component areas with bincount over cv2's labels, not with
    cv2's own statistics (4 times slower): the same labels and areas."""
    import cv2

    from ctviewer.imaging.preprocess import _components

    rng = np.random.default_rng(0)
    for density in (0.0, 0.2, 0.5, 0.8, 1.0):
        mask = (cv2.GaussianBlur(rng.random((97, 131)), (0, 0), 2) < density).astype(np.uint8)
        labels, areas = _components(mask)
        n, ref_labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        assert np.array_equal(labels, ref_labels) and np.array_equal(areas, stats[:, cv2.CC_STAT_AREA])
