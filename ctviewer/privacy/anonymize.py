"""De-identified copies of whole studies (``ctviewer anonymize``, batch review's "Export
anonymised study…"), through ``ctviewer.privacy.deid``.

Layout of the copy: ``DIR/<pseudonymous patient ID>/<new study UID>/<new series UID>/<pseudonym>.dcm``
(PNG/JPEG slices: ``.../folder-<hash>/<pseudonym>.png``).  DICOM pixels are untouched (the
file is rewritten element by element, Pixel Data as it was); PNG/JPEG slices are re-encoded
losslessly as PNG without any metadata chunk.  Images whose pixels may show text
(``BurnedInAnnotation`` YES, secondary captures) are refused with the reason unless
``allow_burned_in``.  Each file is written to a temporary name and moved into place, so a
copy interrupted half-way leaves no half file.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from .deid import BurnedInAnnotation, Deidentifier


def anonymize_paths(paths: Sequence[str], dest: str | os.PathLike, key_file: str | None = None,
                    allow_burned_in: bool = False, progress: Callable | None = None,
                    deid: Deidentifier | None = None, cancelled: Callable[[], bool] | None = None
                    ) -> tuple[int, list[tuple[str, str]]]:
    """Copy every study under ``paths`` de-identified into ``dest``; (files written, [(path, reason)])."""
    from ctviewer.studies import scan

    patients, errors = scan(paths)
    refused = [(e.path or "", e.reason) for e in errors]
    jobs = [(p, st, se, f) for p in patients for st in p.studies for se in st.series for f in se.files]
    deid = deid or Deidentifier(key_file=key_file)
    bar = progress(len(jobs)) if progress else None
    done = 0
    try:
        for patient, study, series, path in jobs:
            if cancelled and cancelled():
                break
            try:
                out = anonymize_file(path, patient.key, study.uid, series.uid, Path(dest), deid, allow_burned_in)
                done += out is not None
            except BurnedInAnnotation as exc:
                refused.append((path, f"{exc} (use --allow-burned-in to copy it anyway)"))
            except Exception as exc:  # noqa: BLE001 - one hostile file must not stop the study
                refused.append((path, f"cannot be anonymised ({type(exc).__name__}: {exc})"))
            if bar:
                bar.step(path)
    finally:
        if bar:
            bar.close()
        deid.save_key()
    return done, refused


def anonymize_file(path: str, patient: str, study_uid: str, series_uid: str, dest: Path, deid: Deidentifier,
                   allow_burned_in: bool = False) -> Path | None:
    """One file's de-identified copy under ``dest``; its path."""
    from ctviewer.imaging.io import looks_like_raster, sniff

    folder = dest / deid.patient_id(patient) / _safe(deid.uid(study_uid, patient)) / _safe(deid.uid(series_uid, patient))
    if looks_like_raster(sniff(path)):
        from PIL import Image

        from ctviewer.imaging.io import load_slices

        s = load_slices(path)[0]
        target = folder / (os.path.splitext(deid.file_name(path))[0] + ".png")
        # A new PNG of the grey pixels alone: no text chunk, no EXIF, nothing of the original file.
        return _atomic(target, lambda tmp: Image.fromarray(s.pixels, "L").save(tmp, format="PNG"))
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
    deid.dataset(ds, patient, allow_burned_in=allow_burned_in)
    target = folder / (os.path.splitext(deid.file_name(path))[0] + ".dcm")
    return _atomic(target, lambda tmp: ds.save_as(tmp, enforce_file_format=False))


def _safe(part: str) -> str:
    return part.replace(":", "-").replace("/", "-")


def _atomic(target: Path, write) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{target.suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
