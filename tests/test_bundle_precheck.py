"""Issue 26: ``./dev.sh bundle`` refuses to build a bundle that could not open a window.

Nothing is built here: the pre-check (``python -m ctviewer.platform_check --bundle-precheck``)
runs against a library folder made of links to this machine's libraries, with one left out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ctviewer import platform_check
from ctviewer.platform_check import PACKAGES, bundle_libraries, bundle_problem

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the bundle's xcb plugin is Linux's")
#: One of these is left out of the search path (the first this machine has).
CANDIDATES = ("libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-cursor.so.0")


@pytest.fixture(scope="module")
def qt() -> Path:
    qt = platform_check.qt_dir()
    if qt is None or not (qt / platform_check.XCB_PLUGIN).is_file():
        pytest.skip("PySide6 with its xcb plugin is not installed")
    return qt


def library_dir(folder: Path, qt: Path, leave_out: str | None) -> Path:
    """A library search path with every library the bundle needs except ``leave_out``: links to
    this machine's files, and for those it lacks, links to one of its libraries under their name
    (the dynamic loader's view: an ELF file of this machine's kind under that soname)."""
    found, missing = bundle_libraries(qt)
    system = {soname: path for soname, path in found.items() if path.parent != qt / "lib"}
    if not system:
        pytest.skip("no system library found for the xcb plugin")
    stand_in = system.get("libxcb.so.1") or next(iter(system.values()))
    folder.mkdir()
    for soname in [*system, *missing]:
        if soname != leave_out:
            (folder / soname).symlink_to(system.get(soname, stand_in))
    return folder


def precheck(library_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CTVIEWER_BUNDLE_LIBRARY_PATH", None)
    return subprocess.run([sys.executable, "-m", "ctviewer.platform_check", "--bundle-precheck",
                           "--library-path", str(library_path)],
                          capture_output=True, text=True, env=env, timeout=60)


def left_out(qt: Path) -> str:
    found, _ = bundle_libraries(qt)
    return next((soname for soname in CANDIDATES if soname in found), CANDIDATES[0])


def test_a_library_missing_from_the_search_path_stops_the_build_with_the_install_command(qt, tmp_path):
    lib = left_out(qt)
    deb, fedora = PACKAGES[lib]
    proc = precheck(library_dir(tmp_path / "lib", qt, leave_out=lib))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (f"bundle not built: Qt's X11 (xcb) display support needs {lib} ({deb}), not installed on "
                        "this build machine, so the bundle could not carry it and would not open a window on "
                        f"desktops without it. Install with: sudo apt-get install {deb} "
                        f"(Fedora: sudo dnf install {fedora})")


def test_the_precheck_passes_when_every_library_is_on_the_search_path(qt, tmp_path):
    proc = precheck(library_dir(tmp_path / "lib", qt, leave_out=None))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_every_missing_library_is_named_once_with_its_package(qt, tmp_path):
    folder = library_dir(tmp_path / "lib", qt, leave_out=None)
    for soname in CANDIDATES:
        (folder / soname).unlink()
    _, missing = bundle_libraries(qt, [folder])
    assert sorted(missing) == sorted(CANDIDATES)  # libxcb-cursor: linked, or loaded at run time (RUNTIME_LOADED)
    message = bundle_problem(qt, [folder])
    assert "\n" not in message
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 " in message
    for soname in CANDIDATES:
        assert message.count(soname) == 1 and f"{soname} ({PACKAGES[soname][0]})" in message


def test_the_walk_finds_what_ldd_lists(qt):
    """The pre-check reads the ELF files itself (so it can be given any search path); on this
    machine it must see the libraries ``ldd`` sees, in the same files."""
    if shutil.which("ldd") is None:
        pytest.skip("no ldd")
    out = subprocess.run(["ldd", str(qt / platform_check.XCB_PLUGIN)], capture_output=True, text=True,
                         env={**os.environ, "LD_LIBRARY_PATH": str(qt / "lib")}, timeout=60).stdout
    ldd = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            ldd[parts[0]] = None if parts[2] == "not" else Path(parts[2]).resolve()
    found, missing = bundle_libraries(qt)
    assert set(ldd) <= set(found) | set(missing)
    assert {s for s, p in ldd.items() if p is None} <= set(missing)
    for soname, path in ldd.items():
        if path is not None:
            assert found[soname].resolve() == path, soname


def test_debian_package_names_follow_debian_naming_when_not_listed():
    assert [platform_check._debian_package(s) for s in
            ("libXau.so.6", "libpcre2-8.so.0", "libglib-2.0.so.0", "libxcb-icccm.so.4")] == \
        ["libxau6", "libpcre2-8-0", "libglib-2.0-0", "libxcb-icccm4"]


def test_dev_sh_bundle_stops_before_pyinstaller_and_leaves_no_dist(qt, tmp_path):
    """``./dev.sh bundle`` itself (a copy beside this checkout's .venv): the one line is its last
    word, exit 1, and no dist/ (an earlier one removed: it is not what was asked for)."""
    venv = ROOT / ".venv"
    stamp = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    if not (venv / f".installed-{stamp}").is_file():
        pytest.skip("no .venv set up by ./dev.sh for this pyproject.toml (dev.sh would install one)")
    work = tmp_path / "checkout"
    work.mkdir()
    shutil.copy2(ROOT / "dev.sh", work / "dev.sh")
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
    (work / ".venv").symlink_to(venv)
    (work / "dist" / "ctviewer").mkdir(parents=True)
    (work / "dist" / "ctviewer" / "ctviewer").write_text("an earlier build\n")
    lib = left_out(qt)
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "CTVIEWER_BUNDLE_LIBRARY_PATH": str(library_dir(tmp_path / "lib", qt, leave_out=lib))}
    proc = subprocess.run(["sh", str(work / "dev.sh"), "bundle"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("bundle not built:") and lib in last
    assert f"Install with: sudo apt-get install {PACKAGES[lib][0]}" in last
    assert not (work / "dist").exists()
    assert not (work / "build").exists()  # PyInstaller never ran
