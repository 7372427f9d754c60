"""``python -m training audit``: label-free cues that separate the classes are found, and
a source whose classes were exported alike shows none."""

import json

import cv2
import numpy as np
import pytest

from .synthetic import chest_png8
from training.cli import main


def _source(root, darker_covid: bool, covid_jpeg: bool = False):
    """24 + 24 slices; both classes show the same lesion-free chests (the disease is not what
    differs), only the export may differ: a darker tissue window or another file format."""
    for cls in ("COVID", "non-COVID"):
        (root / cls).mkdir(parents=True)
        for i in range(24):
            img = chest_png8(220 + 5 * (i % 4), 160 + 3 * (i % 5), seed=i + (100 if cls == "COVID" else 0))
            if cls == "COVID" and darker_covid:  # a different export: tissue 25 levels darker, air kept
                lut = np.clip(np.arange(256) - 25 * np.clip((np.arange(256) - 60) / 170, 0, 1), 0, 255)
                img = lut.astype(np.uint8)[img]
            ext = ".jpg" if cls == "COVID" and covid_jpeg else ".png"
            cv2.imwrite(str(root / cls / f"{cls}_{i}{ext}"), img)
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    return (_source(root / "shortcut", darker_covid=True, covid_jpeg=True), _source(root / "alike", darker_covid=False))


def test_export_differences_between_classes_are_flagged(sources, tmp_path, capsys):
    shortcut, alike = sources
    out = tmp_path / "audit.json"
    assert main(["audit", "--data", str(shortcut), str(alike), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    bad, good = result["per_source"]["shortcut"], result["per_source"]["alike"]
    assert bad["slices"] == good["slices"] == 48 and bad["positives"] == 24
    assert bad["cues"]["soft tissue"]["auc"] >= 0.9 and bad["cues"]["soft tissue"]["direction"] == "lower in positives"
    assert bad["cues"]["file format"]["auc"] == 1.0
    assert {"soft tissue", "file format"} <= set(bad["risks"])
    assert good["risks"] == [] and good["cues"]["soft tissue"]["auc"] < 0.7
    assert "| shortcut | 48 |" in printed and "shortcut: file format alone separates the classes" in printed


def test_standardisation_removes_an_export_difference_of_window(sources, tmp_path):
    from training.audit import audit

    shortcut, _ = sources
    as_stored = audit([str(shortcut)])["per_source"]["shortcut"]["cues"]
    standardised = audit([str(shortcut)], raster_intensity="landmarks")["per_source"]["shortcut"]["cues"]
    assert as_stored["soft tissue"]["auc"] >= 0.9 > 0.7 > standardised["soft tissue"]["auc"]


def test_unreadable_files_are_skipped_and_counted(tmp_path, capsys):
    from training.audit import audit

    src = _source(tmp_path / "s", darker_covid=False)
    (src / "COVID" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = audit([str(src)])
    assert result["unreadable"] == 1 and result["per_source"]["s"]["slices"] == 48
    assert "broken.png" in capsys.readouterr().err
