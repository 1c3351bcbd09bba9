"""Content digests, cached by file identity so unchanged sources are hashed once.

The cache row is keyed by (device, inode, size, mtime_ns): an unchanged multi-GB
file costs one `stat`; a fresh clone (new mtimes) costs one re-hash. Hard links
share a row, so a repository that links an engine does not re-hash it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import threading
from pathlib import Path

ALGORITHM = "sha256"


def hash_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, ALGORITHM).hexdigest()


class DigestCache:
    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._memory: dict[tuple[int, int, int, int], str] | None = None
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # never share a connection across fork
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS digests (dev INTEGER, ino INTEGER, size INTEGER,"
                         " mtime INTEGER, digest TEXT, PRIMARY KEY (dev, ino, size, mtime))")
            self._conn, self._pid, self._memory = conn, os.getpid(), None
        return self._conn

    def _rows(self) -> dict[tuple[int, int, int, int], str]:
        conn = self._connection()
        if self._memory is None:
            self._memory = {(d, i, s, m): h for d, i, s, m, h in conn.execute("SELECT * FROM digests")}
        return self._memory

    def file_digest(self, path: Path, st: os.stat_result | None = None) -> str:
        st = st or os.stat(path)
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._rows().get(ident)
        if known:
            return known
        digest = hash_file(path)
        with self._lock:
            self._rows()[ident] = digest
            self._connection().execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)",
                                       (*ident, digest))
        return digest

    def tree_files(self, path: Path) -> dict[str, str]:
        """{relative posix path: digest} of a file or every file below a directory (symlinks followed)."""
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            return {"": self.file_digest(path, st)}  # a file's own name is not content
        files: dict[str, str] = {}
        for directory, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(directory) / name
                files[full.relative_to(path).as_posix()] = self.file_digest(full)
        return files


def digest_of_listing(files: dict[str, str]) -> str:
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return f"{ALGORITHM}:" + hashlib.sha256(lines.encode()).hexdigest()


def code_digest(*paths: Path) -> str:
    """Digest of our own generator/tool sources: a change to them must invalidate their outputs."""
    digest = hashlib.sha256()
    for path in sorted(p for root in paths for p in (sorted(root.rglob("*.py")) if root.is_dir() else [root])):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{ALGORITHM}:" + digest.hexdigest()
