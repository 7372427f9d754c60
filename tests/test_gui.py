"""The desktop application, driven through its real main window with pytest-qt.

Everything runs offscreen (``QT_QPA_PLATFORM=offscreen``): settings and the
prediction history live in the test's temporary folder, the model is a tiny
random-weights package (the miniature ResNet trunk, 32 px input) except in one ``slow`` test that
uses the bundled model.  No sleeps: every wait is on a signal or a condition,
with generous timeouts, and nothing asserts on timing.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QDate, QPoint, QPointF, QSettings, QSize, Qt, QThreadPool  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from ctviewer.gui import history_view  # noqa: E402
from ctviewer.gui.main_window import RASTER_WINDOW, MainWindow  # noqa: E402
from ctviewer.history import CSV_COLUMNS, History  # noqa: E402
from ctviewer.imaging import PRESETS  # noqa: E402
from tests.gui_helpers import (  # noqa: E402
    isolate_settings,
    PATIENT_NAME,
    double_click,
    drop_files,
    send_mouse,
    send_wheel,
    write_ct_series,
)
from tests.model_fixtures import make_model_package  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "resources" / "samples"
PNG = SAMPLES / "non-covid-90.png"
COVID_PNG = SAMPLES / "covid-65.png"
DCM = SAMPLES / "lung-pet-ct-dx-A0001-philips-1-20.dcm"  # PatientName Lung_Dx-A0001, window (-600, 1600)
DCM_PATIENT = "Lung_Dx-A0001"
WAIT_MS = 60_000


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_model_package(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True)
def config_dir(qapp, tmp_path, monkeypatch) -> Path:
    """QSettings and the history in this test's own folders (QSettings.setPath is process-wide)."""
    config = isolate_settings(tmp_path, monkeypatch)
    assert Path(QSettings().fileName()).resolve().is_relative_to(config.resolve())
    return config


class Windows:
    """Makes main windows; the fixture closes each (stopping its worker thread) and its history."""

    def __init__(self, qtbot, tmp_path: Path, tiny_model: Path):
        self.qtbot, self.tmp_path, self.tiny_model = qtbot, tmp_path, tiny_model
        self.made: list[tuple[MainWindow, History | None]] = []

    def new(self, model_dir: str | None | bool = True, load_model: bool = True, show: bool = True,
            history: bool = True) -> MainWindow:
        hist = History(self.tmp_path / "data" / "history.sqlite3") if history else None
        folder = str(self.tiny_model) if model_dir is True else model_dir
        w = MainWindow(history=hist, model_dir=folder, load_model=load_model)
        self.qtbot.addWidget(w)
        self.made.append((w, hist))
        if show:
            w.show()  # no event processing here: signals from the model task are still queued
        return w

    def close_all(self) -> None:
        QThreadPool.globalInstance().waitForDone(WAIT_MS)  # model and open tasks finish before the window goes
        QApplication.processEvents()
        for w, hist in self.made:
            w.close()  # closeEvent stops the inference thread
            for box in w.findChildren(QMessageBox):  # refused-file messages are non-modal children
                box.close()
            if hist is not None:
                hist.close()
        QApplication.processEvents()


@pytest.fixture
def windows(qtbot, tmp_path, tiny_model):
    maker = Windows(qtbot, tmp_path, tiny_model)
    yield maker
    maker.close_all()


def tampered_copy(model: Path, dest: Path) -> Path:
    """A copy of a model package whose card names another SHA-256: loading must refuse it."""
    shutil.copytree(model, dest)
    (card_path,) = dest.glob("*card*.json")
    card = json.loads(card_path.read_text())
    card["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    return dest


def open_and_wait(qtbot, w: MainWindow, paths) -> tuple[int, int]:
    with qtbot.waitSignal(w.opened, timeout=WAIT_MS) as blocker:
        w.open_paths([str(p) for p in paths])
    return tuple(blocker.args)


def wait_prediction(qtbot, w: MainWindow) -> tuple[float, str]:
    qtbot.waitUntil(lambda: w.current_hash() in w.predictions, timeout=WAIT_MS)
    return w.predictions[w.current_hash()]


def annotation_lines(w: MainWindow) -> list[str]:
    return [line for lines in w.viewer._annotations.values() for line in lines]


def centre(widget) -> QPointF:
    """The widget's centre, on whole pixels (QTest's events take integer points)."""
    return QPointF(widget.width() // 2, widget.height() // 2)


def tag_value(w: MainWindow, tag: str) -> str:
    table = w.tag_panel.table
    for i in range(table.rowCount()):
        if table.item(i, 0).text() == tag:
            return table.item(i, 3).text()
    raise AssertionError(f"{tag} not in the tag browser")


def activate(qtbot, w: MainWindow) -> None:
    """Shortcuts (WindowShortcut context) need the window to be the active one."""
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=WAIT_MS)


# --- opening and predicting ---------------------------------------------------------------------


def test_open_samples_folder_predicts_and_records_history(qtbot, windows):
    w = windows.new()
    assert w.history.path.parent == Path(os.environ["CTVIEWER_DATA_DIR"])  # the temporary folder
    assert w.history_panel.model.rowCount() == 0
    with qtbot.waitSignal(w.predictionShown, timeout=WAIT_MS) as shown:
        with qtbot.waitSignal(w.opened, timeout=WAIT_MS) as opened:
            w.open_paths([str(SAMPLES)])
    # 4 PNGs (one folder series) and the 2 DICOM samples (a series each)
    assert opened.args == [3, 0]
    assert w.series_panel.count() == 3 and w.series_panel.currentRow() == 0
    assert [len(s) for s in w.series] == [4, 1, 1]
    # it opens on the slice with the most lung, not the first file (issue 13)
    fractions = [w.fractions[s] for s in w.series[0].slices]
    assert w.current == (0, int(np.argmax(fractions)))
    shown_slice = w.series[0].slices[w.current[1]]
    assert w.viewer.slice() is shown_slice
    assert f"slice {w.current[1] + 1}/4" in w.slice_label.text()
    assert f"Slice {w.current[1] + 1} of 4" in w.prediction_panel.where.text()  # which slice the label is for

    label, p = shown.args
    assert label in ("COVID", "non-COVID") and 0.0 <= p <= 1.0
    assert w.prediction_panel.prediction_text() == label
    assert w.prediction_panel.bar.value() == int(round(p * 1000))
    assert w.predictions[w.current_hash()] == (pytest.approx(p), label)

    # the slice on screen first, then the rest of its series: one history row per slice
    n = len(w.series[0])
    qtbot.waitUntil(lambda: w.history_panel.model.rowCount() == n, timeout=WAIT_MS)
    entries = w.history.entries()
    assert len(entries) == n
    assert sorted(e.path for e in entries) == sorted(s.path for s in w.series[0].slices)
    for e in entries:
        assert w.predictions[e.pixel_sha256] == (pytest.approx(e.p_covid, abs=1e-12), e.label)
        assert e.model == w.classifier.card.title and e.frame is None
    assert {e.id for e in w.history_panel.visible_entries()} == {e.id for e in entries}
    assert w.history_panel.count.text() == f"{n} of {n} predictions"
    # a second History on the same file (another process, say) sees the same records
    with History(w.history.path) as again:
        assert [e.id for e in again.entries()] == [e.id for e in entries]


def test_dicom_series_sorted_and_scrolled(qtbot, windows, tmp_path):
    zs = write_ct_series(tmp_path / "ct", n=12)
    w = windows.new(load_model=False)
    assert open_and_wait(qtbot, w, [tmp_path / "ct"]) == (1, 0)
    (ser,) = w.series
    assert len(ser) == 12
    # by position, head first (as radiologists' viewers), not by file name or number
    assert [s.position[2] for s in ser.slices] == sorted(zs, reverse=True)
    assert [s.instance_number for s in ser.slices] != sorted(s.instance_number for s in ser.slices)
    assert w.current == (0, w.lung_slice(0))  # opens on a slice through the lungs
    w.show_slice(0, 0)
    assert (w.slider.minimum(), w.slider.maximum(), w.slider.value()) == (0, 11, 0) and w.slider.isEnabled()

    def at(i: int) -> None:
        assert w.current == (0, i)
        assert w.viewer.slice() is ser.slices[i]
        assert w.slider.value() == i
        assert f"Slice {i + 1}/12" in annotation_lines(w)

    # the mouse wheel: towards the user is the next slice
    with qtbot.waitSignal(w.sliceShown, timeout=WAIT_MS) as shown:
        send_wheel(w.viewer, -120)
    assert shown.args == [0, 1]
    at(1)
    send_wheel(w.viewer, -120)
    at(2)
    send_wheel(w.viewer, 120)
    at(1)
    send_wheel(w.viewer, 120)
    send_wheel(w.viewer, 120)  # clamps at the first slice
    at(0)
    # Ctrl+wheel zooms and does not scroll
    scale = w.viewer.scale()
    send_wheel(w.viewer, 120, Qt.KeyboardModifier.ControlModifier)
    assert w.viewer.scale() == pytest.approx(scale * 1.25)
    at(0)
    w.viewer.fit()

    # keys (the window's shortcuts)
    activate(qtbot, w)
    for key, expected in ((Qt.Key.Key_Up, 0), (Qt.Key.Key_Down, 1), (Qt.Key.Key_PageDown, 11),
                          (Qt.Key.Key_PageDown, 11), (Qt.Key.Key_Down, 11), (Qt.Key.Key_Up, 10),
                          (Qt.Key.Key_PageUp, 0), (Qt.Key.Key_End, 11), (Qt.Key.Key_Home, 0),
                          (Qt.Key.Key_Right, 1), (Qt.Key.Key_Left, 0)):
        qtbot.keyClick(w, key)
        at(expected)
    qtbot.keyClick(w, Qt.Key.Key_End)
    send_wheel(w.viewer, -120)  # clamps at the last slice
    at(11)

    # the slider
    w.slider.setValue(5)
    at(5)
    w.slider.setValue(0)
    at(0)
    # and plain steps past both ends
    w.step(-3)
    at(0)
    w.step(100)
    at(11)


# --- display window -------------------------------------------------------------------------------


def test_presets_keys_and_right_drag_window(qtbot, windows, tmp_path):
    write_ct_series(tmp_path / "ct", n=3, window=(35.0, 420.0))
    w = windows.new(load_model=False)
    open_and_wait(qtbot, w, [tmp_path / "ct"])
    assert w.preset == "lung" and w.preset_actions["lung"].isChecked()
    assert w.viewer.window() == PRESETS["lung"]

    w.set_preset("mediastinum")
    assert w.viewer.window() == PRESETS["mediastinum"] and w.preset_actions["mediastinum"].isChecked()
    assert "W 350 L 50" in annotation_lines(w)

    activate(qtbot, w)
    for key, name, expected in ((Qt.Key.Key_3, "bone", PRESETS["bone"]), (Qt.Key.Key_4, "file", (35.0, 420.0)),
                                (Qt.Key.Key_1, "lung", PRESETS["lung"]), (Qt.Key.Key_2, "mediastinum",
                                                                            PRESETS["mediastinum"])):
        qtbot.keyClick(w, key)
        assert w.preset == name and w.preset_actions[name].isChecked()
        assert w.viewer.window() == expected
        assert QSettings().value("view/preset") == name
    assert [n for n, a in w.preset_actions.items() if a.isChecked()] == ["mediastinum"]

    # right drag: horizontal changes the width, vertical the level
    c0, w0 = w.viewer.window()
    k = max(0.25, w0 / 256.0)
    start = centre(w.viewer)
    with qtbot.waitSignal(w.viewer.windowChanged, timeout=WAIT_MS) as changed:
        qtbot.mousePress(w.viewer, Qt.MouseButton.RightButton, pos=start.toPoint())
        send_mouse(w.viewer, "move", start + QPointF(40, 20), buttons=Qt.MouseButton.RightButton)
        qtbot.mouseRelease(w.viewer, Qt.MouseButton.RightButton, pos=(start + QPointF(40, 20)).toPoint())
    centre_, width = w.viewer.window()
    assert (centre_, width) == (pytest.approx(c0 + 20 * k), pytest.approx(w0 + 40 * k))
    assert changed.args == [pytest.approx(centre_), pytest.approx(width)]
    assert w.preset == "custom"
    assert not any(a.isChecked() for a in w.preset_actions.values())
    assert f"W {width:.0f} L {centre_:.0f}" in annotation_lines(w)
    # the dragged window stays on the next slice
    w.step(1)
    assert w.viewer.window() == (pytest.approx(centre_), pytest.approx(width))
    # a left drag pans and leaves the window alone
    offset = QPointF(w.viewer._offset)
    send_mouse(w.viewer, "press", start, Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton)
    send_mouse(w.viewer, "move", start + QPointF(-15, 10), buttons=Qt.MouseButton.LeftButton)
    send_mouse(w.viewer, "release", start + QPointF(-15, 10), Qt.MouseButton.LeftButton)
    assert w.viewer._offset == offset + QPointF(-15, 10)
    assert w.viewer.window() == (pytest.approx(centre_), pytest.approx(width))
    # a preset key leaves the custom window
    qtbot.keyClick(w, Qt.Key.Key_2)
    assert w.preset == "mediastinum" and w.preset_actions["mediastinum"].isChecked()
    assert w.viewer.window() == PRESETS["mediastinum"]


def test_png_is_shown_as_stored_whatever_the_preset(qtbot, windows):
    w = windows.new(load_model=False)
    open_and_wait(qtbot, w, [PNG])
    for name in ("lung", "bone", "file"):
        w.set_preset(name)
        assert w.viewer.window() == RASTER_WINDOW


def test_hover_reports_grey_value_for_png_and_hu_for_dicom(qtbot, windows):
    w = windows.new(load_model=False)
    qtbot.waitExposed(w)
    for path, word in ((PNG, "value"), (DCM, "HU")):
        open_and_wait(qtbot, w, [path])
        pt = centre(w.viewer)
        x, y = w.viewer.image_point(pt)
        value = float(w.current_slice().pixels[y, x])
        with qtbot.waitSignal(w.viewer.hovered, timeout=WAIT_MS) as hovered:
            send_mouse(w.viewer, "move", pt)
        assert hovered.args == [f"x {x}  y {y}  {word} {value:.0f}"]
        assert w.hover_label.text() == hovered.args[0]
    # QTest's own mouse move reaches the viewer too
    with qtbot.waitSignal(w.viewer.hovered, timeout=WAIT_MS) as hovered:
        qtbot.mouseMove(w.viewer, (centre(w.viewer) + QPointF(3, 2)).toPoint())
    assert "HU " in hovered.args[0]


# --- refused files ----------------------------------------------------------------------------------


def _mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(PNG, folder / "good.png")
    (folder / "truncated.dcm").write_bytes(DCM.read_bytes()[:200])
    (folder / "garbage.dcm").write_bytes(b"this is not a DICOM file\n" * 40)
    return folder


def test_refused_files_are_listed_in_a_non_modal_message(qtbot, windows, tmp_path):
    folder = _mixed_folder(tmp_path)
    w = windows.new(load_model=False)
    qtbot.waitExposed(w)
    n_series, n_refused = open_and_wait(qtbot, w, [folder])
    assert (n_series, n_refused) == (1, 2)
    assert Path(w.current_slice().path).name == "good.png" and w.viewer.slice() is w.current_slice()
    refused = {Path(p).name: reason for p, reason in w.last_refused}
    assert set(refused) == {"truncated.dcm", "garbage.dcm"}
    assert all(isinstance(r, str) and r.strip() for r in refused.values())
    box = w.refused_box
    qtbot.waitUntil(box.isVisible, timeout=WAIT_MS)
    assert not box.isModal() and box.windowModality() == Qt.WindowModality.NonModal
    assert box.icon() == QMessageBox.Icon.Warning
    assert "2 file(s)" in box.text()
    for name, reason in refused.items():
        assert f"{name}: {reason}" in box.informativeText()
        assert str(folder / name) in box.detailedText()
    # the window keeps working beside the message
    assert w.isVisible() and w.viewer.slice() is not None
    w.set_preset("bone")
    assert w.viewer.window() == RASTER_WINDOW

    # a path that does not exist: reported at once, the slice on screen stays
    missing = tmp_path / "gone.dcm"
    shown = w.current_slice()
    assert open_and_wait(qtbot, w, [missing]) == (0, 1)
    assert w.last_refused == [(str(missing), "no such file or folder")]
    assert w.refused_box.isVisible() and w.refused_box is not box
    assert w.current_slice() is shown


def test_missing_and_unreadable_files_are_reported_together(qtbot, windows, tmp_path):
    folder = _mixed_folder(tmp_path)
    missing = tmp_path / "gone.dcm"
    w = windows.new(load_model=False)
    assert open_and_wait(qtbot, w, [folder, missing]) == (1, 3)
    assert {Path(p).name for p, _ in w.last_refused} == {"truncated.dcm", "garbage.dcm", "gone.dcm"}
    boxes = [b for b in w.findChildren(QMessageBox) if b.isVisible()]
    assert boxes == [w.refused_box]  # one message for one open request


# --- history --------------------------------------------------------------------------------------


def _history_row(w: MainWindow, name: str) -> int:
    entries = w.history_panel.visible_entries()
    rows = [r for r, e in enumerate(entries) if Path(e.path).name == name]
    assert len(rows) == 1, [e.path for e in entries]
    return rows[0]


def test_history_reopen_filter_export_and_clear(qtbot, windows, tmp_path, monkeypatch):
    import cv2

    from tests.synthetic import chest_png8

    w = windows.new()
    qtbot.waitExposed(w)
    open_and_wait(qtbot, w, [SAMPLES])
    qtbot.waitUntil(lambda: w.history_panel.model.rowCount() == 4, timeout=WAIT_MS)  # the 4 PNGs of series 1
    w.show_slice(1, 0)  # the first DICOM sample
    qtbot.waitUntil(lambda: w.history_panel.model.rowCount() == 5, timeout=WAIT_MS)
    doomed = tmp_path / "doomed.png"
    cv2.imwrite(str(doomed), chest_png8(seed=3))  # pixels no other file has: classified afresh
    open_and_wait(qtbot, w, [doomed])
    qtbot.waitUntil(lambda: w.history_panel.model.rowCount() == 6, timeout=WAIT_MS)
    entries = w.history.entries()
    assert len(entries) == 6 and w.history_panel.proxy.rowCount() == 6

    # double-click re-opens the slice
    view, proxy = w.history_panel.view, w.history_panel.proxy
    index = proxy.index(_history_row(w, "non-covid-785.png"), 1)
    view.scrollTo(index)
    with qtbot.waitSignal(w.opened, timeout=WAIT_MS) as opened:
        double_click(view.viewport(), QPointF(view.visualRect(index).center()))
    assert opened.args == [1, 0]
    assert Path(w.current_slice().path).name == "non-covid-785.png"
    # and a DICOM entry through the panel's slot
    index = proxy.index(_history_row(w, DCM.name), 0)
    with qtbot.waitSignal(w.opened, timeout=WAIT_MS):
        w.history_panel._reopen(index)
    assert Path(w.current_slice().path) == DCM and w.current_slice().is_hu
    # a file that is gone: a message, nothing opened
    doomed.unlink()
    told = []
    monkeypatch.setattr(history_view.QMessageBox, "information", staticmethod(lambda *a, **k: told.append(a)))
    w.history_panel._reopen(proxy.index(_history_row(w, "doomed.png"), 0))
    assert len(told) == 1 and "no longer exists" in told[0][2]
    assert Path(w.current_slice().path) == DCM

    # filters: label, text, dates
    panel = w.history_panel
    n_covid = sum(e.label == "COVID" for e in entries)
    panel.label.setCurrentIndex(1)  # COVID
    assert proxy.rowCount() == n_covid
    assert all(e.label == "COVID" for e in panel.visible_entries())
    panel.label.setCurrentIndex(2)  # non-COVID
    assert proxy.rowCount() == len(entries) - n_covid
    assert panel.count.text() == f"{len(entries) - n_covid} of 6 predictions"
    panel.label.setCurrentIndex(0)
    assert proxy.rowCount() == 6
    qtbot.keyClicks(panel.text, "covid-701")
    assert [Path(e.path).name for e in panel.visible_entries()] == ["covid-701.png"]
    panel.text.clear()
    panel.text.setText("LUNG-PET-CT")  # case-insensitive
    assert [Path(e.path).name for e in panel.visible_entries()] == [DCM.name]
    panel.text.setText("no such thing")
    assert proxy.rowCount() == 0
    panel.text.clear()
    today = QDate.currentDate()
    panel.date_on.setCurrentIndex(1)
    panel.date_from.setDate(today.addDays(-2))
    panel.date_to.setDate(today.addDays(2))
    assert proxy.rowCount() == 6
    panel.date_to.setDate(today.addDays(6))
    panel.date_from.setDate(today.addDays(5))
    assert proxy.rowCount() == 0
    panel.date_on.setCurrentIndex(0)
    assert proxy.rowCount() == 6

    # CSV export writes the visible rows
    panel.text.setText(str(SAMPLES))
    visible = panel.visible_entries()
    assert len(visible) == 5
    dest = tmp_path / "export.csv"
    assert panel.export_csv(str(dest)) == 5
    with open(dest, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[1] for r in rows[1:]] == [e.path for e in visible]
    assert [float(r[5]) for r in rows[1:]] == [pytest.approx(e.p_covid, abs=1e-4) for e in visible]
    panel.text.clear()
    assert panel.export_csv(str(dest)) == 6

    # clearing asks first
    answers = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(history_view.QMessageBox, "question", staticmethod(lambda *a, **k: answers[0]))
    assert panel.confirm_clear() is False
    assert len(w.history) == 6 and panel.model.rowCount() == 6
    answers[0] = QMessageBox.StandardButton.Yes
    assert panel.confirm_clear() is True
    assert len(w.history) == 0 and w.history.entries() == []
    assert panel.model.rowCount() == 0 and proxy.rowCount() == 0
    assert panel.count.text() == "0 of 0 predictions"


# --- heatmap ----------------------------------------------------------------------------------------


def test_heatmap_toggle_and_opacity(qtbot, windows):
    w = windows.new()
    open_and_wait(qtbot, w, [SAMPLES])
    wait_prediction(qtbot, w)
    assert not w.viewer.has_heatmap() and not w.viewer._show_overlay
    activate(qtbot, w)
    with qtbot.waitSignal(w.heatmapShown, timeout=WAIT_MS):
        qtbot.keyClick(w, Qt.Key.Key_H)
    assert w.heatmap_action.isChecked() and w.prediction_panel.heatmap.isChecked()
    assert w.viewer.has_heatmap() and w.viewer._show_overlay
    cam = w.viewer._cam
    assert cam.shape == w.current_slice().shape
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
    assert w.prediction_panel.heatmap_state.text().startswith("Grad-CAM")

    # another slice (another size) gets its own heatmap
    before = w.current_slice()
    other = next(j for j, s in enumerate(w.series[0].slices) if s.shape != before.shape)
    with qtbot.waitSignal(w.heatmapShown, timeout=WAIT_MS):
        w.show_slice(0, other)
    assert w.viewer.has_heatmap() and w.viewer._cam.shape == w.current_slice().shape != before.shape

    # off, from the action
    w.heatmap_action.trigger()
    assert not w.heatmap_action.isChecked() and not w.prediction_panel.heatmap.isChecked()
    assert not w.viewer._show_overlay
    assert w.prediction_panel.heatmap_state.text() == ""
    # on again, from the panel's check box: the cached map comes back at once
    with qtbot.waitSignal(w.heatmapShown, timeout=WAIT_MS):
        w.prediction_panel.heatmap.setChecked(True)
    assert w.heatmap_action.isChecked() and w.viewer._show_overlay

    w.prediction_panel.opacity.setValue(20)
    assert w.viewer._opacity == pytest.approx(0.2)
    assert float(QSettings().value("view/heatmap_opacity")) == pytest.approx(0.2)
    alpha = QImage(w.viewer._overlay).convertToFormat(QImage.Format.Format_RGBA8888)
    assert max(QImage.pixelColor(alpha, x, y).alpha() for x in range(0, alpha.width(), 7)
               for y in range(0, alpha.height(), 7)) <= round(0.2 * 255)
    qtbot.keyClick(w, Qt.Key.Key_H)
    assert not w.viewer._show_overlay and not w.heatmap_action.isChecked()


# --- settings ---------------------------------------------------------------------------------------


def test_settings_persist_across_windows(qtbot, windows, config_dir):
    w1 = windows.new(load_model=False)
    qtbot.waitExposed(w1)
    open_and_wait(qtbot, w1, [PNG])
    w1.set_preset("bone")
    w1.set_hide_identifying(True)
    w1.prediction_panel.opacity.setValue(35)
    w1.resize(760, 600)  # inside the offscreen screen (800x800), above the minimum height
    w1.move(30, 40)
    qtbot.waitUntil(lambda: w1.size() == QSize(760, 600) and (w1.x(), w1.y()) == (30, 40), timeout=WAIT_MS)
    w1.close()
    assert any(config_dir.rglob("*.ini")), "settings were not written in the test's folder"

    w2 = windows.new(load_model=False)
    qtbot.waitExposed(w2)
    assert w2.preset == "bone" and w2.preset_actions["bone"].isChecked()
    assert w2.anon_action.isChecked()
    assert w2.prediction_panel.opacity.value() == 35
    assert w2.size() == QSize(760, 600) and (w2.x(), w2.y()) == (30, 40)
    assert w2.recent_files() == [str(PNG)]
    assert [a.text() for a in w2.recent_menu.actions()] == [str(PNG)] and w2.recent_menu.isEnabled()
    # what was restored is applied
    open_and_wait(qtbot, w2, [DCM])
    assert w2.viewer.window() == PRESETS["bone"]
    assert not any(DCM_PATIENT in line for line in annotation_lines(w2))
    assert w2.recent_files() == [str(DCM), str(PNG)]
    # the recent menu re-opens a file
    with qtbot.waitSignal(w2.opened, timeout=WAIT_MS):
        w2.recent_menu.actions()[1].trigger()
    assert Path(w2.current_slice().path) == PNG


# --- DICOM text -----------------------------------------------------------------------------------


def test_hide_identifying_text(qtbot, windows):
    w = windows.new(load_model=False)
    open_and_wait(qtbot, w, [DCM])
    w.tags_dock.raise_()
    qtbot.waitUntil(lambda: w.tag_panel.table.rowCount() > 0, timeout=WAIT_MS)
    assert any(DCM_PATIENT in line for line in annotation_lines(w))
    assert tag_value(w, "(0010,0010)") == DCM_PATIENT
    assert DCM.name in annotation_lines(w)

    activate(qtbot, w)
    qtbot.keyClick(w, Qt.Key.Key_I)
    assert w.anon_action.isChecked()
    assert not any(DCM_PATIENT in line for line in annotation_lines(w))
    assert DCM.name not in annotation_lines(w)
    assert tag_value(w, "(0010,0010)") == "(hidden)"
    assert tag_value(w, "(0010,0020)") == "(hidden)"
    assert tag_value(w, "(0028,0010)") == "512"  # not identifying: still shown

    w.set_hide_identifying(False)
    assert any(DCM_PATIENT in line for line in annotation_lines(w))
    assert tag_value(w, "(0010,0010)") == DCM_PATIENT


def test_synthetic_series_annotations_hide_the_patient(qtbot, windows, tmp_path):
    write_ct_series(tmp_path / "ct", n=3)
    w = windows.new(load_model=False)
    open_and_wait(qtbot, w, [tmp_path / "ct"])
    assert "Synthetic, Patient" in annotation_lines(w)
    w.set_hide_identifying(True)
    assert not any("Synthetic, Patient" in line or PATIENT_NAME in line for line in annotation_lines(w))
    w.step(1)  # stays hidden on the next slice
    assert not any("Synthetic, Patient" in line for line in annotation_lines(w))
    assert "Slice 2/3" in annotation_lines(w)


def test_tag_browser_search(qtbot, windows):
    w = windows.new(load_model=False)
    open_and_wait(qtbot, w, [DCM])
    w.tags_dock.raise_()
    qtbot.waitUntil(lambda: w.tag_panel.table.rowCount() > 0, timeout=WAIT_MS)
    panel = w.tag_panel
    total = panel.visible_rows()
    assert total == panel.table.rowCount() > 20
    qtbot.keyClicks(panel.search, "Rows")
    visible = [i for i in range(panel.table.rowCount()) if not panel.table.isRowHidden(i)]
    assert 1 <= len(visible) < total and panel.visible_rows() == len(visible)
    assert "(0028,0010)" in [panel.table.item(i, 0).text() for i in visible]
    panel.search.clear()
    assert panel.visible_rows() == total
    # a PNG has no tags
    open_and_wait(qtbot, w, [PNG])
    assert panel.table.rowCount() == 0 and "no tags" in panel.message.text()


def test_tags_are_read_only_when_their_tab_is_selected(qtbot, windows):
    from PySide6.QtWidgets import QTabBar

    w = windows.new(load_model=False)
    qtbot.waitExposed(w)
    (tabs,) = [t for t in w.findChildren(QTabBar) if t.count() == 2 and t.tabText(1) == "DICOM tags"]
    assert tabs.currentIndex() == 0  # the Series tab is the one shown
    assert w.tags_dock.visibleRegion().isEmpty() and not w.series_dock.visibleRegion().isEmpty()
    open_and_wait(qtbot, w, [DCM])
    assert w.tag_panel.table.rowCount() == 0


# --- model failure -----------------------------------------------------------------------------


def test_model_failure_leaves_a_working_viewer(qtbot, windows, tiny_model, tmp_path, monkeypatch):
    bad = tampered_copy(tiny_model, tmp_path / "bad-model")

    w = windows.new(model_dir=str(bad))
    with qtbot.waitSignal(w.modelFailed, timeout=WAIT_MS) as failed:
        pass  # the model task reports through the event loop
    message = failed.args[0]
    assert "refusing to load" in message
    assert w.classifier is None and w.model_error == message
    assert w.model_label.text() == "Model unavailable"
    assert w.prediction_panel.model.text() == f"Model unavailable: {message}"
    assert not w.prediction_panel.about.isEnabled()

    assert open_and_wait(qtbot, w, [SAMPLES]) == (3, 0)
    assert w.viewer.slice() is w.current_slice() is not None
    assert w.prediction_panel.prediction_text() == "—"
    assert w.prediction_panel.detail.text() == "No predictions: the model could not be loaded."
    w.show_slice(0, 1)
    assert w.current == (0, 1) and w.prediction_panel.prediction_text() == "—"
    assert w.predictions == {} and len(w.history) == 0
    told = []
    monkeypatch.setattr(QMessageBox, "information", staticmethod(lambda *a, **k: told.append(a)))
    w.show_model_card()
    assert told and told[0][2] == message


# --- drag and drop --------------------------------------------------------------------------------


def test_drop_files_opens_them(qtbot, windows):
    w = windows.new(load_model=False)
    with qtbot.waitSignal(w.opened, timeout=WAIT_MS) as opened:
        assert drop_files(w, [PNG, DCM]) == (True, True)
    assert opened.args == [2, 0]
    assert sorted(Path(s.slices[0].path).name for s in w.series) == sorted([PNG.name, DCM.name])
    assert w.recent_files()[:2] == [str(DCM), str(PNG)]


def test_drag_without_files_is_ignored(qtbot, windows):
    from PySide6.QtCore import QMimeData
    from PySide6.QtGui import QDragEnterEvent

    w = windows.new(load_model=False)
    mime = QMimeData()
    mime.setText("just text")
    enter = QDragEnterEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    enter.ignore()
    QApplication.sendEvent(w, enter)
    assert not enter.isAccepted()


# --- the command line's --screenshot --------------------------------------------------------------


def _screenshot(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TF_CPP_MIN_LOG_LEVEL="2",
               CTVIEWER_CONFIG_DIR=str(tmp_path / "cli-config"), CTVIEWER_DATA_DIR=str(tmp_path / "cli-data"),
               CTVIEWER_LOG_DIR=str(tmp_path / "cli-log"))
    return subprocess.run([sys.executable, "-m", "ctviewer.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_screenshot_command_saves_the_window(tmp_path, tiny_model):
    out = tmp_path / "shot.png"
    r = _screenshot(tmp_path, "--screenshot", str(out), "--model", str(tiny_model), str(PNG))
    assert r.returncode == 0, r.stderr
    assert f"saved {out}" in r.stderr
    image = QImage(str(out))
    assert not image.isNull() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scale = float(os.environ.get("QT_SCALE_FACTOR", "1") or 1)  # high-DPI: device pixels
    assert image.size() == QSize(round(1280 * scale), round(820 * scale))  # the window's default --size
    with History(tmp_path / "cli-data" / "history.sqlite3") as hist:  # the temporary history, not the user's
        assert [Path(e.path).name for e in hist.entries()] == [PNG.name]


def test_screenshot_command_with_an_unusable_model_fails(tmp_path, tiny_model):
    bad = tampered_copy(tiny_model, tmp_path / "bad-model")
    r = _screenshot(tmp_path, "--screenshot", str(tmp_path / "shot.png"), "--model", str(bad), str(PNG))
    assert r.returncode == 1, r.stderr
    assert "ctviewer --screenshot: cannot use the model:" in r.stderr and "refusing to load" in r.stderr
    assert not (tmp_path / "shot.png").exists()


def test_screenshot_command_with_nothing_to_show_fails(tmp_path, tiny_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _screenshot(tmp_path, "--screenshot", str(tmp_path / "shot.png"), "--model", str(tiny_model), str(empty))
    assert "nothing that can be shown" in r.stderr
    assert r.returncode == 1, r.stderr
    assert not (tmp_path / "shot.png").exists()


def test_screenshot_command_with_a_missing_path_fails(tmp_path, tiny_model):
    r = _screenshot(tmp_path, "--screenshot", str(tmp_path / "shot.png"), "--model", str(tiny_model),
                    str(tmp_path / "missing.png"), timeout=30)
    assert r.returncode != 0
    assert "missing.png" in r.stderr
    assert not (tmp_path / "shot.png").exists()


# --- the bundled model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_bundled_model_calls_the_covid_sample_covid_and_explains_it(qtbot, windows):
    w = windows.new(model_dir=None)
    with qtbot.waitSignal(w.predictionShown, timeout=300_000) as shown:
        open_and_wait(qtbot, w, [COVID_PNG])
    label, p = shown.args
    assert label == "COVID" and p >= w.classifier.card.threshold
    assert w.prediction_panel.prediction_text() == "COVID"
    with qtbot.waitSignal(w.heatmapShown, timeout=300_000):
        w.set_heatmap(True)
    assert w.viewer.has_heatmap() and w.viewer._cam.shape == w.current_slice().shape
    assert w.viewer._show_overlay
    (entry,) = w.history.entries()
    assert entry.label == "COVID" and entry.path == str(COVID_PNG)
    # issue 21: the panel says how the model did at hospitals it never trained on (1.1.0: at chance)
    assert "At hospitals it never trained on: AUC 0.58 (ucsd), 0.48 (mosmed). At chance" in \
        w.prediction_panel.model.text()
    # ... and its study verdicts were right half of the time there: it labels no study
    qtbot.waitUntil(lambda: w.study_verdict is not None, timeout=WAIT_MS)
    assert w.study_verdict.label == "uncertain" and w.study_verdict.confidence == 0.5
    assert "uncertain, confidence 50%" in w.study_panel.title.text()
    assert "gives no study verdict" in w.study_panel.rule.text()


def test_study_panel_covers_every_series_of_the_study(qtbot, windows, SHARED_DATA):
    """Issue 13: the study panel's verdict (batch review's rule) covers all series of the open study:
    Lung-PET-CT-Dx A0002 is one scan reconstructed twice (two series of 16 slices).  The viewer
    scores the other series too, so the verdict becomes final; the strip shows the series on screen."""
    w = windows.new()
    qtbot.waitUntil(lambda: w.classifier is not None, timeout=WAIT_MS)
    finals = []
    w.studyUpdated.connect(lambda pending: pending == 0 and finals.append(w.study_verdict))
    open_and_wait(qtbot, w, [SHARED_DATA / "dicom" / "Lung-PET-CT-Dx" / "Lung_Dx-A0002"])
    assert len(w.series) == 2 and w.study_series(0) == [0, 1]
    qtbot.waitUntil(lambda: bool(finals), timeout=WAIT_MS)
    v = finals[-1]
    assert v.n_lung + v.n_excluded + v.n_refused == 32
    assert w.reason_for(*w.current) == ""  # it opened on a lung slice
    assert "in 2 series" in w.study_panel.counts.text()
    assert len(w.study_panel.strip.values) == 16
    # a click on the strip moves to that slice
    strip = w.study_panel.strip
    with qtbot.waitSignal(w.sliceShown, timeout=WAIT_MS):
        qtbot.mouseClick(strip, Qt.MouseButton.LeftButton, pos=QPoint(int(strip.width() * 0.5 / 16), 10))
    assert w.current[1] == 0


def test_runs_on_the_expected_qt_platform(qapp):
    """CI runs this suite a second time on a real X server (Xvfb, QT_QPA_PLATFORM=xcb) and says so in
    CTVIEWER_EXPECT_QT_PLATFORM: this fails if Qt quietly used another platform."""
    expected = os.environ.get("CTVIEWER_EXPECT_QT_PLATFORM")
    if not expected:
        pytest.skip("CTVIEWER_EXPECT_QT_PLATFORM is not set (the offscreen run)")
    assert qapp.platformName() == expected
    scale = os.environ.get("QT_SCALE_FACTOR")
    if scale:
        assert qapp.primaryScreen().devicePixelRatio() == pytest.approx(float(scale))
