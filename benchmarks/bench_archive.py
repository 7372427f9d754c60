"""Archive review throughput (issue 25): the same studies through ``ctviewer report --out``
in one process, on a Dask LocalCluster of N worker processes, and on a ``dask scheduler`` +
``dask worker`` pair started as separate processes (the way a department runs them), in one run.

Prints studies per minute, slices per second and the ratio to the single process; every way
must give the same results.json/slices.csv per study (checked).  Studies: --studies synthetic
CT series of --slices slices (512x512, 16-bit) written to a temporary folder, the bundled model.

    .venv/bin/python benchmarks/bench_archive.py [--studies 40] [--slices 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def outcome(out: Path) -> dict:
    return {p.name: ((p / "result.json").read_text(), (p / "slices.csv").read_text())
            for p in sorted((out / "studies").iterdir()) if not p.name.startswith(".")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=40)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    a = ap.parse_args(argv)
    from tests.gui_helpers import write_ct_series

    tmp = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    for k in range(a.studies):
        write_ct_series(tmp / "in" / f"s{k:03d}", n=a.slices, size=a.size, seed=k + 1)
    bin_dir = Path(sys.executable).parent
    port = None
    procs = []

    def run(name: str, extra: list[str]) -> tuple[str, float]:
        out = tmp / name
        t0 = time.perf_counter()
        r = subprocess.run([str(bin_dir / "ctviewer"), "report", str(tmp / "in"), "--out", str(out), *extra],
                           capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            print(r.stderr[-2000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        return name, dt

    rows = [run("1 process", [])]
    rows.append(run(f"LocalCluster {a.workers} workers", ["--cluster", f"local:{a.workers}"]))
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        procs.append(subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([str(bin_dir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nworkers",
                                       str(a.workers), "--nthreads", "1", "--no-dashboard"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="60s") as c:
            c.wait_for_workers(a.workers, timeout=120)
        rows.append(run(f"scheduler + {a.workers} workers", ["--cluster", f"tcp://127.0.0.1:{port}"]))
    finally:
        for p in procs:
            p.terminate()
    names = ["1 process", f"LocalCluster {a.workers} workers", f"scheduler + {a.workers} workers"]
    ref = outcome(tmp / names[0])
    same = {n: outcome(tmp / n) == ref for n in names[1:]}
    n_slices = a.studies * a.slices
    base = rows[0][1]
    print(f"\n{a.studies} studies of {a.slices} slices ({a.size}x{a.size}), bundled model, {os.cpu_count()} CPUs; "
          "wall time of the whole command (start-up included)")
    print("| way | seconds | studies/min | slices/s | x 1 process | same results |")
    print("|---|---|---|---|---|---|")
    for name, dt in rows:
        print(f"| {name} | {dt:.1f} | {a.studies / dt * 60:.1f} | {n_slices / dt:.1f} | {base / dt:.2f}x | "
              f"{'reference' if name == names[0] else 'yes' if same.get(name) else 'NO'} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
