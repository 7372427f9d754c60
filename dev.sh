#!/bin/sh
# One entry point for a fresh clone: creates .venv on first use (and again when
# pyproject.toml changes), then runs the application or the tests.
#   ./dev.sh run  [ARGS...]   launch CT Viewer
#   ./dev.sh test [PYTEST ARGS...]   run the whole test suite (headless)
#   ./dev.sh bundle           build the one-folder PyInstaller bundle dist/ctviewer/ (build.spec)
#   ./dev.sh fuzz [SECONDS]   fuzz the DICOM reader, the scanner and the PACS replies (60 s each)
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
    "$VENV/bin/python" -m pip install --quiet -e '.[gui,test,bundle,training,cluster]'
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
        # Before PyInstaller: every library the bundle must carry for Qt's xcb plugin is on this
        # machine (PyInstaller bundles only what it finds, and only warns about the rest). After:
        # .ci/check_bundle.py and the bundle's --self-test; the last line says whether it is complete.
        start=$(date +%s)
        "$VENV/bin/python" -m ctviewer.platform_check --bundle-precheck || {
            rm -rf dist/ctviewer; rmdir dist 2>/dev/null || true; exit 1; }
        "$VENV/bin/python" -m PyInstaller --noconfirm --log-level WARN build.spec "$@" || {
            echo "dist/ctviewer/: not built: PyInstaller failed (see above)" >&2; exit 1; }
        built="dist/ctviewer/: $(du -sh dist/ctviewer | cut -f1), built in $(($(date +%s) - start)) s"
        verify() {  # verify COMMAND...: shows its output; when it fails, the last line says so
            out=$("$@" 2>&1) && rc=0 || rc=$?
            printf '%s\n' "$out" >&2
            if [ "$rc" != 0 ]; then
                echo "$built, NOT complete: '$*' failed: $(printf '%s\n' "$out" | tail -n 1)" >&2
                exit 1
            fi
        }
        verify "$VENV/bin/python" .ci/check_bundle.py dist/ctviewer
        verify env QT_QPA_PLATFORM=offscreen dist/ctviewer/ctviewer --self-test
        anon=$(mktemp -d "${TMPDIR:-/tmp}/ctviewer-anon.XXXXXX")  # the de-identification libraries travelled
        verify dist/ctviewer/ctviewer anonymize resources/samples --to "$anon/copy"
        rm -rf "$anon"
        echo "$built, complete: no training framework, Qt's xcb plugin finds its libraries in the bundle," \
            "--self-test passed, the samples anonymised" >&2 ;;
    fuzz)
        # Coverage-guided fuzzing (atheris/libFuzzer) of the DICOM reader, the series/DICOMDIR
        # scanner and the PACS reply parsers, SECONDS each (default 60), seeded from
        # ../shared/data/dicom and tests/fuzz/regressions; a crash fails and keeps its input.
        secs=${1:-60}
        work=$(mktemp -d "${TMPDIR:-/tmp}/ctviewer-fuzz.XXXXXX")
        "$VENV/bin/python" -m tests.fuzz seeds "$work/seeds" >&2
        status=0
        for t in dicom_reader series_scanner pacs_replies raster_pipeline; do
            mkdir -p "$work/$t"
            cp "$work/seeds/"* "$work/$t/"
            cp tests/fuzz/regressions/$t/* "$work/$t/" 2>/dev/null || true
            # a fixed seed (FUZZ_SEED to vary it): a run explores the same inputs first, so a finding reproduces
            if "$VENV/bin/python" -m tests.fuzz "$t" -seed="${FUZZ_SEED:-1}" -max_total_time="$secs" -max_len=65536 -timeout=30 \
                    -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="$work/crash-$t-" "$work/$t" \
                    >"$work/$t.log" 2>&1; then
                runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$')
                echo "fuzz $t: ${runs:-?} executions in ${secs} s, no crash" >&2
            else
                status=1
                echo "fuzz $t: CRASH (log $work/$t.log; input kept as $work/crash-$t-*):" >&2
                grep -A12 'Uncaught Python exception\|ERROR: libFuzzer' "$work/$t.log" | head -n 20 >&2
            fi
        done
        [ "$status" = 0 ] && rm -rf "$work"
        exit $status ;;
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
