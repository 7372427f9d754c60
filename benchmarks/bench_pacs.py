"""PACS speed against a real Orthanc on loopback (issue 14), everything in one run:

* find over 100 studies (DICOMweb QIDO-RS and DIMSE C-FIND), median of ``--repeat``;
* retrieving a 300-slice study (512x512) with ``ctviewer pacs get`` (WADO-RS and C-GET) against
  copying the same files locally (``shutil.copytree``), as a ratio;
* the longest event-loop stall of the Open from PACS dialog during a search and a retrieval
  (a 5 ms QTimer heartbeat; offscreen).

    .venv/bin/python benchmarks/bench_pacs.py [--slices 300] [--studies 100] [--repeat 3]

Needs Orthanc with its DICOMweb plugin (Debian: orthanc, orthanc-dicomweb).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from pydicom.uid import generate_uid

    import tests.test_deid as td
    from ctviewer.pacs import DicomWebNode, DimseNode
    from tests.orthanc import PASSWORD, USER, Orthanc

    tmp = Path(tempfile.mkdtemp(prefix="bench-pacs-"))
    try:
        big = tmp / "big"
        td.SIZE = 512
        st, se, fr = generate_uid(), generate_uid(), generate_uid()
        for z in range(1, a.slices + 1):
            td.identified_ct(big / f"IM{z:05d}.dcm", z, st, se, fr)
        td.SIZE = 32
        small = tmp / "small"
        for k in range(a.studies - 1):
            td.identified_ct(small / f"S{k:04d}.dcm", 1, generate_uid(), generate_uid(), generate_uid())
        server = Orthanc(tmp / "orthanc")
        t = time.perf_counter()
        server.upload(sorted(big.glob("*.dcm")) + sorted(small.glob("*.dcm")))
        print(f"(uploaded {a.slices} + {a.studies - 1} instances in {time.perf_counter() - t:.1f} s)")
        web, dimse = DicomWebNode(server.url, USER, PASSWORD), DimseNode(server.dimse, "CTVIEWER")
        rows = []
        for name, node in (("DICOMweb QIDO-RS", web), ("DIMSE C-FIND", dimse)):
            times = []
            for _ in range(a.repeat):
                t = time.perf_counter()
                n = len(node.find())
                times.append(time.perf_counter() - t)
            rows.append((f"find, {n} studies, {name}", statistics.median(times), None))
        copy_t, get_t = [], {"WADO-RS": [], "C-GET": []}
        for k in range(a.repeat):
            t = time.perf_counter()
            shutil.copytree(big, tmp / f"copy{k}")
            copy_t.append(time.perf_counter() - t)
            for name, node in (("WADO-RS", web), ("C-GET", dimse)):
                t = time.perf_counter()
                r = node.get(st, tmp / f"get-{name}-{k}")
                get_t[name].append(time.perf_counter() - t)
                assert r.complete and r.received == a.slices, r
        c = statistics.median(copy_t)
        rows.append((f"copy {a.slices} slices locally (shutil.copytree)", c, 1.0))
        for name, ts in get_t.items():
            g = statistics.median(ts)
            rows.append((f"get {a.slices} slices, {name}", g, g / c))
        stall = gui_stalls(server, st)
        server.stop()
        print(f"median of {a.repeat}; {sum(p.stat().st_size for p in big.iterdir()) / 1e6:.0f} MB study")
        print("| operation | seconds | ratio to local copy |")
        print("|---|---|---|")
        for name, secs, ratio in rows:
            print(f"| {name} | {secs:.3f} | {'' if ratio is None else f'{ratio:.2f}'} |")
        for what, ms in stall.items():
            print(f"| longest event-loop stall during the dialog's {what} | {ms / 1000:.3f} | |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def gui_stalls(server, study_uid: str) -> dict[str, float]:
    """The dialog searching and retrieving while a 5 ms timer measures the event loop's gaps."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from ctviewer.gui.pacs_dialog import PacsDialog, _session_passwords
    from tests.orthanc import PASSWORD, USER

    os.environ["CTVIEWER_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-cache-")
    app = QApplication.instance() or QApplication([])
    dlg = PacsDialog()
    dlg.name.setText("bench")
    dlg.address.setText(server.url)
    dlg.user.setText(USER)
    dlg.password.setText(PASSWORD)
    _session_passwords["bench"] = PASSWORD
    dlg.show()
    out = {}
    for what, start, signal in (("search", dlg.search, dlg.searched), ("retrieval", None, dlg.retrieved)):
        if start is None:
            row = next(i for i, r in enumerate(dlg.rows) if r.study_uid == study_uid)
            dlg.table.selectRow(row)
            start = lambda: dlg.retrieve("viewer")  # noqa: E731
        gaps, last = [0.0], [time.perf_counter()]

        def beat():
            now = time.perf_counter()
            gaps.append((now - last[0]) * 1000 - 5)
            last[0] = now

        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(beat)
        loop = QEventLoop()
        signal.connect(lambda *_: loop.quit())
        timer.start()
        QTimer.singleShot(0, start)
        QTimer.singleShot(300_000, loop.quit)
        loop.exec()
        timer.stop()
        out[what] = max(gaps)
    dlg.close()
    app.processEvents()
    return out


if __name__ == "__main__":
    sys.exit(main())
