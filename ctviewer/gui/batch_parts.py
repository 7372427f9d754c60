"""Pieces of the batch review window: the worker thread, the results table model,
the background export task and the p(COVID)-along-position plot.  See
``batch_view`` for how they fit together."""

from __future__ import annotations

import os

from PySide6.QtCore import QModelIndex, QObject, QRunnable, Qt, QThread, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

from ctviewer.studies import StudyResult

from .study_browser import series_slices
from .tables import RowsTableModel
from .workers import emit_queued

COLUMNS = ("Study", "#", "Position (mm)", "p(COVID)", "Label", "Lung", "Error")
PLOT_EVERY_MS = 250
RATE_WINDOW_S = 5.0  # slices/s over the last few seconds (pauses do not drag it down for long)


class BatchWorker(QThread):
    """Classifies the jobs (patient, study, series UIDs or None) one after the other."""

    sliceDone = Signal(int, object)  # job index, SliceResult
    progressed = Signal(int, int)  # slices done, total (all jobs)
    studyDone = Signal(int, object)  # job index, StudyResult
    failed = Signal(int, str)  # job index, message
    historyFailed = Signal(str)

    def __init__(self, jobs, classifier, history=None, parent=None):
        super().__init__(parent)
        from ctviewer.studies import BatchControl

        self.jobs, self.classifier, self.history = list(jobs), classifier, history
        self.control = BatchControl()
        self.total = sum(series_slices(se) for _p, st, uids in self.jobs for se in st.series
                         if uids is None or se.uid in uids)

    def run(self) -> None:
        from ctviewer.studies import classify_study

        before = 0
        for i, (patient, study, uids) in enumerate(self.jobs):
            if self.control.cancelled:
                break
            seen = [0]

            def on_slice(r, i=i):
                self.sliceDone.emit(i, r)

            def on_progress(done, total, _x, base=before, seen=seen):
                seen[0] = done
                self.progressed.emit(base + done, max(self.total, base + total))

            try:
                result = classify_study(study, patient, self.classifier, series_uids=uids, on_slice=on_slice,
                                        on_progress=on_progress, control=self.control)
            except Exception as exc:  # noqa: BLE001 - one bad study must not end the batch
                self.failed.emit(i, f"{type(exc).__name__}: {exc}")
                before += sum(series_slices(se) for se in study.series if uids is None or se.uid in uids)
                continue
            before += max(seen[0], len(result.slices))
            if self.history is not None and hasattr(self.history, "add_batch") and result.slices:
                try:
                    self.history.add_batch(result)
                except Exception as exc:  # noqa: BLE001 - HistoryError or a full disk: say it, go on
                    self.historyFailed.emit(str(exc))
            self.studyDone.emit(i, result)


class ResultsModel(RowsTableModel):
    """One row per slice result of the run: (job index, number in its study, SliceResult)."""

    columns = COLUMNS

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[tuple[int, int, object]] = []
        self.study_names: dict[int, str] = {}

    def clear(self) -> None:
        self.beginResetModel()
        self.rows, self.study_names = [], {}
        self.endResetModel()

    def append(self, job: int, number: int, r) -> None:
        n = len(self.rows)
        self.beginInsertRows(QModelIndex(), n, n)
        self.rows.append((job, number, r))
        self.endInsertRows()

    def replace_job(self, job: int, results) -> None:
        """The rows of ``job`` (contiguous: jobs run one after the other) in the study's final order."""
        where = [k for k, row in enumerate(self.rows) if row[0] == job]
        if where and len(where) == len(results) and where[-1] - where[0] + 1 == len(where):
            self.rows[where[0]:where[-1] + 1] = [(job, n, r) for n, r in enumerate(results, 1)]
            self.dataChanged.emit(self.index(where[0], 0), self.index(where[-1], len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.rows = [row for row in self.rows if row[0] != job] + [(job, n, r) for n, r in enumerate(results, 1)]
        self.endResetModel()

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        job, number, r = self.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (self.study_names.get(job, str(job + 1)), str(number),
                    "" if r.position is None else f"{r.position:.1f}",
                    "" if r.p_covid is None else f"{r.p_covid:.3f}", r.label,
                    "" if r.error else ("yes" if r.judged else f"no: {r.reason or 'not judged'}"), r.error)[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            return r.error or os.path.basename(r.path) + ("" if r.frame is None else f" [frame {r.frame + 1}]")
        if role == Qt.ItemDataRole.UserRole:  # sort keys
            missing = float("-inf")
            return (self.study_names.get(job, ""), job * 10**6 + number,
                    missing if r.position is None else r.position, missing if r.p_covid is None else r.p_covid,
                    r.label, -1 if r.error else int(r.has_lung), r.error)[col]
        return None


class _ExportSignals(QObject):
    finished = Signal(str, str, str)  # kind, path, error ("" when written)


def export_anonymised_study(result: StudyResult, dest: str) -> list[tuple[str, str]]:
    """Batch review's "Export anonymised study…": the study's images de-identified into ``dest``
    and the AI result as an SR in the same (new) study, with one ``Deidentifier``, so the SR's
    references point at the copied images.  Returns the files refused (burned-in, unreadable)."""
    from pathlib import Path

    from ctviewer.privacy import BurnedInAnnotation, Deidentifier, anonymize_file
    from ctviewer.reports.dicom_sr import write_sr

    deid = Deidentifier()
    key = result.patient.key
    refused = []
    for series in result.study.series:
        for f in series.files:
            try:
                anonymize_file(f, key, result.study.uid, series.uid, Path(dest), deid)
            except BurnedInAnnotation as exc:
                refused.append((f, str(exc)))
            except Exception as exc:  # noqa: BLE001 - a hostile file: reported, the rest goes on
                refused.append((f, f"{type(exc).__name__}: {exc}"))
    shown = deid.study_result(result)
    folder = Path(dest) / shown.patient.patient_id / shown.study.uid.replace(":", "-").replace("/", "-")
    write_sr(shown, folder / "ctviewer-ai-result-sr.dcm", anonymize=True)
    return refused


class ExportTask(QRunnable):
    """Writes one report off the GUI thread (the PDF computes Grad-CAM thumbnails)."""

    def __init__(self, kind: str, dest: str, results: list[StudyResult], classifier, anonymize: bool):
        super().__init__()
        self.kind, self.dest, self.results, self.classifier, self.anonymize = kind, dest, results, classifier, anonymize
        self.signals = _ExportSignals()

    def run(self) -> None:
        try:
            if self.kind == "csv":
                from ctviewer.reports.csv_report import write_csv

                write_csv(self.results, self.dest, anonymize=self.anonymize)
            elif self.kind == "pdf":
                from ctviewer.reports.pdf import write_pdf
                from ctviewer.studies.study_batch import suspicious_thumbnails

                result = self.results[0]
                thumbs = suspicious_thumbnails(result, self.classifier) if self.classifier is not None else []
                card = self.classifier.card if self.classifier is not None else None
                write_pdf(result, self.dest, card, thumbnails=thumbs, anonymize=self.anonymize)
            elif self.kind == "study":
                refused = export_anonymised_study(self.results[0], self.dest)
                if refused:
                    raise RuntimeError(f"{len(refused)} file(s) not copied: "
                                       + "; ".join(f"{os.path.basename(p)}: {r}" for p, r in refused[:5]))
            else:
                from ctviewer.reports.dicom_sr import write_sr

                write_sr(self.results[0], self.dest, anonymize=self.anonymize)
        except Exception as exc:  # noqa: BLE001 - OSError, a report bug: a message in the window
            emit_queued(self.signals.finished, self.kind, self.dest, f"{type(exc).__name__}: {exc}")
            return
        emit_queued(self.signals.finished, self.kind, self.dest, "")


class PlotCanvas(QWidget):
    """p(COVID) along the slice position: lung slices coloured by label, excluded slices grey."""

    def __init__(self, parent=None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 2.4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.ax = self.figure.add_subplot()
        self.points = 0
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.plot([], 0.5)

    def plot(self, results, threshold: float, title: str = "", marker: float | None = None) -> None:
        ax = self.ax
        ax.clear()
        done = [(k, r) for k, r in enumerate(results) if r.ok]
        xs = [r.position if r.position is not None else float(k) for k, r in done]
        groups = (("COVID", "#d62728", lambda r: r.judged and r.p_covid >= threshold),
                  ("non-COVID", "#1f77b4", lambda r: r.judged and r.p_covid < threshold),
                  ("not judged (no lung, not axial): at 0", "#a0a0a0", lambda r: not r.judged))
        for name, colour, keep in groups:
            pts = [(x, r.p_covid if r.judged else 0.0) for x, (_k, r) in zip(xs, done) if keep(r)]
            if pts:
                ax.scatter(*zip(*pts), s=12, c=colour, label=name, zorder=3)
        ax.axhline(threshold, color="#555555", linestyle="--", linewidth=0.8, label=f"threshold {threshold:.2f}")
        if marker is not None:
            ax.axvline(marker, color="#ff9900", linewidth=1.0)
        ax.set_ylim(-0.03, 1.03)
        with_pos = any(r.position is not None for _k, r in done)
        ax.set_xlabel("slice position (mm)" if with_pos or not done else "slice")
        ax.set_ylabel("p(COVID)")
        ax.set_title(title, fontsize=9)
        if done:
            ax.legend(loc="best", fontsize=7, framealpha=0.7)
        self.points = len(done)
        self.canvas.draw_idle()
