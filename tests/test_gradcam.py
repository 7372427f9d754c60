"""Grad-CAM: correct on small random models, informative on the bundled one.

Small models (random weights, 64 px so the trunk leaves a 2x2 map) check the
computation itself; the bundled model (``slow``) checks that the map points
where the evidence is: occluding the hottest patch of a COVID slice lowers the
score more than occluding the coldest, and the map ranks patches like a
brute-force occlusion-sensitivity map.  Measured on the bundled samples (80 px,
3x3 map, hflip TTA): hottest-patch drops of 0.96 / 0.99 logits against -0.24 /
0.18 for the coldest; rank correlation with occlusion sensitivity 0.62 / 0.68.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from ctviewer.inference.card import ModelCard

from .model_fixtures import make_model_package

SIZE = 64
PATCH = 20


def _load(folder):
    from ctviewer.inference import load_classifier

    return load_classifier(folder)


def _variant(base, tmp_path, name, **arch):
    """A copy of ``base`` with architecture keys changed (same weights: these
    keys add no weights), loaded."""
    dst = tmp_path / name
    shutil.copytree(base, dst)
    card = ModelCard.load(dst)
    card.architecture = {**card.architecture, **arch}
    card.save(dst)
    return _load(dst)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_model_package(tmp_path_factory.mktemp("gc"), size=SIZE)


@pytest.fixture(scope="module")
def small(package):
    return _load(package)


@pytest.fixture(scope="module")
def x_small():
    return np.random.default_rng(4).uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)


# --- the computation, on small random models --------------------------------------------------

def test_gradcam_of_a_gap_head_is_the_class_activation_map(small, x_small):
    """With global average pooling and a linear head, Grad-CAM's channel weights are
    the head's weights (over h*w): the map is ReLU(A . (w_pos - w_neg)), Zhou et al.'s CAM."""
    from ctviewer.inference.gradcam import gradcam

    m = small.model
    feats = m.get_layer("resnet50")(m.get_layer("imagenet_norm")(x_small[None]), training=False)
    a = np.asarray(feats)[0]
    w = np.asarray(m.get_layer("out").kernel)
    ref = np.maximum(a @ (w[:, 0] - w[:, 1]), 0)
    ref = cv2.resize(ref.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    assert ref.max() > 0
    cam = gradcam(small, x_small)
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert np.allclose(cam, ref / ref.max(), atol=1e-4)


def test_softmax_head_is_explained_by_its_logits(package, tmp_path, small, x_small):
    """The explained score is taken before the activation (log p_pos/p_neg = z_pos - z_neg):
    the same map as the linear head with the same weights, however saturated the softmax."""
    soft = _variant(package, tmp_path, "soft", activation="softmax")
    assert np.allclose(soft.explain(x_small), small.explain(x_small), atol=1e-5)
    sig = _variant(package, tmp_path, "sig", activation="sigmoid")
    cam = sig.explain(x_small)
    assert np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1


def test_internal_size_model_is_explained_at_its_finer_map(package, tmp_path, x_small):
    """The 'upsample' layer sits before the nested trunk; the map follows the internal size."""
    fine = _variant(package, tmp_path, "fine", internal_size=2 * SIZE)
    cam = fine.explain(x_small)
    assert cam.shape == (SIZE, SIZE) and 0 <= cam.min() and cam.max() <= 1
    assert fine._gradcam_fn(x_small[None]).shape == (1, 4, 4)  # 128 / 32


def test_hflip_tta_map_mirrors_with_the_input(tmp_path, x_small):
    """With hflip TTA the score is mirror-symmetric, and so is the map."""
    tta = _load(make_model_package(tmp_path / "tta", size=SIZE, tta=["hflip"]))
    cam = tta.explain(x_small)
    assert np.allclose(tta.explain(np.ascontiguousarray(x_small[:, ::-1])), cam[:, ::-1], atol=1e-4)


def test_zero_gradient_gives_an_all_zero_map(package):
    clf = _load(package)  # its own copy: the kernel is changed
    head = clf.model.get_layer("out")
    head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
    cam = clf.explain(np.full((SIZE, SIZE, 3), 100.0, np.float32))
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert not cam.any() and np.isfinite(cam).all()


def test_explain_is_gradcam_built_once_and_deterministic(small, x_small):
    from ctviewer.inference.gradcam import gradcam

    first = small.explain(x_small)
    fn = small._gradcam_fn
    assert np.array_equal(gradcam(small, x_small), first)
    assert small._gradcam_fn is fn


def test_wrong_input_shape_is_refused(small):
    with pytest.raises(ValueError, match="expected one input"):
        small.explain(np.zeros((1, SIZE, SIZE, 3), np.float32))


def test_other_backends_are_refused_clearly(small, monkeypatch, x_small):
    import keras

    from ctviewer.inference.model import Classifier

    fresh = Classifier(small.card, small.model, small.folder)  # nothing cached yet
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(NotImplementedError, match="TensorFlow backend"):
        fresh.explain(x_small)


# --- the bundled model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clf():
    return _load(None)


def _sample(name):
    from ctviewer.imaging import load_slices
    from ctviewer.inference.model import resources_dir

    (s,) = load_slices(resources_dir() / "samples" / name)
    return s


def _input(clf, name):
    from ctviewer.imaging.preprocess import to_model_input

    return to_model_input(_sample(name), clf.params)


def _patch_means(cam):
    """Mean of ``cam`` over every PATCH x PATCH window, indexed by its top-left corner."""
    c = np.pad(cam.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (c[PATCH:, PATCH:] - c[:-PATCH, PATCH:] - c[PATCH:, :-PATCH] + c[:-PATCH, :-PATCH]) / PATCH**2


def _occluded(x, corners):
    """Copies of ``x`` with the patch at each (y, x) corner set to the image mean."""
    out = np.repeat(x[None], len(corners), axis=0)
    for o, (y0, x0) in zip(out, corners):
        o[y0 : y0 + PATCH, x0 : x0 + PATCH] = x.mean()
    return out


def _ranks(v):
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


@pytest.mark.slow
def test_bundled_map_shape_dtype_range_and_determinism(clf):
    x = _input(clf, "covid-65.png")
    cam = clf.explain(x)
    assert cam.shape == (80, 80) and cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert np.array_equal(clf.explain(x), cam)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["covid-65.png", "covid-701.png"])
def test_occluding_the_hottest_patch_lowers_the_covid_score_most(clf, name):
    x = _input(clf, name)
    means = _patch_means(clf.explain(x))
    hot = np.unravel_index(np.argmax(means), means.shape)
    cold = np.unravel_index(np.argmin(means), means.shape)
    base = clf.raw_scores(x[None])[0]
    drop_hot, drop_cold = base - clf.raw_scores(_occluded(x, [hot, cold]))
    assert drop_hot > 0.5 and drop_hot > drop_cold + 0.5, (drop_hot, drop_cold)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["covid-65.png", "covid-701.png"])
def test_map_ranks_patches_like_brute_force_occlusion(clf, name):
    """Spearman correlation between the map's patch means and the score drop when
    each patch (stride 4) is occluded; measured 0.62 and 0.68."""
    x = _input(clf, name)
    means = _patch_means(clf.explain(x))
    corners = [(y, x0) for y in range(0, 80 - PATCH + 1, 4) for x0 in range(0, 80 - PATCH + 1, 4)]
    drops = clf.raw_scores(x[None])[0] - clf.raw_scores(_occluded(x, corners))
    heat = np.array([means[c] for c in corners])
    rho = np.corrcoef(_ranks(heat), _ranks(drops))[0, 1]
    assert rho > 0.4, rho


@pytest.mark.slow
def test_dicom_map_goes_back_onto_the_slice_inside_the_chest_box(clf):
    from ctviewer.imaging.preprocess import heatmap_to_slice, model_input_and_box

    s = _sample("lung-pet-ct-dx-A0001-philips-1-20.dcm")
    x, (x0, y0, x1, y1) = model_input_and_box(s, clf.params)
    heat = heatmap_to_slice(clf.explain(x), (x0, y0, x1, y1), s.shape)
    assert heat.shape == s.shape == (512, 512) and heat.dtype == np.float32
    outside = np.ones(heat.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert outside.any() and not heat[outside].any()
    assert heat[y0:y1, x0:x1].max() > 0.9 and heat.max() <= 1
