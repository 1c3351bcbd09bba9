"""Content digests (BLAKE3), cached by file identity so unchanged sources are hashed once.

A row is keyed by (device, inode, size, mtime_ns): an unchanged multi-GB file costs one
`stat` and one indexed lookup; a fresh clone (new mtimes) costs one re-hash. Hard links
share a row, so a repository that links an engine does not re-hash it.

The table lives in the cache directory, which may be shared and live for years, so no
process loads it whole: rows are looked up by key as files are met, each row records the
day it was last used (written at most once a day), and rows unused for `keep_days` go, at
most once a day per database, in one DELETE on that indexed column. WAL mode and a busy
timeout let concurrent processes share it.

Each DigestCache counts what it hashed (`hashed`), so a run can say what it cost.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import blake3

from .faults import reach

ALGORITHM = "blake3"
#: Rows not used for this many days are deleted.
KEEP_DAYS = 30
#: One table per algorithm: both write 64 hex digits, so a row of another algorithm's table
#: would pass for ours.
TABLE = f"files_{ALGORITHM}"
#: Tables of earlier versions (digests: never pruned; file_digests: SHA-256), dropped on open.
EARLIER_TABLES = ("digests", "file_digests")
Ident = tuple[int, int, int, int]  # dev, ino, size, mtime_ns
#: Files at least this large are hashed on several threads (a thread pool costs ~0.1 ms).
PARALLEL_MIN_BYTES = 16 << 20
#: Read size: small enough to stay in the CPU cache between read and hash (measured faster
#: than mmap, which also turns a file truncated while hashed into a SIGBUS); with more than
#: four threads, 1 MiB per thread, so each still gets a worthwhile share of every read.
CHUNK = 4 << 20


def hash_file(path: Path, threads: int | None = None) -> str:
    """BLAKE3 of a file; `threads` defaults to every CPU this process may use when the file is
    at least PARALLEL_MIN_BYTES, else 1.

    Several threads only through `max_threads=N`, which gives each hasher its own thread pool,
    started in this process. Never `blake3.AUTO`: that uses rayon's global pool, created once
    per process, and a process forked after it exists (a `doit -n` worker of a main process
    that hashed sources) inherits the pool without its threads and waits on it forever.
    """
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if size >= PARALLEL_MIN_BYTES else 1
        hasher = blake3.blake3(max_threads=threads)
        buffer = bytearray(max(1, min(max(CHUNK, threads << 20), size)))  # a small file: no 4 MiB to zero
        view = memoryview(buffer)
        while read := handle.readinto(buffer):
            hasher.update(view[:read])
    return hasher.hexdigest()


def _when_unlocked(statement, deadline: float = 60.0):
    """Run `statement`, retrying while another process holds the lock (switching to WAL
    returns SQLITE_BUSY at once instead of waiting on the busy timeout)."""
    end = time.monotonic() + deadline
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > end:
                raise
            time.sleep(0.05)


def _today() -> int:
    """Days since the epoch: the unit of `used`."""
    return int(time.time() // 86400)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock upgrading a read
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class DigestCache:
    def __init__(self, db_path: Path, keep_days: int = KEEP_DAYS):
        self.db_path = db_path
        self.keep_days = keep_days
        self._known: dict[Ident, str] = {}  # rows this process has read or written
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        #: What this cache hashed in this process: {"files", "bytes", "seconds"} (a forked
        #: `doit -n` worker counts in its own copy, which its parent never sees).
        self.hashed = {"files": 0, "bytes": 0, "seconds": 0.0}

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # never share a connection across fork
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
            _when_unlocked(lambda: conn.execute("PRAGMA journal_mode=WAL"))  # skips the busy handler
            conn.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last rows on power loss is fine
            with _transaction(conn):
                conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (dev INTEGER, ino INTEGER, size INTEGER, "
                             "mtime INTEGER, digest TEXT NOT NULL, used INTEGER NOT NULL, "
                             "PRIMARY KEY (dev, ino, size, mtime)) WITHOUT ROWID")
                conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_used ON {TABLE} (used)")
                conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
                for table in EARLIER_TABLES:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            self._prune(conn)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Delete rows unused for keep_days, unless some process did so today."""
        today = _today()
        query = "SELECT value FROM meta WHERE name = 'pruned'"
        if (conn.execute(query).fetchone() or (None,))[0] == today:
            return
        with _transaction(conn):
            if (conn.execute(query).fetchone() or (None,))[0] == today:
                return
            conn.execute(f"DELETE FROM {TABLE} WHERE used < ?", (today - self.keep_days,))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('pruned', ?)", (today,))

    def digests(self, files: list[tuple[Path, os.stat_result]], *, counted: bool = True) -> list[str]:
        """The digest of each (path, stat) in order: looked up, else hashed and recorded (and, if
        `counted`, added to what this run reports it hashed: sources and outputs, not our own code)."""
        idents = [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for _, st in files]
        today = _today()
        stale: list[Ident] = []
        with self._lock:
            conn = self._connection()
            for ident in idents:
                if ident not in self._known:
                    row = conn.execute(f"SELECT digest, used FROM {TABLE} WHERE dev = ? AND ino = ? "
                                       "AND size = ? AND mtime = ?", ident).fetchone()
                    if row:
                        self._known[ident] = row[0]
                        if row[1] < today:
                            stale.append(ident)
        hashed: dict[Ident, str] = {}
        started = time.monotonic()
        for (path, _), ident in zip(files, idents):
            if ident not in self._known and ident not in hashed:  # hard links: hashed once
                hashed[ident] = hash_file(path)
        if hashed or stale:
            with self._lock:
                if hashed and counted:
                    self.hashed["files"] += len(hashed)
                    self.hashed["bytes"] += sum(ident[2] for ident in hashed)
                    self.hashed["seconds"] += time.monotonic() - started
                conn = self._connection()
                with _transaction(conn):
                    conn.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                                     [(*ident, digest, today) for ident, digest in hashed.items()])
                    conn.executemany(f"UPDATE {TABLE} SET used = ? WHERE dev = ? AND ino = ? "
                                     "AND size = ? AND mtime = ?", [(today, *ident) for ident in stale])
                    reach("digest-write")
                self._known.update(hashed)
        return [self._known[ident] for ident in idents]

    def tree_files(self, path: Path) -> dict[str, str]:
        """{relative posix path: digest} of a file or every file below a directory (symlinks followed)."""
        st = os.stat(path)
        if not stat.S_ISDIR(st.st_mode):
            return {"": self.digests([(path, st)])[0]}  # a file's own name is not content
        files: list[tuple[str, Path, os.stat_result]] = []
        for directory, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(directory) / name
                files.append((full.relative_to(path).as_posix(), full, os.stat(full)))
        found = self.digests([(full, st) for _, full, st in files])
        return {rel: digest for (rel, _, _), digest in zip(files, found)}


def digest_of_listing(files: dict[str, str]) -> str:
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return f"{ALGORITHM}:" + blake3.blake3(lines.encode()).hexdigest()


def code_digest(*paths: Path) -> str:
    """Digest of our own generator/tool sources: a change to them must invalidate their outputs."""
    digest = blake3.blake3()
    for path in sorted(p for root in paths for p in (sorted(root.rglob("*.py")) if root.is_dir() else [root])):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{ALGORITHM}:" + digest.hexdigest()
