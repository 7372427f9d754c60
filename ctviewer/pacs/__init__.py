"""The hospital's PACS: ``client`` (DICOMweb QIDO/WADO/STOW-RS and DIMSE C-FIND/C-GET/C-MOVE/C-STORE,
``ctviewer pacs``, ``report --send``) and ``cache`` (the private study cache, mode 0700)."""

from .client import DicomWebNode, DimseNode, PacsError, node_from_args

__all__ = ["DicomWebNode", "DimseNode", "PacsError", "node_from_args"]
