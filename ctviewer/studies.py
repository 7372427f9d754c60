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


@dataclass(frozen=True)
class SliceResult:
    """One classified (or refused) slice of a batch."""

    path: str
    frame: int | None = None  # 0-based for multi-frame objects
    sop_instance_uid: str = ""
    series_uid: str = ""
    position: float | None = None  # along the slice normal (mm), else None
    instance_number: int | None = None
    p_covid: float | None = None
    label: str = ""
    has_lung: bool = True  # False: neck, abdomen, scout... (left out of the verdict)
    lung_fraction: float = 0.0  # share of the body that is lung, the has_lung criterion
    error: str = ""  # why it was not classified (then p_covid is None)

    @property
    def ok(self) -> bool:
        return not self.error and self.p_covid is not None


@dataclass(frozen=True)
class Verdict:
    label: str  # "COVID", "non-COVID", or "indeterminate" (no lung slices classified)
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


@dataclass(frozen=True, eq=False)
class Thumbnail:
    """A suspicious slice for the reports: the image in the lung window and its heatmap."""

    slice: SliceResult
    image: object  # np.ndarray uint8 (H, W): the slice in the model's (lung) window
    heatmap: object | None = None  # np.ndarray float32 (H, W) in 0..1, same shape, or None
