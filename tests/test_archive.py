"""Issue 25: a whole archive through ``ctviewer report ROOT --out DIR``: one folder per study, a
manifest, resumable after ``kill -9`` with nothing lost or counted twice, and the same results
on a Dask LocalCluster, on a real ``dask scheduler`` + ``dask worker`` pair, and after a worker
dies mid-study."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctviewer import cli
from ctviewer.archive import Manifest, jobs_of

from .gui_helpers import write_ct_series
from .model_fixtures import make_model_package

N_STUDIES = 8


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    for k in range(N_STUDIES):
        write_ct_series(root / f"study-{k:02d}", n=6, size=48, seed=k + 1)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model_package(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("CTVIEWER_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def baseline(archive, model, tmp_path_factory) -> Path:
    """One uninterrupted single-process run: what every other way must equal."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    assert cli.main(["report", str(archive), "--out", str(out), "--model", str(model)]) == 0
    return out


def outcome(out: Path) -> dict:
    """Per study: its result.json and slices.csv (what a run decided), and results.csv."""
    per = {p.name: ((p / "result.json").read_text(), (p / "slices.csv").read_text())
           for p in sorted((out / "studies").iterdir()) if not p.name.startswith(".")}
    return {"studies": per, "results": (out / "results.csv").read_text()}


def done_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in Manifest(out).records():
        if r["status"] == "done":
            counts[r["study"]] = counts.get(r["study"], 0) + 1
    return counts


def test_one_folder_per_study_a_manifest_and_a_rerun_skips_what_is_done(baseline, archive, model, capsys):
    jobs, _ = jobs_of([archive])
    assert len(jobs) == N_STUDIES
    for job in jobs:
        folder = baseline / "studies" / job.folder
        assert {p.name for p in folder.iterdir()} == {"result.json", "slices.csv", "sr.dcm"}
        assert json.loads((folder / "result.json").read_text())["slices"] == 6
    assert done_counts(baseline) == {j.study_uid: 1 for j in jobs}
    rows = (baseline / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + N_STUDIES * 6
    capsys.readouterr()
    before = Manifest(baseline).records()
    assert cli.main(["report", str(archive), "--out", str(baseline), "--model", str(model)]) == 0
    assert f"{N_STUDIES} skipped (already done)" in capsys.readouterr().err
    assert Manifest(baseline).records() == before  # nothing run, nothing recorded twice


def test_a_study_whose_files_changed_or_failed_is_redone(archive, model, baseline, tmp_path, capsys):
    import shutil

    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    out = tmp_path / "out"
    assert cli.main(["report", str(copy), "--out", str(out), "--model", str(model)]) == 0
    jobs, _ = jobs_of([copy])
    changed = sorted((copy / "study-03").iterdir())[0]
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    # a failure recorded by an earlier run is redone too
    other = next(j for j in jobs if not any(str(f).startswith(str(copy / "study-03")) for s in j.study.series
                                            for f in s.files))
    Manifest(out).append({"study": other.study_uid, "input_hash": other.input_hash, "folder": other.folder,
                          "status": "failed", "error": "an earlier fault"})
    capsys.readouterr()
    assert cli.main(["report", str(copy), "--out", str(out), "--model", str(model)]) == 0
    err = capsys.readouterr().err
    assert f"2 studies done, 0 failed, {N_STUDIES - 2} skipped" in err
    assert outcome(out)["results"] == (baseline / "results.csv").read_text().replace(str(archive), str(copy))


def test_a_run_killed_with_sigkill_resumes_with_nothing_lost_or_counted_twice(archive, model, baseline, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ctviewer", "report", str(archive), "--out", str(out), "--model", str(model)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(Manifest(out).records()) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(Manifest(out).records())
    if n_before >= N_STUDIES:
        pytest.fail("the run finished before it could be killed: make the archive larger")
    assert cli.main(["report", str(archive), "--out", str(out), "--model", str(model)]) == 0
    assert done_counts(out) == done_counts(baseline)  # every study once
    assert outcome(out) == outcome(baseline)
    assert not [p.name for p in (out / "studies").iterdir() if p.name.startswith(".")]  # the killed one's tmp: gone


@pytest.mark.slow
def test_a_local_cluster_gives_the_same_results_and_survives_a_worker_death(archive, model, baseline, tmp_path,
                                                                           monkeypatch, capsys):
    """2 worker processes; the first attempt of one study kills its worker with SIGKILL mid-study
    (``run.DIE_ON_STUDY``): Dask runs it again on a worker that lives, the manifest says 2 attempts,
    and the results equal the single process's."""
    from ctviewer.archive.run import DIE_ON_STUDY

    jobs, _ = jobs_of([archive])
    victim = jobs[2]
    monkeypatch.setenv(DIE_ON_STUDY, victim.folder)
    out = tmp_path / "out"
    assert cli.main(["report", str(archive), "--out", str(out), "--model", str(model), "--cluster", "local:2"]) == 0
    err = capsys.readouterr().err
    # the victim, and any study the dead worker had finished but not yet reported (Dask runs it again)
    assert re.search(r"\b[1-9]\d* run again after an interrupted attempt", err), err
    assert outcome(out) == outcome(baseline)
    state = Manifest(out).state()
    assert state[(victim.study_uid, victim.input_hash)]["attempts"] == 2
    assert done_counts(out) == done_counts(baseline)
    workers = {r["worker"] for r in state.values()}
    assert len(workers) >= 2  # the work was spread (and the dead worker's replacement is another process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_real_scheduler_and_worker_give_the_same_results(archive, model, baseline, tmp_path):
    """``dask scheduler`` and ``dask worker`` as separate processes on 127.0.0.1, the way a
    department's research IT runs them; the run goes to ``--cluster tcp://127.0.0.1:PORT``."""
    dask = Path(sys.executable).with_name("dask")
    port = _free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    try:
        procs.append(subprocess.Popen([str(dask), "worker", f"tcp://127.0.0.1:{port}", "--nworkers", "1",
                                       "--nthreads", "1", "--no-dashboard"],
                                      stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT,
                                      env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}))
        out = tmp_path / "out"
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="60s") as c:
            c.wait_for_workers(1, timeout=60)
        assert cli.main(["report", str(archive), "--out", str(out), "--model", str(model),
                         "--cluster", f"tcp://127.0.0.1:{port}"]) == 0
        assert outcome(out) == outcome(baseline)
        assert {r["worker"].split(":")[1] for r in Manifest(out).records()} != {str(os.getpid())}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_one_run_per_output_folder(archive, model, tmp_path, capsys):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert cli.main(["report", str(archive), "--out", str(out), "--model", str(model)]) == 2
        assert "another run is using" in capsys.readouterr().err
    assert not Manifest(out).records()


def test_archive_mode_refuses_the_single_report_flags(archive, tmp_path, capsys):
    assert cli.main(["report", str(archive), "--out", str(tmp_path / "o"), "--pdf", "x.pdf"]) == 2
    assert "--pdf" in capsys.readouterr().err
    assert cli.main(["report", str(archive), "--cluster", "local:2"]) == 2
    assert cli.main(["report", str(archive)]) == 2
    assert "--out DIR" in capsys.readouterr().err


def test_studies_from_a_pacs_are_retrieved_classified_and_not_kept(archive, model, baseline, tmp_path, monkeypatch,
                                                                   capsys):
    """``--from-pacs``: the studies a search on a real Orthanc finds, each retrieved by the process
    that classifies it (here: this one) into DIR/retrieved and deleted afterwards; the verdicts
    equal the run on the files themselves; a rerun skips them (same listed instances)."""
    from .orthanc import PASSWORD, USER, Orthanc, orthanc_or_skip

    orthanc_or_skip()
    server = Orthanc(tmp_path / "orthanc")
    try:
        server.upload(sorted(archive.rglob("*.dcm")))
        monkeypatch.setenv("CTVIEWER_PACS_PASSWORD", PASSWORD)
        out = tmp_path / "out"
        args = ["report", "--out", str(out), "--model", str(model), "--from-pacs", "--dicomweb", server.url,
                "--user", USER, "--query", "patient-id=SYN-001"]
        assert cli.main(args) == 0
        ours = {p.name: (p / "result.json").read_text() for p in (out / "studies").iterdir()}
        assert ours == {k: v[0] for k, v in outcome(baseline)["studies"].items()}
        assert not any((out / "retrieved").iterdir())  # nothing of the patients kept
        capsys.readouterr()
        assert cli.main(args) == 0
        assert f"{N_STUDIES} skipped (already done)" in capsys.readouterr().err
    finally:
        server.stop()
