"""The `doit-db-write` kill point: doit writes its dependency file (sqlite) in one transaction when
a run ends; this stops the run between the rows written and their commit."""

from __future__ import annotations

from doit.globals import Globals

from ..core.faults import armed, reach

POINT = "doit-db-write"


class _CommitReaches:
    """doit's sqlite connection, with the kill point before each commit."""

    def __init__(self, conn):
        self._conn = conn

    def commit(self) -> None:
        reach(POINT)
        self._conn.commit()

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def arm_doit_db_write() -> None:
    """Install the point on this run's doit dependency file, when LLMBUILD_FAULT names it."""
    backend = getattr(Globals.dep_manager, "backend", None)
    if armed(POINT) and hasattr(backend, "_conn"):
        backend._conn = _CommitReaches(backend._conn)
