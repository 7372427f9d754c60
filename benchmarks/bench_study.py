"""Batch study review at scale: throughput against the raw model, and memory over 2000 slices.

In one run, with the bundled model (or ``--model``):

  raw model          ``Classifier.probabilities`` on the series' slices already decoded and
                     preprocessed (one array, batches of 64): every forward pass the card asks
                     for (hflip TTA) and the calibration, no I/O. The ceiling of any engine.
  classify_study     ``study_batch.classify_study`` on the header-scanned series: decoding,
                     preprocessing, lung detection, positions and pixel hashes on worker
                     threads, batched inference, sorting, the study verdict
  ratio              classify_study / raw model (target >= 80 %)

Both are warmed up once, then timed in turn ``--repeat`` rounds (median), as
``bench_classify.py`` does, so a change of load on the shared machine hits both alike.

Memory: the resident set size (``VmRSS`` of /proc/self/status, sampled every 20 ms by a
thread) before, at its peak during, and after ``classify_study`` over 2000 slices (the
series' files listed again and again in one series, so every slice is decoded anew),
every ``SliceResult`` kept as the GUI keeps them. Target: growth under 500 MB.

The series: the 32-slice Lung-PET-CT-Dx series of ../shared/data written 10 times into a
temporary folder as one series (``bench_gui.make_series``: each copy shifted along z, raw
pixels +copy, so no two slices are identical), cut to ``--slices`` (300) files.

    .venv/bin/python benchmarks/bench_study.py [--series DIR] [--model DIR] [--slices 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_gui import DEFAULT_SERIES, make_series  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class PeakRss:
    """Samples VmRSS on a thread; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    ap.add_argument("--model", default=None, metavar="DIR", help="model package (default: the bundled model)")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--memory-slices", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    if not a.series.is_dir():
        print(f"bench_study: no series at {a.series}", file=sys.stderr)
        return 2
    import numpy as np
    import onnxruntime

    from ctviewer.imaging.io import load_slices
    from ctviewer.imaging.preprocess import to_model_input
    from ctviewer.inference import load_classifier
    from ctviewer.studies import scan
    from ctviewer.studies import SeriesNode, StudyNode
    from ctviewer.studies import classify_study

    tmp = Path(tempfile.mkdtemp(prefix="ctviewer-bench-study-"))
    try:
        series_dir = tmp / "series"
        series_dir.mkdir()
        copies = -(-a.slices // len(list(a.series.rglob("*.dcm"))))
        make_series(a.series, series_dir, copies=copies)
        for extra in sorted(series_dir.glob("*.dcm"))[a.slices:]:
            extra.unlink()
        patients, errors = scan([series_dir])
        if errors or len(patients) != 1 or len(patients[0].studies) != 1:
            print(f"bench_study: unexpected scan of the series: {errors or patients}", file=sys.stderr)
            return 2
        patient, study = patients[0], patients[0].studies[0]
        n = sum(len(s.files) for s in study.series)

        from ctviewer.inference.model import SPIN

        clf = load_classifier(a.model)
        other = load_classifier(a.model, spin=not SPIN)  # the other choice of ONNX Runtime's idle threads
        inputs = np.stack([to_model_input(s, clf.params) for s in study.series[0].files for s in load_slices(s)])

        def raw():
            clf.probabilities(inputs)

        def engine():
            r = classify_study(study, patient, clf)
            if len(r.slices) != n or any(s.error for s in r.slices):
                sys.exit(f"bench_study: classify_study gave {len(r.slices)} results for {n} slices")

        class NoModel:
            """The classifier's interface without the model: what the readers cost alone."""

            params, card = clf.params, clf.card

            @staticmethod
            def probabilities(x):
                return np.zeros(len(x))

            label_for = staticmethod(clf.label_for)

        def readers():
            classify_study(study, patient, NoModel())

        def engine_other():
            classify_study(study, patient, other)

        paths = {"raw model (probabilities)": raw, "classify_study": engine,
                 f"  with spinning {'on' if not SPIN else 'off'}": engine_other, "readers only (no model)": readers}
        for fn in paths.values():
            fn()  # warm-up: tracing, caches
        times: dict[str, list[float]] = {k: [] for k in paths}
        cpu: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(a.repeat):
            for label, fn in paths.items():
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
                cpu[label].append(time.process_time() - c0)
        rate = {k: n / statistics.median(v) for k, v in times.items()}
        core_ms = {k: 1000 * statistics.median(v) / n for k, v in cpu.items()}
        ratio = rate["classify_study"] / rate["raw model (probabilities)"]

        # Memory: one series listing the files again and again, >= --memory-slices slices.
        files = list(study.series[0].files)
        many = tuple((files * (a.memory_slices // len(files) + 1))[: a.memory_slices])
        big = StudyNode(study.uid, (SeriesNode(study.series[0].uid, many, "CT", n_frames=len(many),
                                               study_uid=study.uid),), patient_key=patient.key)
        import gc

        gc.collect()
        before = rss_mb()
        t0 = time.perf_counter()
        with PeakRss() as peak:
            result = classify_study(big, patient, clf)
        seconds = time.perf_counter() - t0
        gc.collect()
        after = rss_mb()
        assert len(result.slices) == len(many)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    tta = "hflip TTA (2N per batch)" if "hflip" in clf.card.extra.get("tta", []) else "no TTA"
    print(f"\nmodel {clf.card.title} ({clf.params.size}x{clf.params.size}, {tta}); series of {n} DICOM slices "
          f"(512x512); median of {a.repeat} runs")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"ONNX Runtime {onnxruntime.__version__}\n")
    print(f"{'throughput':<34} {'slices/s':>9} {'% of raw':>9} {'core-ms/slice':>14}")
    for label, r in rate.items():
        print(f"{label:<34} {r:9.1f} {100 * r / rate['raw model (probabilities)']:8.0f} % {core_ms[label]:14.1f}")
    status = "OK" if ratio >= 0.8 else "BELOW TARGET"
    print(f"{'ratio (target >= 80 %)':<34} {'':>9} {100 * ratio:8.0f} %  {status}\n")
    growth = peak.peak - before
    print(f"{'memory, ' + str(len(many)) + ' slices in one study':<34} {'RSS MB':>9}")
    print(f"{'before':<34} {before:9.0f}")
    print(f"{'peak during':<34} {peak.peak:9.0f}")
    print(f"{'after (results kept)':<34} {after:9.0f}")
    print(f"{'growth, peak - before (< 500 MB)':<34} {growth:9.0f}  {'OK' if growth < 500 else 'OVER TARGET'}")
    print(f"{'rate over the ' + str(len(many)) + ' slices':<34} {len(many) / seconds:9.1f} slices/s")
    return 0 if ratio >= 0.8 and growth < 500 else 1


if __name__ == "__main__":
    sys.exit(main())
