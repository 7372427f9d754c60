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
``python -m ctviewer.platform_check --bundle-precheck`` checks a build machine instead: that a
bundle built there would carry every library of the xcb plugin (``./dev.sh bundle`` calls it
before PyInstaller; see ``bundle_problem``).
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


def _debian_package(soname: str) -> str:
    """The Debian/Ubuntu package of a library: ``PACKAGES``, else Debian's naming rule (name and
    soname version, with a hyphen between them when the name ends in a digit: libXau.so.6 -> libxau6)."""
    if soname in PACKAGES:
        return PACKAGES[soname][0]
    name, _, version = soname.partition(".so")
    name, version = name.replace("_", "-").lower(), version.lstrip(".").split(".")[0]
    return f"{name}{'-' if name[-1:].isdigit() and version else ''}{version}"


def install_hint(missing: list[str]) -> str:
    deb = sorted({_debian_package(m) for m in missing})
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


# --- Before a bundle is built (``./dev.sh bundle``) -------------------------------------------
#
# PyInstaller copies into the bundle the libraries Qt's xcb plugin links to *that it finds on the
# build machine*; one it cannot find is a warning among thousands of lines, and the bundle then
# needs it on every desktop (where it usually is not).  So before PyInstaller runs, every library
# ``.ci/check_bundle.py`` will ask for afterwards must resolve here: the xcb plugin's dependencies
# (all of them, as ldd lists them) and ``RUNTIME_LOADED``.  The walk reads the ELF files itself
# (their ``DT_NEEDED`` entries) so that it can be run against any library search path: the
# build machine's by default, or a given one (``--library-path``, the tests).

XCB_PLUGIN = Path("plugins") / "platforms" / "libqxcb.so"
_DT_NEEDED, _SHT_DYNAMIC = 1, 6


def _elf_header(path: Path) -> tuple[int, int, int] | None:
    """(class, byte order, machine) of an ELF file, None when it is not one."""
    try:
        with open(path, "rb") as f:
            ident = f.read(20)
    except OSError:
        return None
    if len(ident) < 20 or ident[:4] != b"\x7fELF":
        return None
    return ident[4], ident[5], int.from_bytes(ident[18:20], "little" if ident[5] == 1 else "big")


def elf_needed(path: Path) -> list[str]:
    """The ``DT_NEEDED`` sonames of an ELF shared object or executable, in order ([] when unreadable)."""
    import struct  # noqa: PLC0415

    try:
        with open(path, "rb") as f:
            ident = f.read(16)
            if len(ident) < 16 or ident[:4] != b"\x7fELF":
                return []
            wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
            head = struct.Struct(order + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"))
            fields = head.unpack(f.read(head.size))
            shoff, shentsize, shnum = fields[5], fields[10], fields[11]
            section = struct.Struct(order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII"))
            sections = []
            for i in range(shnum):
                f.seek(shoff + i * shentsize)
                sections.append(section.unpack(f.read(section.size)))  # name, type, flags, addr, offset, size, link
            entry = struct.Struct(order + ("qQ" if wide else "iI"))
            names: list[str] = []
            for _name, kind, _flags, _addr, offset, size, link, *_ in sections:
                if kind != _SHT_DYNAMIC or link >= len(sections):
                    continue
                f.seek(offset)
                table = f.read(size)
                strtab_offset, strtab_size = sections[link][4], sections[link][5]
                f.seek(strtab_offset)
                strtab = f.read(strtab_size)
                for tag, value in entry.iter_unpack(table[: len(table) - len(table) % entry.size]):
                    if tag == 0:
                        break
                    if tag == _DT_NEEDED and value < len(strtab):
                        names.append(strtab[value:strtab.index(b"\0", value)].decode("utf-8", "replace"))
            return names
    except (OSError, struct.error, ValueError):
        return []


def system_library_path(env: dict | None = None) -> list[Path]:
    """Where the dynamic loader looks on this machine: ``LD_LIBRARY_PATH``, the folders of the
    ``ldconfig`` cache, then the default folders (multiarch first)."""
    import sysconfig  # noqa: PLC0415

    env = os.environ if env is None else env
    dirs = [Path(p) for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                  if os.access(p, os.X_OK)), None)
    if ldconfig:
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        dirs += [Path(m).parent for m in re.findall(r"=>\s+(/\S+)\s*$", out, flags=re.MULTILINE)]
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    for base in ("/lib", "/usr/lib"):
        if arch:
            dirs.append(Path(base) / arch)
    dirs += [Path(p) for p in ("/lib64", "/usr/lib64", "/lib", "/usr/lib")]
    return list(dict.fromkeys(dirs))


def bundle_libraries(qt: Path | None = None,
                     library_path: list[Path] | None = None) -> tuple[dict[str, Path], list[str]]:
    """The libraries a bundle built here would carry for Qt's xcb plugin: (soname -> file for those
    found, sonames not found, in the order met).  Qt's own ``lib`` folder is searched first (the
    plugins' RUNPATH), then ``library_path`` (default: ``system_library_path()``).  Only ELF files of
    this interpreter's class and machine count, as for the dynamic loader."""
    qt = qt or qt_dir()
    search = ([qt / "lib"] if qt else []) + (system_library_path() if library_path is None else list(library_path))
    this = _elf_header(Path(sys.executable).resolve())
    found: dict[str, Path] = {}
    missing: list[str] = []
    queue = list(elf_needed(qt / XCB_PLUGIN)) if qt else []
    queue += [s for s in RUNTIME_LOADED if s not in queue]
    while queue:
        soname = queue.pop(0)
        if soname in found or soname in missing:
            continue
        path = next((d / soname for d in search if (d / soname).is_file()
                     and (header := _elf_header(d / soname)) is not None and this in (None, header)), None)
        if path is None:
            missing.append(soname)
            continue
        found[soname] = path
        queue += [s for s in elf_needed(path) if s not in found and s not in missing]
    return found, missing


def bundle_problem(qt: Path | None = None, library_path: list[Path] | None = None) -> str:
    """One line saying why a bundle built here could not open a window on a stock desktop, or ""."""
    if not sys.platform.startswith("linux"):
        return ""  # Windows and macOS: the platform plugin's dependencies come with the system
    qt = qt or qt_dir()
    if qt is None:
        return "bundle not built: PySide6 is not installed here (pip install -e '.[gui,bundle]')"
    if not (qt / XCB_PLUGIN).is_file():
        return f"bundle not built: PySide6 has no xcb platform plugin ({qt / XCB_PLUGIN} is missing)"
    _, missing = bundle_libraries(qt, library_path)
    if not missing:
        return ""
    named = ", ".join(f"{m} ({_debian_package(m)})" for m in missing)
    return (f"bundle not built: Qt's X11 (xcb) display support needs {named}, not installed on this build "
            f"machine, so the bundle could not carry {'it' if len(missing) == 1 else 'them'} and would not open "
            f"a window on desktops without {'it' if len(missing) == 1 else 'them'}. "
            f"Install with: {install_hint(missing)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m ctviewer.platform_check --bundle-precheck [--library-path DIRS]``: 0 when a bundle
    built here carries everything its xcb plugin needs, else 1 and one line on stderr.
    ``--library-path`` (default ``$CTVIEWER_BUNDLE_LIBRARY_PATH``) replaces the machine's library
    search path with the given folders (``os.pathsep``-separated)."""
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m ctviewer.platform_check", description=main.__doc__)
    parser.add_argument("--bundle-precheck", action="store_true",
                        help="check that a bundle built here would carry every library of Qt's xcb plugin")
    parser.add_argument("--library-path", default=os.environ.get("CTVIEWER_BUNDLE_LIBRARY_PATH") or None,
                        help="search only these folders (os.pathsep-separated) instead of the machine's")
    args = parser.parse_args(argv)
    if not args.bundle_precheck:
        parser.error("nothing to do: --bundle-precheck (this machine, now: ctviewer --check-platform)")
    library_path = None
    if args.library_path is not None:
        library_path = [Path(p) for p in args.library_path.split(os.pathsep) if p]
    message = bundle_problem(library_path=library_path)
    if message:
        print(message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
