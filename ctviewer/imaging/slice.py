"""The immutable record of one 2-D CT slice, whatever file it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Slice:
    """One 2-D slice.

    ``pixels`` is a 2-D array.  For DICOM (``is_hu``) it holds float32
    Hounsfield units (modality transform applied); for PNG/JPEG it holds the
    already windowed uint8 grey levels.
    """

    pixels: np.ndarray
    path: str
    is_hu: bool
    frame: int | None = None  # 0-based frame index for multi-frame objects
    invert: bool = False  # MONOCHROME1: high values display dark
    window: tuple[float, float] | None = None  # file's (center, width)
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None
    instance_number: int | None = None
    position: tuple[float, float, float] | None = None  # ImagePositionPatient
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient (6)
    pixel_spacing: tuple[float, float] | None = None
    modality: str | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.pixels.shape[:2])  # type: ignore[return-value]

    @property
    def label(self) -> str:
        """A short human name: file name plus frame for multi-frame objects."""
        import os

        name = os.path.basename(self.path)
        return f"{name} [frame {self.frame + 1}]" if self.frame is not None else name
