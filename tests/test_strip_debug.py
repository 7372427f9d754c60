"""`.ci/strip_debug.py`: the bundle's libraries lose their debugging information only where the
loader provably sees the same file (issue 24: 434 -> 384 MB)."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("strip_debug", ROOT / ".ci" / "strip_debug.py")
strip_debug = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(strip_debug)

needs_strip = pytest.mark.skipif(shutil.which("strip") is None or not sys.platform.startswith("linux"),
                                 reason="needs binutils' strip on Linux")


def _extension(package) -> Path:
    """A compiled extension module of an installed package."""
    found = sorted(Path(package.__file__).parent.rglob("*.so"), key=lambda p: p.stat().st_size)
    if not found:
        pytest.skip(f"{package.__name__} has no compiled extension here")
    return found[-1]


def test_program_headers_are_read_from_real_elf_files_and_nothing_else(tmp_path):
    lib = _extension(pytest.importorskip("kiwisolver"))
    headers = strip_debug.program_headers(lib)
    assert headers and any(h[0] == strip_debug.PT_LOAD for h in headers)
    (tmp_path / "text.so").write_text("not an ELF file")
    assert strip_debug.program_headers(tmp_path / "text.so") is None
    assert not strip_debug.is_elf(tmp_path / "text.so")
    (tmp_path / "short.so").write_bytes(b"\x7fELF\x02\x01")
    assert strip_debug.program_headers(tmp_path / "short.so") is None
    # an ELF file with bytes after its structures (a self-extracting archive) is never stripped
    appended = tmp_path / "appended.so"
    appended.write_bytes(lib.read_bytes() + b"payload that strip would drop")
    assert strip_debug.program_headers(appended) is None and strip_debug.is_elf(appended)


def test_loads_like_accepts_moved_offsets_and_refuses_what_the_loader_would_see_differently():
    load = (strip_debug.PT_LOAD, 5, 0x1000, 0x201000, 0x201000, 0x500, 0x800, 0x1000)
    note = (4, 4, 0x2A8, 0x2A8, 0x2A8, 0x20, 0x20, 8)
    assert strip_debug.loads_like([load, note], [load, note])
    moved = (strip_debug.PT_LOAD, 5, 0x3000, 0x201000, 0x201000, 0x500, 0x800, 0x1000)
    assert strip_debug.loads_like([load], [moved])  # a page further into the file: fine
    misaligned = (strip_debug.PT_LOAD, 5, 0x3098, 0x201000, 0x201000, 0x500, 0x800, 0x1000)
    assert not strip_debug.loads_like([load], [misaligned])  # "not page-aligned" at load time
    shrunk = (strip_debug.PT_LOAD, 5, 0x1000, 0x201000, 0x201000, 0x0, 0x0, 0x1000)
    assert not strip_debug.loads_like([load], [shrunk])
    assert not strip_debug.loads_like([load, note], [load])
    assert not strip_debug.loads_like([load], None)


@needs_strip
def test_a_stripped_extension_is_smaller_and_still_imports_and_works(tmp_path):
    kiwisolver = pytest.importorskip("kiwisolver")
    package = Path(kiwisolver.__file__).parent
    copy = tmp_path / "site" / "kiwisolver"
    shutil.copytree(package, copy)
    ext = _extension(kiwisolver)
    before = (copy / ext.relative_to(package)).stat().st_size
    report = strip_debug.strip_tree(tmp_path / "site")
    after = (copy / ext.relative_to(package)).stat().st_size
    if report["stripped"] == 0:
        pytest.skip("this kiwisolver build carries no debugging information")
    assert after < before and report["saved"] >= before - after
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import kiwisolver as k; "
            "assert k.__file__.startswith(sys.argv[1]), k.__file__; "
            "x = k.Variable('x'); s = k.Solver(); s.addConstraint(x == 42); s.updateVariables(); print(x.value())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "42.0"
    # a second pass finds nothing more to do
    assert strip_debug.strip_tree(tmp_path / "site")["stripped"] == 0


@needs_strip
def test_a_library_rewritten_by_patchelf_is_left_byte_for_byte(tmp_path):
    """numpy.libs' OpenBLAS: strip would move patchelf's segments and the loader would refuse it."""
    libs = sorted((Path(numpy.__file__).parent.parent / "numpy.libs").glob("*openblas*"))
    if not libs:
        pytest.skip("this numpy has no vendored OpenBLAS (not a manylinux wheel)")
    copy = tmp_path / libs[0].name
    shutil.copy2(libs[0], copy)
    report = strip_debug.strip_tree(tmp_path)
    assert report["stripped"] == 0 and report["kept"] == [copy.name]
    assert copy.read_bytes() == libs[0].read_bytes()


def test_main_reports_a_missing_folder_and_a_missing_strip(tmp_path, monkeypatch, capsys):
    assert strip_debug.main([str(tmp_path / "nowhere")]) == 1
    monkeypatch.setattr(strip_debug.shutil, "which", lambda name: None)
    assert strip_debug.main([str(tmp_path)]) == 0
    assert "install binutils" in capsys.readouterr().err
    assert struct.calcsize("<IIQQQQQQ") == 56  # the ELF64 program header the reader unpacks
