"""The study browser: a patient → study → series tree built from DICOM headers.

``ScanTask`` (a QRunnable on the global pool) runs ``ctviewer.studies.scan`` —
headers only, never pixels — and reports files done/total through a throttled
signal; it can be cancelled.  ``StudyBrowser`` shows the tree (slice count,
modality, description, date, and the verdict once a study is classified), a
progress bar while scanning, and answers "what is selected" for the batch view.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ctviewer.studies import PatientNode, SeriesNode, StudyNode

from .workers import emit_queued

COLUMNS = ("Patient / study / series", "Slices", "Verdict", "Modality", "Description", "Date")
VERDICT_COLUMN = COLUMNS.index("Verdict")
NODE_ROLE = Qt.ItemDataRole.UserRole + 1  # ("patient" | "study" | "series", node)
PROGRESS_EVERY_S = 0.05  # at most ~20 progress signals a second, whatever the number of files


@dataclass
class Scanned:
    """What a scan found."""

    paths: list[str]
    patients: list[PatientNode] = field(default_factory=list)
    errors: list = field(default_factory=list)  # ImagingError
    cancelled: bool = False
    seconds: float = 0.0


class _ScanSignals(QObject):
    progress = Signal(int, int)  # files done, total
    finished = Signal(object)  # Scanned


class ScanTask(QRunnable):
    """Read the headers under ``paths`` into a patient tree (cancellable)."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self.paths = [os.fspath(p) for p in paths]
        self.signals = _ScanSignals()
        self._cancel = threading.Event()
        self._last = 0.0

    def cancel(self) -> None:
        self._cancel.set()

    def _progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done >= total or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            emit_queued(self.signals.progress, int(done), int(total))

    def run(self) -> None:
        from ctviewer.imaging import ImagingError

        t0 = time.perf_counter()
        result = Scanned(self.paths)
        try:
            from ctviewer.studies import scan

            result.patients, result.errors = scan(self.paths, progress=self._progress, cancelled=self._cancel.is_set)
        except Exception as exc:  # noqa: BLE001 - a bug must become a message, not a dead worker
            result.errors.append(ImagingError(None, f"unexpected error while scanning ({type(exc).__name__}: {exc})"))
        result.cancelled = self._cancel.is_set()
        result.seconds = time.perf_counter() - t0
        emit_queued(self.signals.finished, result)


def series_slices(series: SeriesNode) -> int:
    return series.n_frames or len(series.files)


def study_slices(study: StudyNode) -> int:
    return sum(series_slices(s) for s in study.series)


def _row(text: str, kind: str, node, slices: int, modality="", description="", date="") -> list[QStandardItem]:
    items = [QStandardItem(str(v)) for v in (text, slices, "", modality, description, date)]
    for it in items:
        it.setEditable(False)
    items[0].setData((kind, node), NODE_ROLE)
    items[1].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return items


def build_tree(model: QStandardItemModel, patients: list[PatientNode]) -> None:
    model.removeRows(0, model.rowCount())
    root = model.invisibleRootItem()
    for p in patients:
        n = sum(study_slices(st) for st in p.studies)
        title = p.key if not p.name or p.name == p.key else f"{p.name} ({p.key})"
        prow = _row(title, "patient", p, n, description=f"{len(p.studies)} stud{'y' if len(p.studies) == 1 else 'ies'}")
        root.appendRow(prow)
        for st in p.studies:
            modalities = sorted({s.modality for s in st.series if s.modality})
            srow = _row(st.description or st.accession or "Study", "study", st, study_slices(st),
                        "/".join(modalities), f"{len(st.series)} series", st.date)
            prow[0].appendRow(srow)
            for se in st.series:
                name = f"Series {se.number}" if se.number is not None else (
                    os.path.basename(se.uid[len("folder:"):]) if se.uid.startswith("folder:") else "Series")
                srow[0].appendRow(_row(name, "series", se, series_slices(se), se.modality, se.description, st.date))


class StudyBrowser(QWidget):
    """The tree, with a scan progress bar and a cancel button."""

    scanned = Signal(object)  # Scanned
    selectionChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.patients: list[PatientNode] = []
        self.errors: list = []
        self._task: ScanTask | None = None
        self._tasks: set = set()  # running tasks: their signal objects must outlive run()
        self.model = QStandardItemModel(0, len(COLUMNS), self)
        self.model.setHorizontalHeaderLabels(list(COLUMNS))
        self.tree = QTreeView()
        self.tree.setModel(self.model)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setColumnWidth(0, self.tree.fontMetrics().horizontalAdvance("M" * 13) + 40)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.setColumnWidth(VERDICT_COLUMN, self.tree.fontMetrics().horizontalAdvance("non-COVID (100%)") + 12)
        self.tree.selectionModel().currentChanged.connect(lambda *_: self.selectionChanged.emit())
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("Open a folder or a DICOMDIR to list its studies.")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel scan")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_scan)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tree, 1)
        lay.addLayout(bar)
        lay.addWidget(self.status)

    # --- scanning ----------------------------------------------------------
    def scanning(self) -> bool:
        return self._task is not None

    def scan(self, paths) -> ScanTask:
        if self._task is not None:
            self._task.cancel()
        task = ScanTask(list(paths))
        self._task = task
        task.signals.progress.connect(self._on_progress)
        task.signals.finished.connect(lambda r, t=task: self._on_scanned(r, t))
        self._tasks.add(task)
        task.setAutoDelete(False)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.status.setText("Reading the DICOM headers…")
        QThreadPool.globalInstance().start(task)
        return task

    def cancel_scan(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.status.setText(f"Reading the DICOM headers… {done}/{total} files")

    def _on_scanned(self, result: Scanned, task: ScanTask) -> None:
        self._tasks.discard(task)
        if task is not self._task:
            return  # superseded by a newer scan
        self._task = None
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.patients, self.errors = list(result.patients), list(result.errors)
        build_tree(self.model, self.patients)
        self.tree.expandToDepth(1)
        n_series = sum(len(st.series) for p in self.patients for st in p.studies)
        n_studies = sum(len(p.studies) for p in self.patients)
        text = (f"{len(self.patients)} patient(s), {n_studies} stud{'y' if n_studies == 1 else 'ies'}, "
                f"{n_series} series in {result.seconds:.1f} s")
        if result.errors:
            text += f"; {len(result.errors)} file(s) skipped"
        if result.cancelled:
            text = "Scan cancelled: " + text
        self.status.setText(text)
        if self.model.rowCount():
            first = self.model.index(0, 0)
            self.tree.setCurrentIndex(first)
        self.scanned.emit(result)

    # --- selection ---------------------------------------------------------
    def selected(self) -> tuple[PatientNode | None, StudyNode | None, SeriesNode | None]:
        """The patient, study and series of the current row (None where the row is above them)."""
        index = self.tree.currentIndex()
        chain = []
        while index.isValid():
            chain.insert(0, self.model.itemFromIndex(index.siblingAtColumn(0)).data(NODE_ROLE)[1])
            index = index.parent()
        chain += [None] * (3 - len(chain))
        return chain[0], chain[1], chain[2]

    def jobs(self, scope: str) -> list[tuple[PatientNode, StudyNode, tuple[str, ...] | None]]:
        """What to classify: (patient, study, series UIDs or None for the whole study).

        ``scope`` is "series" (the selected series, or the first of the selected study),
        "study" (the selected study, or the first of the selected patient) or "all"."""
        if scope == "all":
            return [(p, st, None) for p in self.patients for st in p.studies]
        patient, study, series = self.selected()
        if patient is None:
            return []
        if study is None:
            if not patient.studies:
                return []
            study = patient.studies[0]
        if scope == "study":
            return [(patient, study, None)]
        if series is None:
            if not study.series:
                return []
            series = study.series[0]
        return [(patient, study, (series.uid,))]

    def select_series(self, series_uid: str) -> bool:
        for item in self._items():
            kind, node = item.data(NODE_ROLE)
            if kind == "series" and node.uid == series_uid:
                self.tree.setCurrentIndex(item.index())
                return True
        return False

    def _items(self):
        stack = [self.model.item(r, 0) for r in range(self.model.rowCount())]
        while stack:
            item = stack.pop(0)
            yield item
            stack.extend(item.child(r, 0) for r in range(item.rowCount()))

    def set_verdict(self, kind: str, uid: str, text: str, tooltip: str = "") -> None:
        """Show ``text`` in the Verdict column of the study or series ``uid``."""
        for item in self._items():
            k, node = item.data(NODE_ROLE)
            if k == kind and node.uid == uid:
                parent = item.parent() or self.model.invisibleRootItem()
                cell = parent.child(item.row(), VERDICT_COLUMN)
                cell.setText(text)
                cell.setToolTip(tooltip)
