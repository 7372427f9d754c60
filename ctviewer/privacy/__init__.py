"""Privacy: ``deid`` (DICOM PS3.15 de-identification of every export), ``anonymize``
(``ctviewer anonymize``: de-identified copies of whole studies) and ``check`` (the checker,
``python -m ctviewer.deid_check``: identifying values of the sources found in outputs)."""

from .anonymize import anonymize_file, anonymize_paths
from .check import find, identifying_values
from .deid import BurnedInAnnotation, Deidentifier, mark_deidentified

__all__ = ["BurnedInAnnotation", "Deidentifier", "anonymize_file", "anonymize_paths", "find", "identifying_values",
           "mark_deidentified"]
