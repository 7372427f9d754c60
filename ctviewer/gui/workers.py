"""Work that must not run on the GUI thread: opening files, loading the model,
classifying and explaining slices.

Rules (Qt's, and ours):

- Workers never touch widgets.  They report through signals; Qt queues a
  signal emitted on a worker thread to receivers living on the GUI thread.
- Opening and model loading are one-shot ``QRunnable`` tasks on the global
  QThreadPool.  ONNX Runtime is imported there, never at module import time, so
  the window appears before it (the application never imports TensorFlow).
- Inference is one long-lived ``QThread`` with a small priority queue: the
  slice on screen first, then the rest of its series, a few at a time so a new
  request for the slice on screen never waits behind a whole series.  Results
  are keyed by pixel hash; the window caches them, so nothing is computed twice.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, QRunnable, QThread, QTimer, Signal

from ctviewer.studies.batch import Record, check_classifiable, pixel_hash
from ctviewer.imaging import ImagingError, Series, Slice, find_series


class _MainThreadGC(QObject):
    """Python's cyclic garbage collector runs in whichever thread allocates when a threshold is
    crossed; when that is a worker (reading a DICOM series, preparing a batch) and the garbage
    holds Qt wrappers, their C++ destructors run off the GUI thread, and Qt crashes (a
    segmentation fault seen on Xvfb, 2026-12-07, in ``OpenTask`` during a collection).  So the
    automatic collector is off, and the GUI thread collects on a timer, by the same thresholds."""

    INTERVAL_MS = 250

    def __init__(self, app):
        super().__init__(app)
        self._threshold = gc.get_threshold()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.collect)
        self._timer.start(self.INTERVAL_MS)

    def collect(self) -> None:
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self._threshold
        if c2 > t2 and c1 > t1 and c0 > t0:
            gc.collect(2)
        elif c1 > t1 and c0 > t0:
            gc.collect(1)
        elif c0 > t0:
            gc.collect(0)


def collect_on_the_gui_thread() -> None:
    """Install ``_MainThreadGC`` once per application and turn the automatic collector off (the
    windows call it when they are made)."""
    app = QCoreApplication.instance()
    if app is not None and app.findChild(_MainThreadGC) is None:
        _MainThreadGC(app)
    gc.disable()


@dataclass
class Opened:
    """What an open request found: sorted series, refused files, pixel hashes."""

    paths: list[str]
    series: list[Series] = field(default_factory=list)
    errors: list[ImagingError] = field(default_factory=list)
    hashes: dict = field(default_factory=dict)  # Slice -> pixel hash
    # per series (same order): the gate's reason for each slice, "" = judged (verdict.series_gate)
    reasons: list = field(default_factory=list)
    fractions: dict = field(default_factory=dict)  # Slice -> lung fraction (verdict.lung_fraction)


class _OpenSignals(QObject):
    finished = Signal(object)  # Opened


class OpenTask(QRunnable):
    """Load every file under ``paths`` into series (errors are results)."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self.paths = list(paths)
        self.signals = _OpenSignals()

    def run(self) -> None:
        result = Opened(self.paths)
        try:
            result.series, result.errors = find_series(self.paths)
            result.hashes = {s: pixel_hash(s.pixels) for series in result.series for s in series.slices}
            result.reasons, result.fractions = gate_series_slices(result.series)
        except Exception as exc:  # noqa: BLE001 - a bug must become a message, not a dead worker
            result.errors.append(ImagingError(None, f"unexpected error while opening ({type(exc).__name__}: {exc})"))
        emit_queued(self.signals.finished, result)


def gate_series_slices(series: list[Series]) -> tuple[list[list[str]], dict]:
    """The gate over every opened series (the same as batch review's ``study_batch.gate_series``):
    per series, each slice's reason ("" = the model may judge it), and each slice's lung fraction."""
    from ctviewer.studies.study_batch import slice_position
    from ctviewer.studies.verdict import gate_reason, lung_fraction, series_gate

    reasons, fractions = [], {}
    for ser in series:
        own = []
        for s in ser.slices:
            fractions[s] = lung_fraction(s)
            own.append(gate_reason(s, fractions[s]))
        reasons.append(series_gate(own, [slice_position(s) for s in ser.slices]))
    return reasons, fractions


def emit_queued(signal, *args) -> None:
    """Emit, unless the receiver side is gone (the application quit while a task ran)."""
    try:
        signal.emit(*args)
    except RuntimeError:
        pass


class _ModelSignals(QObject):
    loaded = Signal(object, float)  # Classifier, seconds
    failed = Signal(str)


class ModelTask(QRunnable):
    """Import ONNX Runtime and load (and verify) the model in the background."""

    def __init__(self, folder: str | None = None):
        super().__init__()
        self.folder = folder
        self.signals = _ModelSignals()

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            from ctviewer.inference import load_classifier
            from ctviewer.inference.runtime import GUI_THREADS, quiet_libraries

            quiet_libraries()
            clf = load_classifier(self.folder, threads=GUI_THREADS)
            # One warm-up call lets ONNX Runtime allocate its buffers before the first real slice.
            clf.probabilities(np.zeros((1, clf.params.size, clf.params.size, 3), np.float32))
        except Exception as exc:  # noqa: BLE001 - ModelError, ImportError, anything: say it in the window
            msg = str(exc) if exc.__class__.__name__ == "ModelError" else f"{type(exc).__name__}: {exc}"
            emit_queued(self.signals.failed, msg)
            return
        emit_queued(self.signals.loaded, clf, time.perf_counter() - t0)


PREDICT, EXPLAIN = "predict", "explain"
BATCH = 8  # slices per model call: large enough for throughput, small enough to re-prioritise


class InferenceThread(QThread):
    """Classifies and explains slices off the GUI thread, most recent priority first."""

    predicted = Signal(str, object, float, str, object)  # hash, Slice, p_covid, label, HistoryEntry | None
    gated = Signal(str, object, float, str, object)  # hash, Slice, p_covid (not to be shown), reason, HistoryEntry
    refused = Signal(str, object, str)  # hash, Slice, reason
    explained = Signal(str, object)  # hash, heatmap in slice coordinates (H, W) float32
    explain_failed = Signal(str, str)  # hash, reason
    history_failed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._cond = threading.Condition()
        self._queue: OrderedDict[tuple[str, str], Slice] = OrderedDict()
        self._clf = None
        self._stop = False
        self.history = None  # ctviewer.history.History: predictions are stored here, off the GUI thread

    # --- GUI thread --------------------------------------------------------
    def set_classifier(self, clf) -> None:
        with self._cond:
            self._clf = clf
            self._cond.notify()

    def request(self, kind: str, key: str, s: Slice, urgent: bool = False) -> None:
        with self._cond:
            k = (kind, key)
            if k in self._queue:
                if urgent:
                    self._queue.move_to_end(k, last=False)
            else:
                self._queue[k] = s
                if urgent:
                    self._queue.move_to_end(k, last=False)
            self._cond.notify()

    def discard_pending(self, kind: str | None = None) -> None:
        with self._cond:
            for k in [k for k in self._queue if kind is None or k[0] == kind]:
                del self._queue[k]

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify()
        self.wait()

    # --- worker thread -----------------------------------------------------
    def _take(self) -> tuple[str, list[tuple[str, Slice]]] | None:
        with self._cond:
            while not self._stop and (self._clf is None or not self._queue):
                self._cond.wait()
            if self._stop:
                return None
            (kind, _), _ = next(iter(self._queue.items()))
            n = BATCH if kind == PREDICT else 1
            taken = [k for k in self._queue if k[0] == kind][:n]
            return kind, [(k[1], self._queue.pop(k)) for k in taken]

    def run(self) -> None:
        while (job := self._take()) is not None:
            kind, items = job
            try:
                if kind == PREDICT:
                    self._predict(items)
                else:
                    self._explain(*items[0])
            except Exception as exc:  # noqa: BLE001 - never let the worker die silently
                traceback.print_exc()
                for key, s in items:
                    if kind == PREDICT:
                        self.refused.emit(key, s, f"the model failed on this slice ({type(exc).__name__}: {exc})")
                    else:
                        self.explain_failed.emit(key, f"{type(exc).__name__}: {exc}")

    def _predict(self, items: list[tuple[str, Slice]]) -> None:
        from ctviewer.studies.batch import gated_input

        clf = self._clf
        ready, inputs = [], []
        for key, s in items:
            try:
                check_classifiable([s])
                x, reason, _ = gated_input(s, clf.params, always=True)
                inputs.append(x)
                ready.append((key, s, reason))
            except ImagingError as exc:
                self.refused.emit(key, s, exc.reason)
        if not inputs:
            return
        probs = clf.probabilities(np.stack(inputs))
        for (key, s, reason), p in zip(ready, probs):
            label = clf.label_for(float(p))
            entry = self._store(clf, key, s, float(p), label, reason)
            if reason:  # the slice alone is not judged; the window's series gate may still admit it
                self.gated.emit(key, s, float(p), reason, entry)
            else:
                self.predicted.emit(key, s, float(p), label, entry)

    def _store(self, clf, key: str, s: Slice, p: float, label: str, reason: str = ""):
        """Write the prediction (or, with ``reason``, the slice not judged: no label, no p) to the
        history (one durable transaction); the entry, or None."""
        if self.history is None:
            return None
        from ctviewer.history import HistoryEntry, HistoryError

        now = datetime.now(timezone.utc).replace(microsecond=0)
        rec = Record(s.path, s.frame, s.sop_instance_uid or "", "" if reason else label, None if reason else p, "",
                     clf.card.title, key, reason)
        try:
            row = self.history.add(rec, time=now)
        except HistoryError as exc:
            self.history_failed.emit(str(exc))
            return None
        return HistoryEntry(row, now.strftime("%Y-%m-%dT%H:%M:%SZ"), rec.path, rec.frame, rec.sop_instance_uid,
                            key, rec.label, rec.p_covid, rec.model, reason)

    def _explain(self, key: str, s: Slice) -> None:
        from ctviewer.inference.gradcam import slice_heatmap

        clf = self._clf
        try:
            check_classifiable([s])
        except ImagingError as exc:
            self.explain_failed.emit(key, exc.reason)
            return
        self.explained.emit(key, slice_heatmap(clf, s))
