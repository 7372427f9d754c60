"""Issue 24's table, from one run: every speed and size figure the issue asks for, measured side by
side on this machine so that the ratios hold even when it is loaded.

1. Runtimes (``bench_int8.runtime_rows``): ONNX Runtime fp32 (the shipped file), ONNX Runtime
   int8 (static QDQ, calibrated on SARS-CoV-2 slices), OpenVINO fp32/bf16 where its wheel is
   installed: ms per slice at batch 1 and 64, largest |dp| against fp32, AUC per source.
2. ``ctviewer classify`` on the same N dataset PNGs, as a user runs it (a new process, model
   load included, CSV written): this tree against a baseline tree (``--baseline``, default a
   temporary git worktree of ``BASELINE``, the last commit before issue 24's work), alternating,
   median of ``--repeat``.
3. The seed's way on the same files: a new process that imports Keras, loads the same 1.1.0
   weights (recovered from git history, ``bench_runtimes.keras_run_dir``), then per file
   ``cv2.imread`` + ``cv2.resize(80, 80)`` + ``model.predict(x[None])``.  Ratio = its wall time /
   ``classify``'s.
4. Batch review: the engine (``classify_files``) against ``probabilities()`` on the same
   inputs (``bench_classify.bench_dataset``), as a percentage.
5. Slice on screen: ``probabilities()`` of one input with the GUI's threads (flip TTA: a batch
   of 2), median ms.
6. Bundle: ``du -sb dist/ctviewer`` when it is built (``./dev.sh bundle``).

    .venv/bin/python benchmarks/bench_release.py [--n-png 300] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = REPO.parent / "shared" / "data"
BASELINE = "d304dc8"  # main before issue 24's work (OpenCV in the app, float32 weights)

SEED = """
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
t0 = time.perf_counter()
import cv2, numpy as np
from training.keras_model import load_keras_run
model = load_keras_run(sys.argv[1]).model
for f in sys.argv[2:]:
    x = cv2.resize(cv2.imread(f), (80, 80)).astype(np.float32)
    model.predict(x[None], verbose=0)
print(time.perf_counter() - t0)
"""


def wall(cmd, cwd, env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-png", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline", default=None, metavar="DIR", help="a checkout to compare classify against")
    ap.add_argument("--per-class", type=int, default=100, help="slices per class and source for the runtimes")
    ap.add_argument("--skip-seed", action="store_true", help="leave out the Keras seed's way (no training extra)")
    a = ap.parse_args(argv)
    if not DATA.is_dir():
        print("bench_release: ../shared/data is missing", file=sys.stderr)
        return 2
    from bench_classify import bench_dataset, natural_key, notebook_png
    from bench_int8 import runtime_rows, runtime_table
    from bench_runtimes import keras_run_dir, per_slice_ms

    from ctviewer.inference import load_classifier
    from ctviewer.inference.runtime import GUI_THREADS

    model_dir = REPO / "resources" / "models" / "ct-resnet50"
    pngs = sorted((str(p) for p in (DATA / "sarscov2-dev" / "COVID").iterdir()), key=natural_key)[: a.n_png]
    out = {}

    print("runtimes ...", file=sys.stderr, flush=True)
    card, sources, rows = runtime_rows(model_dir, a.per_class, 128, 5)

    print("classify, this tree against the baseline ...", file=sys.stderr, flush=True)
    base = Path(a.baseline) if a.baseline else Path(tempfile.mkdtemp(prefix="ctviewer-baseline-")) / "tree"
    if not a.baseline:
        subprocess.run(["git", "worktree", "add", "--detach", str(base), BASELINE], cwd=REPO, check=True,
                       capture_output=True)
    csv = Path(tempfile.mkdtemp()) / "out.csv"
    trees = {"this tree": REPO, f"baseline {BASELINE}": base}
    times: dict = {k: [] for k in trees}
    for _ in range(a.repeat):
        for label, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree), "CTVIEWER_DATA_DIR": str(csv.parent)}
            times[label].append(wall([sys.executable, "-m", "ctviewer", "classify", *pngs, "--csv", str(csv)],
                                     tree, env))
    classify = {k: statistics.median(v) for k, v in times.items()}

    seed = None
    if not a.skip_seed:
        print("the seed's way (Keras, one file at a time) ...", file=sys.stderr, flush=True)
        run = keras_run_dir(None)
        seed = statistics.median(
            float(subprocess.run([sys.executable, "-c", SEED, str(run), *pngs], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1])
            for _ in range(max(1, a.repeat - 1)))

    print("batch review and slice on screen ...", file=sys.stderr, flush=True)
    clf = load_classifier(model_dir)
    n, brows = bench_dataset(f"{len(pngs)} PNG", pngs, notebook_png, clf, a.repeat)
    rate = dict(brows)
    gui = load_classifier(model_dir, threads=GUI_THREADS)
    from ctviewer.imaging import load_slices, to_model_input

    x1 = to_model_input(load_slices(pngs[0])[0], gui.params)[None]
    on_screen = per_slice_ms(gui.probabilities, x1, 5, 0.5)

    bundle = REPO / "dist" / "ctviewer"
    size = (int(subprocess.run(["du", "-sb", str(bundle)], capture_output=True, text=True).stdout.split()[0])
            if bundle.is_dir() else None)
    if not a.baseline:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False, capture_output=True)
        shutil.rmtree(base.parent, ignore_errors=True)

    print(f"\n{card.name} {card.version}; {os.cpu_count()} CPUs; one run of bench_release.py\n")
    print(runtime_table(sources, rows))
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    this, old = classify["this tree"], classify[f"baseline {BASELINE}"]
    print(f"| `ctviewer classify` {len(pngs)} PNGs, wall (process, model load, CSV) | {this:.1f} s "
          f"(baseline {BASELINE}: {old:.1f} s, **{old / this:.2f}x**) | 2x |")
    if seed is not None:
        print(f"| the seed's way (Keras `predict` per file, same weights), wall | {seed:.1f} s "
              f"(**{seed / this:.2f}x** `classify`'s) | 10x |")
    print(f"| batch review: engine / `probabilities()` | {rate['ctviewer engine']:.1f} / "
          f"{rate['probabilities()']:.1f} slices/s = **{100 * rate['ctviewer engine'] / rate['probabilities()']:.0f} %** | 85 % |")
    print(f"| slice on screen: `probabilities()` of one input, {GUI_THREADS} threads | **{on_screen:.1f} ms** | 10 ms |")
    print(f"| bundle (`du -sb dist/ctviewer`) | " + (f"**{size / 1e6:.0f} MB**" if size else "not built") + " | 400 MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
