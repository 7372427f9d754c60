"""Start-up time of CT Viewer from a source install and from the bundle, cold and warm.

Each launch is a new process started as a user would (``ctviewer SLICE``),
with ``CTVIEWER_STARTUP_PROBE=1``: the application prints the wall-clock time
when its window is exposed and when the model is ready, then quits.  The clock
starts just before the process is spawned, so interpreter start-up, imports
and (for the bundle) the bootloader are included.

- cold: the page cache is dropped first (``/proc/sys/vm/drop_caches``, needs
  root; without it the row says "not cold" and is a first launch only)
- warm: the median of ``--repeat`` launches straight after

    .venv/bin/python benchmarks/bench_startup.py [--bundle dist/ctviewer/ctviewer] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLICE = REPO / "resources" / "samples" / "covid-65.png"


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def launch(cmd: list[str], env: dict) -> tuple[float, float]:
    t0 = time.time()
    proc = subprocess.run([*cmd, str(SLICE)], env=env, capture_output=True, text=True, timeout=600)
    marks = {}
    for line in proc.stdout.splitlines():
        if line.startswith("ctviewer-startup "):
            _, what, when = line.split()
            marks[what] = float(when) - t0
    if "window" not in marks or "model" not in marks:
        raise SystemExit(f"{cmd[0]} did not report its start-up (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return marks["window"], marks["model"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=REPO / "dist" / "ctviewer" / "ctviewer")
    ap.add_argument("--source", type=Path, default=REPO / ".venv" / "bin" / "ctviewer")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ctviewer-startup-"))
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"), CTVIEWER_STARTUP_PROBE="1",
               CTVIEWER_CONFIG_DIR=str(tmp / "config"), CTVIEWER_DATA_DIR=str(tmp / "data"),
               CTVIEWER_LOG_DIR=str(tmp / "log"), TF_CPP_MIN_LOG_LEVEL="2")
    targets = [("source", a.source)] + ([("bundle", a.bundle)] if a.bundle.exists() else [])
    if len(targets) == 1:
        print(f"(no bundle at {a.bundle}: build it with ./dev.sh bundle)", file=sys.stderr)
    rows = []
    for name, exe in targets:
        cold = drop_caches()
        w, m = launch([str(exe)], env)
        rows.append((name, "cold" if cold else "first (not cold)", w, m))
        runs = [launch([str(exe)], env) for _ in range(a.repeat)]
        rows.append((name, f"warm (median of {a.repeat})", statistics.median(r[0] for r in runs),
                     statistics.median(r[1] for r in runs)))
    print(f"{'install':<8}{'cache':<22}{'window s':>10}{'model ready s':>15}")
    for name, cache, w, m in rows:
        print(f"{name:<8}{cache:<22}{w:>10.2f}{m:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
