"""The training package on tiny synthetic data: the whole command line, plots and card."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctviewer.inference.card import ModelCard, sha256_file
from training.augment import SliceBatches, augment_one, mix, DEFAULT_AUG
from training.dataset import discover, group_key, group_split
from ctviewer.imaging.preprocess import PreprocessParams, to_model_input
from ctviewer.imaging.raster import read_raster

from .synthetic import chest_png8

PLOTS = ("curves.png", "confusion.png", "roc.png", "reliability.png")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Two classes, 24 slices each, file numbers as in the real release."""
    root = tmp_path_factory.mktemp("data")
    for cls, prefix, lesion in (("COVID", "Covid", True), ("non-COVID", "Non-Covid", False)):
        (root / cls).mkdir()
        for i in range(1, 25):
            img = chest_png8(200 + 7 * i, 150 + 3 * i, lesion=lesion, seed=i)
            cv2.imwrite(str(root / cls / f"{prefix} ({i}).png"), img)
    (root / "COVID" / "notes.txt").write_text("ignored")
    return root


# --- data, groups, splits -----------------------------------------------------

def test_groups_are_blocks_of_consecutive_file_numbers(tmp_path):
    from pathlib import Path

    assert group_key("COVID", Path("Covid (24).png"), 25) == "COVID/0"
    assert group_key("COVID", Path("Covid (25).png"), 25) == "COVID/1"
    assert group_key("non-COVID", Path("Non-Covid (25).png"), 25) == "non-COVID/1"
    assert group_key("COVID", Path("scan.png"), 25) == "COVID/scan"


def test_discover_finds_classes_and_skips_non_slices(tiny_data):
    ds = discover(tiny_data, block=5)
    assert ds.classes == ["COVID", "non-COVID"]
    assert len(ds.paths) == 48 and not any(p.endswith(".txt") for p in ds.paths)


def test_split_never_cuts_a_group_and_is_deterministic(tiny_data):
    ds = discover(tiny_data, block=5)
    tr, va = group_split(ds.groups, ds.labels, 0.25, seed=3)
    assert not set(ds.groups[tr]) & set(ds.groups[va])
    assert set(ds.labels[va]) == {0, 1}
    tr2, va2 = group_split(ds.groups, ds.labels, 0.25, seed=3)
    assert np.array_equal(va, va2)


def test_unaugmented_batches_are_exactly_the_apps_model_input(tiny_data):
    """Train/serve skew guard: training inputs come from the app's preprocessing."""
    from training.dataset import decode_all

    ds = discover(tiny_data, block=5)
    params = PreprocessParams(size=48)
    dec = decode_all(ds, params)
    x = SliceBatches(dec.images, dec.boxes, ds.labels, 48, 16).inputs()
    for i in (0, 30):
        assert np.array_equal(x[i], to_model_input(read_raster(ds.paths[i]), params))


def test_augmentation_is_deterministic_and_stays_in_range(tiny_data):
    img = read_raster(discover(tiny_data).paths[0]).pixels
    box = (0, 0, img.shape[1], img.shape[0])
    a = augment_one(img, box, 48, DEFAULT_AUG, np.random.default_rng(5))
    b = augment_one(img, box, 48, DEFAULT_AUG, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == (48, 48, 3) and a.dtype == np.float32
    assert 0 <= a.min() and a.max() <= 255


def test_mixup_blends_inputs_and_labels_with_the_same_weight():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)
    labels = np.arange(16) % 2
    y = np.eye(2, dtype=np.float32)[labels]
    xm, ym = mix(x, y, 0.4, np.random.default_rng(3))
    assert xm.dtype == np.float32 and ym.dtype == np.float32
    assert np.allclose(ym.sum(1), 1) and not np.array_equal(xm, x)
    # replay the draw: one lam and one permutation explain inputs and labels alike
    r = np.random.default_rng(3)
    lam, perm = r.beta(0.4, 0.4), r.permutation(16)
    assert np.allclose(xm, lam * x + (1 - lam) * x[perm], atol=1e-3)
    assert np.allclose(ym, lam * y + (1 - lam) * y[perm], atol=1e-6)
    xm2, _ = mix(x, y, 0.4, np.random.default_rng(3))
    assert np.array_equal(xm, xm2)


def test_training_batches_mix_only_when_asked(tiny_data):
    from training.dataset import decode_all

    ds = discover(tiny_data, block=5)
    dec = decode_all(ds, PreprocessParams(size=32))
    plain = SliceBatches(dec.images, dec.boxes, ds.labels, 32, 16, aug=DEFAULT_AUG, seed=1, shuffle=True)
    mixed = SliceBatches(dec.images, dec.boxes, ds.labels, 32, 16, aug=DEFAULT_AUG, seed=1, shuffle=True, mixup=0.4)
    y_plain, y_mixed = plain[0][1], mixed[0][1]
    assert set(np.unique(y_plain)) == {0.0, 1.0}
    assert np.allclose(y_mixed.sum(1), 1) and not np.isin(y_mixed, [0.0, 1.0]).all()


def test_precise_batchnorm_sets_moving_statistics_to_the_mean_of_batch_statistics():
    import keras

    from training.fit import recalibrate_batchnorm

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(4, 3, name="conv")
    bn = keras.layers.BatchNormalization(momentum=0.99, name="bn")
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(bn(conv(inp)))))
    x = np.random.default_rng(0).normal(3.0, 2.0, (40, 6, 6, 3)).astype(np.float32)
    kernel_before = [w.copy() for w in model.get_weights()]
    recalibrate_batchnorm(model, x, batch_size=16)  # batches of 16, 16, 8
    feats = np.asarray(keras.Model(inp, conv.output)(x))
    batches = [feats[0:16], feats[16:32], feats[32:40]]
    want_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    want_var = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    assert np.allclose(np.asarray(bn.moving_mean), want_mean, atol=1e-4)
    assert np.allclose(np.asarray(bn.moving_variance), want_var, rtol=1e-3)
    assert bn.momentum == 0.99  # restored
    # nothing but the moving statistics changed
    after = model.get_weights()
    changed = [i for i, (a, b) in enumerate(zip(kernel_before, after)) if not np.array_equal(a, b)]
    names = [w.path for w in model.weights]
    assert sorted(names[i] for i in changed) == sorted(w.path for w in (bn.moving_mean, bn.moving_variance))


def test_zero_init_residual_makes_every_bottleneck_start_as_the_identity_branch():
    import keras

    from training.architecture import build_model
    from training.recipes import zero_init_residuals

    model = build_model(make_recipe_arch(32))
    assert zero_init_residuals(model) == 16  # 3 + 4 + 6 + 3 bottleneck blocks
    trunk = model.get_layer("resnet50")
    for layer in trunk.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            zero = not np.any(np.asarray(layer.gamma))
            assert zero == layer.name.endswith("_3_bn"), layer.name
    # a block's residual branch now adds nothing: its output is relu(shortcut)
    probe = keras.Model(trunk.input, [trunk.get_layer("conv2_block2_out").output, trunk.get_layer("conv2_block1_out").output])
    out, shortcut = probe(np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32))
    assert np.allclose(np.asarray(out), np.maximum(np.asarray(shortcut), 0), atol=1e-5)


def test_tiny_trunk_is_a_resnet_in_miniature_with_the_same_layer_names():
    """The tests' trunk (``--trunk tiny``): residual bottlenecks named as ResNet50's, so zero-init,
    the Grad-CAM tap and export work on it unchanged; a few thousand weights."""
    import keras

    from training.architecture import build_model
    from training.gradcam_tf import FEATURE_LAYER
    from training.recipes import make_recipe, zero_init_residuals

    arch = make_recipe("default", size=32, trunk="tiny").architecture
    assert arch["trunk"] == "tiny"
    model = build_model(arch)
    trunk = model.get_layer("tiny_resnet")
    assert trunk.get_layer(FEATURE_LAYER).output.shape[1:] == (1, 1, 64)  # ResNet50's stride 32
    assert build_model({**arch, "input_size": 64}).get_layer("tiny_resnet").get_layer(FEATURE_LAYER).output.shape[1:3] == (2, 2)
    assert model.count_params() < 20_000
    assert zero_init_residuals(model) == 4
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert np.isfinite(np.asarray(model(x, training=False))).all()
    with pytest.raises(ValueError, match="unsupported trunk"):
        build_model({**arch, "trunk": "vgg"})
    assert keras.backend.backend() == "tensorflow"


def make_recipe_arch(size):
    from training.recipes import make_recipe

    return make_recipe("default", size=size).architecture


def test_internal_size_upsamples_inside_the_model():
    from training.architecture import build_model
    from training.recipes import make_recipe

    arch = make_recipe("default", size=32, internal_size=64).architecture
    assert arch["input_size"] == 32 and arch["internal_size"] == 64
    model = build_model(arch)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.get_layer("upsample").output.shape[1:3] == (64, 64)
    out = np.asarray(model(np.zeros((2, 32, 32, 3), np.float32), training=False))
    assert out.shape == (2, 2) and np.isfinite(out).all()
    assert "internal_size" not in make_recipe("default", size=32).architecture


def test_per_group_table_puts_the_weakest_group_first():
    from training import evaluate

    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.1, 0.2, 0.3])
    groups = np.array(["A", "A", "A", "B", "B", "B"])
    rows = evaluate.per_group(y, p, groups)
    assert [r["group"] for r in rows] == ["A", "B"]
    assert rows[0] == {"group": "A", "n": 3, "positive": 1.0, "accuracy": 1 / 3, "mean_p": pytest.approx(0.4)}
    assert rows[1]["accuracy"] == 1.0
    assert evaluate.summarise(y, p, p, groups)["per_group"] == rows


# --- the command line ---------------------------------------------------------------

def _train_cli(data, out, recipe: str) -> str:
    """``python -m training train`` (in this process) with every recipe option set; its stderr."""
    import contextlib
    import io

    from training.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", "--data", str(data), "--out", str(out), "--recipe", recipe,
                     "--epochs", "2", "--size", "32", "--block", "6", "--seed", "1", "--learning-rate", "5e-4",
                     "--trunk", "tiny", "--mixup", "0.2", "--precise-bn", "on", "--zero-init-residual", "on",
                     "--clipnorm", "1.0", "--raster-intensity", "none" if recipe == "seed" else "landmarks"]) == 0
    return err.getvalue()


@pytest.fixture(scope="module")
def default_run(tiny_data, tmp_path_factory):
    """One finished run of the default recipe, shared by the tests that read a run (never changed
    by them: a test that alters files works on a copy)."""
    out = tmp_path_factory.mktemp("default-run") / "default"
    return out, _train_cli(tiny_data, out, "default")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["default", "seed"])
def test_train_and_evaluate_command_lines(tiny_data, tmp_path, recipe, capsys, request):
    from training.cli import main

    if recipe == "default":
        out, err = request.getfixturevalue("default_run")
    else:
        out = tmp_path / recipe
        err = _train_cli(tiny_data, out, recipe)
    assert "epoch   1/2" in err and "validation on" in err and "accuracy" in err
    for f in (*PLOTS, "model-card.json", "model.weights.h5", "model.onnx", "report.html", "classification_report.txt"):
        assert (out / f).is_file(), f
    card = ModelCard.load(out)
    # the card names the app's model file (ONNX) and keeps the Keras weights it came from
    assert card.weights_file == "model.onnx" and card.sha256 == sha256_file(out / "model.onnx")
    onnx_info = card.extra["onnx"]
    assert onnx_info["keras_weights_sha256"] == sha256_file(out / "model.weights.h5")
    assert onnx_info["parity"]["max_abs_delta_p"] < 1e-4 and onnx_info["parity"]["slices"] >= 6
    assert onnx_info["opset"] == 17 and onnx_info["outputs"] == ["logits", "features"]
    _gradcam_matches_gradient_tape(out)
    assert card.preprocessing["size"] == 32 and card.preprocessing["window_center"] == -600
    assert card.preprocessing["raster_intensity"] == ("none" if recipe == "seed" else "landmarks")
    assert card.positive_class == "COVID" and card.temperature > 0
    v = card.metrics["validation"]
    for k in ("accuracy", "roc_auc", "sensitivity", "specificity", "ece_before", "ece_after"):
        assert k in v
    assert set(v["ci95"]) >= {"accuracy", "roc_auc"}
    assert card.training["recipe"] == recipe and card.training["epochs_run"] >= 1
    assert card.training["recipe_settings"]["learning_rate"] == 5e-4
    assert card.training["recipe_settings"]["mixup"] == 0.2 and card.training["recipe_settings"]["precise_bn"]
    assert set(card.training["precise_bn"]) == {"before", "after"}
    assert "BatchNorm statistics recomputed" in err and "zero-initialised the last BatchNorm of 4" in err
    assert card.training["recipe_settings"]["clipnorm"] == 1.0
    assert card.training["command"].startswith("python -m training train --data ") and "--mixup 0.2" in card.training["command"]
    # inference weights only: no optimizer state in the file
    import h5py

    with h5py.File(out / "model.weights.h5", "r") as h5:
        assert "optimizer" not in h5
    assert card.licence and card.limitations
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64") == len(PLOTS)
    assert "Per group, weakest first" in report and len(v["per_group"]) == v["n_groups"]
    if recipe != "default":
        return  # evaluate, compare and soup take a run of any recipe alike: checked once

    assert main(["evaluate", "--model", str(out), "--data", str(tiny_data), "--out", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and (tmp_path / "ev" / "report.html").is_file()
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_slices"] == 48
    # both write per-slice scores; the run's validation slices are a subset of the evaluation's
    from training.compare import compare, read_scores

    run_scores, ev_scores = read_scores(out), read_scores(tmp_path / "ev")
    assert len(ev_scores) == 48 and len(run_scores) == v["n_slices"] and set(run_scores) <= set(ev_scores)
    assert {r["label"] for r in ev_scores.values()} == {0, 1}
    same = compare(out, out)["per_source"][tiny_data.name]
    assert same["delta"] == 0 and same["delta_ci95"] == [0.0, 0.0]
    assert main(["compare", str(tmp_path / "ev"), str(out), "--out", str(tmp_path / "cmp.json")]) in (0, 1)
    assert "| source |" in capsys.readouterr().out
    assert json.loads((tmp_path / "cmp.json").read_text())["only_old"] == 48 - v["n_slices"]
    # a weight soup of a run with itself is that run, evaluated and exported the same way
    import subprocess
    import sys

    # in a child process: TensorFlow never returns the memory of a second model and ONNX export
    done = subprocess.run([sys.executable, "-m", "training", "soup", str(out), str(out), "--alpha", "0.5", "--data",
                           str(tiny_data), "--out", str(tmp_path / "soup"), "--block", "6", "--seed", "1"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    soup = ModelCard.load(tmp_path / "soup")
    assert soup.weights_file == "model.onnx" and soup.sha256 == sha256_file(tmp_path / "soup" / "model.onnx")
    assert soup.training["soup"]["alpha"] == 0.5 and len(soup.training["soup"]["runs"]) == 2
    assert soup.training["command"].startswith("python -m training soup ")
    for k in ("accuracy", "roc_auc"):
        assert soup.metrics["validation"][k] == pytest.approx(v[k], abs=1e-9), k
    assert set(read_scores(tmp_path / "soup")) == set(run_scores)
    import shutil

    other = tmp_path / "other"
    shutil.copytree(out, other)
    doc = json.loads((other / "model-card.json").read_text())
    doc["preprocessing"]["margin"] = 0.2
    (other / "model-card.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match="differ in preprocessing"):
        main(["soup", str(out), str(other), "--alpha", "0.5", "--data", str(tiny_data), "--out", str(tmp_path / "s2")])
    with pytest.raises(SystemExit, match="between 0 and 1"):
        main(["soup", str(out), str(out), "--alpha", "1.5", "--data", str(tiny_data), "--out", str(tmp_path / "s3")])


@pytest.mark.slow
def _gradcam_matches_gradient_tape(run):
    """The app's Grad-CAM (ONNX features and the Dense kernel, no autodiff) equals TensorFlow's
    GradientTape Grad-CAM on the run's Keras weights, on real slices (flip TTA on and off)."""
    from ctviewer.imaging.io import load_slices
    from ctviewer.inference import load_classifier
    from ctviewer.paths import samples_dir
    from training.keras_model import load_keras_run

    onnx_clf, keras_clf = load_classifier(run), load_keras_run(run)
    files = sorted(p for p in samples_dir().iterdir() if p.suffix in (".png", ".dcm"))
    assert len(files) >= 6
    for tta in ([], ["hflip"]):
        for clf in (onnx_clf, keras_clf):
            clf.card.extra["tta"] = tta
        for f in files:
            x = to_model_input(load_slices(f)[0], onnx_clf.params)
            a, b = onnx_clf.explain(x), keras_clf.explain(x)
            assert a.shape == b.shape and np.abs(a - b).max() < 1e-4, (f.name, tta, np.abs(a - b).max())
            a_s, b_s = onnx_clf.raw_scores(x[None])[0], keras_clf.raw_scores(x[None])[0]
            # float32: a 2-epoch model's log-odds on real slices reach hundreds; compare relatively there
            assert abs(a_s - b_s) < 1e-4 * max(1.0, abs(b_s)), (f.name, a_s, b_s)


@pytest.mark.slow
def test_export_refuses_weights_that_are_not_the_cards(default_run, tmp_path):
    import shutil

    from ctviewer.inference.card import ModelError
    from training.cli import main
    from training.export import export_run

    out = tmp_path / "run"
    shutil.copytree(default_run[0], out)
    first = ModelCard.load(out).sha256
    assert main(["export", str(out)]) == 0  # again: same weights, a fresh ONNX file
    assert ModelCard.load(out).extra["onnx"]["parity"]["max_abs_delta_p"] < 1e-4
    w = out / "model.weights.h5"
    w.write_bytes(w.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="not the weights"):
        export_run(out)
    assert first


def test_bad_data_folder_is_a_clear_error(tmp_path):
    from training.cli import main

    with pytest.raises(SystemExit, match="exactly two class folders"):
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")])


# --- several sources (issue 11) ----------------------------------------------------------------

def test_each_source_groups_by_its_own_rule():
    from pathlib import Path

    from training.dataset import grouping_rule

    assert grouping_rule("ucsd") == "paper-or-patient" and grouping_rule("mosmed") == "study"
    assert grouping_rule("sarscov2-dev") == "blocks"
    paper = "2020.02.10.20021584-p6-52%3.png"
    assert group_key("COVID", Path(paper), 25, "paper-or-patient") == "COVID/2020.02.10.20021584"
    assert group_key("COVID", Path("2020.02.10.20021584-p7-1.png"), 25, "paper-or-patient") == "COVID/2020.02.10.20021584"
    assert group_key("non-COVID", Path("12%1.png"), 25, "paper-or-patient") == "non-COVID/12"
    assert group_key("COVID", Path("CT-1_img3.jpg"), 25, "study") != group_key("COVID", Path("CT-1_img4.jpg"), 25, "study")


def test_sources_split_alone_and_weights_balance_classes_within_each(tiny_data, tmp_path):
    import shutil

    from training.dataset import balance_weights, source_split

    other = tmp_path / "mosmed"
    for cls in ("COVID", "non-COVID"):
        (other / cls).mkdir(parents=True)
    for i, f in enumerate(sorted((tiny_data / "COVID").glob("*.png"))[:9]):
        shutil.copy(f, other / "COVID" / f"CT-1_img{i}.png")
    for i, f in enumerate(sorted((tiny_data / "non-COVID").glob("*.png"))[:3]):
        shutil.copy(f, other / "non-COVID" / f"CT-0_img{i}.png")
    one = discover(tiny_data, block=5)
    both = discover([tiny_data, other], block=5)
    assert both.source_names == [tiny_data.name, "mosmed"] and len(both.paths) == 48 + 12
    assert len(np.unique(both.groups[both.sources == "mosmed"])) == 12  # one group per study
    tr, va = source_split(both.sources, both.groups, both.labels, 0.25, seed=3)
    _, va_one = group_split(one.groups, one.labels, 0.25, seed=3)
    assert np.array_equal(va[both.sources[va] == tiny_data.name], va_one)  # adding a source changes no split
    assert not set(both.groups[tr]) & set(both.groups[va])
    w = balance_weights(both.sources, both.labels)
    m = both.sources == "mosmed"
    for c in (0, 1):
        assert np.isclose(w[m & (both.labels == c)].sum(), 6.0)  # 12 slices, two classes: 6 each
    assert np.isclose(w[~m].sum(), 48.0)
    w2 = balance_weights(both.sources, both.labels, source_weights={tiny_data.name: 2.0})
    assert np.isclose(w2[~m].sum(), 96.0) and np.array_equal(w2[m], w[m])  # the share doubles, balance kept
    plain = balance_weights(both.sources, both.labels, balance=False, source_weights={"mosmed": 0.5})
    assert np.allclose(plain[m], 0.5) and np.allclose(plain[~m], 1.0)
    with pytest.raises(ValueError, match="unknown sources"):
        balance_weights(both.sources, both.labels, source_weights={"nosuch": 2.0})


def test_source_weight_option_is_parsed_and_checked(capsys):
    import argparse

    from training.cli import _source_weights

    ap = argparse.ArgumentParser()
    assert _source_weights(ap, ["sarscov2-dev=2", "a=b=0.5"]) == {"sarscov2-dev": 2.0, "a=b": 0.5}
    assert _source_weights(ap, None) == {}
    for bad in ("sarscov2-dev", "=2", "x=0", "x=-1", "x=two"):
        with pytest.raises(SystemExit):
            _source_weights(ap, [bad])
        assert "expected SOURCE=W" in capsys.readouterr().err


def test_source_augmentation_is_deterministic_and_keeps_the_crop():
    from training.augment import SOURCE_AUG, source_augment

    img = chest_png8(300, 220, lesion=True)
    always = {k: 1.0 for k in SOURCE_AUG}
    a = source_augment(img, always, np.random.default_rng(1))
    b = source_augment(img, always, np.random.default_rng(1))
    assert np.array_equal(a, b) and a.shape == img.shape and a.dtype == np.uint8
    assert not np.array_equal(a, img)
    assert np.array_equal(source_augment(img, {k: 0.0 for k in SOURCE_AUG}, np.random.default_rng(1)), img)


def test_tables_gather_left_out_sources_and_the_replaced_model_into_the_card(tmp_path):
    """``python -m training tables``: leave-one-source-out runs and the replaced model's
    per-source numbers end up in the shipped card and its report."""
    from training import evaluate
    from training.cli import main

    rng = np.random.default_rng(0)
    n = 40
    y = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    p = np.clip(0.5 * y + rng.uniform(0, 0.5, n), 0, 1)
    one = evaluate.summarise(y, p, p, np.array([f"g{i // 4}" for i in range(n)]))  # bootstrap CIs: seconds each

    def metrics():
        return json.loads(json.dumps(one))  # an independent copy

    def card_in(folder, **metrics_):
        folder.mkdir()
        ModelCard(name="m", version="2", architecture={}, preprocessing={}, classes=["COVID", "non-COVID"],
                  weights_file="model.onnx", sha256="0" * 64, metrics=metrics_,
                  training={"command": f"python -m training train --out {folder.name}", "epochs_run": 1,
                            "fit_seconds": 60}).save(folder)
        return folder

    ship = card_in(tmp_path / "ship", validation=metrics(), per_source={"a": metrics(), "b": metrics()})
    loso_a = card_in(tmp_path / "loso-a", left_out={"a": metrics()})
    loso_b = card_in(tmp_path / "loso-b", left_out={"b": metrics()})
    old = card_in(tmp_path / "old", validation=metrics())
    prev = {**metrics(), "per_source": {"a": metrics(), "b": metrics()}}
    (tmp_path / "prev.json").write_text(json.dumps(prev))
    assert main(["tables", str(ship), "--loso", str(loso_a), str(loso_b), "--replaces", str(tmp_path / "prev.json"),
                 "--replaced-card", str(old)]) == 0
    card = ModelCard.load(ship)
    assert set(card.metrics["leave_one_source_out"]) == {"a", "b"}
    assert card.metrics["leave_one_source_out"]["a"]["run"]["command"].endswith("loso-a")
    assert card.extra["replaces"]["per_source"]["b"]["n_slices"] == 40 and card.extra["replaces"]["version"] == "2"
    report = (ship / "report.html").read_text()
    assert "Leave one source out" in report and "Per source" in report and "replaces" in report


def test_study_calibration_fit_learns_correlated_slices():
    """training.study_calibration: pseudo-studies where whole studies are missed (0 of 25 slices
    positive although COVID) and one-slice studies at chance: the fitted curve must not make a
    single slice or a modest majority look certain, and must call clear studies."""
    from training.study_calibration import fit, pseudo_studies, reliability

    rng = np.random.default_rng(0)
    p, y, groups, sources = [], [], [], []
    for g in range(30):  # 25-slice studies: COVID ones mostly positive, one missed entirely
        covid = g % 2
        share = (0.0 if g == 1 else 0.85) if covid else 0.1
        p += list((rng.random(25) < share).astype(float) * 0.8 + 0.1)
        y += [covid] * 25
        groups += [f"b{g}"] * 25
        sources += ["blocks"] * 25
    for g in range(60):  # one-slice studies at chance
        p.append(float(rng.random()))
        y.append(g % 2)
        groups.append(f"s{g}")
        sources.append("single")
    studies = pseudo_studies(np.array(p), np.array(y), np.array(groups), np.array(sources), 0.5)
    assert len(studies) == 90 and {s["n"] for s in studies} == {1, 25}
    cal = fit(studies, "synthetic")
    assert max(cal.p_covid(1, 1), 1 - cal.p_covid(0, 1)) < 0.75  # one slice: uncertain
    assert cal.p_covid(24, 25) > 0.75 and cal.p_covid(1, 25) < 0.25  # clear studies get a label
    rel = reliability(studies, lambda s: cal)
    assert sum(r["studies"] for r in rel["bands"]) == 90


def test_train_exclude_leaves_validation_alone():
    from training.dataset import exclude_from_training

    paths = ["/m/COVID/CT-1_study_0001.png", "/m/COVID/CT-2_study_0002.png", "/m/non-COVID/CT-0_study_0003.png",
             "/m/COVID/CT-1_study_0004.png"]
    train = np.array([0, 1, 2])
    assert exclude_from_training(paths, train, ["CT-1_*"]).tolist() == [1, 2]
    assert exclude_from_training(paths, train, []).tolist() == [0, 1, 2]


def test_group_kfold_validates_every_group_exactly_once_and_never_cuts_one():
    from training.dataset import group_kfold, source_split

    rng = np.random.default_rng(0)
    groups = np.array([f"g{i // 7}" for i in range(300)])
    labels = np.array([int(g[1:]) % 2 for g in groups])
    seen = np.zeros(len(groups), int)
    for k in range(5):
        tr, va = group_kfold(groups, labels, k, 5, seed=1)
        assert set(groups[tr]).isdisjoint(groups[va]) and len(tr) + len(va) == len(groups)
        assert 0.15 < len(va) / len(groups) < 0.25 and set(labels[va]) == {0, 1}
        seen[va] += 1
    assert (seen == 1).all()
    # within each source alone, like the validation split
    sources = np.where(rng.random(300) < 0.5, "a", "b")
    tr, va = source_split(sources, np.char.add(sources, groups), labels, 0.2, 1, cv=(2, 5))
    assert set(sources[va]) == {"a", "b"}
    with pytest.raises(ValueError):
        group_kfold(groups, labels, 5, 5, seed=1)


def test_cv_fold_option_is_checked(capsys):
    from training.cli import main

    for bad in ("0/5", "6/5", "3", "a/b", "1/1"):
        with pytest.raises(SystemExit):
            main(["train", "--data", "x", "--out", "y", "--cv-fold", bad])
        assert "--cv-fold" in capsys.readouterr().err


def test_left_out_support_caps_verdicts_at_the_reliability_measured_on_unseen_sources(tmp_path):
    """Issue 21: study verdicts are judged on pseudo-studies drawn from sources the model never
    trained on; a model whose calls there follow the source, not the disease, gets a cap of 0.5
    (every verdict uncertain), one whose calls follow the disease keeps its confidence."""
    from training.compare import write_scores
    from training.study_calibration import left_out_support, read_left_out

    from ctviewer.studies import StudyCalibration

    cal = StudyCalibration(prior=10.0, intercept=0.0, slope=8.0, uncertain_below=0.75)
    rng = np.random.default_rng(1)
    y = np.array([1] * 200 + [0] * 100)
    informative = np.where(y == 1, rng.uniform(0.55, 1, 300), rng.uniform(0, 0.45, 300))
    biased = rng.uniform(0.6, 1, 300)  # calls every slice COVID, whatever it shows
    files = [f"/x/{i}.png" for i in range(300)]
    write_scores(tmp_path / "good.csv", files, ["good"] * 300, ["g"] * 300, y, informative, informative)
    write_scores(tmp_path / "bad.csv", files, ["bad"] * 300, ["g"] * 300, y, biased, biased)
    good = read_left_out([("good", str(tmp_path / "good.csv"))])
    assert good["good"][0].tolist() == y.tolist()
    sup = left_out_support(good, cal, 0.5, draws=50)
    assert sup["sources"]["good"]["balanced"] == 1.0 and sup["max_confidence"] == 1.0
    both = read_left_out([("good", str(tmp_path / "good.csv")), ("bad", str(tmp_path / "bad.csv"))])
    sup = left_out_support(both, cal, 0.5, draws=50)
    bad = sup["sources"]["bad"]
    assert bad["covid"] == 1.0 and bad["non_covid"] == 0.0 and bad["balanced"] == 0.5
    assert sup["max_confidence"] == 0.5  # the worst left-out source decides
    assert left_out_support(both, cal, 0.5, draws=50) == sup  # deterministic
    with pytest.raises(ValueError, match="both"):
        left_out_support({"one": (np.ones(5, int), np.ones(5))}, cal, 0.5)
    with pytest.raises(SystemExit, match="no slice of source"):
        read_left_out([("elsewhere", str(tmp_path / "good.csv"))])
