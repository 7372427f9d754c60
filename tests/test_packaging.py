"""What the bundle and the desktop integration are made of (the build itself runs in CI)."""

from __future__ import annotations

import configparser
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_desktop_entry_opens_dicom_files():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(ROOT / "resources" / "linux" / "ctviewer.desktop", encoding="utf-8")
    d = entry["Desktop Entry"]
    assert d["Type"] == "Application" and d["Name"] == "CT Viewer" and d["Terminal"] == "false"
    assert d["Exec"].startswith("ctviewer ") and d["Exec"].endswith("%F")  # dev.sh desktop makes it absolute
    assert "application/dicom" in d["MimeType"].split(";")
    assert d["Icon"] == "ctviewer"


def test_icons_exist_in_the_formats_the_platforms_need():
    png = (ROOT / "resources" / "icons" / "ctviewer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (256, 256)  # PyInstaller makes .ico/.icns from it on Windows/macOS
    assert b"<svg" in (ROOT / "resources" / "icons" / "ctviewer.svg").read_bytes()


def test_build_spec_is_one_folder_and_carries_the_model_samples_and_icons():
    spec = (ROOT / "build.spec").read_text()
    compile(spec, "build.spec", "exec")
    assert "COLLECT(" in spec and "exclude_binaries=True" in spec  # one folder, not one file
    for folder in ('"models", "ct-resnet50"', '"samples"', '"icons"'):
        assert folder in spec
    assert '"tests"' in spec and '"training"' in spec  # left out


def test_bundle_entry_point_is_the_cli():
    main = (ROOT / "ctviewer" / "__main__.py").read_text()
    assert "from ctviewer.cli import main" in main
