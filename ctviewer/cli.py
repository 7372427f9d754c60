"""``ctviewer`` command line.

``ctviewer [PATH...]``            open the application (and PATH: files, folders,
                                  DICOMDIRs); the first launch opens the samples
``ctviewer --screenshot OUT.png [--heatmap] PATH``
                                  open PATH in the real window, wait for the
                                  prediction (and heatmap), save the window, exit
``ctviewer --self-test``         verify the model's hash and classify the bundled
                                  samples against their shipped results (exit 0/1)
``ctviewer classify PATH...``     classify files, folders (recursive) and DICOMDIRs;
                                  one CSV row per slice (per frame)

Exit status of ``classify``: 0 every input classified, 1 some refused (each in
its row), 2 usage error (bad arguments, missing path, unusable model).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = total > 0 and hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.monotonic()

    def step(self, _path=None) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * self.done / self.total)
        rate = self.done / max(1e-6, time.monotonic() - self.t0)
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} files  {rate:.1f}/s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _quiet_libraries(silence_stderr: bool = True) -> None:
    """Library chatter (TensorFlow start-up, pydicom's warnings about malformed
    files) is not for users: every refused file gets its reason in the CSV.

    ``silence_stderr=False`` (the GUI, which imports TensorFlow on a worker thread
    while the GUI thread runs) skips pointing the process's stderr at /dev/null,
    which would swallow the GUI thread's messages too."""
    import logging
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    if silence_stderr:
        _import_tensorflow_quietly()


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL in 2.21:
    import it with the process's stderr pointed at /dev/null.  An import failure is
    still raised (and reported) after stderr is restored."""
    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    except ImportError:
        pass  # keras reports it properly when the model is loaded
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def classify(argv: list[str]) -> int:
    from ctviewer.batch import COLUMNS, classify_files
    from ctviewer.imaging.series import iter_files

    ap = argparse.ArgumentParser(prog="ctviewer classify", description="Classify CT slices headless; CSV out.")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (searched recursively) or DICOMDIRs")
    ap.add_argument("--csv", default="-", metavar="FILE", help="where to write the CSV ('-' = standard output, the default)")
    ap.add_argument("--model", default=None, metavar="DIR", help="model package folder (default: the bundled model)")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args(argv)
    missing = [p for p in a.paths if not os.path.exists(p)]
    if missing:
        print(f"ctviewer classify: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if a.batch_size < 1:
        print("ctviewer classify: --batch-size must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    _quiet_libraries()
    from ctviewer.inference import ModelError, load_classifier

    try:
        clf = load_classifier(a.model)
    except ModelError as exc:
        print(f"ctviewer classify: cannot use the model: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files = list(iter_files(a.paths))
    if not files:
        print("ctviewer classify: no DICOM or PNG/JPEG files found", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout if a.csv == "-" else open(a.csv, "w", newline="", encoding="utf-8")
    progress = _Progress(len(files))
    n_ok = n_err = 0
    try:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for rec in classify_files(files, clf, batch_size=a.batch_size, on_file_done=progress.step):
            writer.writerow(rec.as_row())
            n_ok += rec.ok
            n_err += not rec.ok
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    print(f"{n_ok} slices classified, {n_err} files refused ({clf.card.title})", file=sys.stderr)
    return EXIT_REFUSED if n_err else EXIT_OK


def launch(argv: list[str]) -> int:
    """The desktop application (``ctviewer [PATH...] [--screenshot OUT.png [--heatmap]]``)."""
    try:
        from ctviewer.gui.app import run
    except ImportError as exc:
        print(f"ctviewer: the desktop application needs PySide6 ({exc}); install it with: pip install 'ctviewer[gui]'",
              file=sys.stderr)
        return EXIT_USAGE
    return run(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "classify":
        return classify(argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return EXIT_OK
    if argv and argv[0] == "--self-test":
        from ctviewer.selftest import run

        return run()
    if argv and argv[0] == "--version":
        from ctviewer import __version__

        print(f"ctviewer {__version__}")
        return EXIT_OK
    return launch(argv)


if __name__ == "__main__":
    sys.exit(main())
