#!/bin/sh
# CI: CT Viewer on a real display, the way a user opens it.
#   .ci/display_smoke.sh EXECUTABLE OUTDIR
# Runs inside an X server (xvfb-run) with the xcb platform: the platform check, a
# --screenshot of a real DICOM series with its prediction and heatmap, then the plain
# application, captured from the X server itself (ImageMagick's import -window root).
set -eu
exe=$1
out=$2
series=../shared/data/dicom/Lung-PET-CT-Dx/Lung_Dx-A0001
[ -d "$series" ] || series=resources/samples
py=.venv/bin/python
mkdir -p "$out"
export QT_QPA_PLATFORM=xcb
"$exe" --check-platform
"$exe" --screenshot "$out/window.png" --heatmap "$series"
$py .ci/check_screenshot.py "$out/window.png" 1280 820
"$exe" "$series" &
pid=$!
i=0
until xwininfo -root -tree | grep -q '"CT Viewer"'; do
    i=$((i + 1))
    if [ $i -gt 120 ] || ! kill -0 $pid 2>/dev/null; then
        echo "display_smoke: no CT Viewer window on $DISPLAY" >&2
        kill $pid 2>/dev/null || true
        exit 1
    fi
    sleep 0.5
done
sleep 10  # the model loads and the slice on screen is classified
import -window root "$out/screen.png"
kill $pid
wait $pid 2>/dev/null || true
$py .ci/check_screenshot.py "$out/screen.png" 1024 700
echo "display_smoke: $exe opened a window on a real X server ($out/screen.png)"
