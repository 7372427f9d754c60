"""Persistent prediction history: every successful prediction, in SQLite.

Decisions:

* **Where.** ``history.sqlite3`` in the user's data directory (platformdirs), or
  in ``$CTVIEWER_DATA_DIR`` when set (tests, portable installs).
* **WAL + synchronous=FULL.** In WAL mode a commit appends to the ``-wal`` file
  and readers never block the writer. A writer killed mid-transaction leaves an
  uncommitted tail in the WAL, which the next opener ignores (each WAL frame is
  checksummed and only frames up to the last commit record count), so the
  database is always at a transaction boundary. FULL also fsyncs the WAL on each
  commit, so a committed prediction survives a power cut too, not only a killed
  process; we write at most one transaction per file or batch, so the fsync is
  cheap.
* **One transaction per call.** ``add`` and ``add_many`` each commit once;
  ``add_many`` is all-or-nothing.
* **Schema versioning.** ``PRAGMA user_version`` holds the schema version.
  ``_MIGRATIONS[n]`` upgrades a database from version n-1 to n; on open, the
  missing steps run in one transaction. Version 1: ``predictions`` (one row per
  classified slice); version 2 adds ``batches`` (one row per classified study:
  study, counts, verdict; ``add_batch``), so a version-1 file is upgraded in
  place, its predictions kept; version 3 records slices the gate did not judge
  (``reason``, ``p_covid`` NULL, label empty). A database from a newer release raises
  :class:`HistoryError` rather than being touched.
* **Never destroy the user's file.** A file that is not SQLite (or is corrupt)
  raises :class:`HistoryError` naming the path; we do not delete or recreate it.
* **Pure Python.** No Qt, no TensorFlow: the CLI, the GUI and tests share it. The
  connection is guarded by a lock so a GUI worker thread may write to it.
"""

from __future__ import annotations

import csv
import os
import pathlib
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:  # only the attributes are used; keeps this module free of numpy/pydicom
    from ctviewer.studies import Record
    from ctviewer.studies import StudyResult

CSV_COLUMNS = ("time", "path", "frame", "sop_instance_uid", "label", "p_covid", "model", "pixel_sha256", "reason")
_FIELDS = "id, time, path, frame, sop_instance_uid, pixel_sha256, label, p_covid, model, reason"


def _storable(r) -> bool:
    """A judged slice (label and p), or a slice the gate did not judge (reason): not a refusal."""
    return not r.error and (bool(getattr(r, "reason", "")) or r.p_covid is not None)


def default_history_path() -> pathlib.Path:
    env = os.environ.get("CTVIEWER_DATA_DIR")
    base = pathlib.Path(env) if env else platformdirs.user_data_path("ctviewer", appauthor=False)
    return base / "history.sqlite3"


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    time: str  # ISO 8601 UTC, seconds: "2026-11-27T10:31:02Z"
    path: str
    frame: int | None  # 0-based, None for single-frame files
    sop_instance_uid: str
    pixel_sha256: str
    label: str  # "" when not judged
    p_covid: float | None  # None when not judged
    model: str
    reason: str = ""  # why the slice was not judged ("no lung in this slice", ...), else ""

    @property
    def judged(self) -> bool:
        return not self.reason and self.p_covid is not None


@dataclass(frozen=True)
class BatchEntry:
    """One classified study (or series) of a batch run."""

    id: int
    time: str  # ISO 8601 UTC, seconds
    study_uid: str
    n_slices: int  # slices in the result, refused ones included
    n_lung: int  # classified slices showing lung (the verdict's basis)
    n_positive: int  # of those, called COVID
    n_refused: int
    verdict: str  # "COVID", "non-COVID", "indeterminate", or "" when no verdict was computed
    confidence: float | None
    model: str
    cancelled: bool


_BATCH_FIELDS = "id, time, study_uid, n_slices, n_lung, n_positive, n_refused, verdict, confidence, model, cancelled"


class HistoryError(Exception):
    """The history database cannot be used (not SQLite, corrupt, newer schema, unwritable)."""


def _migrate_to_1(db: sqlite3.Connection) -> None:
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


def _migrate_to_2(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE batches (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            study_uid TEXT NOT NULL,
            n_slices INTEGER NOT NULL,
            n_lung INTEGER NOT NULL,
            n_positive INTEGER NOT NULL,
            n_refused INTEGER NOT NULL,
            verdict TEXT NOT NULL,
            confidence REAL,
            model TEXT NOT NULL,
            cancelled INTEGER NOT NULL)"""
    )
    db.execute("CREATE INDEX batches_time ON batches (time)")
    db.execute("CREATE INDEX batches_study_uid ON batches (study_uid)")


def _migrate_to_3(db: sqlite3.Connection) -> None:
    """Slices the gate did not let the model judge are recorded too: ``p_covid`` may be NULL and
    ``reason`` says why (SQLite cannot drop a NOT NULL: the table is rebuilt, rows kept)."""
    db.execute(
        """CREATE TABLE predictions_v3 (
            id INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            path TEXT NOT NULL,
            frame INTEGER,
            sop_instance_uid TEXT NOT NULL,
            pixel_sha256 TEXT NOT NULL,
            label TEXT NOT NULL,
            p_covid REAL,
            model TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '')"""
    )
    db.execute("INSERT INTO predictions_v3 (id, time, path, frame, sop_instance_uid, pixel_sha256, label, p_covid, "
               "model) SELECT id, time, path, frame, sop_instance_uid, pixel_sha256, label, p_covid, model "
               "FROM predictions")
    db.execute("DROP TABLE predictions")
    db.execute("ALTER TABLE predictions_v3 RENAME TO predictions")
    db.execute("CREATE INDEX predictions_time ON predictions (time)")
    db.execute("CREATE INDEX predictions_pixel_sha256 ON predictions (pixel_sha256)")


# _MIGRATIONS[n] takes the schema from version n-1 to version n.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_to_1, 2: _migrate_to_2, 3: _migrate_to_3}


def _utc_stamp(time: datetime | None) -> str:
    # A naive datetime is local time (as datetime.astimezone reads it).
    t = (time or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class History:
    SCHEMA_VERSION = 3

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = pathlib.Path(path) if path is not None else default_history_path()
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            self._open()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise HistoryError(f"cannot use the prediction history {self.path}: {exc}") from exc
        except HistoryError:
            self.close()
            raise

    def _open(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]  # reads the header: fails on non-SQLite files
        if version > self.SCHEMA_VERSION:
            raise HistoryError(
                f"the prediction history {self.path} has schema version {version}, newer than this "
                f"CT Viewer understands ({self.SCHEMA_VERSION}); update CT Viewer or choose another file"
            )
        if db.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise HistoryError(f"cannot switch the prediction history {self.path} to WAL mode")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for v in range(version + 1, self.SCHEMA_VERSION + 1):
                _MIGRATIONS[v](db)
            if version < self.SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {int(self.SCHEMA_VERSION)}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @contextmanager
    def _use(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise HistoryError(f"the prediction history {self.path} is closed")
            try:
                if not write:
                    yield self._db
                    return
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise HistoryError(f"prediction history {self.path}: {exc}") from exc

    def _insert(self, db: sqlite3.Connection, records: Iterable[Record], stamp: str) -> int:
        rows = [
            (stamp, os.fspath(r.path), r.frame, r.sop_instance_uid or "", r.pixel_sha256 or "",
             "" if r.reason else r.label, None if r.reason else float(r.p_covid), r.model or "", r.reason or "")
            for r in records
            if _storable(r)
        ]
        db.executemany(
            "INSERT INTO predictions (time, path, frame, sop_instance_uid, pixel_sha256, label, p_covid, model, "
            "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return len(rows)

    def add(self, record: Record, time: datetime | None = None) -> int | None:
        """Store one prediction, or one slice not judged (with its reason, no label or p(COVID));
        records with an error (refused files) are skipped (None)."""
        if not _storable(record):
            return None
        with self._use(write=True) as db:
            self._insert(db, [record], _utc_stamp(time))
            return db.execute("SELECT last_insert_rowid()").fetchone()[0]

    def add_many(self, records: Iterable[Record], time: datetime | None = None) -> int:
        """Store the successful predictions in one transaction; returns how many were stored."""
        records = list(records)
        with self._use(write=True) as db:
            return self._insert(db, records, _utc_stamp(time))

    def entries(self, limit: int | None = None) -> list[HistoryEntry]:
        """Newest first."""
        return [HistoryEntry(*row) for row in self._newest("predictions", _FIELDS, limit)]

    def add_batch(self, result: StudyResult, time: datetime | None = None) -> int:
        """Record a classified study (its counts and verdict, not its slices); returns the row id."""
        slices = list(result.slices)
        v = result.verdict
        if v is not None:
            n_lung, n_positive, n_refused = v.n_lung, v.n_positive, v.n_refused
            label, confidence = v.label, float(v.confidence)
        else:  # no verdict computed: count what the slices say
            lung = [s for s in slices if s.judged]
            n_lung = len(lung)
            n_positive = sum(s.p_covid >= result.threshold for s in lung)
            n_refused = sum(bool(s.error) for s in slices)
            label, confidence = "", None
        row = (_utc_stamp(time), result.study.uid or "", len(slices), int(n_lung), int(n_positive), int(n_refused),
               label, confidence, result.model or "", int(bool(result.cancelled)))
        with self._use(write=True) as db:
            db.execute(
                "INSERT INTO batches (time, study_uid, n_slices, n_lung, n_positive, n_refused, verdict, confidence, "
                "model, cancelled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return db.execute("SELECT last_insert_rowid()").fetchone()[0]

    def batches(self, limit: int | None = None) -> list[BatchEntry]:
        """Recorded batches, newest first."""
        return [BatchEntry(*row[:10], cancelled=bool(row[10])) for row in self._newest("batches", _BATCH_FIELDS, limit)]

    def _newest(self, table: str, fields: str, limit: int | None) -> list[tuple]:
        """Rows of ``table`` (one of ours, never user input), newest first, at most ``limit``."""
        with self._use() as db:
            return db.execute(
                f"SELECT {fields} FROM {table} ORDER BY time DESC, id DESC LIMIT ?",
                (-1 if limit is None else max(0, int(limit)),),
            ).fetchall()

    def __len__(self) -> int:
        with self._use() as db:
            return db.execute("SELECT count(*) FROM predictions").fetchone()[0]

    def clear(self) -> None:
        """Forget everything: the predictions and the recorded batches."""
        with self._use(write=True) as db:
            db.execute("DELETE FROM predictions")
            db.execute("DELETE FROM batches")

    def export_csv(self, dest: str | os.PathLike, entries: Iterable[HistoryEntry] | None = None,
                   anonymize: bool = False) -> int:
        """Write ``entries`` (default: all, newest first) as CSV, atomically; returns the row count.
        ``anonymize``: through ``ctviewer.privacy.deid`` (one export): file names become pseudonyms, UIDs are
        replaced, the paths' folders are gone; time is when CT Viewer judged, not a patient's date."""
        dest = pathlib.Path(dest)
        rows = self.entries() if entries is None else list(entries)
        if anonymize:
            from dataclasses import replace

            from ctviewer.privacy import Deidentifier

            deid = Deidentifier()
            rows = [replace(e, path=deid.file_name(e.path), sop_instance_uid=deid.uid(e.sop_instance_uid, "history"),
                            pixel_sha256="") for e in rows]
        # Not mkstemp: its 0600 mode would stick to the export; "x" mode honours the umask.
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "x", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(CSV_COLUMNS)
                for e in rows:  # frame is 1-based and p_covid has 4 decimals, as in `ctviewer classify`
                    frame = "" if e.frame is None else str(e.frame + 1)
                    p = "" if e.p_covid is None else f"{e.p_covid:.4f}"
                    w.writerow([e.time, e.path, frame, e.sop_instance_uid, e.label, p, e.model, e.pixel_sha256,
                                e.reason])
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return len(rows)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
