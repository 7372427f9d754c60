"""Finding slice files in paths and grouping slices into sorted series.

Decisions:

- ``iter_files`` yields files as given and walks folders recursively in
  sorted (deterministic) order, skipping non-candidates (``io.is_candidate``)
  silently.  A DICOMDIR (or Philips DIRFILE, recognised by name or by its
  Media Storage SOP Class) is never yielded itself: it is expanded to the files
  it references, first, and nested DIRFILEs are expanded in turn.  Referenced
  paths are tried relative to the DICOMDIR's folder, then to the folders of the
  DICOMDIRs that led to it (Philips DIRFILEs name paths from the file-set root),
  then up to two parent folders, each case-insensitively; a
  reference that exists nowhere is yielded anyway (under the folder where the
  DICOMDIR's other references were found, else the file-set root), so the
  caller reports it as missing.
  Referenced paths are absolute when the DICOMDIR's path is, else relative to
  the working folder like the walked ones.  No file is yielded twice.
- ``group_series`` groups by Series Instance UID.  Slices without one (PNG/JPEG
  files, bare DICOM) form one series per folder, ``uid = "folder:<path>"``.
- Order inside a series: objects (files) are sorted by their first frame's
  position along the slice normal turned toward the head (``head_first_normal``),
  descending, so the head is at the top of the stack as in radiologists' viewers (cross product of the orientation's row and
  column vectors, the series' first orientation), when every object has
  position and orientation; else by Instance Number when every object has
  one; then by natural path order.  Frames of a multi-frame object stay
  together, in frame order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import pydicom

from .errors import ImagingError
from .io import is_candidate, load_slices, read_head
from .slice import Slice

_DICOMDIR_NAMES = ("DICOMDIR", "DIRFILE")
_MEDIA_STORAGE_DIRECTORY = b"1.2.840.10008.1.3.10"
_MAX_DIR_DEPTH = 8


def _key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def is_dicomdir(path: str) -> bool:
    """A DICOMDIR/DIRFILE by name, or a suffix-less file whose meta says Media Storage Directory."""
    name = os.path.basename(path)
    if name.upper() in _DICOMDIR_NAMES:
        return True
    if os.path.splitext(name)[1]:
        return False
    try:
        head = read_head(path, 512)
    except OSError:
        return False
    return head[128:132] == b"DICM" and _MEDIA_STORAGE_DIRECTORY + b"\0" in head


def _resolve(roots: list[str], parts: list[str]) -> str | None:
    """Path of a referenced file under the first root where it exists (case-insensitively)."""
    for folder in roots:
        found = _find_case_insensitive(folder, parts)
        if found is not None:
            return found
    return None


def _roots(folder: str, chain: tuple[str, ...]) -> list[str]:
    """Where references may be relative to: own folder, the folders of the DICOMDIRs that
    led here (file-set roots), then up to two parent folders."""
    roots = [folder, *reversed(chain)]
    parent = folder
    for _ in range(2):
        parent = os.path.dirname(parent)
        roots.append(parent)
    return list(dict.fromkeys(roots))


def _find_case_insensitive(folder: str, parts: list[str]) -> str | None:
    path = os.path.join(folder, *parts)
    if os.path.exists(path):
        return path
    current = folder
    for part in parts:
        try:
            names = os.listdir(current)
        except OSError:
            return None
        match = next((n for n in names if n.lower() == part.lower()), None)
        if match is None:
            return None
        current = os.path.join(current, match)
    return current


def _file_ids(ds: pydicom.Dataset) -> list[list[str]]:
    ids = []
    for record in ds.get("DirectoryRecordSequence") or []:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else [str(p) for p in file_id]
        parts = [p.strip() for p in parts if p.strip() not in ("", ".", "..")]
        if any("\0" in p or "/" in p or "\\" in p for p in parts):
            continue  # not a File ID (a hostile DICOMDIR: found by fuzzing, a NUL in a component)
        if parts:
            ids.append(parts)
    return ids


def dicomdir_references(path: str, chain: tuple[str, ...] = ()) -> list[str]:
    """Files a DICOMDIR references, in record order (may not exist).  Raises on a broken DICOMDIR.

    A missing reference is placed under the folder where the others were found
    (else the file-set root: the first DICOMDIR's folder, else its own folder).
    """
    ds = pydicom.dcmread(path, force=True)
    folder = os.path.dirname(os.path.abspath(path))
    roots = _roots(folder, chain)
    ids = _file_ids(ds)
    found = [_resolve(roots, parts) for parts in ids]
    base = chain[0] if chain else folder
    for parts, ref in zip(ids, found):
        if ref is not None:
            base = ref[: len(ref) - len(os.path.join(*parts))].rstrip(os.sep) or base
            break
    refs = [ref if ref is not None else os.path.join(base, *parts) for parts, ref in zip(ids, found)]
    return refs if os.path.isabs(path) else [os.path.relpath(r) for r in refs]


def _expand_dicomdir(path: str, seen: set[str], chain: tuple[str, ...] = ()) -> Iterator[str]:
    """Referenced files of a DICOMDIR, nested ones expanded; a broken DICOMDIR yields itself."""
    try:
        refs = dicomdir_references(path, chain)
    except Exception:  # hostile file: let the loader report it
        yield path
        return
    chain = (*chain, os.path.dirname(os.path.abspath(path)))
    for ref in refs:
        key = _key(ref)
        if key in seen:
            continue
        seen.add(key)
        if len(chain) < _MAX_DIR_DEPTH and os.path.isfile(ref) and is_dicomdir(ref):
            yield from _expand_dicomdir(ref, seen, chain)
        else:
            yield ref


def _walk(folder: str) -> list[str]:
    files: list[str] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(os.path.join(root, n) for n in sorted(names))
    return files


def iter_files(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Slice files in ``paths``: files as given, folders walked, DICOMDIRs expanded."""
    seen: set[str] = set()
    for given in paths:
        given = os.fspath(given)
        if os.path.isdir(given):
            files = _walk(given)
            dicomdirs = [f for f in files if is_candidate(f) and is_dicomdir(f)]
            for d in dicomdirs:  # parents come first in the walk, so nested DIRFILEs expand via them
                if _key(d) not in seen:
                    seen.add(_key(d))
                    yield from _expand_dicomdir(d, seen)
            for f in files:
                if _key(f) not in seen and is_candidate(f):
                    seen.add(_key(f))
                    yield f
        elif _key(given) not in seen:
            seen.add(_key(given))
            if os.path.isfile(given) and is_dicomdir(given):
                yield from _expand_dicomdir(given, seen)
            else:
                yield given


@dataclass(frozen=True)
class LoadResult:
    """One file's outcome: its slices, or the error saying why it has none."""

    path: str
    slices: tuple[Slice, ...] = ()
    error: ImagingError | None = None


def iter_sources(paths: Iterable[str | os.PathLike]) -> Iterator[LoadResult]:
    """Load every file of ``iter_files(paths)``; errors are results, not exceptions."""
    for path in iter_files(paths):
        try:
            yield LoadResult(path, tuple(load_slices(path)))
        except ImagingError as exc:
            yield LoadResult(path, error=exc)


@dataclass(frozen=True, eq=False)
class Series:
    """Slices of one series, sorted for scrolling."""

    uid: str
    slices: tuple[Slice, ...]
    description: str = ""
    modality: str | None = None
    study_instance_uid: str | None = None

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def label(self) -> str:
        text = self.description or os.path.basename(os.path.dirname(self.slices[0].path)) or self.uid
        return f"{self.modality or '?'} {text} ({len(self.slices)})"


def natural_key(path: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path))


def head_first_normal(orientation) -> np.ndarray | None:
    """The unit slice normal (row x column of ImageOrientationPatient), turned to point to the
    patient's head (+z in DICOM's LPS coordinates) whenever it has a z component: positions
    along it, sorted descending, put the head at the top of the stack, as radiologists' viewers
    do.  None when the orientation is missing or degenerate."""
    if orientation is None:
        return None
    o = np.asarray(orientation, dtype=float)
    if o.shape != (6,):
        return None
    n = np.cross(o[:3], o[3:])
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        return None
    n = n / norm
    return -n if n[2] < 0 else n


def _normal(slices: list[Slice]) -> np.ndarray | None:
    for s in slices:
        n = head_first_normal(s.orientation)
        if n is not None:
            return n
    return None


def sort_slices(slices: Iterable[Slice]) -> list[Slice]:
    """Slices of one series in anatomical order (see module docstring)."""
    objects: dict[tuple[str, str | None], list[Slice]] = {}
    for s in slices:
        objects.setdefault((s.path, s.sop_instance_uid), []).append(s)
    groups = [sorted(g, key=lambda s: -1 if s.frame is None else s.frame) for g in objects.values()]
    firsts = [g[0] for g in groups]
    normal = _normal(firsts)
    by_position = normal is not None and all(s.position is not None for s in firsts)
    by_number = all(s.instance_number is not None for s in firsts)

    def key(group: list[Slice]) -> tuple:
        s = group[0]
        primary = -float(np.dot(s.position, normal)) if by_position else 0.0  # type: ignore[arg-type]
        number = s.instance_number if by_number else 0
        return (primary, number, natural_key(s.path))

    return [s for g in sorted(groups, key=key) for s in g]


def _series_uid(s: Slice) -> str:
    return s.series_instance_uid or f"folder:{os.path.dirname(os.path.abspath(s.path))}"


def group_series(slices: Iterable[Slice]) -> list[Series]:
    """Slices grouped by Series Instance UID (else folder), each sorted; series in first-seen order."""
    groups: dict[str, list[Slice]] = {}
    for s in slices:
        groups.setdefault(_series_uid(s), []).append(s)
    series = []
    for uid, members in groups.items():
        ordered = sort_slices(members)
        first = ordered[0]
        series.append(Series(
            uid=uid,
            slices=tuple(ordered),
            description=first.description,
            modality=first.modality,
            study_instance_uid=first.study_instance_uid,
        ))
    return series


def find_series(paths: Iterable[str | os.PathLike]) -> tuple[list[Series], list[ImagingError]]:
    """Load everything under ``paths``: the series found and the files refused."""
    slices: list[Slice] = []
    errors: list[ImagingError] = []
    for result in iter_sources(paths):
        if result.error is not None:
            errors.append(result.error)
        slices.extend(result.slices)
    return group_series(slices), errors
