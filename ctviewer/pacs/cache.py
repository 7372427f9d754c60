"""The private cache of studies retrieved from a PACS by the application (issue 14).

One folder per study, ``<cache>/<node id>/<StudyInstanceUID>/``, under the user's cache
directory (``platformdirs``; ``CTVIEWER_CACHE_DIR`` moves it), created with mode 0700: other
users of the computer cannot read patients' images.  A size limit (``limit_bytes``, default 5
GB, the setting ``pacs/cache_gb``) is kept by ``evict``: whole studies, least recently used
first (a study is "used" when retrieved or opened), never the ones named in ``keep``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import platformdirs

DEFAULT_LIMIT = 5 * 1024**3


def cache_root() -> Path:
    env = os.environ.get("CTVIEWER_CACHE_DIR")
    root = Path(env) if env else platformdirs.user_cache_path("ctviewer", appauthor=False) / "pacs"
    _private_dir(root)
    return root


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def node_id(address: str) -> str:
    return hashlib.sha256(address.encode("utf-8")).hexdigest()[:12]


def study_dir(address: str, study_uid: str, root: Path | None = None) -> Path:
    from .client import valid_uid

    if not valid_uid(study_uid):
        raise ValueError(f"{study_uid!r} is not a Study Instance UID")
    root = root or cache_root()
    node = root / node_id(address)
    _private_dir(node)
    d = node / study_uid
    _private_dir(d)
    touch(d)
    return d


def touch(d: Path) -> None:
    now = time.time()
    os.utime(d, (now, now))


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def evict(limit_bytes: int = DEFAULT_LIMIT, keep: tuple[Path, ...] = (), root: Path | None = None) -> list[Path]:
    """Remove least recently used studies until the cache holds at most ``limit_bytes``; the removed folders."""
    root = root or cache_root()
    studies = [d for node in root.iterdir() if node.is_dir() for d in node.iterdir() if d.is_dir()]
    sizes = {d: _size(d) for d in studies}
    total = sum(sizes.values())
    keep_set = {Path(k).resolve() for k in keep}
    removed = []
    for d in sorted(studies, key=lambda p: p.stat().st_mtime):
        if total <= limit_bytes:
            break
        if d.resolve() in keep_set:
            continue
        shutil.rmtree(d, ignore_errors=True)
        total -= sizes[d]
        removed.append(d)
    return removed
