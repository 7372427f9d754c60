#!/bin/sh
# One entry point for a fresh clone: creates .venv on first use (and again when
# pyproject.toml changes), then runs the application or the tests.
#   ./dev.sh run  [ARGS...]   launch CT Viewer
#   ./dev.sh test [PYTEST ARGS...]   run the whole test suite (headless)
#   ./dev.sh bundle           build the one-folder PyInstaller bundle dist/ctviewer/ (build.spec)
#   ./dev.sh desktop          install a menu entry (and the DICOM file association) for the bundle
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv
stamp="$VENV/.installed-$("$PYTHON" -c 'import hashlib,sys;print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest()[:16])')"
if [ ! -f "$stamp" ]; then
    echo "Setting up $VENV (first run: a few minutes)..." >&2
    "$PYTHON" -m venv "$VENV" || {
        echo "error: '$PYTHON -m venv' failed. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
        exit 1
    }
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[gui,test,bundle,training]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
cmd=${1:-run}
[ $# -gt 0 ] && shift
case "$cmd" in
    run) "$VENV/bin/ctviewer" --check-platform 2>/dev/null || { "$VENV/bin/ctviewer" --check-platform; exit 1; }
         exec "$VENV/bin/ctviewer" "$@" ;;
    test) QT_QPA_PLATFORM=offscreen TF_CPP_MIN_LOG_LEVEL=2 exec "$VENV/bin/python" -m pytest "$@" ;;
    bundle)
        start=$(date +%s)
        "$VENV/bin/python" -m PyInstaller --noconfirm --log-level WARN build.spec "$@"
        echo "dist/ctviewer/: $(du -sh dist/ctviewer | cut -f1), built in $(($(date +%s) - start)) s." \
            "Check it: dist/ctviewer/ctviewer --self-test" >&2 ;;
    desktop)
        exe="$(pwd)/dist/ctviewer/ctviewer"
        [ -x "$exe" ] || { echo "no bundle at $exe: run ./dev.sh bundle first" >&2; exit 1; }
        data=${XDG_DATA_HOME:-$HOME/.local/share}
        mkdir -p "$data/applications" "$data/icons/hicolor/256x256/apps"
        cp resources/icons/ctviewer.png "$data/icons/hicolor/256x256/apps/ctviewer.png"
        sed "s|^Exec=ctviewer |Exec=\"$exe\" |" resources/linux/ctviewer.desktop > "$data/applications/ctviewer.desktop"
        update-desktop-database "$data/applications" 2>/dev/null || true
        xdg-mime default ctviewer.desktop application/dicom 2>/dev/null || true
        echo "installed $data/applications/ctviewer.desktop (opens DICOM files with $exe)" >&2 ;;
    *) echo "usage: ./dev.sh run|test|bundle|desktop [ARGS...]" >&2; exit 2 ;;
esac
