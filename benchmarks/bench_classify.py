"""Throughput of slice classification: the ctviewer batch engine against the notebook's way.

For each data set (a folder of PNG slices, a DICOM series) and in the same run:

  ctviewer engine   classify_files(iter_files(files), clf), consumed fully: decoding,
                    preprocessing on worker threads, batched inference (with the card's
                    test-time augmentation), calibration, pixel hashes
  notebook way      one slice at a time: cv2.imread + cv2.resize(img, (80, 80)) +
                    one forward pass of x[None].  The notebook had no DICOM reader: for DICOM,
                    pydicom dcmread().pixel_array, min-max to uint8, same resize/predict
  decode+preprocess load_slices + to_model_input on one thread, no model
  forward x1        the classifier's compiled forward on preprocessed batches of 64 (no
                    I/O, one pass): the model's ceiling
  probabilities()   Classifier.probabilities on the same batches: every forward pass the
                    card asks for (two with hflip TTA) + calibration, no I/O

Each path is warmed up once, then the paths are timed in turn, ``--repeat``
rounds; the median is reported as slices/s and as a ratio to the notebook way.  Timings on a shared machine are
noisy: compare the ratios of one run, not absolute numbers across runs.

    python benchmarks/bench_classify.py --model /tmp/smoke1
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def natural_key(path: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path))


def timed(paths: dict, repeat: int) -> dict:
    """Median seconds per path: each warmed up once, then the paths timed in turn,
    ``repeat`` rounds, so a change of load on the machine hits all of them alike."""
    for fn in paths.values():
        fn()
    times: dict = {label: [] for label in paths}
    for _ in range(repeat):
        for label, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(t) for label, t in times.items()}


def notebook_png(path: str):
    import cv2

    return cv2.resize(cv2.imread(path), (80, 80))


def notebook_dicom(path: str):
    import cv2
    import numpy as np
    import pydicom

    a = pydicom.dcmread(path).pixel_array.astype(np.float32)
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-6) * 255.0
    img = cv2.cvtColor(a.astype(np.uint8), cv2.COLOR_GRAY2BGR)  # what cv2.imread gives
    return cv2.resize(img, (80, 80))


def bench_dataset(name, files, read_notebook, clf, repeat):
    import numpy as np

    from ctviewer.studies import classify_files
    from ctviewer.imaging.io import load_slices
    from ctviewer.imaging.preprocess import to_model_input
    from ctviewer.imaging.series import iter_files

    def engine():
        records = list(classify_files(iter_files(files), clf))
        bad = [r for r in records if not r.ok]
        if bad:
            sys.exit(f"bench_classify: the engine refused {bad[0].path}: {bad[0].error}")
        return len(records)

    def notebook():
        for f in files:
            clf.outputs(read_notebook(f)[None].astype(np.float32))

    def preprocess():
        return [to_model_input(s, clf.params) for f in files for s in load_slices(f)]

    inputs = np.stack(preprocess())
    n = len(inputs)
    batches = [inputs[i : i + 64] for i in range(0, n, 64)]

    def forward():
        for b in batches:
            clf.outputs(b)

    def probabilities():
        clf.probabilities(inputs, batch_size=64)

    n_engine = engine()
    if n_engine != n:
        sys.exit(f"bench_classify: {name}: the engine gave {n_engine} records for {n} slices")
    paths = {
        "ctviewer engine": engine,
        "notebook way": notebook,
        "decode+preprocess": preprocess,
        "forward x1 (ceiling)": forward,
        "probabilities()": probabilities,
    }
    rows = [(label, n / seconds) for label, seconds in timed(paths, repeat).items()]
    for label, rate in rows:
        print(f"  {name}: {label:<22} {rate:8.1f} slices/s", file=sys.stderr, flush=True)
    return n, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Slices/s of the ctviewer batch engine vs the notebook's way.")
    ap.add_argument("--model", default=str(REPO / "resources" / "models" / "ct-resnet50"), metavar="DIR")
    ap.add_argument("--png-dir", default=str(DATA / "sarscov2-dev" / "COVID"), metavar="DIR")
    ap.add_argument("--dicom-dir", default=str(DATA / "dicom" / "Lung-PET-CT-Dx"), metavar="DIR")
    ap.add_argument("--n-png", type=int, default=300, help="first N PNG files, natural order (default 300)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per path; the median is reported")
    a = ap.parse_args(argv)

    for what, folder in (("PNG", a.png_dir), ("DICOM", a.dicom_dir), ("model", a.model)):
        if not os.path.isdir(folder):
            hint = " (pass --model DIR)" if what == "model" else ""
            print(f"bench_classify: {what} folder not found: {folder}{hint}", file=sys.stderr)
            return 2
    import onnxruntime

    from ctviewer.imaging.series import iter_files
    from ctviewer.inference import ModelError, load_classifier

    pngs = sorted((str(p) for p in Path(a.png_dir).iterdir() if p.suffix.lower() == ".png"), key=natural_key)[: a.n_png]
    dicoms = list(iter_files([a.dicom_dir]))
    if not pngs or not dicoms:
        print(f"bench_classify: no {'PNG' if not pngs else 'DICOM'} files found", file=sys.stderr)
        return 2
    try:
        clf = load_classifier(a.model)
    except ModelError as exc:
        print(f"bench_classify: cannot use the model: {exc}", file=sys.stderr)
        return 2

    results = [
        bench_dataset(f"{len(pngs)} PNG", pngs, notebook_png, clf, a.repeat),
        bench_dataset(f"{len(dicoms)} DICOM", dicoms, notebook_dicom, clf, a.repeat),
    ]
    tta = "hflip TTA (2N per batch)" if "hflip" in clf.card.extra.get("tta", []) else "no TTA"
    print(f"\nmodel {clf.card.title} ({clf.params.size}x{clf.params.size}, {tta}); median of {a.repeat} runs")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"ONNX Runtime {onnxruntime.__version__} (CPU)\n"
    )
    print(f"{'data':<10} {'path':<22} {'slices/s':>9} {'x notebook':>11} {'% of ceiling':>13}")
    for (n, rows), name in zip(results, ("PNG", "DICOM")):
        rate = dict(rows)
        for label, r in rows:
            pct = f"{100 * r / rate['forward x1 (ceiling)']:.0f} %" if label != "decode+preprocess" else ""
            print(f"{f'{name} ({n})':<10} {label:<22} {r:9.1f} {r / rate['notebook way']:10.2f}x {pct:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
