"""Setting up the libraries the model runs on: quiet, and with the threads each caller chose.

Library chatter is not for users: ONNX Runtime's optimiser warnings and pydicom's warnings
about malformed files (every refused file gets its reason where the user sees it: the CSV,
the window's message) are silenced once, here, by every entry point that loads the model
(``ctviewer classify``/``report``, the self-test, the window's model task).
"""

from __future__ import annotations

import logging
import os
import warnings

#: ONNX Runtime threads for the window's classifier.  The GUI asks for the slice on screen, one
#: or a few at a time; measured in benchmarks/bench_gui.py (see benchmarks/README.md).
GUI_THREADS = 2


def quiet_libraries() -> None:
    """Silence pydicom's warnings and ONNX Runtime's default logger (errors still pass)."""
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:  # reported properly when the model is loaded
        pass


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def describe(card) -> str:
    """What the model runs on, for the self-test and the About box: ONNX Runtime on the CPU in
    float32 is the one runtime that ships (issue 24: int8 and bf16 moved p(COVID) by more than
    0.01, benchmarks/README.md), whatever instructions the CPU has."""
    try:
        import onnxruntime

        version = f"ONNX Runtime {onnxruntime.__version__}"
    except ImportError:  # reported properly when the model is loaded
        version = "ONNX Runtime (not installed)"
    stored = ""
    for entry in card.extra.get("file_history", []):
        if isinstance(entry, dict) and entry.get("sha256") == card.sha256 and "float32_sha256" in entry:
            stored = ", weights stored in float16"
    return f"{version} on the CPU, float32 arithmetic{stored}"
