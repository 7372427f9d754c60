"""``ctviewer --self-test``: passes on a sound installation, fails clearly otherwise."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from ctviewer import selftest
from ctviewer.cli import main
from ctviewer.inference.card import ModelCard
from ctviewer.inference.model import default_model_dir
from ctviewer.paths import samples_dir


def test_expected_results_belong_to_the_bundled_model_and_cover_every_sample():
    expected = json.loads((samples_dir() / selftest.EXPECTED).read_text())
    card = ModelCard.load(default_model_dir())
    assert expected["model_sha256"] == card.sha256 and expected["model"] == card.title
    files = sorted(p.name for p in samples_dir().iterdir() if p.suffix in (".png", ".dcm"))
    assert sorted(expected["samples"]) == files
    for name, exp in expected["samples"].items():
        assert exp["truth"] == selftest.truth_for(name)
        assert exp["label"] == ("COVID" if exp["p_covid"] >= expected["threshold"] else "non-COVID")


@pytest.mark.slow
def test_self_test_passes_from_source(capsys):
    assert main(["--self-test"]) == 0
    out = capsys.readouterr().out
    assert "SHA-256 matches its card" in out and "self-test passed" in out
    # issue 24: which runtime runs the model (ONNX Runtime in float32 is the one that ships)
    assert "runtime: ONNX Runtime" in out and "on the CPU, float32 arithmetic" in out
    assert out.count("  ok   ") == 6
    expected = json.loads((samples_dir() / selftest.EXPECTED).read_text())["samples"]
    wrong = [n for n, e in expected.items() if e["truth"] and e["label"] != e["truth"]]
    for name in wrong:  # with 1.1.0: the Philips Lung-PET-CT-Dx slice, p = 0.53, truly non-COVID
        assert f"known model error: truly {expected[name]['truth']}" in out
    assert out.count("[known model error") == len(wrong)


@pytest.mark.slow
def test_self_test_fails_when_a_result_differs(tmp_path, monkeypatch):
    folder = tmp_path / "samples"
    shutil.copytree(samples_dir(), folder)
    doc = json.loads((folder / selftest.EXPECTED).read_text())
    doc["samples"]["covid-65.png"]["p_covid"] = 0.2
    doc["samples"]["covid-65.png"]["label"] = "non-COVID"
    (folder / selftest.EXPECTED).write_text(json.dumps(doc))
    monkeypatch.setattr(selftest, "samples_dir", lambda: folder)
    out = io.StringIO()
    assert selftest.run(out) == 1
    assert "FAIL covid-65.png" in out.getvalue() and "self-test FAILED: 1 of 6" in out.getvalue()


def test_self_test_fails_on_a_tampered_model(tmp_path, monkeypatch):
    pkg = tmp_path / "model"
    shutil.copytree(default_model_dir(), pkg, ignore=shutil.ignore_patterns("*.png", "*.html"))
    card = json.loads((pkg / "model-card.json").read_text())
    card["sha256"] = "f" * 64
    (pkg / "model-card.json").write_text(json.dumps(card))
    monkeypatch.setenv("CTVIEWER_MODEL", str(pkg))
    out = io.StringIO()
    assert selftest.run(out) == 1
    assert "FAIL model" in out.getvalue() and "does not match its model card" in out.getvalue()


def test_self_test_fails_when_expected_results_are_for_another_model(tmp_path, monkeypatch):
    folder = tmp_path / "samples"
    shutil.copytree(samples_dir(), folder)
    doc = json.loads((folder / selftest.EXPECTED).read_text())
    doc["model_sha256"] = "0" * 64
    (folder / selftest.EXPECTED).write_text(json.dumps(doc))
    monkeypatch.setattr(selftest, "samples_dir", lambda: folder)
    out = io.StringIO()
    assert selftest.run(out) == 1
    assert "written for another model" in out.getvalue()
