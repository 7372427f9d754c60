"""The records of batch study review, shared by the scanner, the study verdict,
the batch runner, the reports (CSV, PDF, DICOM SR) and the GUI.

Plain frozen dataclasses (no Qt, no TensorFlow); the code that fills them
lives in ``scan`` (headers → patient/study/series tree), ``verdict`` (lung
slices and the study rule) and ``study_batch`` (classification of a study).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SeriesNode:
    """One series found by a header scan (no pixels read)."""

    uid: str  # Series Instance UID, or "folder:<path>" for a folder of PNG/JPEG slices
    files: tuple[str, ...]  # files in scan order (sorting by position happens when loaded)
    modality: str = ""
    description: str = ""
    number: int | None = None  # Series Number
    n_frames: int = 0  # slices: files x frames
    study_uid: str = ""


@dataclass(frozen=True)
class StudyNode:
    uid: str  # Study Instance UID, or "folder:<path>"
    series: tuple[SeriesNode, ...]
    date: str = ""  # YYYY-MM-DD when known
    description: str = ""
    accession: str = ""
    patient_key: str = ""


@dataclass(frozen=True)
class PatientNode:
    key: str  # Patient ID, else the name, else "unknown"
    name: str = ""
    patient_id: str = ""
    birth_date: str = ""
    sex: str = ""
    studies: tuple[StudyNode, ...] = ()


class Outcome:
    """What a slice's record says of it (``SliceResult`` here, ``batch.Record``): it needs the
    fields ``error``, ``reason`` and ``p_covid``."""

    error: str
    reason: str
    p_covid: float | None

    @property
    def ok(self) -> bool:
        """Read and gated: judged, or not judged with a ``reason``."""
        return not self.error

    @property
    def judged(self) -> bool:
        """The model's opinion on it may be shown: a label and p(COVID)."""
        return not self.error and not self.reason and self.p_covid is not None


@dataclass(frozen=True)
class SliceResult(Outcome):
    """One classified (or refused) slice of a batch."""

    path: str
    frame: int | None = None  # 0-based for multi-frame objects
    sop_instance_uid: str = ""
    series_uid: str = ""
    position: float | None = None  # along the slice normal (mm), else None
    instance_number: int | None = None
    p_covid: float | None = None
    label: str = ""
    has_lung: bool = True  # the gate admitted it: axial, lung found (or between lung slices)
    lung_fraction: float = 0.0  # share of the chest that is lung (verdict.lung_fraction)
    error: str = ""  # why the file was refused (then p_covid is None)
    reason: str = ""  # why the gate did not let the model judge it (then p_covid is None, label "")


@dataclass(frozen=True)
class Verdict:
    label: str  # "COVID", "non-COVID", "uncertain" (mixed evidence) or "indeterminate" (no lung slice judged)
    confidence: float  # 0..1, see verdict.study_verdict
    score: float  # the statistic the rule thresholds
    n_lung: int  # slices with lung that were classified
    n_positive: int  # of those, called COVID
    n_excluded: int  # classified slices without lung
    n_refused: int
    rule: str  # one sentence: how the label was decided


@dataclass
class StudyResult:
    """A classified study (or series): what the reports and the GUI show."""

    study: StudyNode
    patient: PatientNode
    slices: list[SliceResult] = field(default_factory=list)
    verdict: Verdict | None = None
    model: str = ""  # "name version"
    model_sha256: str = ""
    threshold: float = 0.5
    started: str = ""  # ISO 8601 UTC
    finished: str = ""
    cancelled: bool = False
    deidentified: bool = False  # made by deid.Deidentifier.study_result: pseudonyms, shifted dates


@dataclass(frozen=True, eq=False)
class Thumbnail:
    """A suspicious slice for the reports: the image in the lung window and its heatmap."""

    slice: SliceResult
    image: object  # np.ndarray uint8 (H, W): the slice in the model's (lung) window
    heatmap: object | None = None  # np.ndarray float32 (H, W) in 0..1, same shape, or None
