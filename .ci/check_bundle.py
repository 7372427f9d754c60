"""CI check of the built bundle (dist/ctviewer).

1. No training framework travelled with it: the application runs its model with ONNX
   Runtime; TensorFlow, Keras, JAX, PyTorch and the libraries only they use are training tools.
2. (Linux) Qt's xcb platform plugin in the bundle opens a window on a stock desktop: ``ldd`` of
   ``libqxcb.so``, with the library path the bundle's launcher sets, resolves every library either
   inside the bundle or to one every Linux desktop has (libc and the loader, libX11's core,
   libxcb itself, OpenGL/EGL); ``libxcb-cursor.so.0``, which Qt loads at run time, is in the
   bundle.  A build machine without the xcb utility libraries makes a bundle that needs them;
   ``./dev.sh bundle`` refuses to build there (``python -m ctviewer.platform_check
   --bundle-precheck``, which shares ``RUNTIME_LOADED`` and the package names with this check)
   and runs this check after building.
Exits 1 and names what it found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # CI runs this with the system python3
from ctviewer.platform_check import RUNTIME_LOADED, install_hint  # noqa: E402 - stdlib only

# Libraries a bundle may take from the system: what every Linux desktop has.
SYSTEM_OK = re.compile(r"^(linux-vdso|ld-linux[-\w.]*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libxcb|"
                       r"libGL|libEGL|libGLX|libGLdispatch|libOpenGL)\.so(\.\d+)*$")


def check_xcb(base: Path) -> list[str]:
    """Problems of the xcb platform plugin in the bundle (empty when it will load)."""
    if not sys.platform.startswith("linux"):
        return []
    plugins = sorted(base.rglob("libqxcb.so"))
    if not plugins:
        return ["no Qt xcb platform plugin (libqxcb.so) in the bundle"]
    internal = base / "_internal" if (base / "_internal").is_dir() else base
    env = {**os.environ, "LD_LIBRARY_PATH": str(internal)}  # what PyInstaller's launcher sets
    out = subprocess.run(["ldd", str(plugins[0])], capture_output=True, text=True, env=env, check=False).stdout
    problems = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(.*?)\s*(\(0x[0-9a-f]+\))?$", line)
        if not m:
            continue
        name, where = m.group(1), m.group(2)
        if where == "not found":
            problems.append(f"{name} not found")
        elif not Path(where).resolve().is_relative_to(base.resolve()) and not SYSTEM_OK.match(name):
            problems.append(f"{name} is taken from the build machine ({where}), not the bundle")
    for name in RUNTIME_LOADED:
        if not any(base.rglob(name)):
            problems.append(f"{name} (loaded by Qt at run time) is not in the bundle")
    return list(dict.fromkeys(problems))  # ldd lists a library once per library that needs it

FORBIDDEN = ("tensorflow", "keras", "jax", "jaxlib", "torch", "tf2onnx", "tensorboard", "libtensorflow",
             # OpenCV is a training and test tool since issue 24 (the app's image operations are NumPy)
             "cv2", "opencv")
#: Issue 24: the bundle is <= 400 MB; CI fails above this (bytes, counted as ``du -sb`` does).
MAX_BYTES = 450_000_000


def main(root: str = "dist/ctviewer") -> int:
    base = Path(root)
    if not base.is_dir():
        print(f"check_bundle: no bundle at {base}", file=sys.stderr)
        return 1
    found = sorted({str(p.relative_to(base)).split("/")[0] + "/" + p.name
                    for p in base.rglob("*")
                    if any(part.lower().startswith(FORBIDDEN) for part in p.relative_to(base).parts)})
    # du -sb: every file once; a symbolic link counts as itself, not as the library it points to
    size = sum(p.lstat().st_size for p in base.rglob("*") if p.is_file() or p.is_symlink())
    if found:
        print(f"check_bundle: training frameworks or OpenCV in the bundle: {', '.join(found[:20])}", file=sys.stderr)
        return 1
    print(f"check_bundle: no training framework or OpenCV in {base} ({size / 1e6:.0f} MB, {size:,} bytes)")
    if size > MAX_BYTES:
        print(f"check_bundle: the bundle is {size / 1e6:.0f} MB, above {MAX_BYTES / 1e6:.0f} MB (issue 24: <= 400 MB)",
              file=sys.stderr)
        return 1
    xcb = check_xcb(base)
    if xcb:
        absent = [p.split()[0] for p in xcb if p.endswith(("not found", "is not in the bundle"))]
        hint = f": {install_hint(absent)}" if absent else ""
        print("check_bundle: the xcb platform plugin would not load on a stock desktop: " + "; ".join(xcb)
              + f" (install the xcb libraries on the build machine and build again{hint})", file=sys.stderr)
        return 1
    if sys.platform.startswith("linux"):
        print("check_bundle: Qt's xcb plugin resolves every library inside the bundle or to libc, libxcb, X11 and GL")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
