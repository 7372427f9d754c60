"""Reading CT slices (DICOM, PNG/JPEG), Hounsfield units, windowing, series, model input.

Import-light on purpose: NumPy, pydicom and Pillow only (no Qt, no TensorFlow, no OpenCV).
The image operations (``resize``, ``morphology``, ``polygons``) are NumPy ports of the OpenCV
calls the model was trained with, checked against OpenCV bit for bit by the tests (issue 24:
OpenCV cost the bundle 172 MB).  The lung segmenter runs on ONNX Runtime (``lungs``).
"""

from .dicom import read_dicom
from .errors import ImagingError
from .io import is_candidate, load_slices
from .preprocess import PreprocessParams, to_model_input
from .raster import read_raster
from .series import LoadResult, Series, find_series, group_series, iter_files, iter_sources, sort_slices
from .slice import Slice
from .window import PRESETS, apply_window

__all__ = [
    "ImagingError",
    "LoadResult",
    "PRESETS",
    "PreprocessParams",
    "Series",
    "Slice",
    "apply_window",
    "find_series",
    "group_series",
    "is_candidate",
    "iter_files",
    "iter_sources",
    "load_slices",
    "read_dicom",
    "read_raster",
    "sort_slices",
    "to_model_input",
]
