"""Classify whole studies: every slice scored, the study verdict, the suspicious slices.

The engine of batch study review, shared by ``ctviewer report`` and the GUI (no Qt
here).  It is the engine of ``ctviewer classify`` (``batch.prepared_batches``): files
are read and preprocessed on worker threads while the model runs on full batches.
On top of that, each worker computes, per slice, what the study view needs:

* the model input (as ``ctviewer classify``; no pixel hash: nothing in a study review reads
  one, and it cost a tenth of a reader's time),
* ``verdict.lung_fraction`` / ``verdict.has_lung`` (slices without lung are left out
  of the verdict),
* the position along the slice normal: ``dot(ImagePositionPatient, normal)`` with
  ``normal = row x column`` of the slice's ImageOrientationPatient (mm), else None,

and then **drops the pixels**: a prepared slice holds only its model input (size x
size x 3 float32) until its batch has run, and a ``SliceResult`` holds no pixels at
all.  Memory is therefore bounded by the read-ahead window (``max(4, 2 * batch_size)``
files), whatever the number of slices.  ``suspicious_thumbnails`` reloads the few
slices a report shows.

Order: results stream (``on_slice``) in file order as batches finish; the returned
lists are sorted per series the way ``imaging.series.sort_slices`` sorts a series: by
position along the normal when every slice has one, else by Instance Number when
every slice has one, then by natural path order; frames of one file stay together in
frame order.  Refused files (``SliceResult.error``) come after the classified slices
of their series, in natural path order.

Pause and cancel (``BatchControl``) are honoured between batches: a paused run
finishes its current batch and waits; a cancelled one stops reading, keeps the
slices already classified and marks the result ``cancelled``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np

from .batch import CLASSIFIABLE_MODALITIES, check_classifiable, prepared_batches
from ctviewer.imaging import ImagingError
from ctviewer.imaging.io import load_slices
from ctviewer.imaging.preprocess import (
    PreprocessParams,
    display8,
    input_from_display,
    segment_chest,
)
from ctviewer.imaging.series import head_first_normal, natural_key
from ctviewer.inference.gradcam import slice_heatmap
from .records import PatientNode, SliceResult, StudyNode, StudyResult, Thumbnail


class BatchControl:
    """Pause, resume and cancel a running batch from any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._cancelled = False

    def pause(self) -> None:
        with self._cond:
            if not self._cancelled:
                self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def wait_if_paused(self, timeout: float | None = None) -> bool:
        """Block while paused (at most ``timeout`` s when given); False when cancelled."""
        with self._cond:
            if timeout is None:
                while self._paused and not self._cancelled:
                    self._cond.wait()
            else:
                self._cond.wait_for(lambda: not self._paused or self._cancelled, timeout)
            return not self._cancelled


@dataclass
class _Item:
    """A prepared slice: everything but the pixels."""

    frame: int | None
    sop_instance_uid: str
    instance_number: int | None
    position: float | None
    reason: str  # the gate's verdict on the slice alone (verdict.gate_reason)
    lung_fraction: float
    input: np.ndarray | None  # the model input, dropped once classified


@dataclass
class _Prepared:
    path: str
    series_uid: str
    items: list[_Item] = field(default_factory=list)
    error: str = ""


def slice_position(s) -> float | None:
    """Position of a slice along its normal turned toward the head (mm):
    ImagePositionPatient . ``series.head_first_normal``; higher is nearer the head."""
    if s.position is None:
        return None
    n = head_first_normal(s.orientation)
    if n is None:
        return None
    return float(np.dot(np.asarray(s.position, dtype=float), n))


def _prepare(path: str, series_uid: str, params: PreprocessParams) -> _Prepared:
    from .verdict import gate_reason, lung_fraction, reads_like_the_gate

    try:
        slices = load_slices(path)
        check_classifiable(slices)
        items = []
        for s in slices:
            img8 = display8(s, params)  # once: the model input and the lung detection share it
            seg = segment_chest(img8)  # and the segmentation, when lung detection reads the same window
            x, _ = input_from_display(img8, params, seg)
            fraction = float(lung_fraction(s, seg=seg) if reads_like_the_gate(s, params) else lung_fraction(s))
            items.append(_Item(
                frame=s.frame,
                sop_instance_uid=s.sop_instance_uid or "",
                instance_number=s.instance_number,
                position=slice_position(s),
                reason=gate_reason(s, fraction),
                lung_fraction=fraction,
                input=x,
            ))
        del slices  # the pixels go here: only the model inputs travel on
        return _Prepared(path, series_uid, items)
    except ImagingError as exc:
        return _Prepared(path, series_uid, error=exc.reason)
    except MemoryError:
        return _Prepared(path, series_uid, error="not enough memory to read this file")
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the batch; report it on the file
        return _Prepared(path, series_uid, error=f"unexpected error while reading ({type(exc).__name__}: {exc})")


def _run(
    files: Sequence[tuple[str, str]],
    classifier,
    on_slice: Callable[[SliceResult], None] | None,
    control: BatchControl | None,
    batch_size: int,
    workers: int | None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[SliceResult], bool]:
    """Classify (path, series_uid) pairs; results in input order, and whether it was cancelled."""
    params = classifier.params
    series_of = {os.fspath(p): uid for p, uid in files}

    def prepare(path: str) -> _Prepared:
        return _prepare(path, series_of.get(path, ""), params)

    cancelled = (lambda: control.cancelled) if control is not None else None
    results: list[SliceResult] = []
    for group in prepared_batches([os.fspath(p) for p, _ in files], prepare, lambda p: len(p.items), batch_size,
                                  workers, cancelled):
        inputs = [it.input for prep in group for it in prep.items]
        probs = classifier.probabilities(np.stack(inputs)) if inputs else np.zeros(0)
        k, batch = 0, []
        for prep in group:
            if prep.error:
                batch.append(SliceResult(prep.path, series_uid=prep.series_uid, error=prep.error))
            for it in prep.items:
                p = float(probs[k])
                k += 1
                it.input = None
                batch.append(SliceResult(
                    path=prep.path, frame=it.frame, sop_instance_uid=it.sop_instance_uid,
                    series_uid=prep.series_uid, position=it.position, instance_number=it.instance_number,
                    p_covid=p, label=classifier.label_for(p), has_lung=not it.reason,
                    lung_fraction=it.lung_fraction, reason=it.reason,
                ))
        del group, inputs
        for r in batch:
            results.append(r)  # with p: series_gate may still admit a slice between lung slices
            if on_slice:
                on_slice(withhold(r))
        if on_batch:
            on_batch(len(results))
        if control is not None and not control.wait_if_paused():
            break
    return results, bool(control is not None and control.cancelled)


def withhold(r: SliceResult) -> SliceResult:
    """The result as it may be shown: no p(COVID) and no label when the gate gave a reason."""
    if r.reason and (r.p_covid is not None or r.label or r.has_lung):
        return replace(r, p_covid=None, label="", has_lung=False)
    return r


def gate_series(results: Sequence[SliceResult]) -> list[SliceResult]:
    """One series' results, sorted (``sort_results``), through ``verdict.series_gate``: a slice
    without detected lung between lung slices is admitted (its p(COVID) kept), every other
    slice with a reason loses its p(COVID) and label (``withhold``)."""
    from .verdict import series_gate

    ordered = sort_results(results)
    ok = [r for r in ordered if not r.error]
    reasons = series_gate([r.reason for r in ok], [r.position for r in ok])
    gated = {id(r): reason for r, reason in zip(ok, reasons)}
    out = []
    for r in ordered:
        if not r.error and r.reason and not gated[id(r)]:
            r = replace(r, reason="", has_lung=True)
        out.append(withhold(r))
    return out


def sort_results(results: Sequence[SliceResult]) -> list[SliceResult]:
    """One series' results in anatomical order (see the module docstring)."""
    ok = [r for r in results if not r.error]
    refused = sorted((r for r in results if r.error), key=lambda r: natural_key(r.path))
    objects: dict[tuple[str, str], list[SliceResult]] = {}
    for r in ok:
        objects.setdefault((r.path, r.sop_instance_uid), []).append(r)
    groups = [sorted(g, key=lambda r: -1 if r.frame is None else r.frame) for g in objects.values()]
    firsts = [g[0] for g in groups]
    by_position = all(r.position is not None for r in firsts)
    by_number = all(r.instance_number is not None for r in firsts)

    def key(group: list[SliceResult]) -> tuple:
        r = group[0]
        return (-r.position if by_position else 0.0, r.instance_number if by_number else 0, natural_key(r.path))

    return [r for g in sorted(groups, key=key) for r in g] + refused


def classify_files_to_results(
    files: Sequence[str],
    classifier,
    series_uid: str = "",
    on_slice: Callable[[SliceResult], None] | None = None,
    control: BatchControl | None = None,
    batch_size: int = 32,
    workers: int | None = None,
) -> list[SliceResult]:
    """Classify the files of one series: results sorted (see the module docstring)."""
    results, _ = _run([(os.fspath(f), series_uid) for f in files], classifier, on_slice, control, batch_size, workers)
    return gate_series(results)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def classifiable_series(study: StudyNode):
    """The series the model may read: CT, secondary captures, unknown modality, PNG folders."""
    return [s for s in study.series if (s.modality or "").upper() in CLASSIFIABLE_MODALITIES]


def classify_study(
    study: StudyNode,
    patient: PatientNode,
    classifier,
    series_uids: Collection[str] | None = None,
    on_slice: Callable[[SliceResult], None] | None = None,
    on_progress: Callable[[int, int, float], None] | None = None,
    control: BatchControl | None = None,
    batch_size: int = 32,
    workers: int | None = None,
) -> StudyResult:
    """Classify a study (or the series ``series_uids`` of it) and compute its verdict.

    ``series_uids=None``: every series of a modality the model reads (CT, OT, SC,
    none: PNG folders); other series (PET, SR, ...) are left out rather than refused
    slice by slice.  Named series are classified whatever their modality (a non-CT
    DICOM is then refused per file, as ``ctviewer classify`` does).  All series go
    through one pipeline; ``on_progress(done_slices, total_slices, slices_per_s)``
    is called after each batch (the total counts frames from the header scan).
    """
    from .verdict import StudyCalibration, study_verdict

    if series_uids is None:
        chosen = classifiable_series(study)
    else:
        wanted = set(series_uids)
        chosen = [s for s in study.series if s.uid in wanted]
    files = [(os.fspath(f), s.uid) for s in chosen for f in s.files]
    total = sum(max(s.n_frames, len(s.files)) for s in chosen)
    threshold = float(getattr(classifier.card, "threshold", 0.5))
    started, t0 = _now(), time.monotonic()

    def on_batch(done: int) -> None:
        if on_progress:
            on_progress(done, max(total, done), done / max(1e-6, time.monotonic() - t0))

    results, cancelled = _run(files, classifier, on_slice, control, batch_size, workers, on_batch)
    by_series: dict[str, list[SliceResult]] = {s.uid: [] for s in chosen}
    for r in results:
        by_series.setdefault(r.series_uid, []).append(r)
    ordered = [r for uid in by_series for r in gate_series(by_series[uid])]
    return StudyResult(
        study=study,
        patient=patient,
        slices=ordered,
        verdict=study_verdict(ordered, threshold=threshold, calibration=StudyCalibration.from_card(classifier.card)),
        model=classifier.card.title,
        model_sha256=classifier.card.sha256,
        threshold=threshold,
        started=started,
        finished=_now(),
        cancelled=cancelled,
    )


def suspicious_thumbnails(result: StudyResult, classifier, k: int = 4) -> list[Thumbnail]:
    """The ``k`` lung slices with the highest p(COVID), reloaded: the slice in the model's
    window and its Grad-CAM heatmap over the slice (None when it cannot be computed).
    A slice that can no longer be read is skipped."""
    candidates = sorted((r for r in result.slices if r.judged), key=lambda r: -r.p_covid)
    params = classifier.params
    thumbs: list[Thumbnail] = []
    for r in candidates:
        if len(thumbs) >= k:
            break
        try:
            slices = load_slices(r.path)
        except ImagingError:
            continue
        s = next((s for s in slices if s.frame == r.frame), None)
        if s is None:
            continue
        image = display8(s, params)
        try:
            heatmap = slice_heatmap(classifier, s)
        except Exception:  # noqa: BLE001 - a report without one heatmap beats no report
            heatmap = None
        thumbs.append(Thumbnail(slice=r, image=image, heatmap=heatmap))
    return thumbs
