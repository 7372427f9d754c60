"""Reports of a batch study review: CSV (all slices), PDF (one study), DICOM SR and Secondary Capture.

No Qt and no TensorFlow here: numpy, matplotlib (``Figure`` + ``PdfPages``,
never ``pyplot`` and never ``matplotlib.use``, so the GUI's backend is left
alone), pydicom and the standard library.  The writers are imported lazily
(``from ctviewer.reports import write_pdf`` loads matplotlib only then).

Anonymisation, the same in every writer (``anonymize=True``): the writer reads the
de-identified copy of the study record (``deidentified``, ``ctviewer.privacy.deid``: DICOM PS3.15
Basic Profile with modified dates and clean descriptors): a pseudonymous patient ID, no
name, birth date, sex or accession number, study/series/instance UIDs replaced consistently
within the export (the SR's references point at the anonymised images' UIDs when the same
``Deidentifier`` or key file anonymised them), dates shifted per patient, descriptions
removed unless allow-listed, file names replaced by pseudonyms, paths in messages too.

Every writer writes to a temporary file beside the destination and moves it
into place with ``os.replace``: a reader never sees half a report.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = [
    "CSV_COLUMNS", "write_csv", "write_pdf", "write_sr", "write_heatmap_sc", "read_sr",
    "pseudonym", "redact", "atomic_path",
]

_LAZY = {
    "CSV_COLUMNS": "csv_report", "write_csv": "csv_report",
    "write_pdf": "pdf",
    "write_sr": "dicom_sr", "write_heatmap_sc": "dicom_sr", "read_sr": "dicom_sr",
}

RESEARCH_ONLY = "Research use only — not for diagnosis"


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def deidentified(result, anonymize: bool):
    """The record a writer may show: ``result`` itself, or with ``anonymize`` its de-identified
    copy (``deid.Deidentifier.study_result``; a fresh Deidentifier when the caller did not make
    one for the whole export)."""
    if not anonymize or getattr(result, "deidentified", False):
        return result
    from ctviewer.privacy import Deidentifier

    return Deidentifier().study_result(result)


def pseudonym(uid: str, anonymize: bool) -> str:
    """A study/series key fit for an anonymised report (see the module docstring)."""
    if anonymize and uid.startswith("folder:"):
        return "folder:" + hashlib.sha256(uid.encode("utf-8")).hexdigest()[:12]
    return uid


def redact(text: str, path: str, anonymize: bool) -> str:
    """``text`` with ``path`` (and its absolute form) replaced by the file name when anonymising."""
    if not anonymize or not text or not path:
        return text
    name = os.path.basename(path)
    for p in sorted({path, os.path.abspath(path)}, key=len, reverse=True):
        text = text.replace(p, name)
    return text


def software_version() -> str:
    from ctviewer import __version__

    return __version__


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (os.umask(0) and back
    would briefly loosen it for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)  # the strictest value while it is read
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest``, on failure it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
