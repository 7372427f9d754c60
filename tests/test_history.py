"""The prediction history (ctviewer.history): SQLite, WAL, schema version, crash safety."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from ctviewer.studies import Record
from ctviewer.history import BatchEntry, History, HistoryEntry, HistoryError, default_history_path
from ctviewer.studies import PatientNode, SliceResult, StudyNode, StudyResult, Verdict

T0 = datetime(2026, 11, 27, 10, 31, 2, tzinfo=timezone.utc)


def rec(i: int = 0, **kw) -> Record:
    fields = dict(
        path=f"/data/scan{i}.dcm",
        frame=i,
        sop_instance_uid=f"1.2.826.0.1.{i}",
        label="COVID" if i % 2 else "non-COVID",
        p_covid=0.125 + i / 1000,
        model="ct-resnet50 1.1.0",
        pixel_sha256=f"{i:016x}",
    )
    fields.update(kw)
    return Record(**fields)


@pytest.fixture
def hist(tmp_path):
    with History(tmp_path / "h.sqlite3") as h:
        yield h


def test_round_trip_of_all_fields(hist):
    rowid = hist.add(rec(3), time=T0)
    hist.add(rec(4, frame=None), time=T0 + timedelta(seconds=1))
    assert isinstance(rowid, int)
    older = hist.entries()[1]
    assert older == HistoryEntry(
        id=rowid,
        time="2026-11-27T10:31:02Z",
        path="/data/scan3.dcm",
        frame=3,
        sop_instance_uid="1.2.826.0.1.3",
        pixel_sha256="0000000000000003",
        label="COVID",
        p_covid=0.128,
        model="ct-resnet50 1.1.0",
    )
    assert hist.entries()[0].frame is None


def test_time_is_utc_seconds(hist):
    cet = timezone(timedelta(hours=1))
    hist.add(rec(), time=datetime(2026, 11, 27, 11, 31, 2, 987654, tzinfo=cet))
    assert hist.entries()[0].time == "2026-11-27T10:31:02Z"
    hist.add(rec())  # default: now
    stamp = hist.entries()[0].time
    assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")  # well formed


def test_slices_not_judged_are_recorded_with_their_reason(hist):
    """Issue 13: a slice the gate stopped is in the history as not judged: reason, no label, no p."""
    gated = Record("/data/neck.dcm", 0, "1.2.3.9", model="m 1", pixel_sha256="ff", reason="no lung in this slice")
    assert hist.add(gated, time=T0) is not None
    hist.add(rec(1), time=T0)
    by_path = {e.path: e for e in hist.entries()}
    neck = by_path["/data/neck.dcm"]
    assert (neck.label, neck.p_covid, neck.reason, neck.judged) == ("", None, "no lung in this slice", False)
    assert by_path["/data/scan1.dcm"].judged and by_path["/data/scan1.dcm"].reason == ""
    # a record that carries both a p and a reason is stored without the p: the reason wins
    hist.add(Record("/data/x.dcm", label="COVID", p_covid=0.9, reason="not an axial slice", model="m"))
    x = next(e for e in hist.entries() if e.path == "/data/x.dcm")
    assert (x.label, x.p_covid) == ("", None)


def test_records_with_an_error_are_skipped(hist):
    assert hist.add(Record("/data/bad.dcm", error="not a DICOM file", model="m")) is None
    assert hist.add_many([rec(1), Record("/data/bad.dcm", error="unreadable"), rec(2)]) == 2
    assert len(hist) == 2
    assert {e.path for e in hist.entries()} == {"/data/scan1.dcm", "/data/scan2.dcm"}


def test_newest_first(hist):
    hist.add(rec(1), time=T0 + timedelta(minutes=5))
    hist.add(rec(2), time=T0)
    hist.add(rec(3), time=T0 + timedelta(minutes=10))
    hist.add_many([rec(4), rec(5)], time=T0 + timedelta(minutes=10))  # same second: later id first
    assert [e.frame for e in hist.entries()] == [5, 4, 3, 1, 2]
    assert [e.frame for e in hist.entries(limit=2)] == [5, 4]
    assert hist.entries(limit=0) == []


def test_clear(hist):
    hist.add_many(rec(i) for i in range(5))
    assert len(hist) == 5
    hist.clear()
    assert len(hist) == 0 and hist.entries() == []
    hist.add(rec())
    assert len(hist) == 1


def test_export_csv(hist, tmp_path):
    hist.add(rec(0), time=T0)
    hist.add(rec(7, frame=None, sop_instance_uid='1.2,"3"'), time=T0 + timedelta(seconds=1))
    dest = tmp_path / "out" / "history.csv"
    dest.parent.mkdir()
    dest.write_text("old content")
    assert hist.export_csv(dest) == 2
    with open(dest, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time", "path", "frame", "sop_instance_uid", "label", "p_covid", "model", "pixel_sha256", "reason"]
    assert rows[1] == [
        "2026-11-27T10:31:03Z", "/data/scan7.dcm", "", '1.2,"3"', "COVID", "0.1320", "ct-resnet50 1.1.0",
        "0000000000000007", "",
    ]
    assert rows[2] == [
        "2026-11-27T10:31:02Z", "/data/scan0.dcm", "1", "1.2.826.0.1.0", "non-COVID", "0.1250", "ct-resnet50 1.1.0",
        "0000000000000000", "",
    ]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["history.csv"]  # no temp file left
    # a chosen subset
    assert hist.export_csv(dest, hist.entries()[1:]) == 1
    with open(dest, newline="", encoding="utf-8") as f:
        assert [r[1] for r in csv.reader(f)] == ["path", "/data/scan0.dcm"]


def test_reopen_keeps_the_data(tmp_path):
    path = tmp_path / "h.sqlite3"
    with History(path) as h:
        h.add_many([rec(1), rec(2)], time=T0)
        before = h.entries()
    with History(path) as h:
        assert h.entries() == before
        assert h.path == path


def test_wal_and_schema_version(hist):
    db = sqlite3.connect(hist.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == History.SCHEMA_VERSION == 3
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"predictions_time", "predictions_pixel_sha256", "batches_time", "batches_study_uid"} <= indexes
    finally:
        db.close()


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "h.sqlite3"
    History(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {History.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(HistoryError, match="newer") as exc:
        History(path)
    assert str(path) in str(exc.value)


def test_garbage_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "h.sqlite3"
    garbage = b"this is not a database, it is a shopping list\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(HistoryError) as exc:
        History(path)
    assert str(path) in str(exc.value)
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.sqlite3"]


def test_default_path_honours_ctviewer_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTVIEWER_DATA_DIR", str(tmp_path / "data"))
    assert default_history_path() == tmp_path / "data" / "history.sqlite3"
    with History() as h:  # creates the directory
        assert h.path == tmp_path / "data" / "history.sqlite3"
    assert h.path.is_file()
    monkeypatch.delenv("CTVIEWER_DATA_DIR")
    assert default_history_path().name == "history.sqlite3"
    assert "ctviewer" in str(default_history_path()).lower()


def test_closed_history_raises(tmp_path):
    h = History(tmp_path / "h.sqlite3")
    h.close()
    h.close()  # idempotent
    with pytest.raises(HistoryError):
        h.add(rec())


WRITER = textwrap.dedent(
    """
    import sys
    from ctviewer.studies import Record
    from ctviewer.history import History

    h = History(sys.argv[1])
    i = 0
    while True:
        r = Record(f"/data/crash{sys.argv[2]}-{i}.dcm", i, f"1.2.{i}", "COVID", 0.5, "", "ct-resnet50 1.1.0",
                   f"{i:016x}")
        h.add(r)
        h.add_many([r] * 20)
        if i == 0:
            print("committed", flush=True)
        i += 1
    """
)


def test_survives_a_killed_writer(tmp_path):
    path = tmp_path / "h.sqlite3"
    previous = 0
    for round_ in range(3):
        cmd = [sys.executable, "-c", WRITER, str(path), str(round_)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        watchdog = threading.Timer(60, proc.kill)  # never hang the suite if the writer stalls
        watchdog.start()
        try:
            assert proc.stdout.readline().strip() == "committed"
            time.sleep(0.5)
            assert proc.poll() is None, "the writer stopped by itself"
        finally:
            watchdog.cancel()
            proc.kill()  # SIGKILL on POSIX: no cleanup, no checkpoint
            proc.wait()
            proc.stdout.close()

        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            # whole transactions only: per path, the add (1 row) and maybe its add_many (20 rows)
            partial = db.execute(
                "SELECT path, count(*) FROM predictions WHERE path LIKE '/data/crash%' GROUP BY path "
                "HAVING count(*) NOT IN (1, 21)"
            ).fetchall()
            assert partial == []
            cut_between = db.execute(
                "SELECT count(*) FROM (SELECT path FROM predictions WHERE path LIKE '/data/crash%' GROUP BY path "
                "HAVING count(*) = 1)"
            ).fetchone()[0]
            assert cut_between <= round_ + 1  # only the last iteration of each writer can lack its add_many
        finally:
            db.close()
        with History(path) as h:
            entries = h.entries()
            assert len(entries) == len(h) > previous
            for e in entries:
                assert None not in (e.id, e.time, e.path, e.frame, e.sop_instance_uid, e.pixel_sha256, e.label,
                                    e.p_covid, e.model)
                if e.path.startswith("/data/crash"):
                    assert e.label == "COVID" and e.p_covid == 0.5 and e.model == "ct-resnet50 1.1.0"
            new_id = h.add(rec(1))
            assert new_id is not None and len(h) == len(entries) + 1
            previous = len(h)


# --- schema version 2: batches ------------------------------------------------------------------


def study_result(uid: str = "1.2.3.4", verdict: Verdict | None = None, cancelled: bool = False) -> StudyResult:
    slices = [SliceResult(f"/data/s{i}.dcm", p_covid=0.9 if i < 3 else 0.1, label="x") for i in range(6)]
    slices += [SliceResult("/data/bad.dcm", error="unreadable"), SliceResult("/data/neck.dcm", has_lung=False, reason="no lung in this slice")]
    if verdict is None:
        verdict = Verdict("COVID", 0.75, 0.5, n_lung=6, n_positive=3, n_excluded=1, n_refused=1, rule="a rule")
    return StudyResult(StudyNode(uid, ()), PatientNode("P1"), slices, verdict, model="ct-resnet50 1.1.0",
                       cancelled=cancelled)


def test_add_batch_round_trip(hist):
    rowid = hist.add_batch(study_result(), time=T0)
    hist.add_batch(study_result("9.9", cancelled=True), time=T0 + timedelta(seconds=5))
    assert isinstance(rowid, int)
    older = hist.batches()[1]
    assert older == BatchEntry(
        id=rowid, time="2026-11-27T10:31:02Z", study_uid="1.2.3.4", n_slices=8, n_lung=6, n_positive=3,
        n_refused=1, verdict="COVID", confidence=0.75, model="ct-resnet50 1.1.0", cancelled=False,
    )
    newer = hist.batches()[0]
    assert newer.study_uid == "9.9" and newer.cancelled is True
    assert [b.study_uid for b in hist.batches(limit=1)] == ["9.9"]
    assert len(hist) == 0  # batches are not predictions


def test_add_batch_without_verdict_counts_the_slices(hist):
    r = study_result()
    r.verdict = None
    hist.add_batch(r, time=T0)
    b = hist.batches()[0]
    assert (b.n_slices, b.n_lung, b.n_positive, b.n_refused, b.verdict, b.confidence) == (8, 6, 3, 1, "", None)


def test_clear_forgets_batches_too(hist):
    hist.add(rec())
    hist.add_batch(study_result())
    hist.clear()
    assert hist.batches() == [] and len(hist) == 0


def make_v1_file(path) -> None:
    """A history written by the release with schema version 1 (its exact DDL)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        """CREATE TABLE predictions (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            path TEXT NOT NULL,
            frame INTEGER,
            sop_instance_uid TEXT NOT NULL,
            pixel_sha256 TEXT NOT NULL,
            label TEXT NOT NULL,
            p_covid REAL NOT NULL,
            model TEXT NOT NULL)"""
    )
    db.execute("CREATE INDEX predictions_time ON predictions (time)")
    db.execute("CREATE INDEX predictions_pixel_sha256 ON predictions (pixel_sha256)")
    db.execute(
        "INSERT INTO predictions (time, path, frame, sop_instance_uid, pixel_sha256, label, p_covid, model) "
        "VALUES ('2026-11-27T10:31:02Z', '/data/old.dcm', NULL, '1.2.3', '00000000000000aa', 'COVID', 0.75, 'm 1')"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_version_1_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "h.sqlite3"
    make_v1_file(path)
    with History(path) as h:
        assert [(e.path, e.p_covid, e.label) for e in h.entries()] == [("/data/old.dcm", 0.75, "COVID")]
        assert h.batches() == []
        h.add_batch(study_result(), time=T0)
        h.add(rec(1))
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"predictions", "batches"} <= tables
    finally:
        db.close()
    with History(path) as h:  # reopening a v3 file migrates nothing and keeps everything
        assert len(h) == 2 and len(h.batches()) == 1
        old = next(e for e in h.entries() if e.path == "/data/old.dcm")
        assert (old.label, old.p_covid, old.reason) == ("COVID", 0.75, "")


def test_failed_upgrade_leaves_the_version_1_file_untouched(tmp_path, monkeypatch):
    import ctviewer.history as history_module

    path = tmp_path / "h.sqlite3"
    make_v1_file(path)

    def broken(db):
        db.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY)")
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setitem(history_module._MIGRATIONS, 2, broken)
    with pytest.raises(HistoryError):
        History(path)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"predictions"}  # the half-done step was rolled back
    finally:
        db.close()
    monkeypatch.undo()
    with History(path) as h:
        assert len(h) == 1 and h.batches() == []


def test_anonymised_csv_export_has_no_file_names_or_uids(hist, tmp_path):
    """Issue 16: the history's CSV export goes through ctviewer.privacy.deid when anonymised."""
    hist.add(rec(1, path="/data/Zebedee_PIDQ8812/PIDQ8812_001.dcm", sop_instance_uid="1.2.826.0.1.3680043.9.1234"),
             time=T0)
    dest = tmp_path / "h.csv"
    assert hist.export_csv(dest, anonymize=True) == 1
    text = dest.read_text()
    assert "PIDQ8812" not in text and "Zebedee" not in text and "1.2.826.0.1.3680043.9.1234" not in text
    row = list(csv.DictReader(dest.open()))[0]
    assert row["path"].startswith("img-") and row["path"].endswith(".dcm") and row["label"] == "COVID"
