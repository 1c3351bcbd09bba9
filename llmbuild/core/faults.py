"""Named kill points, for the crash tests: `reach(point)` kills this process there when asked.

    LLMBUILD_FAULT=point[@N][:SIGNAL]     e.g. commit-manifest, tool-run@2:INT, remote-upload@3:KILL

The Nth time (default the first) this process reaches `point` it says so on stderr and sends
itself SIGNAL (KILL, the default, or INT: what a CI timeout and a Ctrl-C do). Unset, `reach` is one
dict lookup. The points (one `reach` line each where they are):

    tool-run         executors/local.py   the tool has started
    output-written   core/build.py        the kind wrote its output; not yet committed
    commit-manifest  core/cache.py        the manifest is written into staging; not yet renamed
    restore-staged   core/build.py        a remote entry is downloaded and verified; not yet committed
    dist-link        core/build.py        the new dist link exists beside the old one; not yet renamed
    remote-upload    remote/s3.py         a blob is uploaded (with @N: after N blobs)
    remote-download  remote/s3.py         a blob is downloaded (with @N: after N blobs)
    doit-db-write    doit/dbfault.py      doit's dependency file is written; not yet committed
    verdict-write    core/verdicts.py     a load-time verdict is about to be stored
    digest-write     core/digests.py      file digests are written to the digest cache; not yet committed
    cache-gc         cachetool.py         `llmbuild cache gc` holds a key's lock, about to evict its entry
"""

from __future__ import annotations

import os
import signal
import sys
import threading

ENV = "LLMBUILD_FAULT"
POINTS = ("tool-run", "output-written", "commit-manifest", "restore-staged", "dist-link", "remote-upload",
          "remote-download", "doit-db-write", "verdict-write", "digest-write", "cache-gc")
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}


def _armed(spec: str) -> dict[str, tuple[int, signal.Signals]]:
    """{point: (the Nth time, signal)} from LLMBUILD_FAULT; a spec naming no known point is an error
    (a crash test that never crashes would pass for the wrong reason)."""
    if not spec:
        return {}
    where, _, name = spec.partition(":")
    point, _, nth = where.partition("@")
    if point not in POINTS or (name or "KILL") not in SIGNALS or not (nth or "1").isdigit():
        raise SystemExit(f"llmbuild: {ENV}={spec}: expected POINT[@N][:KILL|INT], POINT one of {', '.join(POINTS)}")
    return {point: (int(nth or 1), SIGNALS[name or "KILL"])}


_ARMED = _armed(os.environ.get(ENV, ""))
_reached: dict[str, int] = {}
_count = threading.Lock()


def reach(point: str) -> None:
    """Kill this process here if LLMBUILD_FAULT names this point and this is the Nth time."""
    armed = _ARMED.get(point)
    if armed is None:
        return
    with _count:
        _reached[point] = times = _reached.get(point, 0) + 1
    if times == armed[0]:
        print(f"llmbuild: fault injected at {point}@{times}: {armed[1].name}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), armed[1])


def armed(point: str) -> bool:
    """Whether LLMBUILD_FAULT names `point` (for a hook worth installing only then)."""
    return point in _ARMED
