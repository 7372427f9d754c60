"""One entry point for any slice file: sniff the content, then dispatch.

Decisions:

- Content decides, not the suffix: PNG/JPEG signatures go to ``raster``;
  "DICM" at byte 128, or a first data element of group 0002/0008 at byte 0
  (no preamble) or at byte 128 (preamble without "DICM"), goes to ``dicom``.
  Anything else is refused as "not a DICOM or PNG/JPEG image".
- ``is_candidate`` is the cheap filter of a folder walk: documentation and
  other known non-image suffixes are skipped silently; image/DICOM suffixes
  and suffix-less files are candidates; any other file is one only when its
  first bytes sniff as an image or DICOM.
"""

from __future__ import annotations

import os

from .dicom import read_dicom
from .errors import ImagingError
from .raster import looks_like_raster, read_raster
from .slice import Slice

HEAD_BYTES = 136
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", ".dic")
IMAGE_SUFFIXES = DICOM_SUFFIXES + (".png", ".jpg", ".jpeg")
SKIPPED_SUFFIXES = (
    ".txt", ".tsv", ".csv", ".md", ".rst", ".json", ".xml", ".html", ".htm", ".pdf", ".yml",
    ".yaml", ".ini", ".cfg", ".log", ".py", ".sh", ".bat", ".zip", ".gz", ".tar", ".db",
    ".sqlite", ".nii", ".exe", ".dll", ".ds_store",
)
SKIPPED_NAMES = ("readme", "license", "licence", "copying", "notice", "authors", "changelog", "thumbs.db")
_DICOM_GROUPS = (0x0002, 0x0008)


def read_head(path: str | os.PathLike, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of a file (raises OSError)."""
    with open(path, "rb") as fh:
        return fh.read(size)


def _plausible_tag(data: bytes) -> bool:
    """True when ``data`` starts with a tag of group 0002 or 0008 (either byte order)."""
    if len(data) < 8:
        return False
    little = int.from_bytes(data[0:2], "little")
    big = int.from_bytes(data[0:2], "big")
    return little in _DICOM_GROUPS or big in _DICOM_GROUPS


def looks_like_dicom(head: bytes) -> bool:
    """DICOM signature, or a bare data set that starts like one."""
    if head[128:132] == b"DICM":
        return True
    if _plausible_tag(head):
        return True
    return len(head) >= 136 and not any(head[:128]) and _plausible_tag(head[128:136])


def is_candidate(path: str | os.PathLike) -> bool:
    """Whether a file found in a folder walk is worth loading (and reporting if it fails)."""
    name = os.path.basename(os.fspath(path)).lower()
    stem, suffix = os.path.splitext(name)
    if name.startswith("."):
        return False
    if suffix in IMAGE_SUFFIXES or name in ("dicomdir", "dirfile"):
        return True
    if suffix in SKIPPED_SUFFIXES or stem in SKIPPED_NAMES:
        return False
    if not suffix:
        return True
    try:
        head = read_head(path)
    except OSError:
        return False
    return looks_like_raster(head) or looks_like_dicom(head)


def sniff(path: str) -> bytes:
    """The first bytes of a file to sniff its kind, or ``ImagingError`` saying why they cannot be read."""
    try:
        return read_head(path)
    except FileNotFoundError:
        raise ImagingError(path, "file not found") from None
    except IsADirectoryError:
        raise ImagingError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise ImagingError(path, f"cannot read the file ({exc.strerror or exc})") from None
    except ValueError as exc:  # a name with a NUL byte (a hostile DICOMDIR's reference)
        raise ImagingError(repr(str(path)), f"not a valid file name ({exc})") from None


def load_slices(path: str | os.PathLike) -> list[Slice]:
    """Slices of one file (one per frame), or ``ImagingError`` saying why not."""
    path = os.fspath(path)
    head = sniff(path)
    if looks_like_raster(head):
        return [read_raster(path)]
    if looks_like_dicom(head):
        return read_dicom(path)
    raise ImagingError(path, "not a DICOM or PNG/JPEG image")
