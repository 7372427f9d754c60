"""Model cards, verified loading and calibrated prediction."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ctviewer.inference.calibration import covid_score, expected_calibration_error, fit_temperature, sigmoid
from ctviewer.inference.card import ModelCard, ModelError

from .model_fixtures import make_model_package


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return make_model_package(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def classifier(package):
    from ctviewer.inference import load_classifier

    return load_classifier(package)


def copy_package(package, tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(package, dst)
    return dst


# --- calibration (pure numpy) ---------------------------------------------

def test_score_is_the_log_odds_for_every_head():
    logits = np.array([[2.0, -1.0]])
    assert covid_score(logits, "linear", 0)[0] == pytest.approx(3.0)
    soft = np.exp(logits) / np.exp(logits).sum()
    assert covid_score(soft, "softmax", 0)[0] == pytest.approx(3.0)
    assert covid_score(soft, "softmax", 1)[0] == pytest.approx(-3.0)
    sig = np.array([[0.8, 0.2]])
    assert covid_score(sig, "sigmoid", 0)[0] == pytest.approx(np.log(4.0))


def test_fit_temperature_recovers_an_overconfident_models_temperature():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < sigmoid(true_logit)).astype(int)
    assert fit_temperature(3.0 * true_logit, y) == pytest.approx(3.0, rel=0.08)


def test_ece_is_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(p, y) < 0.02
    assert expected_calibration_error(np.where(p > 0.5, 0.999, 0.001), y) > 0.2


# --- cards and verified loading ---------------------------------------------

def test_card_round_trips_and_keeps_unknown_fields(tmp_path, package):
    card = ModelCard.load(package)
    d = card.to_dict()
    d["something_new"] = {"a": 1}
    (tmp_path / "model-card.json").write_text(json.dumps(d))
    again = ModelCard.load(tmp_path)
    assert again.to_dict() == d
    assert again.positive_class == "COVID" and again.positive_index == 0


@pytest.mark.parametrize("drop", ["sha256", "weights_file", "classes"])
def test_card_missing_a_required_field_is_refused(tmp_path, package, drop):
    d = json.loads((package / "model-card.json").read_text())
    del d[drop]
    (tmp_path / "model-card.json").write_text(json.dumps(d))
    with pytest.raises(ModelError, match=drop):
        ModelCard.load(tmp_path)


def test_missing_card_and_broken_json_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="no model-card.json"):
        ModelCard.load(tmp_path)
    (tmp_path / "model-card.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable"):
        ModelCard.load(tmp_path)


def test_tampered_model_is_refused_before_anything_parses_it(tmp_path, package, monkeypatch):
    import onnxruntime

    from ctviewer.inference import load_classifier

    pkg = copy_package(package, tmp_path)
    w = pkg / "model.onnx"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: pytest.fail("parsed an unverified model"))
    with pytest.raises(ModelError, match="does not match its model card"):
        load_classifier(pkg)


def test_missing_model_file_is_a_clear_error(tmp_path, package):
    from ctviewer.inference import load_classifier

    pkg = copy_package(package, tmp_path)
    (pkg / "model.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_classifier(pkg)


def test_weights_path_cannot_escape_the_package(tmp_path, package):
    card = ModelCard.load(package)
    card.weights_file = "../../etc/passwd"
    assert card.weights_path(tmp_path) == tmp_path / "passwd"


@pytest.mark.parametrize("name", ["model.weights.h5", "model.keras", "model.pkl"])
def test_only_onnx_files_are_accepted(tmp_path, package, name):
    """Keras weights need TensorFlow (a training artefact: export them); a full .keras or pickle
    file could carry code.  None is loaded, even with a matching hash."""
    from ctviewer.inference import load_classifier
    from ctviewer.inference.card import sha256_file

    pkg = copy_package(package, tmp_path)
    (pkg / "model.onnx").rename(pkg / name)
    card = ModelCard.load(pkg)
    card.weights_file = name
    card.sha256 = sha256_file(pkg / name)
    card.save(pkg)
    with pytest.raises(ModelError, match="ONNX models only"):
        load_classifier(pkg)


def test_a_file_that_is_not_onnx_is_a_clear_error(tmp_path, package):
    from ctviewer.inference import load_classifier
    from ctviewer.inference.card import sha256_file

    pkg = copy_package(package, tmp_path)
    (pkg / "model.onnx").write_bytes(b"not a model at all" * 100)
    card = ModelCard.load(pkg)
    card.sha256 = sha256_file(pkg / "model.onnx")
    card.save(pkg)
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        load_classifier(pkg)


def test_a_model_whose_input_does_not_fit_the_card_is_refused(tmp_path, package):
    from ctviewer.inference import load_classifier

    pkg = copy_package(package, tmp_path)
    card = ModelCard.load(pkg)
    card.preprocessing = {**card.preprocessing, "size": 48}
    card.save(pkg)
    with pytest.raises(ModelError, match="expected one input"):
        load_classifier(pkg)


# --- prediction ------------------------------------------------------------------

def test_probabilities_are_calibrated_log_odds(classifier):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    p = classifier.probabilities(x)
    assert p.shape == (5,) and np.all((0 <= p) & (p <= 1))
    assert np.allclose(p, sigmoid(classifier.raw_scores(x) / classifier.card.temperature))


def test_batching_does_not_change_results(classifier):
    x = np.random.default_rng(1).uniform(0, 255, (7, 32, 32, 3)).astype(np.float32)
    assert np.allclose(classifier.raw_scores(x, batch_size=2), classifier.raw_scores(x, batch_size=64), atol=1e-4)


def test_temperature_pulls_probabilities_towards_one_half(tmp_path):
    from ctviewer.inference import load_classifier

    hot = load_classifier(make_model_package(tmp_path / "hot", temperature=4.0))
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    z = hot.raw_scores(x)
    assert np.allclose(hot.probabilities(x), sigmoid(z / 4.0))


def test_flip_tta_averages_the_image_and_its_mirror(tmp_path, classifier):
    from ctviewer.inference import load_classifier

    tta = load_classifier(make_model_package(tmp_path / "tta", tta=["hflip"]))
    x = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    expected = 0.5 * (classifier.raw_scores(x) + classifier.raw_scores(x[:, :, ::-1]))
    assert np.allclose(tta.raw_scores(x), expected, atol=1e-4)
    assert np.allclose(tta.raw_scores(x[:, :, ::-1]), tta.raw_scores(x), atol=1e-4)


def test_wrong_input_shape_is_refused(classifier):
    with pytest.raises(ValueError, match="expected inputs"):
        classifier.raw_scores(np.zeros((1, 80, 80, 3), np.float32))


def test_labels_follow_the_cards_threshold(classifier):
    assert classifier.label_for(0.7) == "COVID"
    assert classifier.label_for(0.2) == "non-COVID"


def test_card_transfer_note_names_the_auc_at_hospitals_never_trained_on():
    """Issue 21: the window says how the model did where it never trained (the card's
    leave-one-source-out metrics), and says so plainly when that is chance."""
    from ctviewer.inference.card import ModelCard

    card = ModelCard.from_dict({"name": "m", "version": "1", "architecture": {}, "preprocessing": {},
                                "classes": ["COVID", "non-COVID"], "weights_file": "model.onnx", "sha256": "0"})
    assert card.unseen_sources() == {} and card.transfer_note() == "Not measured at hospitals it never trained on."
    card.metrics = {"leave_one_source_out": {"ucsd": {"roc_auc": 0.58}, "mosmed": {"roc_auc": 0.479},
                                             "broken": "n/a"}}
    assert card.unseen_sources() == {"ucsd": 0.58, "mosmed": 0.479}
    assert card.transfer_note() == "At hospitals it never trained on: AUC 0.58 (ucsd), 0.48 (mosmed). At chance there (0.5)."
    card.metrics["leave_one_source_out"]["ucsd"]["roc_auc"] = 0.83
    assert "At chance" not in card.transfer_note()
