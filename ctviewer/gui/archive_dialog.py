"""Batch review's "Review archive…": start and watch an archive run (``ctviewer.archive``, the
same as ``ctviewer report ROOT --out DIR [--cluster ...]``) without leaving the window: the
archive folder, the output folder (run it again to resume), where to run (this computer, a
local Dask cluster of N workers, or a Dask scheduler), then the whole run's progress (studies
done and failed, slices per second, time left) and each study's line as it finishes.  The run
is a ``QRunnable``; it reports through queued signals and never touches a widget; Cancel stops
between studies (the cluster drops what has not finished; everything finished is recorded).
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtWidgets import (
    QComboBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
    QPushButton, QSpinBox, QVBoxLayout, QWidget,
)

from .workers import emit_queued

WHERE = ("This computer (one process)", "Local Dask cluster", "Dask scheduler")


class _Signals(QObject):
    progress = Signal(object, object)  # ArchiveSummary (a copy), record or None
    finished = Signal(object)  # ArchiveSummary
    failed = Signal(str)


class ArchiveTask(QRunnable):
    def __init__(self, root: str, out: str, model: str | None, cluster: str | None):
        super().__init__()
        self.root, self.out, self.model, self.cluster = root, out, model, cluster
        self.signals = _Signals()
        self.cancel = threading.Event()

    def run(self) -> None:
        import copy

        from ctviewer.archive import run_archive

        try:
            s = run_archive([self.root], self.out, self.model, self.cluster,
                            progress=lambda s, rec: emit_queued(self.signals.progress, copy.copy(s), rec),
                            cancelled=self.cancel.is_set)
        except Exception as exc:  # noqa: BLE001 - a message in the window, never a crash
            emit_queued(self.signals.failed, f"{type(exc).__name__}: {exc}")
            return
        emit_queued(self.signals.finished, s)


class ArchiveDialog(QDialog):
    finished_run = Signal(object)  # ArchiveSummary

    def __init__(self, model: str | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Review an archive")
        self.model = model
        self.task: ArchiveTask | None = None
        self.root = QLineEdit()
        self.out = QLineEdit()
        browse_root, browse_out = QPushButton("Browse…"), QPushButton("Browse…")
        browse_root.clicked.connect(lambda: self._browse(self.root))
        browse_out.clicked.connect(lambda: self._browse(self.out))
        self.where = QComboBox()
        self.where.addItems(WHERE)
        self.workers = QSpinBox()
        self.workers.setRange(1, 256)
        self.workers.setValue(2)
        self.scheduler = QLineEdit()
        self.scheduler.setPlaceholderText("tcp://host:8786")
        self.where.currentIndexChanged.connect(self._where_changed)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("Choose the archive and the output folder (the same output folder resumes a run).")
        self.status.setWordWrap(True)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        form = QFormLayout()
        for label, field_, button in (("Archive", self.root, browse_root), ("Output", self.out, browse_out)):
            row = QHBoxLayout()
            row.addWidget(field_, 1)
            row.addWidget(button)
            w = QWidget()
            w.setLayout(row)
            row.setContentsMargins(0, 0, 0, 0)
            form.addRow(label, w)
        form.addRow("Run on", self.where)
        form.addRow("Workers", self.workers)
        form.addRow("Scheduler", self.scheduler)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.log, 1)
        self._where_changed()
        self.resize(760, 520)

    def _browse(self, field_: QLineEdit) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a folder", field_.text())
        if path:
            field_.setText(path)

    def _where_changed(self) -> None:
        i = self.where.currentIndex()
        self.workers.setEnabled(i == 1)
        self.scheduler.setEnabled(i == 2)

    def cluster(self) -> str | None:
        i = self.where.currentIndex()
        return None if i == 0 else f"local:{self.workers.value()}" if i == 1 else self.scheduler.text().strip()

    def start(self) -> ArchiveTask | None:
        import os

        root, out = self.root.text().strip(), self.out.text().strip()
        if not root or not os.path.isdir(root):
            self.status.setText("The archive folder does not exist.")
            return None
        if not out:
            self.status.setText("Choose an output folder.")
            return None
        cluster = self.cluster()
        if cluster is not None and not (cluster.startswith("local") or cluster.startswith("tcp://")):
            self.status.setText("The scheduler's address is tcp://HOST:PORT.")
            return None
        self.task = ArchiveTask(root, out, self.model, cluster)
        self.task.signals.progress.connect(self._on_progress)
        self.task.signals.finished.connect(self._on_finished)
        self.task.signals.failed.connect(self._on_failed)
        self.task.setAutoDelete(False)
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("Scanning the archive…")
        QThreadPool.globalInstance().start(self.task)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel.set()
            self.status.setText("Cancelling: the studies running finish and are recorded…")

    @staticmethod
    def describe(s) -> str:
        to_run = s.total - s.skipped
        left = to_run - s.done - s.failed
        rate = s.slices / s.seconds if s.seconds > 0 else 0.0
        eta = s.seconds / max(1, s.done + s.failed) * left
        return (f"{s.done + s.failed} of {to_run} studies ({s.done} done, {s.failed} failed; {s.skipped} already "
                f"done before), {rate:.1f} slices/s, about {eta:.0f} s left")

    def _on_progress(self, s, rec) -> None:
        self.progress.setRange(0, max(1, s.total - s.skipped))
        self.progress.setValue(s.done + s.failed)
        self.status.setText(self.describe(s))
        if rec is not None:
            what = (f"{rec.get('verdict')} ({rec.get('confidence')})" if rec.get("status") == "done"
                    else f"FAILED: {rec.get('error')}")
            again = (f", attempt {rec['attempts']} (an earlier attempt was interrupted)"
                     if rec.get("attempts", 1) > 1 else "")
            self.log.appendPlainText(f"{rec['folder']}: {what}{again}")

    def _on_finished(self, s) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText(("Cancelled: " if s.cancelled else "Finished: ") + self.describe(s)
                            + f". Results in {self.out.text().strip()}/results.csv.")
        self.finished_run.emit(s)

    def _on_failed(self, message: str) -> None:
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.setText(f"The run stopped: {message}")
