"""The log file: where it goes, that it rotates, that it holds no patient identifiers,
and that an uncaught exception is logged and reported instead of the app vanishing."""

from __future__ import annotations

import logging
import sys
import threading
from logging.handlers import RotatingFileHandler

import pytest

from ctviewer import logs


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CTVIEWER_LOG_DIR", str(tmp_path / "log"))
    logger = logging.getLogger(logs.LOGGER)
    saved = list(logger.handlers)
    for h in saved:
        logger.removeHandler(h)
    hooks = (sys.excepthook, threading.excepthook)
    yield tmp_path / "log"
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)
    for h in saved:
        logger.addHandler(h)
    sys.excepthook, threading.excepthook = hooks


@pytest.mark.parametrize("text, secret", [
    ("opened /home/radiology/Doe_John/IM0001.dcm", "Doe_John"),
    (r"opened C:\Patients\Smith Anna\1.dcm", "Smith"),
    ("opened Lung_Dx-A0001/1-20.dcm today", "Lung_Dx-A0001"),
    ("reading Doe^John^Q failed", "Doe"),
    ("MULLER_HANS_19600229.dcm: damaged or truncated DICOM file", "MULLER"),
    (r"\\pacs\share\Brown\x.png", "Brown"),
])
def test_redact_removes_paths_file_names_and_person_names(text, secret):
    out = logs.redact(text)
    assert secret not in out
    assert "<path>" in out or "<name>" in out or "<file>" in out


def test_redact_keeps_events_and_source_locations():
    text = 'File "/work/x/.venv/lib/python3.11/site-packages/keras/src/ops.py", line 3; model ready in 7.5 s'
    assert logs.redact(text) == text
    assert logs.redact("opened 3 series (64 slices); 2 files refused") == "opened 3 series (64 slices); 2 files refused"


def test_log_file_rotates_and_holds_no_identifiers(log_dir):
    path = logs.setup()
    assert path == log_dir / "ctviewer.log"
    handler = next(h for h in logging.getLogger(logs.LOGGER).handlers if isinstance(h, RotatingFileHandler))
    assert handler.maxBytes == logs.MAX_BYTES and handler.backupCount == logs.BACKUPS
    assert logs.setup() == path  # once
    log = logging.getLogger("ctviewer.gui")
    log.info("opened %s", "/data/Doe^Jane/CT/IM1.dcm")
    try:
        raise ValueError("cannot read /data/Roe_Richard/IM2.dcm")
    except ValueError:
        log.exception("failed")
    handler.flush()
    text = path.read_text()
    assert "Jane" not in text and "Roe_Richard" not in text and "IM1" not in text
    assert "opened <path>" in text and "ValueError" in text and "Traceback" in text


def test_uncaught_exceptions_are_logged_and_reported(log_dir):
    reports = []
    logs.install_crash_handler(reports.append)
    try:
        raise RuntimeError("boom in /data/Doe_J/1.dcm")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    t = threading.Thread(target=lambda: 1 / 0)
    t.start()
    t.join()
    assert reports == [log_dir / "ctviewer.log"] * 2
    text = (log_dir / "ctviewer.log").read_text()
    assert text.count("uncaught exception") == 2
    assert "RuntimeError: boom in <path>" in text and "ZeroDivisionError" in text and "Doe_J" not in text


def test_gui_crash_reporter_shows_the_dialog_on_the_gui_thread(qtbot):
    pytest.importorskip("PySide6")
    from ctviewer.gui.app import CrashReporter

    reporter = CrashReporter()
    t = threading.Thread(target=lambda: reporter.report("/tmp/ctviewer.log"))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: reporter.shown == 1, timeout=10_000)
    assert "/tmp/ctviewer.log" in reporter._box.text()
    assert reporter._box.isVisible() and not reporter._box.isModal()
    reporter._box.close()
