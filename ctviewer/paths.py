"""Where the application's bundled files live (no heavy imports)."""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    """``resources/`` beside the package, or inside a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"


def samples_dir() -> Path:
    return resources_dir() / "samples"


def icon_path() -> Path:
    return resources_dir() / "icons" / "ctviewer.svg"
