"""Issue 15: a clear message instead of Qt's when no window can open (``ctviewer.platform_check``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctviewer import platform_check
from ctviewer.platform_check import install_hint, platform_name, problem

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check is for Linux desktops")


def test_platform_name():
    assert platform_name({"QT_QPA_PLATFORM": "offscreen"}) == "offscreen"
    assert platform_name({"QT_QPA_PLATFORM": "xcb:nograb"}) == "xcb"
    assert platform_name({"WAYLAND_DISPLAY": "wayland-0"}) == "wayland"
    assert platform_name({"DISPLAY": ":0"}) == "xcb"


def test_install_hint_names_debian_and_fedora_packages():
    hint = install_hint(["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0"])
    assert hint.startswith("sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1")
    assert "sudo dnf install xcb-util-cursor xcb-util-keysyms xcb-util-wm" in hint


@linux
def test_missing_libraries_are_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(platform_check, "_ldd_missing", lambda path, qt: ["libxcb-icccm.so.4"])
    monkeypatch.setattr(platform_check, "_loadable", lambda soname: False)
    message = problem({"DISPLAY": ":0"}, qt=Path("/nonexistent-qt"))
    assert "libxcb-cursor.so.0" in message  # loaded at run time by Qt 6.5+: never in ldd's list
    message = problem({"DISPLAY": ":0"}, qt=platform_check.qt_dir())
    assert "libxcb-icccm.so.4, libxcb-cursor.so.0" in message
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4" in message and "\n" not in message


@linux
def test_no_display_and_no_wayland_are_explained(monkeypatch):
    monkeypatch.setattr(platform_check, "missing_xcb_libraries", lambda qt=None: [])
    assert "DISPLAY is not set" in problem({})
    assert problem({"DISPLAY": ":0"}) == ""
    assert "WAYLAND_DISPLAY" in problem({"QT_QPA_PLATFORM": "wayland"})
    assert problem({"QT_QPA_PLATFORM": "wayland", "WAYLAND_DISPLAY": "wayland-1"}) == ""
    assert problem({"QT_QPA_PLATFORM": "offscreen"}) == ""


@linux
def test_the_real_plugin_resolves_when_the_libraries_are_installed():
    """On this machine: ldd's verdict on PySide6's xcb plugin is what the check reports."""
    qt = platform_check.qt_dir()
    if qt is None:
        pytest.skip("PySide6 is not installed")
    plugin = qt / "plugins" / "platforms" / "libqxcb.so"
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True,
                         env={**os.environ, "LD_LIBRARY_PATH": str(qt / "lib")}).stdout
    from_ldd = sorted({line.split()[0] for line in out.splitlines() if "not found" in line})
    assert sorted(set(platform_check.missing_xcb_libraries(qt)) - set(platform_check.RUNTIME_LOADED)) >= from_ldd


@linux
def test_launch_without_display_says_why_in_one_line_and_notifies(tmp_path):
    """A real process: no X display, the xcb platform.  One line on stderr (not Qt's abort), exit 1,
    and the same line as a desktop notification (a notify-send stand-in records its arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "notified.txt"
    fake = bin_dir / "notify-send"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{record}'\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(QT_QPA_PLATFORM="xcb", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               CTVIEWER_CONFIG_DIR=str(tmp_path / "c"), CTVIEWER_DATA_DIR=str(tmp_path / "d"),
               CTVIEWER_LOG_DIR=str(tmp_path / "l"))
    proc = subprocess.run([sys.executable, "-m", "ctviewer"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ctviewer: cannot open a window"), proc.stderr
    assert "could not load the qt platform plugin" not in proc.stderr.lower()
    assert lines[0].removeprefix("ctviewer: ") in record.read_text()
    check = subprocess.run([sys.executable, "-m", "ctviewer", "--check-platform"], capture_output=True, text=True,
                           env=env, timeout=60)
    assert check.returncode == 1 and "cannot open a window" in check.stderr
