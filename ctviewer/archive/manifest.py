"""``DIR/manifest.jsonl``: what an archive run has finished, one JSON object per line, appended
and flushed to disk (``fsync``) after the study's folder is complete, so that:

- a run killed at any moment (``kill -9``, power loss) leaves at worst a last line cut short,
  which is ignored, and study folders whose line was never written, which are redone;
- a study counts once: the last line for a (Study UID, input hash) is its state; a rerun skips
  studies whose state is "done" (and whose folder is there) and redoes failed ones;
- a study whose files changed (another input hash) is redone and its folder replaced.

The input hash is the SHA-256 of the study's files' paths, sizes and modification times (cheap on
an archive of millions of files; a file rewritten in place with the same size within the same
nanosecond would be missed).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.jsonl"


def input_hash(files) -> str:
    h = hashlib.sha256()
    for f in sorted(os.fspath(x) for x in files):
        try:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{os.path.abspath(f)}\0missing\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


class Manifest:
    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.path = self.out / MANIFEST

    def records(self) -> list[dict]:
        """Every complete line, in order (a last line cut short by a kill is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "study" in rec and "input_hash" in rec:
                    out.append(rec)
        return out

    def state(self) -> dict[tuple[str, str], dict]:
        """(Study UID, input hash) -> its last record."""
        return {(r["study"], r["input_hash"]): r for r in self.records()}

    def is_done(self, study: str, digest: str, state: dict | None = None) -> bool:
        rec = (state if state is not None else self.state()).get((study, digest))
        return bool(rec) and rec.get("status") == "done" and (self.out / "studies" / rec["folder"]).is_dir()

    def append(self, record: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            with open(self.path, "rb") as fh:  # a line cut short by a kill: end it first
                size = os.fstat(fh.fileno()).st_size
                if size:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        os.write(fd, b"\n")
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
