"""The main window: viewer in the middle, series and tags on the left, the
model's opinion on the right, the history below.

State lives here and nowhere else: the open series, the slice on screen, the
display window (preset or dragged), and the caches of predictions (by pixel
hash), refusals and heatmaps.  Work goes to ``workers``; results come back as
signals and are shown only if they concern what is on screen.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from PySide6.QtCore import QSettings, Qt, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ctviewer.imaging import PRESETS, Series, Slice
from ctviewer.imaging.tags import annotations

from .history_view import HistoryPanel
from .menus import build_menus
from .opening import OpeningMixin
from .panels import PredictionPanel, SeriesPanel, StudyPanel, TagPanel
from .viewer import SliceView
from .workers import EXPLAIN, PREDICT, InferenceThread, ModelTask, collect_on_the_gui_thread

log = logging.getLogger("ctviewer.gui")  # events and counts only: see ctviewer.logs
HEATMAP_CACHE = 16
RASTER_WINDOW = (127.5, 255.0)  # PNG/JPEG grey levels shown as stored


class MainWindow(OpeningMixin, QMainWindow):
    predictionShown = Signal(str, float)  # label, p_covid of the slice on screen
    heatmapShown = Signal()
    modelReady = Signal()
    modelFailed = Signal(str)
    opened = Signal(int, int)  # series, refused files
    sliceShown = Signal(int, int)  # series index, slice index
    studyUpdated = Signal(int)  # slices of the study on screen still being scored (0: the verdict is final)

    def __init__(self, history=None, model_dir: str | None = None, load_model: bool = True):
        super().__init__()
        collect_on_the_gui_thread()
        self.setWindowTitle("CT Viewer")
        self.setAcceptDrops(True)
        self.settings = QSettings()
        self.history = history
        self.classifier = None
        self.model_error = ""
        self.series: list[Series] = []
        self.hashes: dict[Slice, str] = {}
        self.current = (-1, -1)
        self.predictions: dict[str, tuple[float, str]] = {}  # by pixel hash: p(COVID), label (shown when judged)
        self.reasons: list[list[str]] = []  # per series, per slice: the gate's reason, "" = judged
        self.fractions: dict = {}  # Slice -> lung fraction
        self.refusals: dict[str, str] = {}
        self.study_verdict = None  # the open study's verdict (a Verdict) once one was computed
        self.heatmaps: OrderedDict[str, object] = OrderedDict()
        self.heatmap_errors: dict[str, str] = {}
        self.preset = self.settings.value("view/preset", "lung")
        self.custom: dict[bool, tuple[float, float] | None] = {True: None, False: None}
        self._open_token = 0
        self._select_after_open: tuple[str, int | None] | None = None
        self.last_refused: list = []
        self._tasks: set = set()  # running QRunnables: their signal objects must outlive run()

        self._build_central()
        self._build_docks()
        build_menus(self)
        self._build_status()
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)

        self.worker = InferenceThread(self)
        self.worker.history = history
        self.worker.predicted.connect(self._on_predicted)
        self.worker.gated.connect(self._on_gated)
        self._study_timer = QTimer(self)
        self._study_timer.setSingleShot(True)
        self._study_timer.setInterval(150)
        self._study_timer.timeout.connect(self._update_study)
        self.worker.refused.connect(self._on_refused)
        self.worker.explained.connect(self._on_explained)
        self.worker.explain_failed.connect(self._on_explain_failed)
        self.worker.history_failed.connect(lambda msg: self.statusBar().showMessage(f"History not saved: {msg}", 10000))
        self.worker.start()
        self.pool = QThreadPool.globalInstance()
        if load_model:
            self.load_model(model_dir)

    # --- construction ------------------------------------------------------
    def _build_central(self) -> None:
        self.viewer = SliceView()
        self.viewer.scrolled.connect(self.step)
        self.viewer.hovered.connect(lambda text: self.hover_label.setText(text))
        self.viewer.windowChanged.connect(self._on_window_dragged)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slider.valueChanged.connect(lambda v: self.show_slice(self.current[0], v))
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.viewer, 1)
        lay.addWidget(self.slider)
        self.setCentralWidget(central)

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.replace(" ", "_"))
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        self.series_panel = SeriesPanel()
        self.series_panel.seriesSelected.connect(lambda i: i != self.current[0] and self.show_slice(i, self.lung_slice(i)))
        self.tag_panel = TagPanel()
        self.prediction_panel = PredictionPanel()
        self.prediction_panel.aboutRequested.connect(self.show_model_card)
        self.prediction_panel.heatmapToggled.connect(self.set_heatmap)
        self.prediction_panel.opacityChanged.connect(self._on_opacity)
        opacity = float(self.settings.value("view/heatmap_opacity", 0.5))
        self.prediction_panel.opacity.setValue(int(round(opacity * 100)))
        self.history_panel = HistoryPanel(self.history)
        self.history_panel.reopenRequested.connect(self.reopen)
        left = Qt.DockWidgetArea.LeftDockWidgetArea
        self.series_dock = self._dock("Series", self.series_panel, left)
        self.tags_dock = self._dock("DICOM tags", self.tag_panel, left)
        self.tabifyDockWidget(self.series_dock, self.tags_dock)
        self.series_dock.raise_()
        self._tags_shown = False  # a dock tabbed behind another is not "hidden" for Qt: track the tab
        self.tags_dock.visibilityChanged.connect(self._on_tags_visibility)
        self.prediction_dock = self._dock("Model", self.prediction_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.study_panel = StudyPanel()
        self.study_panel.sliceClicked.connect(lambda i: self.show_slice(self.current[0], i))
        self.study_dock = self._dock("Study", self.study_panel, left)  # below the series list
        self.history_dock = self._dock("History", self.history_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.resizeDocks([self.history_dock], [170], Qt.Orientation.Vertical)
        self.resizeDocks([self.series_dock, self.prediction_dock], [230, 260], Qt.Orientation.Horizontal)
        self.resizeDocks([self.series_dock, self.study_dock], [160, 300], Qt.Orientation.Vertical)

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.model_label = QLabel("Loading the model…")
        self.slice_label = QLabel("")
        self.hover_label = QLabel("")
        sb.addWidget(self.slice_label, 1)
        sb.addPermanentWidget(self.hover_label)
        sb.addPermanentWidget(self.model_label)

    # --- the model ---------------------------------------------------------
    def load_model(self, folder: str | None = None) -> None:
        self.model_label.setText("Loading the model…")
        task = ModelTask(folder)
        task.signals.loaded.connect(self._on_model_loaded)
        task.signals.failed.connect(self._on_model_failed)
        self._start(task)

    def _start(self, task) -> None:
        """Run a QRunnable on the pool, keeping it (and its signals) alive until it reports."""
        self._tasks.add(task)
        for name in ("finished", "loaded", "failed"):
            sig = getattr(task.signals, name, None)
            if sig is not None:
                sig.connect(lambda *_a, t=task: self._tasks.discard(t))
        task.setAutoDelete(False)
        self.pool.start(task)

    def _on_model_loaded(self, clf, seconds: float) -> None:
        self.classifier = clf
        log.info("model %s ready in %.1f s", clf.card.title, seconds)
        self.model_label.setText(f"Model {clf.card.title} ready ({seconds:.1f} s)")
        self.prediction_panel.set_model(clf.card.title, clf.card.threshold, transfer=clf.card.transfer_note())
        self.worker.set_classifier(clf)
        self.modelReady.emit()
        self._request_current()

    def _on_model_failed(self, message: str) -> None:
        self.model_error = message
        log.error("model unavailable: %s", message)
        self.model_label.setText("Model unavailable")
        self.prediction_panel.set_model(None, error=message)
        self.prediction_panel.clear("No predictions: the model could not be loaded.")
        self.statusBar().showMessage(f"Model unavailable: {message}")
        self.modelFailed.emit(message)

    def show_model_card(self) -> None:
        if self.classifier is None:
            QMessageBox.information(self, "CT Viewer", self.model_error or "The model is still loading.")
            return
        from .model_card import ModelCardDialog

        ModelCardDialog(self.classifier.card, self.classifier.folder, self).exec()

    def open_batch_review(self, paths=None):
        """The batch review window (one per main window), sharing the model and the history."""
        from .batch_view import BatchWindow

        if getattr(self, "batch_window", None) is None:
            self.batch_window = BatchWindow(self.classifier, self.history, parent=self)
            if self.classifier is None:  # still loading: hand it over when ready
                self.modelReady.connect(lambda: self.batch_window.set_classifier(self.classifier))
                self.modelFailed.connect(self.batch_window.set_model_error)
                if self.model_error:
                    self.batch_window.set_model_error(self.model_error)
        self.batch_window.show()
        self.batch_window.raise_()
        self.batch_window.activateWindow()
        if paths:
            self.batch_window.scan([str(p) for p in paths])
        return self.batch_window

    def open_pacs(self):
        """File → Open from PACS…: the retrieved study opens here or in batch review."""
        from .pacs_dialog import PacsDialog

        if getattr(self, "pacs_dialog", None) is None:
            self.pacs_dialog = PacsDialog(self)
            self.pacs_dialog.studyReady.connect(
                lambda folder, where: self.open_batch_review([folder]) if where == "batch" else self.open_paths([folder]))
        self.pacs_dialog.show()
        self.pacs_dialog.raise_()
        return self.pacs_dialog

    # --- navigation and display --------------------------------------------
    def current_slice(self) -> Slice | None:
        si, i = self.current
        return self.series[si].slices[i] if 0 <= si < len(self.series) else None

    def step(self, delta: int) -> None:
        si, i = self.current
        if si < 0:
            return
        self.show_slice(si, max(0, min(len(self.series[si]) - 1, i + delta)))

    def window_for(self, s: Slice) -> tuple[float, float]:
        custom = self.custom[s.is_hu]
        if self.preset == "custom" and custom:
            return custom
        if not s.is_hu:
            return RASTER_WINDOW
        if self.preset in PRESETS:
            return PRESETS[self.preset]
        if s.window:
            return s.window
        return PRESETS["lung"]

    def show_slice(self, si: int, index: int) -> None:
        if not (0 <= si < len(self.series)):
            return
        ser = self.series[si]
        index = max(0, min(len(ser) - 1, index))
        new_series = si != self.current[0]
        if (si, index) == self.current:
            return
        self.current = (si, index)
        s = ser.slices[index]
        self.viewer.set_slice(s, *self.window_for(s))
        self.slider.blockSignals(True)
        self.slider.setRange(0, len(ser) - 1)
        self.slider.setValue(index)
        self.slider.setEnabled(len(ser) > 1)
        self.slider.blockSignals(False)
        self.series_panel.select(si)
        self._update_annotations()
        self._update_tags()
        self.slice_label.setText(f"{ser.label} — slice {index + 1}/{len(ser)} — {s.label}")
        self.prediction_panel.set_where(f"Slice {index + 1} of {len(ser)} ({s.label})")
        self._show_cached_prediction()
        self._study_timer.start()
        self._request_current(new_series)
        self.sliceShown.emit(si, index)

    def _update_annotations(self) -> None:
        s = self.current_slice()
        if s is None:
            return
        si, i = self.current
        self.viewer.set_annotations(annotations(s, i, len(self.series[si]), self.viewer.window(),
                                                hide_identifying=self.anon_action.isChecked()))

    def _on_tags_visibility(self, visible: bool) -> None:
        self._tags_shown = visible
        self._update_tags()

    def _update_tags(self) -> None:
        if self._tags_shown:
            s = self.current_slice()
            self.tag_panel.show_file(s.path if s else None, self.anon_action.isChecked())

    def set_preset(self, name: str) -> None:
        self.preset = name
        if name in self.preset_actions:
            self.preset_actions[name].setChecked(True)
            self.settings.setValue("view/preset", name)
        s = self.current_slice()
        if s is not None:
            self.viewer.set_window(*self.window_for(s))
            self._update_annotations()

    def _on_window_dragged(self, center: float, width: float) -> None:
        s = self.current_slice()
        if s is None:
            return
        self.custom[s.is_hu] = (center, width)
        self.preset = "custom"
        for act in self.preset_actions.values():
            act.setChecked(False)
        self._update_annotations()

    def set_hide_identifying(self, on: bool) -> None:
        self.anon_action.setChecked(on)
        self.settings.setValue("view/hide_identifying", bool(on))
        self._update_annotations()
        self._update_tags()

    def set_theme(self, name: str) -> None:
        from .theme import apply_theme

        self.settings.setValue("view/theme", name)
        apply_theme(name)

    # --- predictions -------------------------------------------------------
    def current_hash(self) -> str | None:
        s = self.current_slice()
        return self.hashes.get(s) if s is not None else None

    def reason_for(self, si: int, index: int) -> str:
        """Why the slice may not be judged ("" when it may): the gate over its series."""
        try:
            return self.reasons[si][index]
        except IndexError:
            return ""

    def current_reason(self) -> str:
        return self.reason_for(*self.current)

    def _request_current(self, whole_series: bool = True) -> None:
        """Classify the slice on screen first, then the rest of its series, then the other
        series of its study (the study panel's verdict needs them all)."""
        s, key = self.current_slice(), self.current_hash()
        if s is None or key is None or self.classifier is None:
            return
        if whole_series:
            si = self.current[0]
            for i in [si] + [i for i in self.study_series(si) if i != si]:
                for other in self.series[i].slices:
                    k = self.hashes[other]
                    if k not in self.predictions and k not in self.refusals:
                        self.worker.request(PREDICT, k, other)
        if key not in self.predictions and key not in self.refusals:
            self.worker.request(PREDICT, key, s, urgent=True)
        if (self.heatmap_action.isChecked() and not self.current_reason() and key not in self.heatmaps
                and key not in self.heatmap_errors):
            self.worker.request(EXPLAIN, key, s, urgent=True)

    def _show_cached_prediction(self) -> None:
        key = self.current_hash()
        threshold = self.classifier.card.threshold if self.classifier else 0.5
        reason = self.current_reason()
        if reason and key not in self.refusals:
            self.prediction_panel.clear(f"Not judged: {reason}. The model judges only axial CT slices that show "
                                        "lung: no label, no probability, no heatmap for this one.")
            self.viewer.set_heatmap(None)
        elif key in self.predictions:
            p, label = self.predictions[key]
            self.prediction_panel.show_prediction(label, p, threshold)
            self.predictionShown.emit(label, p)
        elif key in self.refusals:
            self.prediction_panel.clear(f"Not classified: {self.refusals[key]}")
        elif self.classifier is None:
            self.prediction_panel.clear(self.model_error and "No predictions: the model could not be loaded."
                                        or "Waiting for the model to load…")
        else:
            self.prediction_panel.clear("Classifying…")
        self._show_cached_heatmap()

    def _on_predicted(self, key: str, s: Slice, p: float, label: str, entry=None) -> None:
        self.predictions[key] = (p, label)
        if entry is not None:
            self.history_panel.add(entry)
        if key == self.current_hash():
            self._show_cached_prediction()
            if self.heatmap_action.isChecked():
                self._request_current(False)
        self._study_timer.start()

    def _on_gated(self, key: str, s: Slice, p: float, reason: str, entry=None) -> None:
        """A slice the gate stops on its own: its score is kept, and shown only when its
        series admits it (``verdict.series_gate``: between lung slices)."""
        label = self.classifier.label_for(p) if self.classifier is not None else ""
        self._on_predicted(key, s, p, label, entry)

    def _on_refused(self, key: str, s: Slice, reason: str) -> None:
        self.refusals[key] = reason
        if key == self.current_hash():
            self._show_cached_prediction()
        self._study_timer.start()

    # --- the study -----------------------------------------------------------
    def study_series(self, si: int) -> list[int]:
        """Indices of the open series that belong to series ``si``'s study (DICOM Study
        Instance UID; a series without one is a study of its own)."""
        uid = self.series[si].study_instance_uid
        if not uid:
            return [si]
        return [i for i, ser in enumerate(self.series) if ser.study_instance_uid == uid]

    def study_results(self, si: int) -> tuple[list, int]:
        """The study's slices as batch review's records (``SliceResult``) with the window's
        scores and the gate's reasons, and how many are not scored yet."""
        from ctviewer.studies.study_batch import slice_position
        from ctviewer.studies import SliceResult

        out, pending = [], 0
        for i in self.study_series(si):
            for j, s in enumerate(self.series[i].slices):
                key, reason = self.hashes.get(s), self.reason_for(i, j)
                common = dict(path=s.path, frame=s.frame, sop_instance_uid=s.sop_instance_uid or "",
                              series_uid=self.series[i].uid, position=slice_position(s),
                              instance_number=s.instance_number, lung_fraction=float(self.fractions.get(s, 0.0)))
                if key in self.refusals:
                    out.append(SliceResult(**common, error=self.refusals[key], has_lung=False))
                elif reason:
                    out.append(SliceResult(**common, reason=reason, has_lung=False))
                elif key in self.predictions:
                    p, label = self.predictions[key]
                    out.append(SliceResult(**common, p_covid=p, label=label))
                else:
                    pending += 1
        return out, pending

    def _update_study(self) -> None:
        si, index = self.current
        if not (0 <= si < len(self.series)):
            self.study_panel.clear("No study")
            return
        threshold = self.classifier.card.threshold if self.classifier else 0.5
        ser = self.series[si]
        values = []
        for j, s in enumerate(ser.slices):
            key = self.hashes.get(s)
            judged = not self.reason_for(si, j) and key not in self.refusals
            values.append((self.predictions[key][0] if judged and key in self.predictions else None, judged))
        self.study_panel.strip.set_values(values, index, threshold)
        if self.classifier is None:
            self.study_panel.title.setText("Study: waiting for the model")
            return
        from ctviewer.studies import StudyCalibration, study_verdict

        results, pending = self.study_results(si)
        verdict = study_verdict(results, threshold, StudyCalibration.from_card(self.classifier.card))
        self.study_panel.show_verdict(verdict, pending, len(self.study_series(si)))
        self.study_verdict = verdict
        self.studyUpdated.emit(pending)

    # --- heatmap -----------------------------------------------------------
    def set_heatmap(self, on: bool) -> None:
        for w in (self.heatmap_action, self.prediction_panel.heatmap):
            w.blockSignals(True)
            w.setChecked(on)
            w.blockSignals(False)
        self.viewer.set_heatmap_visible(on)
        if on:
            self._request_current(False)
        self._show_cached_heatmap()

    def _on_opacity(self, opacity: float) -> None:
        self.settings.setValue("view/heatmap_opacity", opacity)
        self.viewer.set_heatmap_opacity(opacity)

    def _show_cached_heatmap(self) -> None:
        key = self.current_hash()
        state = self.prediction_panel.heatmap_state
        if not self.heatmap_action.isChecked():
            state.setText("")
            return
        if self.current_reason():
            state.setText(f"No heatmap: not judged ({self.current_reason()}).")
            return
        if key in self.heatmaps:
            if not self.viewer.has_heatmap():
                self.viewer.set_heatmap(self.heatmaps[key])
            state.setText("Grad-CAM of the COVID score, last convolutional block.")
            self.heatmapShown.emit()
        elif key in self.heatmap_errors:
            state.setText(f"No heatmap: {self.heatmap_errors[key]}")
        else:
            state.setText("Computing the heatmap…")

    def _on_explained(self, key: str, cam) -> None:
        self.heatmaps[key] = cam
        self.heatmaps.move_to_end(key)
        while len(self.heatmaps) > HEATMAP_CACHE:
            self.heatmaps.popitem(last=False)
        if key == self.current_hash():
            self._show_cached_heatmap()

    def _on_explain_failed(self, key: str, reason: str) -> None:
        self.heatmap_errors[key] = reason
        if key == self.current_hash():
            self._show_cached_heatmap()

    # --- closing ---------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.sync()
        self.worker.stop()
        super().closeEvent(event)
