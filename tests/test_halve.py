"""``python -m training halve``: float16 storage of a model package's weights, refused unless
p(COVID) and the per-source AUC stay within the budget (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("sklearn")
from PIL import Image  # noqa: E402

from ctviewer.inference.card import sha256_file  # noqa: E402
from ctviewer.inference.model import load_classifier  # noqa: E402
from tests.model_fixtures import make_model_package  # noqa: E402
from tests.synthetic import chest_png8  # noqa: E402
from training import halve  # noqa: E402


def _labelled(root: Path) -> Path:
    for cls, lesion in (("COVID", True), ("non-COVID", False)):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(chest_png8(lesion=lesion, seed=i)).save(root / cls / f"{cls} ({i}).png")
    return root


def test_halve_stores_float16_and_keeps_the_model(tmp_path):
    pkg = make_model_package(tmp_path / "pkg")
    data = _labelled(tmp_path / "src")
    before = (pkg / "model.onnx").read_bytes()
    x = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    old = load_classifier(pkg)
    p_old, k_old = old.probabilities(x), old.head_kernel()

    assert halve.main([str(pkg), "--data", str(data)]) == 0
    after = (pkg / "model.onnx").read_bytes()
    assert len(after) < 0.75 * len(before)
    card = json.loads((pkg / "model-card.json").read_text())
    assert card["sha256"] == sha256_file(pkg / "model.onnx")
    entry = card["file_history"][-1]
    assert entry["float32_sha256"] == old.card.sha256 and entry["parity"]["slices"] == 8
    assert entry["parity"]["max_abs_delta_p"] <= halve.MAX_DELTA_P

    new = load_classifier(pkg)  # verifies the new hash
    assert np.abs(new.probabilities(x) - p_old).max() <= halve.MAX_DELTA_P
    assert np.allclose(new.head_kernel(), k_old, atol=1e-3)
    with pytest.raises(ValueError, match="no float32 weights"):
        halve.halve_bytes(after)  # nothing left to halve


def test_halve_refuses_beyond_the_budget_and_writes_nothing(tmp_path, monkeypatch):
    pkg = make_model_package(tmp_path / "pkg")
    data = _labelled(tmp_path / "src")
    model, card = (pkg / "model.onnx").read_bytes(), (pkg / "model-card.json").read_text()
    monkeypatch.setattr(halve, "MAX_DELTA_P", -1.0)  # any change at all is too much
    assert halve.main([str(pkg), "--data", str(data)]) == 1
    assert (pkg / "model.onnx").read_bytes() == model and (pkg / "model-card.json").read_text() == card


def test_the_runtime_description_names_float16_storage_only_for_a_halved_file(tmp_path):
    from ctviewer.inference.card import ModelCard
    from ctviewer.inference.runtime import describe

    pkg = make_model_package(tmp_path / "pkg")
    assert describe(ModelCard.load(pkg)).endswith("float32 arithmetic")
    assert halve.main([str(pkg), "--data", str(_labelled(tmp_path / "src"))]) == 0
    assert describe(ModelCard.load(pkg)).endswith("float32 arithmetic, weights stored in float16")
