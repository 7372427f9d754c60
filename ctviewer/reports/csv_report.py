"""CSV of all slices of all studies: one row per slice (classified, excluded or refused).

Decisions:

- Columns: ``CSV_COLUMNS``, in that order, header row first; UTF-8, ``\\n``
  line ends inside the csv module's quoting (``newline=""``).
- ``frame`` is 1-based (DICOM's Referenced Frame Number), empty for
  single-frame objects; ``SliceResult.frame`` is 0-based.
- Numbers are written with ``repr`` (floats read back exactly); missing values
  (no position, refused slice's p) are empty strings; ``has_lung`` is
  ``1``/``0``.  ``error`` is empty for a classified slice.
- ``study_verdict``/``study_confidence`` repeat the study's verdict on each of
  its rows (empty when the study has none); ``model`` is ``StudyResult.model``.
- ``anonymize``: ``patient_name`` and ``patient_id`` are blank, ``path`` holds
  only the file name, "folder:" keys are pseudonymised and paths in errors
  are reduced to file names (see ``ctviewer.reports``).  UIDs are kept.
- Written to a temporary file and moved into place; returns the row count.
"""

from __future__ import annotations

import csv
import os
from typing import Iterable

from ctviewer.reports import atomic_path, deidentified, pseudonym, redact
from ctviewer.studies import SliceResult, StudyResult

CSV_COLUMNS = (
    "patient_id", "patient_name", "study_uid", "study_date", "series_uid", "path", "frame",
    "sop_instance_uid", "position", "instance_number", "has_lung", "lung_fraction", "p_covid",
    "label", "error", "reason", "study_verdict", "study_confidence", "model",
)


def _num(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _row(result: StudyResult, s: SliceResult, anonymize: bool) -> dict[str, str]:
    verdict = result.verdict
    return {
        "patient_id": result.patient.patient_id,
        "patient_name": "" if anonymize else result.patient.name,
        "study_uid": pseudonym(result.study.uid, anonymize),
        "study_date": result.study.date,
        "series_uid": pseudonym(s.series_uid, anonymize),
        "path": s.path,
        "frame": "" if s.frame is None else str(s.frame + 1),
        "sop_instance_uid": s.sop_instance_uid,
        "position": _num(s.position),
        "instance_number": _num(s.instance_number),
        "has_lung": "1" if s.has_lung else "0",
        "lung_fraction": _num(float(s.lung_fraction)),
        "p_covid": _num(None if s.p_covid is None else float(s.p_covid)),
        "label": s.label,
        "error": redact(s.error, s.path, anonymize),
        "reason": s.reason,
        "study_verdict": verdict.label if verdict else "",
        "study_confidence": _num(float(verdict.confidence)) if verdict else "",
        "model": result.model,
    }


def write_csv(results: Iterable[StudyResult], dest, anonymize: bool = False) -> int:
    """Write every slice of every study in ``results`` to ``dest``; return the number of rows."""
    rows = 0
    with atomic_path(dest) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for result in results:
                result = deidentified(result, anonymize)
                for s in result.slices:
                    writer.writerow(_row(result, s, anonymize))
                    rows += 1
    return rows
