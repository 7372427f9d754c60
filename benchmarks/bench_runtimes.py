"""Keras/TensorFlow against ONNX Runtime on the same model, in the same run (issue 12).

For each runtime:

  ready            a new process: import the runtime, load (verify) the model, one warm-up
                   prediction; wall seconds, median of --repeat processes (page cache warm)
  batch N          ms per slice of the raw forward (one pass, no TTA) at batch 1, 8 and 64
  slice on screen  ms for what the window does for the slice on screen: probabilities() of
                   one input (flip TTA: a batch of 2)
  engine           classify_files over 300 dataset PNGs and the 64 Lung-PET-CT-Dx DICOM
                   slices (decoding and preprocessing on the reader thread), slices/s
  max |dp|         largest difference in p(COVID) between the runtimes on those slices

ONNX Runtime is also measured with 1 and 2 intra-op threads (the GUI's and the batch
engine's choices).  The Keras path needs the training extra (``pip install -e .[training]``,
which ./dev.sh installs) and the model's Keras weights: ``--keras-run DIR`` (a training run
folder), or by default the bundled 1.1.0 weights recovered from git history (the ONNX model's
card names their SHA-256, which is checked).

    .venv/bin/python benchmarks/bench_runtimes.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
BUNDLED = REPO / "resources" / "models" / "ct-resnet50"
KERAS_COMMIT = "31ab8bd"  # the last commit that shipped 1.1.0 as Keras weights

READY = {
    "onnx": """
import time, numpy as np
t0 = time.perf_counter()
from ctviewer.inference import load_classifier
clf = load_classifier({model!r}, threads={threads})
clf.probabilities(np.zeros((1, 80, 80, 3), np.float32))
print(time.perf_counter() - t0)
""",
    "keras": """
import os, time, numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
from training.keras_model import load_keras_run
clf = load_keras_run({model!r})
clf.probabilities(np.zeros((1, 80, 80, 3), np.float32))
print(time.perf_counter() - t0)
""",
}


def keras_run_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    tmp = Path(tempfile.mkdtemp(prefix="ctviewer-keras-"))
    shutil.copy(BUNDLED / "model-card.json", tmp / "model-card.json")
    with open(tmp / "model.weights.h5", "wb") as fh:
        subprocess.run(["git", "show", f"{KERAS_COMMIT}:resources/models/ct-resnet50/model.weights.h5"], cwd=REPO,
                       stdout=fh, check=True)
    return tmp


def ready_seconds(runtime: str, model: Path, repeat: int, threads=None) -> float:
    code = READY[runtime].format(model=str(model), threads=threads)
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def per_slice_ms(fn, x, repeat: int, min_seconds: float = 1.0) -> float:
    fn(x)
    best = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min_seconds:
            fn(x)
            n += 1
        best.append((time.perf_counter() - t0) / (n * len(x)) * 1000)
    return statistics.median(best)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keras-run", default=None, metavar="DIR")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-png", type=int, default=300)
    a = ap.parse_args(argv)
    import numpy as np

    sys.path.insert(0, str(REPO))
    from ctviewer.studies import classify_files
    from ctviewer.imaging.io import load_slices
    from ctviewer.imaging.preprocess import to_model_input
    from ctviewer.imaging.series import iter_files
    from ctviewer.inference import load_classifier

    pngs = sorted(str(p) for p in (DATA / "sarscov2-dev" / "COVID").glob("*.png"))[: a.n_png]
    dicoms = list(iter_files([DATA / "dicom" / "Lung-PET-CT-Dx"]))
    if not pngs or not dicoms:
        print(f"bench_runtimes: needs {DATA}", file=sys.stderr)
        return 2
    kdir = keras_run_dir(a.keras_run)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from training.keras_model import load_keras_run

    clfs = {"keras": load_keras_run(kdir), "onnx": load_classifier(BUNDLED),
            "onnx 1 thread": load_classifier(BUNDLED, threads=1), "onnx 2 threads": load_classifier(BUNDLED, threads=2)}
    inputs = np.stack([to_model_input(s, clfs["onnx"].params) for f in pngs + dicoms for s in load_slices(f)])
    rows = {}
    for name, clf in clfs.items():
        r = rows[name] = {}
        raw = (lambda x, c=clf: c.outputs(x)) if name != "keras" else (lambda x, c=clf: c._forward(x))
        for b in (1, 8, 64):
            r[f"batch {b}"] = per_slice_ms(raw, inputs[:b], a.repeat)
        r["slice on screen"] = per_slice_ms(lambda x, c=clf: c.probabilities(x), inputs[:1], a.repeat)
        for label, files in (("engine PNG", pngs), ("engine DICOM", dicoms)):
            ts = []
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                n = sum(1 for rec in classify_files(files, clf) if rec.ok)
                ts.append(time.perf_counter() - t0)
            r[label] = n / statistics.median(ts)
        print(f"  {name}: {json.dumps({k: round(v, 2) for k, v in r.items()})}", file=sys.stderr, flush=True)
    rows["keras"]["ready"] = ready_seconds("keras", kdir, a.repeat)
    rows["onnx"]["ready"] = ready_seconds("onnx", BUNDLED, a.repeat)
    rows["onnx 2 threads"]["ready"] = ready_seconds("onnx", BUNDLED, a.repeat, threads=2)
    dp = float(np.max(np.abs(clfs["keras"].probabilities(inputs) - clfs["onnx"].probabilities(inputs))))

    import keras
    import onnxruntime
    import tensorflow as tf

    print(f"\nmodel {clfs['onnx'].card.title}, {len(inputs)} slices; median of {a.repeat}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}, ONNX Runtime {onnxruntime.__version__}")
    cols = ["ready", "batch 1", "batch 8", "batch 64", "slice on screen", "engine PNG", "engine DICOM"]
    units = ["s", "ms/slice", "ms/slice", "ms/slice", "ms", "slices/s", "slices/s"]
    print(f"\n| {'runtime':<16} | " + " | ".join(f"{c} ({u})" for c, u in zip(cols, units)) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for name, r in rows.items():
        print(f"| {name:<16} | " + " | ".join(f"{r[c]:.2f}" if c in r else "" for c in cols) + " |")
    k, o = rows["keras"], rows["onnx"]
    print(f"\nONNX / Keras: engine PNG {o['engine PNG'] / k['engine PNG']:.2f}x, engine DICOM "
          f"{o['engine DICOM'] / k['engine DICOM']:.2f}x, batch 1 {k['batch 1'] / o['batch 1']:.2f}x faster; "
          f"largest |delta p(COVID)| {dp:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
