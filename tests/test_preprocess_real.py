"""On real data: a Lung-PET-CT-Dx DICOM slice and the dataset's PNGs reach the model alike."""

from __future__ import annotations

import numpy as np
import pytest

from ctviewer.imaging.compare import figure, input_stats
from ctviewer.imaging.io import load_slices
from ctviewer.imaging.preprocess import to_model_input

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def png_stats(SHARED_DATA):
    files = sorted((SHARED_DATA / "sarscov2-dev").glob("*/*.png"))[::25]
    return [input_stats(to_model_input(load_slices(f)[0])) for f in files]


def mid_chest_dicoms(shared):
    """The middle third of each Lung-PET-CT-Dx series: slices through both lungs."""
    out = []
    for series in sorted({p.parent for p in (shared / "dicom" / "Lung-PET-CT-Dx").rglob("*.dcm")}):
        files = sorted(series.glob("*.dcm"))
        out += files[len(files) // 3 : 2 * len(files) // 3]
    return out


def test_dicom_and_png_inputs_have_the_same_scale_and_lung_intensity(SHARED_DATA, png_stats):
    frac = np.array([s["lung_fraction"] for s in png_stats])
    med = np.array([s["lung_median"] for s in png_stats])
    dicoms = mid_chest_dicoms(SHARED_DATA)
    assert len(dicoms) >= 15
    for f in dicoms:
        st = input_stats(to_model_input(load_slices(f)[0]))
        # scale: the lungs fill as much of the input as in the dataset's crops
        assert abs(st["lung_fraction"] - frac.mean()) < 2.5 * frac.std(), f
        # intensity: lung parenchyma at the same grey level
        assert abs(st["lung_median"] - med.mean()) < 2.5 * med.std(), f


def test_the_comparison_picture_is_saved(SHARED_DATA, tmp_path):
    pngs = sorted((SHARED_DATA / "sarscov2-dev" / "COVID").glob("*.png"))[:2]
    out = tmp_path / "compare.png"
    figure(str(out), [str(p) for p in pngs], [str(p) for p in mid_chest_dicoms(SHARED_DATA)[:2]])
    assert out.stat().st_size > 10_000
