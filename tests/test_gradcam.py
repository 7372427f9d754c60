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

def test_gradcam_of_a_gap_head_is_the_class_activation_map(package, tmp_path, x_small):
    """With global average pooling and a linear head, Grad-CAM's channel weights are the head's
    weights (over h*w): the map is ReLU(A . (w_pos - w_neg)), Zhou et al.'s CAM, from the ONNX
    model's feature-map output and its Dense kernel.  A random model's map can be all zero for
    one positive class (ReLU): the check takes the class order whose map is not."""
    from ctviewer.inference.gradcam import gradcam

    checked = 0
    for classes in (["COVID", "non-COVID"], ["non-COVID", "COVID"]):
        dst = tmp_path / classes[0]
        shutil.copytree(package, dst)
        card = ModelCard.load(dst)
        card.classes = classes
        card.save(dst)
        model = _load(dst)
        pos = model.card.positive_index
        assert classes[pos] == "COVID"
        _, feats = model.outputs(x_small[None])
        w = model.head_kernel()
        assert feats.shape[1:3] == (2, 2) and w.shape == (feats.shape[-1], 2)
        ref = np.maximum(feats[0] @ (w[:, pos] - w[:, 1 - pos]), 0)
        ref = cv2.resize(ref.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        cam = gradcam(model, x_small)
        assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
        if ref.max() > 0:
            assert np.allclose(cam, ref / ref.max(), atol=1e-4)
            checked += 1
        else:
            assert not cam.any()  # no positive evidence anywhere: an all-zero map
    assert checked >= 1


def test_the_head_kernel_reproduces_the_models_logits(small):
    """The kernel read from the graph is the one the graph multiplies by: differences of
    logits between two inputs equal the differences of pooled features times the kernel."""
    x = np.random.default_rng(9).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    logits, feats = small.outputs(x)
    pooled = feats.mean(axis=(1, 2))
    assert np.allclose(logits[0] - logits[1], (pooled[0] - pooled[1]) @ small.head_kernel(), atol=1e-3)


def test_softmax_head_is_explained_by_its_logits(package, tmp_path, small, x_small):
    """The explained score is taken before the activation (log p_pos/p_neg = z_pos - z_neg):
    the same map as the linear head with the same weights, however saturated the softmax."""
    soft = _variant(package, tmp_path, "soft", activation="softmax")
    assert np.allclose(soft.explain(x_small), small.explain(x_small), atol=1e-5)
    sig = _variant(package, tmp_path, "sig", activation="sigmoid")
    cam = sig.explain(x_small)
    assert np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1


def test_sigmoid_head_gradient_is_weighted_by_each_logits_slope():
    """d/dz log sigmoid(z) = 1 - sigmoid(z): checked against finite differences of the score."""
    from ctviewer.inference.calibration import sigmoid
    from ctviewer.inference.gradcam import score_gradient

    rng = np.random.default_rng(2)
    k = rng.normal(0, 1, (2 * 2 * 3, 2))
    a = rng.normal(0, 1, (1, 2, 2, 3))

    def score(feat):
        z = feat.reshape(1, -1) @ k
        return float(np.log(sigmoid(z[0, 0])) - np.log(sigmoid(z[0, 1])))

    g = score_gradient("flatten", k, (2, 2, 3), 0, "sigmoid", a.reshape(1, -1) @ k)
    eps = 1e-6
    num = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        d = np.zeros_like(a)
        d[idx] = eps
        num[idx] = (score(a + d) - score(a - d)) / (2 * eps)
    assert np.allclose(g, num, atol=1e-6)


def test_hflip_tta_map_mirrors_with_the_input(tmp_path, x_small):
    """With hflip TTA the score is mirror-symmetric, and so is the map."""
    tta = _load(make_model_package(tmp_path / "tta", size=SIZE, tta=["hflip"]))
    cam = tta.explain(x_small)
    assert np.allclose(tta.explain(np.ascontiguousarray(x_small[:, ::-1])), cam[:, ::-1], atol=1e-4)


def test_zero_gradient_gives_an_all_zero_map(package):
    clf = _load(package)  # its own copy: the kernel is changed
    clf._kernel = np.zeros_like(clf.head_kernel())
    cam = clf.explain(np.full((SIZE, SIZE, 3), 100.0, np.float32))
    assert cam.shape == (SIZE, SIZE) and cam.dtype == np.float32
    assert not cam.any() and np.isfinite(cam).all()


def test_explain_is_deterministic(small, x_small):
    from ctviewer.inference.gradcam import gradcam

    first = small.explain(x_small)
    assert np.array_equal(gradcam(small, x_small), first)


def test_wrong_input_shape_is_refused(small):
    with pytest.raises(ValueError, match="expected one input"):
        small.explain(np.zeros((1, SIZE, SIZE, 3), np.float32))


def test_a_head_that_does_not_fit_the_feature_map_is_refused(package, tmp_path, x_small):
    wrong = _variant(package, tmp_path, "wrong", head="flatten")  # the graph's head is a global average
    with pytest.raises(ValueError, match="does not fit"):
        wrong.explain(x_small)


# --- the bundled model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clf():
    return _load(None)


def _sample(name):
    from ctviewer.imaging import load_slices
    from ctviewer.paths import resources_dir

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
