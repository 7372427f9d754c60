"""Shared test fixtures.

``../shared/data`` (beside the repository) holds real data that is not part of
the project; tests that need it skip cleanly when it is absent (a fresh clone).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def SHARED_DATA() -> Path:
    """Path of ``../shared/data``; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not available at {SHARED}")
    return SHARED
