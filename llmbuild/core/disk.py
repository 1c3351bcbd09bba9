"""A build that failed because its disk filled up: said as such, naming the directory and what
is free, whether llmbuild's own write failed (ENOSPC) or the tool's (its log says so)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

#: What a full disk looks like in a tool's output (strerror(ENOSPC), SQLite's).
FULL_DISK_TEXT = ("No space left on device", "database or disk is full")
#: How much of the end of a failed attempt's log is read for a tool's own report.
LOG_TAIL_BYTES = 16384


def disk_full(err: BaseException, where: Path, log: Path) -> str | None:
    """'the disk holding <where> is full (N free of M)' when `err`, its causes, or the end of
    the attempt's log report a full disk; else None."""
    if not (_enospc(err) or _said_in_log(log)):
        return None
    usage = shutil.disk_usage(where)
    return f"the disk holding {where} is full ({size_text(usage.free)} free of {size_text(usage.total)})"


def _enospc(err: BaseException | None) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno == errno.ENOSPC or any(t in str(err) for t in FULL_DISK_TEXT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _said_in_log(log: Path) -> bool:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, 2) - LOG_TAIL_BYTES))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return False
    return any(text in tail for text in FULL_DISK_TEXT)


def size_text(size: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while size >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{size:.0f} B" if units[0] == "B" else f"{size:.1f} {units[0]}"
