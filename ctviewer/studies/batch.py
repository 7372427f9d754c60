"""The batch engine: files and folders in, one prediction record per slice out.

Shared by ``ctviewer classify`` and the GUI's batch review.  Files are read and
preprocessed on low-priority reader threads (``default_readers``, ``READER_NICE``)
while the model runs on full batches, so decoding does not dominate.  A bad file
becomes a row with its reason; the batch goes on.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ctviewer.imaging import ImagingError
from ctviewer.imaging.io import load_slices
from ctviewer.imaging.preprocess import PreprocessParams

from .records import Outcome

# DICOM modalities the model may be shown: CT, and captures/unknown that may hold CT.
CLASSIFIABLE_MODALITIES = frozenset({"CT", "OT", "SC", ""})
P = TypeVar("P")
COLUMNS = ("path", "frame", "sop_instance_uid", "label", "p_covid", "error", "model", "pixel_sha256", "reason")


@dataclass(frozen=True)
class Record(Outcome):
    """One CSV row: a classified slice, or a file that could not be classified."""

    path: str
    frame: int | None = None
    sop_instance_uid: str = ""
    label: str = ""
    p_covid: float | None = None
    error: str = ""
    model: str = ""
    pixel_sha256: str = ""
    reason: str = ""  # why the gate did not let the model judge the slice (no label, no p_covid)

    def as_row(self) -> list[str]:
        return [
            self.path,
            "" if self.frame is None else str(self.frame + 1),
            self.sop_instance_uid,
            self.label,
            "" if self.p_covid is None else f"{self.p_covid:.4f}",
            self.error,
            self.model,
            self.pixel_sha256,
            self.reason,
        ]


@dataclass
class _Prepared:
    path: str
    items: list  # [(slice, model input or None, the gate's reason, pixel hash)]
    error: str = ""


def check_classifiable(slices) -> None:
    """The model reads chest CT: refuse DICOM images of other modalities (MR, US, ...)."""
    for s in slices:
        modality = (s.modality or "").upper()
        if s.is_hu and modality not in CLASSIFIABLE_MODALITIES:
            raise ImagingError(s.path, f"not a CT image (modality {modality}): the model reads CT slices only")


def gated_input(s, params: PreprocessParams, always: bool = False) -> tuple[np.ndarray | None, str, float]:
    """(model input or None, the gate's reason or "", lung fraction) of one slice: the slice is
    windowed and segmented once for both (``verdict.gate_reason``).  A slice the gate stops is
    not run through the model (input None), unless ``always``: the viewer scores every slice
    so that ``verdict.series_gate`` may admit one between lung slices; it shows no score for
    the others."""
    from ctviewer.imaging.preprocess import display8, input_from_display, segment_chest
    from .verdict import gate_reason, lung_fraction, reads_like_the_gate

    img8 = display8(s, params)
    seg = segment_chest(img8)
    fraction = lung_fraction(s, seg=seg) if reads_like_the_gate(s, params) else lung_fraction(s)
    reason = gate_reason(s, fraction)
    return (None if reason and not always else input_from_display(img8, params, seg)[0]), reason, fraction


def _prepare(path: str, params: PreprocessParams) -> _Prepared:
    try:
        slices = load_slices(path)
        check_classifiable(slices)
        # The hash is computed here, on the worker thread (hashlib releases the GIL).
        items = []
        for s in slices:
            x, reason, _ = gated_input(s, params)
            items.append((s, x, reason, pixel_hash(s.pixels)))
        return _Prepared(path, items)
    except ImagingError as exc:
        return _Prepared(path, [], exc.reason)
    except MemoryError:
        return _Prepared(path, [], "not enough memory to read this file")
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the batch; report it on the file
        return _Prepared(path, [], f"unexpected error while reading ({type(exc).__name__}: {exc})")


def pixel_hash(pixels: np.ndarray) -> str:
    a = np.ascontiguousarray(pixels)
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


#: The nice value of the reader threads (Linux: per-thread; elsewhere nothing changes).
#: TensorFlow's threads meet at a barrier after every operation, so a reader that preempts
#: one of them stalls all of them; low-priority readers run in the model's gaps instead,
#: and get all the CPU whenever the model waits for them (measured with
#: benchmarks/bench_study.py, see benchmarks/README.md).  The cost: under a foreign CPU
#: load the readers yield to it too.  The GUI thread keeps its priority either way.
READER_NICE = 19


def default_readers() -> int:
    """How many reader threads feed the model: one per 6 cores, at least one.

    A reader costs about a sixth of what the model costs per slice (3.6 against 22
    core-ms for a 512x512 DICOM slice with flip TTA, benchmarks/bench_study.py), and one
    reader prepares about 270 slices/s, 3 times what the model classifies on 2 cores.  A
    second reader there bought nothing but contention: the readers' Python parts
    (pydicom's parser) share one GIL, and pydicom releases it at every ``tell()``, so two
    readers hand it back and forth hundreds of times per file (readers 4.4 core-ms per
    slice instead of 3.6, 78-79 % of the raw model instead of 81 %).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, -(-cores // 6))


def _lower_priority() -> None:
    """Thread initializer of the readers: lower this thread's priority (``READER_NICE``)."""
    if not sys.platform.startswith("linux"):
        return  # setpriority(PRIO_PROCESS, tid) names a thread only on Linux; elsewhere the whole process
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READER_NICE)
    except OSError:
        pass  # not permitted (a sandbox): run at normal priority


def prepared_batches(
    files: Iterable[str],
    prepare: Callable[[str], P],
    size: Callable[[P], int],
    batch_size: int = 64,
    workers: int | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[list[P]]:
    """The reading pipeline shared by ``classify_files`` and ``study_batch``.

    ``prepare(path)`` runs on ``workers`` threads (default: ``default_readers()``), at
    low priority (``READER_NICE``), at most ``max(4, 2 * batch_size)`` files ahead of
    the consumer; the prepared files are yielded in input order, in
    groups holding at least ``batch_size`` model inputs (``size(prepared)``), the last
    group possibly fewer.  ``cancelled()`` is polled between files: the files not yet
    read are dropped and the last, partial group is not yielded.
    """
    pending: list[P] = []
    n_inputs = 0
    with ThreadPoolExecutor(max_workers=max(1, workers or default_readers()), thread_name_prefix="ctviewer-read",
                            initializer=_lower_priority) as pool:
        window: deque = deque()
        it = iter(files)
        ahead = max(4, 2 * batch_size)
        exhausted = False
        try:
            while True:
                while not exhausted and len(window) < ahead:
                    try:
                        f = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    window.append(pool.submit(prepare, os.fspath(f)))
                if not window:
                    break
                if cancelled and cancelled():
                    for fut in window:
                        fut.cancel()
                    break
                prep = window.popleft().result()
                pending.append(prep)
                n_inputs += size(prep)
                if n_inputs >= batch_size:
                    group, pending, n_inputs = pending, [], 0
                    yield group
            if pending and not (cancelled and cancelled()):
                yield pending
        finally:  # closed early (the consumer stopped): do not read the files queued ahead
            for fut in window:
                fut.cancel()


def classify_files(
    files: Iterable[str],
    classifier,
    batch_size: int = 64,
    workers: int | None = None,
    on_file_done: Callable[[str], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[Record]:
    """Yield records in input order (per file, then per frame).

    ``classifier`` needs ``params`` (PreprocessParams), ``probabilities(x)``,
    ``label_for(p)`` and ``card.title``.  ``on_file_done(path)`` is called once
    per file after its records are yielded; ``cancelled()`` is polled between
    files and stops the generator early.
    """
    params = classifier.params
    model_name = classifier.card.title

    def prepare(path: str) -> _Prepared:
        return _prepare(path, params)

    for group in prepared_batches(files, prepare, lambda p: len(p.items), batch_size, workers, cancelled):
        inputs = [inp for prep in group for _, inp, _, _ in prep.items if inp is not None]
        probs = classifier.probabilities(np.stack(inputs)) if inputs else np.zeros(0)
        k = 0
        for prep in group:
            if prep.error:
                yield Record(os.fspath(prep.path), error=prep.error, model=model_name)
            for s, inp, reason, digest in prep.items:
                if inp is None:
                    yield Record(s.path, s.frame, s.sop_instance_uid or "", model=model_name, pixel_sha256=digest,
                                 reason=reason)
                    continue
                p = float(probs[k])
                k += 1
                yield Record(s.path, s.frame, s.sop_instance_uid or "", classifier.label_for(p), p, "", model_name, digest)
            if on_file_done:
                on_file_done(prep.path)
