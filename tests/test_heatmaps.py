"""``python -m training heatmaps``: where the viewer's Grad-CAM peaks, against expert masks."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from ctviewer.inference.model import default_model_dir
from training.heatmaps import main, measure


def _masked_set(root, n=3):
    """A tiny lung-masks-like folder: a synthetic chest, its 'lungs' and 'infection' masks, where
    the infection is the whole image on one slice and nothing on the others."""
    from .synthetic import chest_png8

    for d in ("ct", "lungs", "infection"):
        (root / d).mkdir(parents=True)
    for i in range(n):
        img = chest_png8(256, 256, lesion=True, seed=i)
        name = f"{i:04d}.png"
        cv2.imwrite(str(root / "ct" / name), img)
        cv2.imwrite(str(root / "lungs" / name), np.full(img.shape, 255 if i == 0 else 0, np.uint8))
        cv2.imwrite(str(root / "infection" / name), np.zeros(img.shape, np.uint8))
    return root


def test_heatmap_peaks_are_looked_up_in_the_masks_and_written_to_the_card(tmp_path, capsys):
    data = _masked_set(tmp_path / "masks")
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    r = measure(str(model), str(data))
    assert r["slices"] == 3
    assert r["peak_in_lungs"] == pytest.approx(1 / 3) and r["peak_in_infection"] == 0.0  # one slice is all lung
    assert r["lungs_share_of_slice"] == pytest.approx(1 / 3) and 0 <= r["sensitivity_at_threshold"] <= 1
    assert main(["--model", str(model), "--data", str(data), "--write-card"]) == 0
    assert "Grad-CAM peak inside the lungs 33.3 %" in capsys.readouterr().out
    card = json.loads((model / "model-card.json").read_text())
    assert card["heatmaps"]["slices"] == 3
    from ctviewer.inference.model import load_classifier

    load_classifier(model)  # the model file and its hash are untouched


@pytest.mark.shared_data
def test_bundled_model_heatmaps_on_real_diseased_lungs(SHARED_DATA, capsys):
    r = measure(str(default_model_dir()), str(SHARED_DATA / "lung-masks"), limit=40)
    with capsys.disabled():
        print(f"\n1.1.0 on 40 expert-masked slices: peak in lungs {r['peak_in_lungs']:.3f}, "
              f"in infection {r['peak_in_infection']:.3f}")
    assert 0.0 <= r["peak_in_infection"] <= r["peak_in_lungs"] <= 1.0


def _lung_only_copy(tmp_path, sha=None):
    """The bundled network relabelled as a lung-only model (the card is not hashed; the weights are)."""
    from ctviewer.imaging.lungs import default_segmenter

    model = tmp_path / "lungs-model"
    shutil.copytree(default_model_dir(), model)
    card = json.loads((model / "model-card.json").read_text())
    card["preprocessing"]["input"] = "lungs"
    card["preprocessing"]["lung_segmenter_sha256"] = sha or default_segmenter().card.sha256
    (model / "model-card.json").write_text(json.dumps(card))
    return model


def test_a_lung_only_models_heatmap_is_zero_where_it_saw_nothing(tmp_path):
    from ctviewer.imaging.preprocess import display8, lung_view
    from ctviewer.imaging.raster import read_raster
    from ctviewer.inference.gradcam import slice_heatmap
    from ctviewer.inference.model import load_classifier
    from ctviewer.paths import samples_dir

    clf = load_classifier(_lung_only_copy(tmp_path))
    assert clf.params.input == "lungs"
    s = read_raster(samples_dir() / "covid-65.png")
    cam = slice_heatmap(clf, s)
    view, _ = lung_view(display8(s, clf.params), clf.params)
    assert cam.shape == s.shape and cam.max() > 0
    assert not cam[view == 0].any() and (view == 0).mean() > 0.3


def test_a_lung_only_model_is_refused_with_another_lung_segmenter(tmp_path):
    from ctviewer.inference.card import ModelError
    from ctviewer.inference.model import load_classifier

    with pytest.raises(ModelError, match="lung segmenter"):
        load_classifier(_lung_only_copy(tmp_path, sha="0" * 64))
