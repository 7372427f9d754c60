"""The application's log: a rotating file in the user's log directory.

- Where: ``platformdirs.user_log_path("ctviewer")/ctviewer.log`` (on Linux
  ``~/.local/state/ctviewer/log/``); ``CTVIEWER_LOG_DIR`` moves it.  1 MB per
  file, 3 old files kept.
- No patient identifiers: the application logs events, counts, durations and
  error kinds, never DICOM values; and every record goes through
  ``RedactFilter``, which replaces file paths (which often carry patient names
  or IDs) by ``<path>``, bare image file names by ``<file>`` and DICOM person
  names (``Doe^John``) by ``<name>``, in the message and in tracebacks alike.
- An uncaught exception is logged with its traceback (redacted) and reported
  through ``on_crash(log_path)``; the GUI shows a dialog with the log's path
  instead of vanishing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Callable

LOGGER = "ctviewer"
MAX_BYTES, BACKUPS = 1_000_000, 3

# Absolute POSIX paths, Windows drive and UNC paths, and paths relative to a folder ("a/b.dcm").
_PATH = re.compile(
    r"""(?:[A-Za-z]:[\\/]|\\\\|/)[^\s'"<>|:*?]*"""  # absolute
    r"""|(?:[^\s'"<>|:*?/\\]+[\\/])+[^\s'"<>|:*?/\\]+"""  # relative with a separator
)
_PERSON = re.compile(r"\b[^\s^'\"]+\^[^\s'\"]*")  # DICOM PN: Family^Given^...
_FILE = re.compile(r"[^\s'\"<>|:*?/\\]+\.(?:dcm|dicom|ima|dic|png|jpe?g)\b", re.IGNORECASE)  # bare file names
_SAFE_PATH_PARTS = ("site-packages", "ctviewer/", "ctviewer\\", "<frozen", "python3")


def redact(text: str) -> str:
    """Remove file paths and DICOM person names; keep source-code paths of tracebacks readable."""

    def path(m: re.Match) -> str:
        value = m.group(0)
        if value.endswith(".py") or any(part in value for part in _SAFE_PATH_PARTS):
            return value  # our own or a library's source file in a traceback: no patient data
        return "<path>"

    return _FILE.sub("<file>", _PERSON.sub("<name>", _PATH.sub(path, text)))


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def log_dir() -> Path:
    env = os.environ.get("CTVIEWER_LOG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_log_path

    return user_log_path("ctviewer", appauthor=False)


def setup(level: int = logging.INFO) -> Path | None:
    """Attach the rotating file handler once; returns the log file (None if it cannot be written)."""
    logger = logging.getLogger(LOGGER)
    for h in logger.handlers:
        if isinstance(h, RotatingFileHandler):
            return Path(h.baseFilename)
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(folder / "ctviewer.log", maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                      encoding="utf-8")
    except OSError as exc:
        print(f"ctviewer: cannot write the log in {log_dir()}: {exc}", file=sys.stderr)
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return Path(handler.baseFilename)


def install_crash_handler(on_crash: Callable[[Path | None], None] | None = None) -> None:
    """Log uncaught exceptions (main and worker threads) and tell the user where the log is."""
    path = setup()
    log = logging.getLogger(LOGGER)

    def handle(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.critical("uncaught exception", exc_info=(exc_type, exc, tb))
        traceback.print_exception(exc_type, exc, tb)
        if on_crash is not None:
            try:
                on_crash(path)
            except Exception:  # noqa: BLE001 - the crash report itself must never crash
                pass

    sys.excepthook = handle
    threading.excepthook = lambda args: handle(args.exc_type, args.exc_value, args.exc_traceback)
