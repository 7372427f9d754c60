"""Shared test fixtures.

``../shared/data`` (beside the repository) holds real data that is not part of
the project; tests that need it skip cleanly when it is absent (a fresh clone).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Headless whatever the caller's environment: Qt aborts the process without a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_report_header(config):
    scale = os.environ.get("QT_SCALE_FACTOR")
    return f"Qt platform: {os.environ['QT_QPA_PLATFORM']}" + (f", scale factor {scale}" if scale else "")


@pytest.fixture(autouse=True)
def _automatic_gc_between_tests():
    """A window turns Python's automatic garbage collector off for the application's life (the
    GUI thread collects on a timer: ``gui.workers.collect_on_the_gui_thread``).  The suite shares
    one QApplication, so each test gets the collector back afterwards, and the tests that do not
    make a window (training, TensorFlow) run with it as usual."""
    yield
    import gc

    if not gc.isenabled():
        gc.collect()
        gc.enable()


@pytest.fixture(scope="session")
def SHARED_DATA() -> Path:
    """Path of ``../shared/data``; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not available at {SHARED}")
    return SHARED
