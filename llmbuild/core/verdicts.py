"""Load-time verdicts, remembered by their inputs: a target whose inputs did not change is not
checked or planned again.

Checking a target (its kind's `check`), its published facts and its plan depend only on its
parsed fields (defaults applied), its dependencies' inputs, the content of its sources, the
workspace's settings and root, and llmbuild's own code. A digest of all of that keys one row
holding the facts, the plan and the warnings the check gave; a hit replays them, a miss runs the
kind and stores them. An edit to any input is a new digest, so a check that would now fail still
fails before anything runs. Rows older than `KEEP_DAYS` go (at most once a day); concurrent
processes share the table (WAL, busy timeout).
"""

from __future__ import annotations

import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .digests import _when_unlocked
from .faults import reach

KEEP_DAYS = 30
TABLE = "verdicts"


class VerdictCache:
    def __init__(self, db_path: Path):
        self.db_path = db_path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
            _when_unlocked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")  # a cache: a lost row is recomputed
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (digest TEXT PRIMARY KEY, payload BLOB NOT NULL, "
                         "day INTEGER NOT NULL)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_day ON {TABLE} (day)")
            self._prune(conn)
            self._conn = conn
        return self._conn

    @staticmethod
    def _prune(conn: sqlite3.Connection) -> None:
        today = int(time.time() // 86400)
        conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        if (conn.execute("SELECT value FROM meta WHERE name = 'pruned'").fetchone() or (None,))[0] != today:
            conn.execute(f"DELETE FROM {TABLE} WHERE day < ?", (today - KEEP_DAYS,))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('pruned', ?)", (today,))

    def get(self, digest: str) -> Any | None:
        with self._lock:
            row = self._connection().execute(f"SELECT payload FROM {TABLE} WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        try:
            value = pickle.loads(row[0])
        except Exception:  # noqa: BLE001 - a row another llmbuild wrote that no longer loads: recompute
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, digest: str, value: Any) -> None:
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            reach("verdict-write")
            _when_unlocked(lambda: self._connection().execute(
                f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?)", (digest, payload, int(time.time() // 86400))))
