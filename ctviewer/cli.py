"""``ctviewer`` command line.

``ctviewer [PATH...]``            open the application (and PATH: files, folders,
                                  DICOMDIRs); the first launch opens the samples
``ctviewer --screenshot OUT.png [--heatmap] PATH``
                                  open PATH in the real window, wait for the
                                  prediction (and heatmap), save the window, exit
``ctviewer --check-platform``    can a window open here (Qt platform, display, the xcb
                                  libraries)?  Says what is missing and how to install it
``ctviewer --self-test``         verify the model's hash and classify the bundled
                                  samples against their shipped results (exit 0/1)
``ctviewer classify PATH...``     classify files, folders (recursive) and DICOMDIRs;
                                  one CSV row per slice (per frame)
``ctviewer report PATH... --pdf OUT.pdf [--sr OUT.dcm] [--sc OUT.dcm] [--csv OUT.csv] [--anonymize] [--model DIR]``
                                  scan PATH (a series, a study, a folder, a DICOMDIR),
                                  classify every study found and write, per study, a PDF
                                  report (and a DICOM Structured Report, a Secondary
                                  Capture of the most suspicious slice's heatmap), and
                                  one CSV of all slices of all studies

``ctviewer anonymize PATH... --to DIR [--key FILE] [--allow-burned-in] [--keep-characteristics]``
                                  de-identified copies of whole studies (ctviewer.privacy.deid)

``ctviewer pacs echo|find|get (--dicomweb URL | --dimse AET@HOST:PORT) ...``
                                  the hospital's PACS (ctviewer.pacs); ``report --send NODE``
                                  stores the SR (and SC) back into the images' study

Exit status of ``classify``: 0 every input classified, 1 some refused (each in
its row), 2 usage error (bad arguments, missing path, unusable model).

``report`` names: with one study, the files are written as given; with several,
each per-study output gets the study's number in scan order (patients by key,
studies by date) before its suffix: ``OUT.pdf`` -> ``OUT-1.pdf``, ``OUT-2.pdf``...
(the CSV stays one file).  One line per study on stderr: the file names, the
verdict with its confidence and the slice counts.  Every batch is recorded in the
history (``$CTVIEWER_DATA_DIR``).  Exit status: 0 all written, 1 some files refused
or some output not written (the others still are), 2 usage error (bad arguments,
missing path, unusable model, nothing classifiable found).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
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


def _paths_exist(prog: str, paths: list[str]) -> bool:
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        print(f"{prog}: no such file or folder: {', '.join(missing)}", file=sys.stderr)
    return not missing


def _load_model(prog: str, folder: str | None):
    """The verified classifier, or None after saying why it cannot be used."""
    from ctviewer.inference import ModelError, load_classifier
    from ctviewer.inference.runtime import quiet_libraries

    quiet_libraries()

    try:
        return load_classifier(folder)
    except ModelError as exc:
        print(f"{prog}: cannot use the model: {exc}", file=sys.stderr)
        return None


def classify(argv: list[str]) -> int:
    from ctviewer.studies.batch import COLUMNS, classify_files
    from ctviewer.imaging.series import iter_files

    ap = argparse.ArgumentParser(prog="ctviewer classify", description="Classify CT slices headless; CSV out.")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (searched recursively) or DICOMDIRs")
    ap.add_argument("--csv", default="-", metavar="FILE", help="where to write the CSV ('-' = standard output, the default)")
    ap.add_argument("--model", default=None, metavar="DIR", help="model package folder (default: the bundled model)")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args(argv)
    if not _paths_exist("ctviewer classify", a.paths):
        return EXIT_USAGE
    if a.batch_size < 1:
        print("ctviewer classify: --batch-size must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    clf = _load_model("ctviewer classify", a.model)
    if clf is None:
        return EXIT_USAGE
    files = list(iter_files(a.paths))
    if not files:
        print("ctviewer classify: no DICOM or PNG/JPEG files found", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout if a.csv == "-" else open(a.csv, "w", newline="", encoding="utf-8")
    progress = _Progress(len(files))
    n_ok = n_err = n_gated = 0
    try:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for rec in classify_files(files, clf, batch_size=a.batch_size, on_file_done=progress.step):
            writer.writerow(rec.as_row())
            n_ok += rec.judged
            n_gated += rec.ok and not rec.judged
            n_err += not rec.ok
    finally:
        progress.close()
        if out is not sys.stdout:
            out.close()
    print(f"{n_ok} slices classified, {n_gated} slices not judged (no lung, not axial), {n_err} files refused "
          f"({clf.card.title})", file=sys.stderr)
    return EXIT_REFUSED if n_err else EXIT_OK


def numbered(path: str, n: int, several: bool) -> str:
    """``OUT.pdf`` -> ``OUT-<n>.pdf`` when there are several studies, else as given."""
    if not several:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}-{n}{ext}"


def report(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ctviewer report",
                                 description="Classify whole studies headless; PDF (and DICOM SR, CSV) reports.")
    ap.add_argument("paths", nargs="*", metavar="PATH", help="series, study or folders (recursive), DICOMDIRs")
    ap.add_argument("--pdf", default=None, metavar="OUT.pdf", help="PDF report (one per study: OUT-<n>.pdf)")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="archive mode: one folder per study under DIR/studies (SR, CSV rows, result.json), "
                         "DIR/manifest.jsonl and DIR/results.csv; run again with the same DIR to resume")
    ap.add_argument("--cluster", default=None, metavar="local[:N]|tcp://HOST:PORT",
                    help="with --out: run the studies on a Dask cluster (a local one of N worker processes, or an "
                         "existing scheduler)")
    ap.add_argument("--pdfs", action="store_true", help="with --out: a PDF report in each study's folder too")
    ap.add_argument("--from-pacs", action="store_true",
                    help="with --out: the studies a PACS search finds (node: --dicomweb/--dimse; filters: --query), "
                         "each retrieved by the process that classifies it and deleted afterwards")
    ap.add_argument("--query", default="", metavar="KEY=VALUE,...",
                    help="with --from-pacs: patient-id, patient-name, study-date (YYYYMMDD-YYYYMMDD), modality")
    ap.add_argument("--sr", default=None, metavar="OUT.dcm", help="DICOM Structured Report (one per study)")
    ap.add_argument("--sc", default=None, metavar="OUT.dcm",
                    help="DICOM Secondary Capture of the most suspicious slice with its heatmap (one per study)")
    ap.add_argument("--csv", default=None, metavar="OUT.csv", help="CSV of every slice of every study")
    ap.add_argument("--anonymize", action="store_true",
                    help="de-identify every output (DICOM PS3.15 Basic Profile, modified dates, clean descriptors)")
    ap.add_argument("--key", default=None, metavar="FILE",
                    help="with --anonymize: keep the pseudonym secret and the mapping here (mode 0600) to "
                         "re-identify later; the same key gives the same pseudonyms as 'ctviewer anonymize'")
    ap.add_argument("--model", default=None, metavar="DIR", help="model package folder (default: the bundled model)")
    ap.add_argument("--send", action="store_true",
                    help="store the SR (and SC) into the images' study on the node given with --dicomweb/--dimse, "
                         "and confirm by finding it there")
    _node_args(ap)
    a = ap.parse_args(argv)
    if a.out or a.cluster or a.pdfs:
        return _report_archive(a)
    if not a.pdf or not a.paths or a.from_pacs or a.query:
        print("ctviewer report: give PATH... --pdf OUT.pdf (or --out DIR for a whole archive; --from-pacs goes "
              "with --out)", file=sys.stderr)
        return EXIT_USAGE
    if a.send and not a.sr:
        print("ctviewer report: --send needs --sr", file=sys.stderr)
        return EXIT_USAGE
    if not _paths_exist("ctviewer report", a.paths):
        return EXIT_USAGE
    clf = _load_model("ctviewer report", a.model)
    if clf is None:
        return EXIT_USAGE

    from ctviewer.studies import scan
    from ctviewer.studies.study_batch import classifiable_series, classify_study, suspicious_thumbnails

    patients, scan_errors = scan(a.paths)
    jobs = [(patient, study) for patient in patients for study in patient.studies if classifiable_series(study)]
    for err in scan_errors:
        print(f"ctviewer report: refused {err.path}: {err.reason}", file=sys.stderr)
    if not jobs:
        print("ctviewer report: no CT series (DICOM or PNG/JPEG slices) found", file=sys.stderr)
        return EXIT_USAGE

    from ctviewer import __version__
    from ctviewer.history import History, HistoryError
    from ctviewer.reports import pseudonym, write_csv, write_heatmap_sc, write_pdf, write_sr

    try:
        history: History | None = History()
    except HistoryError as exc:
        print(f"ctviewer report: the batches are not recorded: {exc}", file=sys.stderr)
        history = None
    if a.key and not a.anonymize:
        print("ctviewer report: --key goes with --anonymize", file=sys.stderr)
        return EXIT_USAGE
    from ctviewer.privacy import Deidentifier

    deid = Deidentifier(key_file=a.key) if a.anonymize else None
    several = len(jobs) > 1
    results = []
    sent: list[str] = []
    failed = bool(scan_errors)
    try:
        for n, (patient, study) in enumerate(jobs, 1):
            result = classify_study(study, patient, clf)
            if history is not None:
                try:
                    history.add_batch(result)
                except HistoryError as exc:
                    print(f"ctviewer report: batch not recorded: {exc}", file=sys.stderr)
            n_refused = sum(bool(s.error) for s in result.slices)
            failed |= n_refused > 0
            written = []
            thumbs = suspicious_thumbnails(result, clf)
            if deid is not None:  # one de-identifier for the whole export: consistent pseudonyms
                result = deid.study_result(result)
                thumbs = deid.thumbnails(thumbs, result)
            results.append(result)
            outputs = [("PDF", a.pdf, lambda dest: write_pdf(result, dest, clf.card, thumbs, anonymize=a.anonymize,
                                                                software_version=__version__))]
            if a.sr:
                outputs.append(("SR", a.sr, lambda dest: write_sr(result, dest, anonymize=a.anonymize)))
            if a.sc:
                outputs.append(("SC", a.sc, (lambda dest: write_heatmap_sc(result, thumbs[0], dest,
                                                                           anonymize=a.anonymize)) if thumbs else None))
            for kind, out, write in outputs:
                dest = numbered(out, n, several)
                if write is None:
                    print(f"ctviewer report: {dest}: not written, no lung slice was classified", file=sys.stderr)
                    failed = True
                    continue
                try:
                    write(dest)
                    written.append(dest)
                    if kind in ("SR", "SC"):
                        sent.append(dest)
                except Exception as exc:  # noqa: BLE001 - one report failing must not lose the others
                    print(f"ctviewer report: {dest}: {kind} not written ({type(exc).__name__}: {exc})", file=sys.stderr)
                    failed = True
            v = result.verdict
            counts = (f"{len(result.slices)} slices: {v.n_lung} lung slices judged ({v.n_positive} COVID), "
                      f"{v.n_excluded} not judged (no lung, not axial), {v.n_refused} refused") if v else f"{len(result.slices)} slices"
            verdict = f"{v.label} (confidence {v.confidence:.2f})" if v else "no verdict"
            print(f"study {n}/{len(jobs)} {pseudonym(result.study.uid, a.anonymize)}: {verdict}; {counts} -> "
                  f"{', '.join(written) or 'nothing written'}", file=sys.stderr)
        if a.send:
            failed |= not _send(a, [p for p in sent if os.path.exists(p)])
        if a.csv:
            try:
                n_rows = write_csv(results, a.csv, anonymize=a.anonymize)
                print(f"{n_rows} slices of {len(results)} studies -> {a.csv}", file=sys.stderr)
            except Exception as exc:  # noqa: BLE001
                print(f"ctviewer report: {a.csv}: CSV not written ({type(exc).__name__}: {exc})", file=sys.stderr)
                failed = True
    finally:
        if history is not None:
            history.close()
        if deid is not None and deid.save_key():
            print(f"the re-identification key was written to {a.key} (keep it private)", file=sys.stderr)
    return EXIT_REFUSED if failed else EXIT_OK


def _report_archive(a) -> int:
    """``ctviewer report ROOT... --out DIR [--cluster ...] [--pdfs]`` (issue 25, ``ctviewer.archive``)."""
    other = [f for f, v in (("--pdf", a.pdf), ("--sr", a.sr), ("--sc", a.sc), ("--csv", a.csv),
                            ("--anonymize", a.anonymize), ("--send", a.send), ("--key", a.key)) if v]
    if not a.out or other:
        print("ctviewer report: archive mode is --out DIR [--cluster local[:N]|tcp://HOST:PORT] [--pdfs]"
              + (f"; {', '.join(other)} go with --pdf (one report per run), not with --out" if other else ""),
              file=sys.stderr)
        return EXIT_USAGE
    pacs = query = None
    if a.from_pacs:
        if a.paths:
            print("ctviewer report: --from-pacs takes its studies from the PACS, not from PATHs", file=sys.stderr)
            return EXIT_USAGE
        keys = {"patient-id": "patient_id", "patient-name": "patient_name", "study-date": "study_date",
                "modality": "modality"}
        query = {}
        for part in filter(None, (p.strip() for p in a.query.split(","))):
            k, _, v = part.partition("=")
            if k.strip() not in keys or not v:
                print(f"ctviewer report: --query {part!r}: give KEY=VALUE with KEY one of {', '.join(keys)}",
                      file=sys.stderr)
                return EXIT_USAGE
            query[keys[k.strip()]] = v.strip()
        pacs = {"dicomweb": a.dicomweb, "dimse": a.dimse, "aet": a.aet, "user": a.user, "insecure": a.insecure,
                "ca_bundle": a.ca_bundle, "timeout": a.timeout, "max_matches": a.max_matches,
                "max_instances": a.max_instances, "max_instance_bytes": a.max_instance_mb << 20}
    elif not a.paths:
        print("ctviewer report: give the PATHs of the archive (or --from-pacs)", file=sys.stderr)
        return EXIT_USAGE
    elif not _paths_exist("ctviewer report", a.paths):
        return EXIT_USAGE
    if _load_model("ctviewer report", a.model) is None:  # checked once here, loaded again by each process
        return EXIT_USAGE
    from ctviewer.archive import run_archive
    from ctviewer.pacs import PacsError

    def progress(s, rec) -> None:
        if rec is None:
            print(f"{s.total} studies, {s.skipped} already done in {a.out}, {s.total - s.skipped} to run"
                  + (f" on {a.cluster}" if a.cluster else ""), file=sys.stderr)
            return
        left = s.total - s.skipped - s.done - s.failed
        rate = s.slices / s.seconds if s.seconds > 0 else 0.0
        per_study = s.seconds / max(1, s.done + s.failed)
        what = (f"{rec.get('verdict')} ({rec.get('confidence')})" if rec["status"] == "done"
                else f"FAILED: {rec.get('error')}")
        again = (f", attempt {rec['attempts']} (an earlier attempt was interrupted: a killed run or a lost worker)"
                 if rec.get("attempts", 1) > 1 else "")
        print(f"[{s.done + s.failed}/{s.total - s.skipped}] {rec['folder']}: {what}{again}; {s.done} done, "
              f"{s.failed} failed, {rate:.1f} slices/s, about {left * per_study:.0f} s left", file=sys.stderr)

    try:
        s = run_archive(a.paths, a.out, a.model, a.cluster, a.pdfs, progress, pacs, query)
    except ValueError as exc:
        print(f"ctviewer report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PacsError as exc:
        print(f"ctviewer report: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    for path, reason in s.refused_files:
        print(f"ctviewer report: refused {path}: {reason}", file=sys.stderr)
    print(f"{s.done} studies done, {s.failed} failed, {s.skipped} skipped (already done), {s.retried} run again after "
          f"an interrupted attempt; {s.slices} slices in {s.seconds:.1f} s -> {a.out}/results.csv, "
          f"{a.out}/manifest.jsonl", file=sys.stderr)
    if not s.total:
        print("ctviewer report: no CT series (DICOM or PNG/JPEG slices) found", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_REFUSED if s.failed or s.refused_files else EXIT_OK


def _send(a, paths: list[str]) -> bool:
    """``report --send``: store the written SR/SC on the node, then find each there again."""
    from ctviewer.pacs import PacsError

    if not paths:
        print("ctviewer report: nothing to send", file=sys.stderr)
        return False
    try:
        import pydicom

        node = _node(a)
        uids = node.store(paths)
        for path, uid in zip(paths, uids):
            study = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
            if not node.has_instance(study, uid):
                print(f"ctviewer report: {path} was sent but {node.describe()} does not list it", file=sys.stderr)
                return False
        print(f"sent {len(paths)} object(s) to {node.describe()}, found there again", file=sys.stderr)
        return True
    except PacsError as exc:
        print(f"ctviewer report: not sent ({exc}); the files are kept, run again to retry", file=sys.stderr)
        return False


def anonymize(argv: list[str]) -> int:
    """``ctviewer anonymize PATH... --to DIR``: de-identified copies of whole studies."""
    ap = argparse.ArgumentParser(prog="ctviewer anonymize",
                                 description="De-identified copies of DICOM studies (and PNG/JPEG slices).")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="series, studies, folders (recursive), DICOMDIRs")
    ap.add_argument("--to", required=True, metavar="DIR", help="where the copies go (created)")
    ap.add_argument("--key", default=None, metavar="FILE",
                    help="keep the pseudonym secret and the mapping here (mode 0600); reuse it with 'report --key'")
    ap.add_argument("--allow-burned-in", action="store_true",
                    help="copy images whose pixels may carry text (BurnedInAnnotation YES, secondary captures)")
    ap.add_argument("--keep-characteristics", action="store_true",
                    help="keep the patient's age, sex, size and weight (PS3.15 Retain Patient Characteristics "
                         "Option, recorded as code 113108); an age of 90 or more still becomes 090Y")
    a = ap.parse_args(argv)
    if not _paths_exist("ctviewer anonymize", a.paths):
        return EXIT_USAGE
    if a.key and Path(os.path.abspath(a.key)).is_relative_to(os.path.abspath(a.to)):
        print(f"ctviewer anonymize: the key {a.key} would be written inside {a.to}, the folder to share: "
              "it re-identifies every patient; keep it elsewhere", file=sys.stderr)
        return EXIT_USAGE
    from ctviewer.privacy import Deidentifier, anonymize_paths

    deid = Deidentifier(key_file=a.key, keep_characteristics=a.keep_characteristics)
    done, refused = anonymize_paths(a.paths, a.to, key_file=a.key, allow_burned_in=a.allow_burned_in,
                                    progress=_Progress, deid=deid)
    for path, reason in refused:
        print(f"ctviewer anonymize: refused {path}: {reason}", file=sys.stderr)
    if not done and not refused:
        print("ctviewer anonymize: no DICOM or PNG/JPEG files found", file=sys.stderr)
        return EXIT_USAGE
    print(f"{done} files anonymised into {a.to}, {len(refused)} refused"
          + (f"; the re-identification key is {a.key} (keep it private)" if a.key else ""), file=sys.stderr)
    return EXIT_REFUSED if refused else EXIT_OK


def check_platform() -> int:
    """``ctviewer --check-platform``: can Qt open a window here?  0 yes, 1 no (and why)."""
    from ctviewer.platform_check import platform_name, problem, report

    message = problem()
    if message:
        report(message)
        return EXIT_REFUSED
    print(f"ctviewer: the Qt platform '{platform_name()}' can open a window here", file=sys.stderr)
    return EXIT_OK


def _node_args(ap) -> None:
    ap.add_argument("--dicomweb", metavar="URL", help="a DICOMweb service root (http or https)")
    ap.add_argument("--dimse", metavar="AET@HOST:PORT", help="a DIMSE node: its AE title, host and port")
    ap.add_argument("--aet", default="CTVIEWER", help="our calling AE title for DIMSE (default CTVIEWER)")
    ap.add_argument("--user", default="", help="DICOMweb basic auth user (the password from $CTVIEWER_PACS_PASSWORD)")
    ap.add_argument("--token-env", default=None, metavar="VAR", help="DICOMweb bearer token from this variable")
    ap.add_argument("--insecure", action="store_true", help="do not verify the https certificate (test servers)")
    ap.add_argument("--ca-bundle", default=None, metavar="PEM", help="verify https against this CA bundle")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a silent server is given up")
    from ctviewer.pacs.client import MAX_INSTANCE_BYTES, MAX_INSTANCES, MAX_MATCHES

    ap.add_argument("--max-matches", type=int, default=MAX_MATCHES, metavar="N",
                    help=f"refuse a search that answers more than N studies (default {MAX_MATCHES:,})")
    ap.add_argument("--max-instances", type=int, default=MAX_INSTANCES, metavar="N",
                    help=f"refuse a study that lists more than N instances (default {MAX_INSTANCES:,})")
    ap.add_argument("--max-instance-mb", type=int, default=MAX_INSTANCE_BYTES >> 20, metavar="MB",
                    help=f"refuse an instance larger than MB decoded (default {MAX_INSTANCE_BYTES >> 20:,}; "
                         "a deflated one may also expand at most 64 to 1)")


def _node(a):
    from ctviewer.pacs import node_from_args

    return node_from_args(a.dicomweb, a.dimse, a.aet, a.user, os.environ.get("CTVIEWER_PACS_PASSWORD", ""),
                          os.environ.get(a.token_env, "") if a.token_env else "", a.insecure, a.ca_bundle, a.timeout,
                          a.max_matches, a.max_instances, a.max_instance_mb << 20)


def pacs(argv: list[str]) -> int:
    """``ctviewer pacs echo|find|get NODE ...``: the hospital's PACS from the command line."""
    from ctviewer.pacs.client import CSV_COLUMNS, PacsError

    ap = argparse.ArgumentParser(prog="ctviewer pacs", description="Find, retrieve and check a PACS node.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo", help="check the connection")
    _node_args(e)
    f = sub.add_parser("find", help="find studies; one line (or CSV row) per study")
    _node_args(f)
    f.add_argument("--patient-id", default="")
    f.add_argument("--patient-name", default="", help="a pattern: DOE^J*")
    f.add_argument("--study-date", default="", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    f.add_argument("--modality", default="")
    f.add_argument("--csv", default=None, metavar="OUT", help="write the studies as CSV ('-' = standard output)")
    g = sub.add_parser("get", help="retrieve a whole study into a folder (resumable)")
    _node_args(g)
    g.add_argument("study_uid", metavar="STUDY_UID")
    g.add_argument("--to", required=True, metavar="DIR")
    a = ap.parse_args(argv)
    try:
        node = _node(a)
        if a.cmd == "echo":
            print(node.echo(), file=sys.stderr)
            return EXIT_OK
        if a.cmd == "find":
            rows = node.find(a.patient_id, a.patient_name, a.study_date, a.modality)
            if a.csv:
                out = sys.stdout if a.csv == "-" else open(a.csv, "w", newline="", encoding="utf-8")
                try:
                    w = csv.writer(out)
                    w.writerow(CSV_COLUMNS)
                    for r in rows:
                        w.writerow(r.as_row())
                finally:
                    if out is not sys.stdout:
                        out.close()
            else:
                for r in rows:
                    print("\t".join(r.as_row()))
            print(f"{len(rows)} studies found on {node.describe()}", file=sys.stderr)
            return EXIT_OK
        from pathlib import Path

        bar: dict = {}

        def progress(done: int, total: int) -> None:
            if "p" not in bar:
                bar["p"] = _Progress(total)
            bar["p"].done = done - 1
            bar["p"].step()

        result = node.get(a.study_uid, Path(a.to), progress=progress)
        if "p" in bar:
            bar["p"].close()
        for uid, why in result.refused:
            print(f"ctviewer pacs get: refused {uid}: {why}", file=sys.stderr)
        print(f"{result.received} instances received, {result.already} already in {a.to}, {result.missing} missing, "
              f"{len(result.refused)} refused, of {result.expected} in study {a.study_uid}"
              + (f"; {result.error}: run the same command again to fetch the rest" if result.error else ""),
              file=sys.stderr)
        return EXIT_OK if result.complete and not result.refused else EXIT_REFUSED
    except PacsError as exc:
        print(f"ctviewer pacs {a.cmd}: {exc}", file=sys.stderr)
        return EXIT_REFUSED


def launch(argv: list[str]) -> int:
    """The desktop application (``ctviewer [PATH...] [--screenshot OUT.png [--heatmap]]``)."""
    from ctviewer.platform_check import problem, report

    message = problem()
    if message:  # Qt would print a message nobody can act on, and abort
        report(message)
        return EXIT_REFUSED
    try:
        from ctviewer.gui.app import run
    except ImportError as exc:
        print(f"ctviewer: the desktop application needs PySide6 ({exc}); install it with: pip install 'ctviewer[gui]'",
              file=sys.stderr)
        return EXIT_USAGE
    return run(argv)


def _run_command(name: str, fn, argv: list[str]) -> int:
    """A subcommand, with the file system's refusals (an output folder that is a file, a
    directory given for a CSV, a key file's folder that cannot be made, a full disk) said in one
    line with the path and the reason, exit status 1, instead of a traceback."""
    try:
        return fn(argv)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ctviewer {name}: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"classify": classify, "report": report, "anonymize": anonymize, "pacs": pacs}
    if argv and argv[0] in commands:
        return _run_command(argv[0], commands[argv[0]], argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return EXIT_OK
    if argv and argv[0] == "--self-test":
        from ctviewer.selftest import run

        return run()
    if argv and argv[0] == "--check-platform":
        return check_platform()
    if argv and argv[0] == "--version":
        from ctviewer import __version__

        print(f"ctviewer {__version__}")
        return EXIT_OK
    return launch(argv)


if __name__ == "__main__":
    sys.exit(main())
