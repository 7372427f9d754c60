"""Batch study review: the study tree, a batch worker, the streaming results table,
the slice on screen, the p(COVID)-along-position plot, the verdict and the reports.

``BatchWorker`` is a QThread that calls ``study_batch.classify_study`` for each
job with one shared ``BatchControl`` (pause, resume, cancel); it reports every
slice, the progress and each finished study through queued signals and never
touches a widget.  The window keeps ``SliceResult`` records only (no pixels):
selecting a row loads that one file on demand, and only the slice on screen is
held.  The plot is redrawn at most every ``PLOT_EVERY_MS`` while results stream.
"""

from __future__ import annotations

import os
from pathlib import Path
import time
from collections import deque

from PySide6.QtCore import QSortFilterProxyModel, Qt, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QMessageBox, QProgressBar, QPushButton, QSplitter,
    QTableView, QVBoxLayout, QWidget,
)

from ctviewer.imaging import PRESETS, ImagingError, load_slices
from ctviewer.studies import StudyResult

from .batch_parts import COLUMNS, PLOT_EVERY_MS, RATE_WINDOW_S, BatchWorker, ExportTask, PlotCanvas, ResultsModel
from .study_browser import StudyBrowser
from .viewer import SliceView
from .workers import collect_on_the_gui_thread

class BatchWindow(QWidget):
    """The batch review window (top level, owned by the main window)."""

    stateChanged = Signal(str)  # "running", "paused", "cancelled", "done"
    studyFinished = Signal(object)  # StudyResult
    sliceShown = Signal(str, object)  # path, frame
    exported = Signal(str, str, str)  # kind, path, error
    sent = Signal(str)  # "" when the SR is in the PACS (found again), else why not

    def __init__(self, classifier=None, history=None, parent=None):
        super().__init__(parent, Qt.WindowType.Window)
        collect_on_the_gui_thread()
        self.setWindowTitle("CT Viewer — batch review")
        self.classifier, self.history = classifier, history
        self.worker: BatchWorker | None = None
        self.state = "idle"
        self.jobs: list = []
        self.failures: list[str] = []
        self.streams: dict[int, list] = {}  # job -> SliceResults as they arrive
        self.results: dict[int, StudyResult] = {}
        self.shown_job = -1
        self.marker: float | None = None
        self._rate: deque = deque()
        self._plot_dirty = False
        self._tasks: set = set()
        self.browser = StudyBrowser()
        self.browser.scanned.connect(lambda _r: self._update_buttons())
        self.open_button = QPushButton("Open folder…")
        self.open_button.clicked.connect(self.open_folder_dialog)
        self.archive_button = QPushButton("Review archive…")
        self.archive_button.setToolTip("Classify every study of a folder tree into an output folder, resumable, "
                                       "on this computer or a Dask cluster")
        self.archive_button.clicked.connect(self.open_archive_dialog)
        self.archive_dialog = None
        self.buttons = {scope: QPushButton(text) for scope, text in
                        (("series", "Classify series"), ("study", "Classify study"), ("all", "Classify everything"))}
        for scope, b in self.buttons.items():
            b.clicked.connect(lambda _c=False, s=scope: self.classify(s))
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.rate_label = QLabel("")
        self.state_label = QLabel("Idle")
        self.model = ResultsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.table.fontMetrics().height() + 6)
        self.table.horizontalHeader().setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        fm = self.table.fontMetrics()
        for c, sample in enumerate(("Patient-0001 20", "999", "Position (mm)", "p(COVID)", "non-COVID",
                                    "no (excluded)")):
            self.table.setColumnWidth(c, fm.horizontalAdvance(sample) + 18)
        self.table.selectionModel().currentRowChanged.connect(lambda cur, _prev: self.show_row(cur.row()))
        self.viewer = SliceView()
        self.viewer.set_placeholder("Select a row to see its slice")
        self.plot = PlotCanvas()
        self.verdict_label = QLabel("No study classified yet.")
        self.verdict_label.setWordWrap(True)
        self.anonymize = QCheckBox("Anonymise")
        self.export_buttons = {kind: QPushButton(text) for kind, text in
                               (("pdf", "Export PDF…"), ("sr", "Export SR…"), ("csv", "Export CSV…"),
                                ("study", "Export anonymised study…"), ("send", "Send SR to PACS…"))}
        for kind, b in self.export_buttons.items():
            b.clicked.connect(lambda _c=False, k=kind: self.export(k))
        self._layout()
        self.timer = QTimer(self)
        self.timer.setInterval(PLOT_EVERY_MS)
        self.timer.timeout.connect(self._redraw_if_dirty)
        self.resize(1280, 820)
        self._update_buttons()
        if parent is not None:
            parent.installEventFilter(self)  # closing the main window closes (and stops) this one

    def open_archive_dialog(self):
        """The archive run's dialog (one per window; it keeps its run while hidden)."""
        from .archive_dialog import ArchiveDialog

        if self.archive_dialog is None:
            folder = getattr(self.classifier, "folder", None) if self.classifier is not None else None
            self.archive_dialog = ArchiveDialog(str(folder) if folder else None, self)
        self.archive_dialog.show()
        self.archive_dialog.raise_()
        return self.archive_dialog

    def _layout(self) -> None:
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.open_button)
        ll.addWidget(self.archive_button)
        ll.addWidget(self.browser, 1)
        for b in self.buttons.values():
            ll.addWidget(b)
        run = QHBoxLayout()
        for w in (self.progress, self.rate_label, self.state_label, self.pause_button, self.cancel_button):
            run.addWidget(w, 1 if w is self.progress else 0)
        exports = QHBoxLayout()
        exports.addWidget(self.verdict_label, 1)
        exports.addWidget(self.anonymize)
        for b in self.export_buttons.values():
            exports.addWidget(b)
        right_split = QSplitter(Qt.Orientation.Vertical)
        right_split.addWidget(self.viewer)
        right_split.addWidget(self.plot)
        right_split.setSizes([480, 260])
        middle = QSplitter(Qt.Orientation.Horizontal)
        middle.addWidget(self.table)
        middle.addWidget(right_split)
        middle.setSizes([540, 380])
        main = QWidget()
        ml = QVBoxLayout(main)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addLayout(run)
        ml.addWidget(middle, 1)
        ml.addLayout(exports)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(main)
        split.setSizes([360, 920])
        QVBoxLayout(self).addWidget(split)

    # --- model and scanning ------------------------------------------------
    def set_classifier(self, clf) -> None:
        self.classifier = clf
        self._update_buttons()

    def set_model_error(self, message: str) -> None:
        self.state_label.setText(f"Model unavailable: {message}")

    def scan(self, paths) -> None:
        self.browser.scan(paths)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder to review")
        if folder:
            self.scan([folder])

    def running(self) -> bool:
        return self.worker is not None

    def _update_buttons(self) -> None:
        idle = self.worker is None
        for b in self.buttons.values():
            b.setEnabled(idle and self.classifier is not None and bool(self.browser.patients))
        self.open_button.setEnabled(idle)
        self.pause_button.setEnabled(not idle)
        self.cancel_button.setEnabled(not idle)
        for b in self.export_buttons.values():
            b.setEnabled(idle and bool(self.results))

    # --- the batch ---------------------------------------------------------
    def classify(self, scope: str) -> bool:
        jobs = self.browser.jobs(scope)
        if not jobs or self.worker is not None or self.classifier is None:
            return False
        self.jobs, self.streams, self.results, self.shown_job, self.marker = jobs, {}, {}, 0, None
        self.model.clear()
        for i, (p, st, uids) in enumerate(jobs):
            self.model.study_names[i] = f"{p.key} {st.date or st.description or ''}".strip()
        self.table.setColumnHidden(0, len(jobs) == 1)  # the study column only when there are several
        self.viewer.set_slice(None, *PRESETS["lung"])
        self.verdict_label.setText("Classifying…")
        self.worker = BatchWorker(jobs, self.classifier, self.history, self)
        self.worker.sliceDone.connect(self._on_slice)
        self.worker.progressed.connect(self._on_progress)
        self.worker.studyDone.connect(self._on_study)
        self.failures: list[str] = []
        self.worker.failed.connect(lambda i, msg: self.failures.append(f"{self.model.study_names[i]}: {msg}"))
        self.worker.historyFailed.connect(lambda msg: self.state_label.setToolTip(f"History not saved: {msg}"))
        self.worker.finished.connect(self._on_finished)
        self.progress.setRange(0, max(1, self.worker.total))
        self.progress.setValue(0)
        self._rate = deque([(time.perf_counter(), 0)])
        self.pause_button.setText("Pause")
        self._set_state("running")
        self._update_buttons()
        self.timer.start()
        self.worker.start()
        return True

    def toggle_pause(self) -> None:
        if self.worker is None:
            return
        if self.worker.control.paused:
            self.resume()
        else:
            self.pause()

    def pause(self) -> None:
        if self.worker is not None and not self.worker.control.cancelled:
            self.worker.control.pause()
            self.pause_button.setText("Resume")
            self._set_state("paused")

    def resume(self) -> None:
        if self.worker is not None and not self.worker.control.cancelled:
            self.worker.control.resume()
            self.pause_button.setText("Pause")
            self._rate = deque([(time.perf_counter(), self.progress.value())])
            self._set_state("running")

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.control.cancel()
            self.state_label.setText("Cancelling…")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.state_label.setText({"running": "Running", "paused": "Paused", "cancelled": "Cancelled",
                                  "done": "Done", "idle": "Idle"}.get(state, state))
        self.stateChanged.emit(state)

    def _on_slice(self, job: int, r) -> None:
        stream = self.streams.setdefault(job, [])
        stream.append(r)
        self.model.append(job, len(stream), r)
        if job != self.shown_job and job not in self.results:
            self.shown_job = job  # follow the study being classified
        self._plot_dirty = self._plot_dirty or job == self.shown_job

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(min(done, total))
        now = time.perf_counter()
        self._rate.append((now, done))
        while len(self._rate) > 2 and now - self._rate[0][0] > RATE_WINDOW_S:
            self._rate.popleft()
        (t0, d0), (t1, d1) = self._rate[0], self._rate[-1]
        rate = (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else 0.0
        eta = f", ETA {int((total - done) / rate) // 60}:{int((total - done) / rate) % 60:02d}" if rate else ""
        self.rate_label.setText(f"{done}/{total} slices — {rate:.1f} slices/s{eta}")

    def _on_study(self, job: int, result: StudyResult) -> None:
        self.results[job] = result
        self.streams[job] = list(result.slices)
        self.model.replace_job(job, result.slices)
        v = result.verdict
        _p, study, uids = self.jobs[job]
        if v is not None:
            text = f"{v.label} ({v.confidence:.0%})" + (" — cancelled" if result.cancelled else "")
            for kind, uid in ([("study", study.uid)] if uids is None else [("series", u) for u in uids]):
                self.browser.set_verdict(kind, uid, text, v.rule)
        if job == self.shown_job:
            self._plot_dirty = True
            self._show_verdict()
        self.studyFinished.emit(result)

    def _on_finished(self) -> None:
        worker, self.worker = self.worker, None
        self.timer.stop()
        cancelled = worker.control.cancelled
        if not cancelled and worker.total:
            self.progress.setValue(self.progress.maximum())
        self._set_state("cancelled" if cancelled else "done")
        if self.failures:
            self.state_label.setText(f"{self.state_label.text()}, {len(self.failures)} failed")
            self.state_label.setToolTip("\n".join(self.failures))
        self._redraw()
        self._show_verdict()
        self._update_buttons()
        worker.deleteLater()

    # --- what is shown -----------------------------------------------------
    def shown_result(self) -> StudyResult | None:
        return self.results.get(self.shown_job)

    def _show_verdict(self) -> None:
        result = self.shown_result()
        if result is None or result.verdict is None:
            if self.state in ("done", "cancelled") and self.shown_job not in self.results:
                self.verdict_label.setText("No verdict: the study was not finished.")
            return
        v = result.verdict
        p, st, _u = self.jobs[self.shown_job]
        head = f"<b>{p.key} {st.date}: {v.label}</b>, confidence {v.confidence:.0%}"
        counts = (f"{v.n_positive}/{v.n_lung} lung slices COVID, {v.n_excluded} not judged (no lung, not axial), "
                  f"{v.n_refused} refused" + (" (cancelled: partial)" if result.cancelled else ""))
        self.verdict_label.setText(f"{head} — {counts}<br><small>{v.rule}</small>")

    def _redraw_if_dirty(self) -> None:
        if self._plot_dirty:
            self._redraw()

    def _redraw(self) -> None:
        self._plot_dirty = False
        threshold = self.classifier.card.threshold if self.classifier is not None else 0.5
        title = self.model.study_names.get(self.shown_job, "")
        self.plot.plot(self.streams.get(self.shown_job, []), threshold, title, self.marker)

    def show_row(self, proxy_row: int) -> None:
        if proxy_row < 0:
            return
        job, number, r = self.model.rows[self.proxy.mapToSource(self.proxy.index(proxy_row, 0)).row()]
        try:
            slices = load_slices(r.path)
            s = slices[r.frame or 0] if r.frame is None or r.frame < len(slices) else None
        except ImagingError as exc:
            s, error = None, exc.reason
        else:
            error = "" if s is not None else "frame not found"
        if s is None:
            self.viewer.set_slice(None, *PRESETS["lung"])
            self.viewer.set_placeholder(f"Cannot show {os.path.basename(r.path)}: {error}")
            return
        self.viewer.set_slice(s, *(PRESETS["lung"] if s.is_hu else (127.5, 255.0)))
        p = (f"not judged: {r.reason}" if r.reason else "not classified" if r.p_covid is None
             else f"p(COVID) {r.p_covid:.3f} {r.label}")
        self.viewer.set_annotations({"top-left": [f"{self.model.study_names.get(job, '')} #{number}", p],
                                     "bottom-left": [s.label]})
        self.marker = r.position
        if job != self.shown_job:
            self.shown_job = job
            self._show_verdict()
        self._redraw()
        self.sliceShown.emit(r.path, r.frame)

    # --- reports -----------------------------------------------------------
    def send_sr(self, node: dict | None = None) -> bool:
        """Write the shown study's SR (in the images' study) and store it on a PACS node kept in
        the settings (File → Open from PACS…), on a worker; ``sent`` says how it went."""
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QInputDialog

        from .pacs_dialog import PacsTask, load_nodes, send_paths

        result = self.shown_result()
        if result is None:
            return False
        if node is None:
            nodes = load_nodes(QSettings())
            if not nodes:
                QMessageBox.information(self, "CT Viewer", "No PACS node yet: add one in File → Open from PACS….")
                return False
            names = [n["name"] for n in nodes]
            name, ok = (names[0], True) if len(names) == 1 else QInputDialog.getItem(
                self, "Send SR to PACS", "Node", names, 0, False)
            if not ok:
                return False
            node = nodes[names.index(name)]
        import tempfile

        from ctviewer.reports.dicom_sr import write_sr

        folder = Path(tempfile.mkdtemp(prefix="ctviewer-sr-"))  # 0700
        path = str(folder / "ctviewer-sr.dcm")
        write_sr(result, path)
        task = PacsTask(lambda t: send_paths(node, [path]))
        task.signals.done.connect(lambda _uids, t=task: self._on_sent("", t))
        task.signals.failed.connect(lambda msg, t=task: self._on_sent(msg, t))
        self._tasks.add(task)
        task.setAutoDelete(False)
        self.state_label.setText(f"Sending the SR to {node['name']}…")
        QThreadPool.globalInstance().start(task)
        return True

    def _on_sent(self, error: str, task) -> None:
        self._tasks.discard(task)
        self.state_label.setText("SR sent and found in the PACS" if not error else "SR not sent (retry)")
        if error:
            self.state_label.setToolTip(error)
        self.sent.emit(error)

    def export(self, kind: str, dest: str | None = None) -> bool:
        if kind == "send":
            return self.send_sr()
        result = self.shown_result()
        results = [self.results[k] for k in sorted(self.results)]
        if not results or (kind != "csv" and result is None):
            return False
        if not dest and kind == "study":
            dest = QFileDialog.getExistingDirectory(self, "Export the anonymised study (images and AI result) to")
            if not dest:
                return False
        if not dest:
            names = {"pdf": ("ctviewer-report.pdf", "PDF (*.pdf)"), "sr": ("ctviewer-sr.dcm", "DICOM (*.dcm)"),
                     "csv": ("ctviewer-slices.csv", "CSV (*.csv)")}
            dest, _ = QFileDialog.getSaveFileName(self, "Export", *names[kind])
            if not dest:
                return False
        task = ExportTask(kind, dest, results if kind == "csv" else [result], self.classifier,
                          self.anonymize.isChecked())
        task.signals.finished.connect(lambda k, path, err, t=task: self._on_exported(k, path, err, t))
        self._tasks.add(task)
        task.setAutoDelete(False)
        self.state_label.setText(f"Writing {os.path.basename(dest)}…")
        QThreadPool.globalInstance().start(task)
        return True

    def _on_exported(self, kind: str, path: str, error: str, task) -> None:
        self._tasks.discard(task)
        if error:
            self.state_label.setText(f"{kind.upper()} not written")
            if self.isVisible():
                box = QMessageBox(QMessageBox.Icon.Warning, "CT Viewer", f"Could not write {path}:\n{error}",
                                  parent=self)
                box.setModal(False)
                box.show()
        else:
            self.state_label.setText(f"Wrote {os.path.basename(path)}")
        self.exported.emit(kind, path, error)

    # --- closing -----------------------------------------------------------
    def stop(self) -> None:
        if self.worker is not None:
            self.worker.control.cancel()
            self.worker.wait()

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if obj is self.parent() and event.type() == event.Type.Close:
            self.stop()
            self.close()
        return False

    def closeEvent(self, event) -> None:  # noqa: N802
        self.stop()
        self.browser.cancel_scan()
        super().closeEvent(event)
