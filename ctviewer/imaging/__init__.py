"""Reading CT slices (DICOM, PNG/JPEG), Hounsfield units, windowing, series, model input.

Import-light on purpose: numpy, pydicom and OpenCV only (no Qt, no TensorFlow).

OpenCV runs single-threaded in this process.  Its own thread pool parallelised each
512x512 resize or labelling over the cores, which TensorFlow needs while the batch
engine's readers run: on 2 cores that pool cost about 1.8 core-ms per slice in the
readers (6.3 against 4.4, benchmarks/README.md) and saved under 0.4 ms of latency on a
single slice.
"""

import cv2

cv2.setNumThreads(1)

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
