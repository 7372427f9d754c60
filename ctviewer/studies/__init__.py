"""Studies: from files to a verdict per study.

``headers``      header-only scan of files, folders and DICOMDIRs into patient -> study -> series
``records``      the plain records shared by the scanner, the engines, the reports and the GUI
``batch``        the batch engine of ``ctviewer classify``: files in, one prediction record per slice out
``study_batch``  classification of a whole study (slices sorted, lung gate, thumbnails) on that engine
``verdict``      the lung gate, the series gate and the study rule with its calibration (docs/verdict.md)

The names below are the part's public face; the modules hold the rest.
"""

from .batch import Record, classify_files
from .headers import scan
from .records import PatientNode, SeriesNode, SliceResult, StudyNode, StudyResult, Thumbnail, Verdict
from .study_batch import BatchControl, classify_study
from .verdict import StudyCalibration, study_verdict

__all__ = ["BatchControl", "PatientNode", "Record", "SeriesNode", "SliceResult", "StudyCalibration", "StudyNode",
           "StudyResult", "Thumbnail", "Verdict", "classify_files", "classify_study", "scan", "study_verdict"]
