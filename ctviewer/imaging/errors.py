"""The one exception type the imaging layer raises for a file it will not load."""

from __future__ import annotations

import os


class ImagingError(Exception):
    """A file could not be turned into slices.

    ``path`` names the file and ``reason`` says why in words a radiologist
    understands (no tracebacks, no pydicom internals).  ``str(error)`` is
    ``"<file name>: <reason>"``.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = os.fspath(path) if path is not None else ""
        self.reason = reason
        name = os.path.basename(self.path) if self.path else "<input>"
        super().__init__(f"{name}: {reason}")
