"""Anonymising a study against copying it (issue 16): ``ctviewer anonymize``'s engine
(``anonymize.anonymize_paths``: header scan, DICOM PS3.15 Basic Profile through dicognito,
write) against ``shutil.copytree`` of the same files, in one run, median of ``--repeat``.

    .venv/bin/python benchmarks/bench_anonymize.py [--slices 300] [--size 512] [--repeat 3]

The study is synthetic (512x512 16-bit CT slices with identifiers in the profile's
attributes, tests/test_deid.identified_ct), written to a temporary folder first.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from pydicom.uid import generate_uid

    from ctviewer.privacy import anonymize_paths
    import tests.test_deid as td
    from tests.test_deid import identified_ct

    td.SIZE = 512
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "study"
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        for z in range(1, a.slices + 1):
            identified_ct(src / f"IM{z:05d}.dcm", z, study, series, frame)
        mb = sum(p.stat().st_size for p in src.iterdir()) / 1e6
        copy_s, anon_s = [], []
        for k in range(a.repeat):
            t = time.perf_counter()
            shutil.copytree(src, Path(tmp) / f"copy{k}")
            copy_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            done, refused = anonymize_paths([str(src)], Path(tmp) / f"anon{k}")
            anon_s.append(time.perf_counter() - t)
            assert done == a.slices and not refused
        c, n = statistics.median(copy_s), statistics.median(anon_s)
        print(f"{a.slices} slices, {mb:.0f} MB, median of {a.repeat}")
        print("| operation | seconds | slices/s | ratio to copy |")
        print("|---|---|---|---|")
        print(f"| copy (shutil.copytree) | {c:.2f} | {a.slices / c:.0f} | 1.00 |")
        print(f"| anonymise (ctviewer anonymize) | {n:.2f} | {a.slices / n:.0f} | {n / c:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
