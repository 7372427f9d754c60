"""Can Qt open a window here?  Checked before Qt is asked, because when no platform plugin
loads Qt prints a message no radiologist can act on and aborts the process.

Linux only (Windows and macOS ship their platform plugin's dependencies with the system).
The platform Qt will use is ``QT_QPA_PLATFORM`` when set, else ``wayland`` in a Wayland
session (``WAYLAND_DISPLAY``), else ``xcb``.  For ``xcb`` the check needs a display
(``DISPLAY``) and every library the xcb plugin links to (``ldd`` of PySide6's
``libqxcb.so`` and ``libQt6XcbQpa``), plus ``libxcb-cursor.so.0``, which Qt 6.5 and later
load at run time (stock Ubuntu desktops lack it).  What is missing becomes one line: the
libraries and the command that installs them (Debian/Ubuntu and Fedora package names),
printed on stderr and, when ``notify-send`` exists, shown as a desktop notification,
because a double-clicked application has no terminal.

``ctviewer --check-platform`` runs the check alone (``./dev.sh run`` calls it first).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# library soname -> (Debian/Ubuntu package, Fedora package)
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
}
#: Loaded by Qt with dlopen, so ``ldd`` never lists it.
RUNTIME_LOADED = ("libxcb-cursor.so.0",)


def qt_dir() -> Path | None:
    """PySide6's Qt folder (``plugins``, ``lib``), in a source install or a bundle."""
    try:
        import PySide6  # noqa: PLC0415 - only the package's location, no Qt library is loaded
    except ImportError:
        return None
    qt = Path(PySide6.__file__).resolve().parent / "Qt"
    return qt if qt.is_dir() else None


def platform_name(env: dict | None = None) -> str:
    env = os.environ if env is None else env
    name = env.get("QT_QPA_PLATFORM", "").split(":")[0].split(";")[0].strip()
    if name:
        return name
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        return "wayland"
    return "xcb"


def _ldd_missing(path: Path, qt: Path) -> list[str] | None:
    """Sonames ``ldd`` cannot resolve for ``path`` (None when ldd is not there)."""
    ldd = shutil.which("ldd")
    if ldd is None or not path.exists():
        return None
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(qt / "lib"), env.get("LD_LIBRARY_PATH", "")) if p)
    try:
        out = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=20, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return re.findall(r"^\s*(\S+)\s+=>\s+not found", out, flags=re.MULTILINE)


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname, mode=getattr(os, "RTLD_LAZY", 1) | getattr(os, "RTLD_LOCAL", 0))
        return True
    except OSError:
        return False


def missing_xcb_libraries(qt: Path | None = None) -> list[str]:
    """Libraries Qt's xcb platform plugin needs that cannot be loaded here, in order."""
    qt = qt or qt_dir()
    missing: list[str] = []
    if qt is not None:
        for f in (qt / "plugins" / "platforms" / "libqxcb.so", *sorted((qt / "lib").glob("libQt6XcbQpa.so*"))[:1]):
            for soname in _ldd_missing(f, qt) or []:
                if soname not in missing:
                    missing.append(soname)
    for soname in RUNTIME_LOADED:
        if soname not in missing and not _loadable(soname):
            missing.append(soname)
    return missing


def install_hint(missing: list[str]) -> str:
    deb = sorted({PACKAGES.get(m, (m.split(".so")[0].replace("_", "-").lower(), ""))[0] for m in missing})
    rpm = sorted({PACKAGES[m][1] for m in missing if m in PACKAGES})
    hint = f"sudo apt-get install {' '.join(deb)}"
    if rpm:
        hint += f" (Fedora: sudo dnf install {' '.join(rpm)})"
    return hint


def problem(env: dict | None = None, qt: Path | None = None) -> str:
    """One line saying why no window can open here, or "" when nothing is known to be wrong."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return ""
    name = platform_name(env)
    if name in ("offscreen", "minimal", "vnc", "linuxfb", "eglfs", "minimalegl", "vkkhrdisplay"):
        return ""
    if name == "wayland":
        if not env.get("WAYLAND_DISPLAY"):
            return ("cannot open a window: QT_QPA_PLATFORM is wayland but no Wayland display is set "
                    "(WAYLAND_DISPLAY); run CT Viewer from a desktop session")
        return ""
    if name != "xcb":
        return ""
    missing = missing_xcb_libraries(qt)
    if missing:
        return (f"cannot open a window: the X11 (xcb) display support of Qt needs {', '.join(missing)}, "
                f"not installed on this computer. Install with: {install_hint(missing)}")
    if not env.get("DISPLAY"):
        return ("cannot open a window: no X display (DISPLAY is not set); run CT Viewer from a desktop "
                "session, or use QT_QPA_PLATFORM=offscreen for --screenshot and --self-test")
    return ""


def notify(message: str) -> None:
    """A desktop notification (``notify-send``) when there is one; silent otherwise."""
    exe = shutil.which("notify-send")
    if exe is None:
        return
    try:
        subprocess.run([exe, "--app-name=CT Viewer", "--urgency=critical", "CT Viewer cannot start", message],
                       timeout=5, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        pass


def report(message: str) -> None:
    print(f"ctviewer: {message}", file=sys.stderr)
    notify(message)
