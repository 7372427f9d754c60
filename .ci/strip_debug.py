"""Remove debugging information from the bundle's Linux shared libraries, safely.

    python3 .ci/strip_debug.py dist/ctviewer      (build.spec runs it after PyInstaller collects)

Many wheels ship their libraries with DWARF debugging sections: libpython 23 MB of which 17 are
debug information, kiwisolver's extension 5.6 MB (a few hundred kB without), fontTools' Cython
modules, Pillow's libXau.  ``strip --strip-debug`` removes only those sections: the dynamic symbol
table, relocations and code stay, so the library loads and runs exactly as before (it is what
Linux distributions do to every package).  It took the bundle from 434 to 381 MB (issue 24).

PyInstaller's own ``strip=True`` strips everything blindly, and that breaks libraries that
auditwheel rewrote with patchelf (numpy.libs' OpenBLAS, Pillow's vendored libraries): strip
rearranges patchelf's extra LOAD segments, and the loader then refuses the file ("ELF load command
address/offset not page-aligned").  So each file is stripped into a copy, and the copy replaces
the original only when every program header (what the loader reads) is unchanged except for file
offsets, and every loadable segment's offset still agrees with its address modulo its alignment.
Otherwise the original stays, and is named in the summary.

Only ELF files are touched (Linux); nothing happens where ``strip`` is missing (a warning says
so: binutils).  Standard library only: CI runs it with the system python3.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

PT_LOAD = 1


def program_headers(path: Path) -> list[tuple[int, ...]] | None:
    """(type, flags, offset, vaddr, paddr, filesz, memsz, align) of each program header of a
    64-bit little-endian ELF file; None for anything else (not ELF, 32-bit, big-endian, short) and
    for a file with bytes after its ELF structures (an appended archive, as some self-extracting
    executables carry: strip would drop it)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            ident = f.read(64)
            if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
                return None
            phoff, shoff = struct.unpack_from("<QQ", ident, 32)
            phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", ident, 54)
            if phentsize < 56 or phnum == 0 or phnum > 4096:
                return None
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return None
    if len(table) < phentsize * phnum:
        return None
    headers = [struct.unpack_from("<IIQQQQQQ", table, i * phentsize) for i in range(phnum)]
    end = max([shoff + shentsize * shnum, phoff + phentsize * phnum] + [h[2] + h[5] for h in headers])
    return headers if size <= end else None


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def loads_like(original: list[tuple[int, ...]], stripped: list[tuple[int, ...]] | None) -> bool:
    """True when the loader sees the stripped file as it saw the original: the same program
    headers apart from file offsets, and every LOAD segment's offset congruent to its address."""
    if stripped is None or len(original) != len(stripped):
        return False
    for a, b in zip(original, stripped):
        if a[:2] != b[:2] or a[3:] != b[3:]:
            return False
        p_type, _, offset, vaddr, _, _, _, align = b
        if p_type == PT_LOAD and align > 1 and offset % align != vaddr % align:
            return False
    return True


def strip_tree(root: Path, strip: str = "strip") -> dict:
    """Strip debugging information from every ELF file under ``root`` where it is safe.
    Returns {"stripped": n, "saved": bytes, "kept": [relative paths refused], "failed": [...]}."""
    report = {"stripped": 0, "saved": 0, "kept": [], "failed": []}
    with tempfile.TemporaryDirectory(prefix="ctviewer-strip-") as tmp:
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue
            headers = program_headers(path)
            if headers is None:
                if is_elf(path):  # ELF, but not one this check can vouch for (appended bytes, 32-bit)
                    report["kept"].append(str(path.relative_to(root)))
                continue
            copy = Path(tmp) / "stripped"
            done = subprocess.run([strip, "--strip-debug", "-o", str(copy), str(path)],
                                  capture_output=True, text=True, check=False)
            rel = str(path.relative_to(root))
            if done.returncode != 0:
                report["failed"].append(f"{rel}: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
                continue
            before, after = path.stat().st_size, copy.stat().st_size
            if after >= before:
                continue
            if not loads_like(headers, program_headers(copy)):
                report["kept"].append(rel)
                continue
            shutil.copymode(path, copy)
            os.replace(copy, path)
            report["stripped"] += 1
            report["saved"] += before - after
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: strip_debug.py BUNDLE_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    if not root.is_dir():
        print(f"strip_debug: no folder {root}", file=sys.stderr)
        return 1
    strip = shutil.which("strip")
    if strip is None:
        print("strip_debug: WARNING: `strip` not found (install binutils): the bundle keeps its debugging "
              "information (about 50 MB more)", file=sys.stderr)
        return 0
    r = strip_tree(root, strip)
    print(f"strip_debug: {r['stripped']} libraries stripped of debugging information, "
          f"{r['saved'] / 1e6:.1f} MB saved; left as they were (patchelf layouts that strip would break, appended data): "
          f"{len(r['kept'])}" + (f" ({', '.join(r['kept'][:8])}{', ...' if len(r['kept']) > 8 else ''})" if r["kept"] else ""))
    for failure in r["failed"]:
        print(f"strip_debug: not stripped: {failure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
