"""GUI parts that the main-window tests do not reach directly: the model card
dialog, the inference thread's priority queue, the first launch, themes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtGui import QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from ctviewer.gui.app import configure_settings, run  # noqa: E402
from ctviewer.gui.theme import apply_theme  # noqa: E402
from ctviewer.gui.model_card import DISCLAIMER, ModelCardDialog, card_html, plot_count  # noqa: E402
from ctviewer.gui.workers import PREDICT, InferenceThread  # noqa: E402
from ctviewer.imaging import PreprocessParams, Slice  # noqa: E402
from ctviewer.inference.card import ModelCard  # noqa: E402
from tests.model_fixtures import make_model_package  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "resources" / "models" / "ct-resnet50"


@pytest.fixture(autouse=True)
def settings_dir(qapp, tmp_path, monkeypatch):
    """Settings, history and log in this test's folder; run() installs hooks: put them back."""
    import logging
    import sys
    import threading

    monkeypatch.setenv("CTVIEWER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CTVIEWER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CTVIEWER_LOG_DIR", str(tmp_path / "log"))
    configure_settings()
    QSettings().clear()
    hooks = (sys.excepthook, threading.excepthook)
    logger = logging.getLogger("ctviewer")
    handlers = list(logger.handlers)
    yield
    apply_theme("system")
    sys.excepthook, threading.excepthook = hooks
    for h in [h for h in logger.handlers if h not in handlers]:
        h.close()
        logger.removeHandler(h)


def test_model_card_dialog_shows_metrics_intervals_limits_plots_and_the_disclaimer(qtbot):
    card = ModelCard.load(BUNDLED)
    text = card_html(card)
    assert "Runs on ONNX Runtime" in text and "float32 arithmetic" in text  # issue 24
    v = card.metrics["validation"]
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        assert f"{v[key]:.3f}" in text
        lo, hi = v["ci95"][key]
        assert f"{lo:.3f} – {hi:.3f}" in text
    assert DISCLAIMER in text
    assert "At hospitals it never trained on: AUC 0.58 (ucsd), 0.48 (mosmed)" in text  # issue 21
    assert card.version in text and card.sha256[:16] in text
    assert all(limit.split(",")[0] in text for limit in card.limitations)
    dialog = ModelCardDialog(card, BUNDLED)
    qtbot.addWidget(dialog)
    assert plot_count(dialog) == 4  # curves, confusion matrix, ROC, reliability


class FakeClassifier:
    """What the inference thread needs of a classifier: p = mean grey level / 255."""

    def __init__(self):
        self.params = PreprocessParams(size=16)
        self.card = ModelCard("fake", "0", {}, {}, ["COVID", "non-COVID"], "w", "0")

    def probabilities(self, x):
        return x.reshape(len(x), -1).mean(axis=1) / 255.0

    def label_for(self, p):
        return "COVID" if p >= 0.5 else "non-COVID"


def _slice(value: int) -> Slice:
    img = np.full((40, 40), value, np.uint8)
    img[10:30, 10:30] = 255 - value
    return Slice(pixels=img, path=f"/tmp/s{value}.png", is_hu=False)


def test_inference_thread_puts_the_slice_on_screen_first(qtbot):
    worker = InferenceThread()
    got: list[str] = []
    worker.predicted.connect(lambda key, s, p, label, entry: got.append(key))
    worker.gated.connect(lambda key, s, p, reason, entry: got.append(key))  # these squares show no lung
    worker.start()
    try:
        for i in range(20):  # a series queued before the model is ready
            worker.request(PREDICT, f"k{i}", _slice(i))
        worker.request(PREDICT, "k15", _slice(15), urgent=True)  # the user scrolled to slice 15
        worker.request(PREDICT, "k3", _slice(3))  # already queued: not duplicated
        assert worker.pending() == 20
        worker.set_classifier(FakeClassifier())
        qtbot.waitUntil(lambda: len(got) == 20, timeout=30_000)
    finally:
        worker.stop()
    assert got[0] == "k15"
    assert sorted(got) == sorted(f"k{i}" for i in range(20))
    assert got[1:] == [f"k{i}" for i in range(20) if i != 15]


def test_inference_thread_discards_pending_work_and_refuses_non_ct(qtbot):
    worker = InferenceThread()
    refused: list[tuple[str, str]] = []
    done: list[str] = []
    worker.refused.connect(lambda key, s, reason: refused.append((key, reason)))
    worker.predicted.connect(lambda key, *a: done.append(key))
    worker.gated.connect(lambda key, *a: done.append(key))
    worker.start()
    try:
        worker.request(PREDICT, "old", _slice(1))
        worker.discard_pending()
        mr = Slice(pixels=np.zeros((40, 40), np.float32), path="/tmp/mr.dcm", is_hu=True, modality="MR")
        worker.request(PREDICT, "mr", mr)
        worker.request(PREDICT, "ok", _slice(2))
        worker.set_classifier(FakeClassifier())
        qtbot.waitUntil(lambda: bool(refused and done), timeout=30_000)
    finally:
        worker.stop()
    assert done == ["ok"]
    assert refused[0][0] == "mr" and "not a CT image" in refused[0][1]


def test_first_launch_opens_the_samples_and_later_launches_do_not(qtbot, tmp_path):
    model = make_model_package(tmp_path / "tiny")
    seen: list[int] = []

    def close_when_opened(expect_open: bool) -> None:
        wins = [w for w in QApplication.topLevelWidgets() if w.__class__.__name__ == "MainWindow" and w.isVisible()]
        if not wins:
            QTimer.singleShot(50, lambda: close_when_opened(expect_open))
            return
        w = wins[0]
        if expect_open:
            w.opened.connect(lambda n, _r: (seen.append(n), w.close()))
        else:
            seen.append(len(w.series))
            QTimer.singleShot(200, w.close)

    QTimer.singleShot(0, lambda: close_when_opened(True))
    assert run(["--model", str(model)]) == 0
    QTimer.singleShot(0, lambda: close_when_opened(False))
    assert run(["--model", str(model)]) == 0
    assert seen == [3, 0]  # the samples: 4 PNGs as one series, 2 DICOM series; then nothing
    assert QSettings().value("files/samples_offered", False, type=bool)
    log = (tmp_path / "log" / "ctviewer.log").read_text()
    assert "starting" in log and "window shown" in log and "opened 3 series (6 slices)" in log
    assert "covid-65" not in log and "samples" not in log  # no file names or paths


def test_themes_change_the_palette(qtbot):
    app = QApplication.instance()
    apply_theme("dark")
    dark = app.palette().color(QPalette.ColorRole.Window).lightness()
    apply_theme("light")
    light = app.palette().color(QPalette.ColorRole.Window).lightness()
    assert dark < 100 < light


def test_the_cyclic_garbage_collector_runs_on_the_gui_thread_only(qtbot):
    """A collection in a worker thread destroyed Qt wrappers off the GUI thread (a segfault on
    Xvfb): with a window made, automatic collection is off and the GUI thread collects."""
    import gc
    import threading

    from ctviewer.gui.workers import _MainThreadGC, collect_on_the_gui_thread

    collect_on_the_gui_thread()
    collect_on_the_gui_thread()  # once per application
    app = QApplication.instance()
    assert len(app.findChildren(_MainThreadGC)) == 1 and not gc.isenabled()
    threads = []
    gc.callbacks.append(lambda phase, info: threads.append(threading.current_thread()) if phase == "start" else None)
    try:
        junk = []
        for _ in range(5000):  # cycles to collect
            a = []
            a.append(a)
            junk.append(a)
        del junk, a
        qtbot.waitUntil(lambda: bool(threads), timeout=5000)
    finally:
        gc.callbacks.pop()
    assert all(t is threading.main_thread() for t in threads)
