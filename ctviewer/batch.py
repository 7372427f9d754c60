"""The batch engine: files and folders in, one prediction record per slice out.

Shared by ``ctviewer classify`` and the GUI's batch review.  Files are read and
preprocessed on worker threads (pydicom's decoders and OpenCV release the GIL
for their heavy parts) while the model runs on full batches, so decoding does
not dominate.  A bad file becomes a row with its reason; the batch goes on.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ctviewer.imaging import ImagingError
from ctviewer.imaging.io import load_slices
from ctviewer.imaging.preprocess import PreprocessParams, to_model_input

# DICOM modalities the model may be shown: CT, and captures/unknown that may hold CT.
CLASSIFIABLE_MODALITIES = frozenset({"CT", "OT", "SC", ""})
COLUMNS = ("path", "frame", "sop_instance_uid", "label", "p_covid", "error", "model", "pixel_sha256")


@dataclass(frozen=True)
class Record:
    """One CSV row: a classified slice, or a file that could not be classified."""

    path: str
    frame: int | None = None
    sop_instance_uid: str = ""
    label: str = ""
    p_covid: float | None = None
    error: str = ""
    model: str = ""
    pixel_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

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
        ]


@dataclass
class _Prepared:
    path: str
    items: list  # [(slice, input)]
    error: str = ""


def check_classifiable(slices) -> None:
    """The model reads chest CT: refuse DICOM images of other modalities (MR, US, ...)."""
    for s in slices:
        modality = (s.modality or "").upper()
        if s.is_hu and modality not in CLASSIFIABLE_MODALITIES:
            raise ImagingError(s.path, f"not a CT image (modality {modality}): the model reads CT slices only")


def _prepare(path: str, params: PreprocessParams) -> _Prepared:
    try:
        slices = load_slices(path)
        check_classifiable(slices)
        return _Prepared(path, [(s, to_model_input(s, params)) for s in slices])
    except ImagingError as exc:
        return _Prepared(path, [], exc.reason)
    except MemoryError:
        return _Prepared(path, [], "not enough memory to read this file")
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the batch; report it on the file
        return _Prepared(path, [], f"unexpected error while reading ({type(exc).__name__}: {exc})")


def pixel_hash(pixels: np.ndarray) -> str:
    a = np.ascontiguousarray(pixels)
    return hashlib.sha256(a.tobytes()).hexdigest()[:16]


def classify_files(
    files: Iterable[str],
    classifier,
    batch_size: int = 64,
    workers: int = 2,
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
    pending: list[_Prepared] = []
    n_inputs = 0

    def flush() -> Iterator[Record]:
        nonlocal pending, n_inputs
        inputs = [inp for prep in pending for _, inp in prep.items]
        probs = classifier.probabilities(np.stack(inputs)) if inputs else np.zeros(0)
        k = 0
        for prep in pending:
            if prep.error:
                yield Record(os.fspath(prep.path), error=prep.error, model=model_name)
            for s, _ in prep.items:
                p = float(probs[k])
                k += 1
                yield Record(
                    s.path, s.frame, s.sop_instance_uid or "", classifier.label_for(p), p, "", model_name, pixel_hash(s.pixels)
                )
            if on_file_done:
                on_file_done(prep.path)
        pending, n_inputs = [], 0

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ctviewer-read") as pool:
        window: deque = deque()
        it = iter(files)
        ahead = max(4, 2 * batch_size)
        exhausted = False
        while True:
            while not exhausted and len(window) < ahead:
                try:
                    f = next(it)
                except StopIteration:
                    exhausted = True
                    break
                window.append(pool.submit(_prepare, os.fspath(f), params))
            if not window:
                break
            if cancelled and cancelled():
                for fut in window:
                    fut.cancel()
                break
            prep = window.popleft().result()
            pending.append(prep)
            n_inputs += len(prep.items)
            if n_inputs >= batch_size:
                yield from flush()
        if pending and not (cancelled and cancelled()):
            yield from flush()
