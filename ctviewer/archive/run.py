"""The archive run: one study per task, in this process or on a Dask distributed cluster.

A study's outputs are written into ``DIR/studies/.<folder>.<pid>.<n>.tmp/`` and the folder is
renamed into place when complete (``result.json``, ``slices.csv``, ``sr.dcm``, optionally
``report.pdf``); only then does the driver append the manifest line.  Each process that runs a
task first notes its attempt in ``DIR/attempts/<folder>`` (one line per attempt, pid and
host), so a study that was running on a worker that died and was run again elsewhere says so in
the manifest (``attempts`` > 1).

Results do not depend on where a study runs: each task loads the same model package (once per
process, verified by its SHA-256) and classifies with the same single-process settings.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import Manifest, input_hash

#: Test hook (the worker-death test): the first attempt of this study's folder kills its process
#: with SIGKILL mid-study, as an out-of-memory kill or a pulled plug would.
DIE_ON_STUDY = "CTVIEWER_TEST_DIE_ON_STUDY"
_CLASSIFIERS: dict[str, object] = {}


@dataclass(frozen=True)
class StudyJob:
    folder: str  # the study's folder name under DIR/studies (its UID when that is a valid UID)
    study_uid: str
    input_hash: str
    n_files: int
    patient: object = None  # studies.PatientNode (files on disk)
    study: object = None  # studies.StudyNode
    pacs: dict | None = None  # node_from_args keywords, without the password (a PACS study)


@dataclass
class ArchiveSummary:
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: bool = False
    slices: int = 0
    seconds: float = 0.0
    refused_files: list = field(default_factory=list)
    failures: list = field(default_factory=list)  # (study, why)


def _folder_name(uid: str, digest: str) -> str:
    import re

    return uid if re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid or "") and len(uid) <= 64 else f"h-{digest[:24]}"


def jobs_of(paths) -> tuple[list[StudyJob], list]:
    """The classifiable studies under ``paths`` (header scan only), and the files refused."""
    from ctviewer.studies import scan
    from ctviewer.studies.study_batch import classifiable_series

    patients, errors = scan(paths)
    jobs = []
    for patient in patients:
        for study in patient.studies:
            series = classifiable_series(study)
            if not series:
                continue
            files = [f for s in series for f in s.files]
            digest = input_hash(files)
            jobs.append(StudyJob(_folder_name(study.uid, digest), study.uid or f"h-{digest[:24]}", digest, len(files),
                                 patient, study))
    return jobs, errors


def jobs_from_pacs(node_args: dict, query: dict) -> list[StudyJob]:
    """The studies a PACS search finds; each job retrieves its study on the process that runs it.
    The input hash is the SHA-256 of the study's listed instance UIDs (a study that gained
    instances is redone)."""
    import hashlib

    from ctviewer.pacs import node_from_args

    node = node_from_args(**node_args, password=os.environ.get("CTVIEWER_PACS_PASSWORD", ""))
    jobs = []
    for row in node.find(**query):
        listed = node.instances(row.study_uid)
        digest = hashlib.sha256("\n".join(sorted(u for _s, u in listed)).encode()).hexdigest()
        jobs.append(StudyJob(_folder_name(row.study_uid, digest), row.study_uid, digest, len(listed), pacs=node_args))
    return jobs


def _local_study(job: StudyJob, out: Path) -> tuple[StudyJob, Path | None]:
    """A PACS job made local: the study retrieved into DIR/retrieved/<folder> (0700), scanned."""
    if job.pacs is None:
        return job, None
    from ctviewer.pacs import PacsError, node_from_args

    node = node_from_args(**job.pacs, password=os.environ.get("CTVIEWER_PACS_PASSWORD", ""))
    dest = out / "retrieved" / job.folder
    (out / "retrieved").mkdir(mode=0o700, exist_ok=True)
    got = node.get(job.study_uid, dest)
    if not got.complete:
        raise PacsError(got.error or f"{got.missing} of {got.expected} instances missing, {len(got.refused)} refused")
    found, _errors = jobs_of([dest])
    match = [j for j in found if j.study_uid == job.study_uid]
    if not match:
        raise PacsError("the retrieved study has no CT series the model reads")
    return StudyJob(job.folder, job.study_uid, job.input_hash, match[0].n_files, match[0].patient, match[0].study), dest


def _classifier(model: str | None):
    key = model or ""
    if key not in _CLASSIFIERS:
        from ctviewer.inference import load_classifier

        # one intra-op thread: a cluster runs one task per core; the same on every process
        _CLASSIFIERS[key] = load_classifier(model, threads=1)
    return _CLASSIFIERS[key]


def _note_attempt(out: Path, folder: str) -> int:
    d = out / "attempts"
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / folder, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{socket.gethostname()} {os.getpid()} {time.time():.3f}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return len((d / folder).read_text(encoding="utf-8").splitlines())


def process_study(job: StudyJob, out: str, model: str | None = None, pdf: bool = False) -> dict:
    """Classify one study and write its folder; the manifest record (status "done" or "failed").
    Runs on any process; never raises for a study's own fault (that is a "failed" record)."""
    out_dir = Path(out)
    attempts = _note_attempt(out_dir, job.folder)
    base = {"study": job.study_uid, "input_hash": job.input_hash, "folder": job.folder, "files": job.n_files,
            "worker": f"{socket.gethostname()}:{os.getpid()}", "attempts": attempts}
    if os.environ.get(DIE_ON_STUDY) == job.folder and attempts == 1:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    t0 = time.monotonic()
    tmp = out_dir / "studies" / f".{job.folder}.{os.getpid()}.{attempts}.tmp"
    try:
        from ctviewer import __version__
        from ctviewer.reports import write_csv, write_pdf, write_sr
        from ctviewer.studies.study_batch import classify_study, suspicious_thumbnails

        clf = _classifier(model)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        job, retrieved = _local_study(job, out_dir)
        try:
            result = classify_study(job.study, job.patient, clf, workers=1)
        finally:
            if retrieved is not None:  # patient data: nothing kept once the study is classified
                shutil.rmtree(retrieved, ignore_errors=True)
        write_csv([result], tmp / "slices.csv")
        write_sr(result, tmp / "sr.dcm")
        if pdf:
            write_pdf(result, tmp / "report.pdf", clf.card, suspicious_thumbnails(result, clf),
                      software_version=__version__)
        v = result.verdict
        summary = {
            "verdict": v.label if v else None, "confidence": None if v is None else round(float(v.confidence), 6),
            "slices": len(result.slices), "lung_slices": v.n_lung if v else 0,
            "covid_slices": v.n_positive if v else 0, "refused_slices": sum(bool(s.error) for s in result.slices),
            "model": result.model, "model_sha256": result.model_sha256,
        }
        (tmp / "result.json").write_text(json.dumps(summary, indent=1, sort_keys=True), encoding="utf-8")
        target = out_dir / "studies" / job.folder
        if target.exists():  # a redo (failed before, or the files changed): replaced whole
            shutil.rmtree(target)
        os.rename(tmp, target)
        return {**base, **summary, "status": "done", "seconds": round(time.monotonic() - t0, 3)}
    except Exception as exc:  # noqa: BLE001 - one study's fault is recorded, the archive goes on
        shutil.rmtree(tmp, ignore_errors=True)
        return {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "where": traceback.format_exc(limit=3).splitlines()[-1][:300],
                "seconds": round(time.monotonic() - t0, 3)}


def _client(cluster: str):
    """A Dask client for ``local[:N]`` (a LocalCluster of N one-thread worker processes) or
    ``tcp://HOST:PORT`` (an existing scheduler)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("--cluster needs Dask distributed: pip install 'ctviewer[cluster]' (the bundle runs "
                         "archives in one process)") from None

    if cluster == "local" or cluster.startswith("local:"):
        n = int(cluster.split(":", 1)[1]) if ":" in cluster else (os.cpu_count() or 1)
        lc = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40)
        return Client(lc), lc
    if cluster.startswith("tcp://"):
        return Client(cluster, timeout="30s"), None
    raise ValueError(f"--cluster {cluster!r}: give local, local:N or tcp://HOST:PORT")


def run_archive(paths, out: str | os.PathLike, model: str | None = None, cluster: str | None = None,
                pdf: bool = False, progress: Callable[[ArchiveSummary, dict | None], None] | None = None,
                pacs: dict | None = None, query: dict | None = None,
                cancelled: Callable[[], bool] | None = None) -> ArchiveSummary:
    """Classify every study under ``paths`` (or, with ``pacs``, every study the PACS finds for
    ``query``) not already done in ``out``; see the module docstring."""
    out = Path(out)
    (out / "studies").mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        return _run_locked(paths, out, model, cluster, pdf, progress, pacs, query, cancelled)
    finally:
        lock.close()


def _lock(out: Path):
    """One run per output folder (a second one would record studies twice); the temporary study
    folders a killed run left are removed once the lock is ours (nothing else can be writing)."""
    import fcntl

    fh = open(out / ".lock", "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise ValueError(f"another run is using {out}: wait for it, or choose another --out") from None
    for tmp in (out / "studies").glob(".*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    return fh


def _run_locked(paths, out: Path, model, cluster, pdf, progress, pacs, query, cancelled) -> ArchiveSummary:
    manifest = Manifest(out)
    if pacs is not None:
        jobs, errors = jobs_from_pacs(pacs, query or {}), []
    else:
        jobs, errors = jobs_of(paths)
    state = manifest.state()
    todo = [j for j in jobs if not manifest.is_done(j.study_uid, j.input_hash, state)]
    s = ArchiveSummary(total=len(jobs), skipped=len(jobs) - len(todo),
                       refused_files=[(e.path, e.reason) for e in errors])
    t0 = time.monotonic()

    def record(rec: dict) -> None:
        manifest.append(rec)
        if rec["status"] == "done":
            s.done += 1
            s.slices += int(rec.get("slices", 0))
        else:
            s.failed += 1
            s.failures.append((rec["study"], rec.get("error", "")))
        s.retried += int(rec.get("attempts", 1)) > 1
        s.seconds = time.monotonic() - t0
        if progress:
            progress(s, rec)

    if progress:
        progress(s, None)
    if cluster is None:
        for job in todo:
            if cancelled and cancelled():  # between studies: the one running finishes and is recorded
                s.cancelled = True
                break
            record(process_study(job, str(out), model, pdf))
    else:
        from distributed import as_completed

        client, local = _client(cluster)
        try:
            futures = {client.submit(process_study, job, str(out), model, pdf, pure=False, key=f"study-{job.folder}"): job
                       for job in todo}
            finished = as_completed(futures)
            while not finished.is_empty():
                if cancelled and cancelled():  # the rest is dropped; what finished is recorded
                    client.cancel(list(futures))
                    s.cancelled = True
                    break
                batch = finished.next_batch(block=False)
                if not batch:
                    time.sleep(0.1)
                    continue
                for fut in batch:
                    _settle(fut, futures[fut], out, record)
        finally:
            client.close()
            if local is not None:
                local.close()
    s.seconds = time.monotonic() - t0
    write_results(out, jobs, manifest)
    return s


def _settle(fut, job: StudyJob, out: Path, record) -> None:
    try:
        rec = fut.result()
    except Exception as exc:  # noqa: BLE001 - the task itself was lost (workers died repeatedly)
        rec = {"study": job.study_uid, "input_hash": job.input_hash, "folder": job.folder,
               "status": "failed", "error": f"the cluster lost the task ({type(exc).__name__}: {exc})",
               "attempts": _attempts(out, job.folder)}
    else:
        rec["attempts"] = max(rec.get("attempts", 1), _attempts(out, job.folder))
    record(rec)


def _attempts(out: Path, folder: str) -> int:
    try:
        return len((out / "attempts" / folder).read_text(encoding="utf-8").splitlines())
    except OSError:
        return 1


def write_results(out: Path, jobs: list[StudyJob], manifest: Manifest) -> None:
    """``DIR/results.csv``: every slice of every study done (the studies under these paths, in
    scan order), gathered from the study folders; rewritten whole (atomically) after each run."""
    from ctviewer.reports import atomic_path

    state = manifest.state()
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        header_done = False
        for job in jobs:
            if not manifest.is_done(job.study_uid, job.input_hash, state):
                continue
            lines = (out / "studies" / job.folder / "slices.csv").read_text(encoding="utf-8").splitlines(True)
            fh.writelines(lines if not header_done else lines[1:])
            header_done = header_done or bool(lines)
