"""Starting the application: QApplication, settings, theme, icon, main window,
and the ``--screenshot`` mode that saves the real window once the prediction
is on screen (used for the README and for checking an installation).

QSettings is set up once here (organisation and application names, INI
format, so the same file layout on every platform); ``CTVIEWER_CONFIG_DIR``
moves it (tests use a temporary folder).  The history lives in
``ctviewer.history.default_history_path()`` (``CTVIEWER_DATA_DIR`` moves it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from PySide6.QtCore import QCoreApplication, QObject, QSettings, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from .theme import apply_theme

ORGANIZATION, APPLICATION = "CT Viewer", "ctviewer"
SCREENSHOT_TIMEOUT_S = 300


class CrashReporter(QObject):
    """Shows the crash dialog on the GUI thread, whichever thread crashed (a queued signal)."""

    crashed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.crashed.connect(self._show)
        self.shown = 0

    def report(self, log_path) -> None:
        self.crashed.emit(str(log_path) if log_path else "")

    def _show(self, log_path: str) -> None:
        self.shown += 1
        where = f"The details were written to\n{log_path}" if log_path else "The log could not be written."
        box = QMessageBox(QMessageBox.Icon.Critical, "CT Viewer: unexpected error",
                          "Something went wrong inside CT Viewer. Your files are not changed and the "
                          f"prediction history is safe.\n\n{where}\n\nPlease send that file with a report.")
        box.setModal(False)
        box.show()
        self._box = box


def configure_settings() -> None:
    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    folder = os.environ.get("CTVIEWER_CONFIG_DIR")
    if folder:
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, folder)


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="ctviewer", description="CT Viewer: chest CT slices with an AI second opinion.")
    ap.add_argument("paths", nargs="*", metavar="PATH", help="files, folders or DICOMDIRs to open")
    ap.add_argument("--model", metavar="DIR", help="model package folder (default: the bundled model)")
    ap.add_argument("--screenshot", metavar="OUT.png", help="open PATH, wait for the prediction, save the window, exit")
    ap.add_argument("--heatmap", action="store_true", help="with --screenshot: wait for and show the heatmap too")
    ap.add_argument("--size", default="1280x820", help="with --screenshot: window size WxH (default 1280x820)")
    a = ap.parse_args(argv)
    if a.heatmap and not a.screenshot:
        ap.error("--heatmap goes with --screenshot")
    if a.screenshot and not a.paths:
        ap.error("--screenshot needs a PATH to open")
    return a


def run(argv: list[str]) -> int:
    """The application's main loop; returns the exit status."""
    a = _parse(argv)
    t0 = time.perf_counter()
    configure_settings()
    app = QApplication.instance() or QApplication([sys.argv[0]])
    from ctviewer.paths import icon_path

    app.setWindowIcon(QIcon(str(icon_path())))
    import logging

    from ctviewer import __version__, logs

    reporter = CrashReporter(app)
    logs.install_crash_handler(reporter.report)
    log = logging.getLogger("ctviewer.gui")
    log.info("CT Viewer %s starting (%s, Qt platform %s)", __version__,
             "bundle" if getattr(sys, "frozen", False) else "source", app.platformName())
    settings = QSettings()
    apply_theme(str(settings.value("view/theme", "system")))

    from ctviewer.history import History, HistoryError

    from .main_window import MainWindow

    try:
        history = History()
    except HistoryError as exc:
        history = None
        QMessageBox.warning(None, "CT Viewer", f"The prediction history cannot be used: {exc}\n"
                            "Predictions will not be stored in this session.")
    win = MainWindow(history=history, model_dir=a.model)
    if a.screenshot:
        return _screenshot(app, win, a)
    win.show()
    win.statusBar().showMessage(f"Window ready in {time.perf_counter() - t0:.2f} s", 5000)
    log.info("window shown in %.2f s", time.perf_counter() - t0)
    if os.environ.get("CTVIEWER_STARTUP_PROBE"):
        _startup_probe(app, win)
    if a.paths:
        win.open_paths(a.paths)
    elif not settings.value("files/samples_offered", False, type=bool):
        settings.setValue("files/samples_offered", True)
        win.open_samples()  # first launch: show the product working on the bundled samples
    else:
        win.viewer.set_placeholder("Open files or a folder (Ctrl+O, Ctrl+Shift+O), drop them here,\n"
                                   "or File → Open the sample slices")
    code = app.exec()
    _wait_for_tasks()
    if history is not None:
        history.close()
    return code


def _wait_for_tasks() -> None:
    """Let background tasks (a model still loading) end before the interpreter shuts
    down: tearing Python down under a running TensorFlow import crashes the process."""
    from PySide6.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone()


def _startup_probe(app: QApplication, win) -> None:
    """For benchmarks/bench_startup.py: print wall-clock times (time.time()) when the window
    is on screen and when the model is ready, then quit."""

    def say(what: str) -> None:
        print(f"ctviewer-startup {what} {time.time():.3f}", flush=True)

    def window_exposed() -> None:
        handle = win.windowHandle()
        if handle is None or not handle.isExposed():
            QTimer.singleShot(5, window_exposed)
            return
        say("window")

    QTimer.singleShot(0, window_exposed)
    win.modelReady.connect(lambda: (say("model"), QTimer.singleShot(0, win.close)))
    win.modelFailed.connect(lambda msg: (say("model-failed"), QTimer.singleShot(0, win.close)))


def _screenshot(app: QApplication, win, a: argparse.Namespace) -> int:
    """Open ``a.paths``, wait for the prediction (and heatmap) of the slice on screen, or for the
    reason it is not judged, and for the study panel's final verdict; save the window, exit."""
    state = {"code": 1, "message": "timed out waiting for the prediction"}
    w, _, h = a.size.partition("x")
    win.resize(int(w), int(h))
    win.show()

    def finish(code: int, message: str = "") -> None:
        state.update(code=code, message=message)
        QTimer.singleShot(0, lambda: app.exit(code))  # also correct before the loop runs

    study = {"pending": None}

    def capture() -> None:
        if study["pending"] != 0 or state.get("saving"):
            return  # the study panel is not final yet
        reason = win.current_reason()
        if not reason:
            if a.heatmap and not win.viewer.has_heatmap():
                return
            if win.prediction_panel.prediction_text() in ("", "—"):
                return
        else:
            print(f"ctviewer --screenshot: the slice on screen is not judged: {reason}", file=sys.stderr)
        state["saving"] = True
        QTimer.singleShot(200, save)

    def on_study(pending: int) -> None:
        study["pending"] = pending
        capture()

    def save() -> None:
        app.processEvents()
        ok = win.grab().save(a.screenshot)
        finish(0 if ok else 1, "" if ok else f"could not write {a.screenshot}")

    def opened(n_series: int, _n_refused: int) -> None:
        if n_series == 0:
            finish(1, "nothing that can be shown was found in " + ", ".join(a.paths))
        elif a.heatmap:
            win.set_heatmap(True)

    def refused() -> None:
        key = win.current_hash()
        if key in win.refusals:
            finish(1, f"the slice was not classified: {win.refusals[key]}")
        elif key in win.heatmap_errors:
            finish(1, f"no heatmap: {win.heatmap_errors[key]}")

    win.predictionShown.connect(lambda *_: capture())
    win.heatmapShown.connect(capture)
    win.studyUpdated.connect(on_study)
    win.opened.connect(opened)
    win.modelFailed.connect(lambda msg: finish(1, f"cannot use the model: {msg}"))
    win.worker.refused.connect(lambda *_: QTimer.singleShot(0, refused))
    win.worker.explain_failed.connect(lambda *_: QTimer.singleShot(0, refused))
    QTimer.singleShot(SCREENSHOT_TIMEOUT_S * 1000, lambda: finish(1, state["message"]))
    QTimer.singleShot(0, lambda: win.open_paths(a.paths))
    app.exec()
    win.close()
    _wait_for_tasks()
    if state["code"] != 0:
        print(f"ctviewer --screenshot: {state['message']}", file=sys.stderr)
    else:
        print(f"saved {a.screenshot}", file=sys.stderr)
    return state["code"]
