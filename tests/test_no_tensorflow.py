"""The application never imports TensorFlow or Keras (issue 12): the model runs on ONNX
Runtime.  Nor OpenCV, nor the onnx package (issue 24: its image operations are NumPy, its
PNG/JPEG decoder Pillow, and it reads the one tensor it needs itself).  Each check runs in a fresh interpreter, because this test process itself imports
TensorFlow to build its tiny model fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "resources" / "samples"
HEAVY = ("tensorflow", "keras", "jax", "tf2onnx", "torch", "cv2", "onnx")

CHECK = """
import atexit, json, sys
def _report():
    with open({out!r}, "w") as fh:
        json.dump(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}), fh)
atexit.register(_report)
from ctviewer.cli import main
sys.exit(main({argv!r}))
"""


def _run(tmp_path, argv, env_extra=None):
    out = tmp_path / "modules.json"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CTVIEWER_CONFIG_DIR": str(tmp_path / "config"),
           "CTVIEWER_DATA_DIR": str(tmp_path / "data"), "CTVIEWER_LOG_DIR": str(tmp_path / "log"), **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-c", CHECK.format(out=str(out), heavy=HEAVY, argv=argv)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc


def test_classify_runs_without_tensorflow(tmp_path):
    loaded, proc = _run(tmp_path, ["classify", str(SAMPLES), "--csv", str(tmp_path / "out.csv")])
    assert loaded == []
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 and all(",COVID," in r or ",non-COVID," in r for r in rows[1:])


def test_self_test_runs_without_tensorflow(tmp_path):
    loaded, proc = _run(tmp_path, ["--self-test"])
    assert loaded == [] and "self-test passed" in proc.stdout


def test_the_window_classifies_and_explains_without_tensorflow(tmp_path):
    pytest.importorskip("PySide6")
    shot = tmp_path / "shot.png"
    loaded, _ = _run(tmp_path, ["--screenshot", str(shot), "--heatmap", str(SAMPLES / "covid-65.png")])
    assert loaded == [] and shot.stat().st_size > 10_000
