#!/bin/sh
# One entry point for a fresh clone: creates .venv on first use (and again when
# pyproject.toml changes), then runs the application or the tests.
#   ./dev.sh run  [ARGS...]   launch CT Viewer
#   ./dev.sh test [PYTEST ARGS...]   run the whole test suite (headless)
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
    "$VENV/bin/python" -m pip install --quiet -e '.[gui,test]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
cmd=${1:-run}
[ $# -gt 0 ] && shift
case "$cmd" in
    run) exec "$VENV/bin/ctviewer" "$@" ;;
    test) QT_QPA_PLATFORM=offscreen TF_CPP_MIN_LOG_LEVEL=2 exec "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: ./dev.sh run|test [ARGS...]" >&2; exit 2 ;;
esac
