"""A pool of N device slots on one host, shared by every process that opens the same directory.

    <directory>/<id>.lock     flock'd by the process holding slot <id> (its text: "<who> (pid N)")

The kernel drops a flock when its holder dies, even by SIGKILL, so a killed build never
keeps a slot. Slots are taken all at once or not at all: a waiter holds nothing while it
waits, so two holders needing 2 of 3 slots cannot deadlock each other. Waiting is a poll
with backoff (a waiter costs a few syscalls a second, no busy spin).
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: First and longest pause between two attempts of a waiter (seconds).
FIRST_POLL, LONGEST_POLL = 0.02, 0.25


class SlotPool:
    def __init__(self, directory: Path, size: int):
        self.directory = directory
        self.size = size

    def _path(self, slot: int) -> Path:
        return self.directory / f"{slot}.lock"

    @contextmanager
    def hold(self, want: int | Sequence[int], *, who: str = "",
             on_wait: Callable[[dict[int, str]], None] | None = None) -> Iterator[tuple[int, ...]]:
        """Hold `want` slots (any free ones), or exactly the slots `want` lists, until the block
        ends; yields their ids, ascending. `on_wait(holders)` is called once if they are not all
        free at first, with {busy slot: its holder's text}."""
        candidates = range(self.size) if isinstance(want, int) else sorted(set(want))
        count = want if isinstance(want, int) else len(candidates)
        if count > self.size or any(not 0 <= slot < self.size for slot in candidates):
            raise ValueError(f"asked for {want!r} of a pool of {self.size} slots")
        self.directory.mkdir(parents=True, exist_ok=True)
        pause, told = FIRST_POLL, False
        while (held := self._try(candidates, count, who)) is None:
            if on_wait is not None and not told:
                on_wait(self.holders(candidates))
                told = True
            time.sleep(pause * random.uniform(0.5, 1.0))  # jitter: waiters do not poll in step
            pause = min(pause * 2, LONGEST_POLL)
        try:
            yield tuple(held)
        finally:
            for fd in held.values():
                os.close(fd)  # closing the last descriptor drops the flock

    def _try(self, candidates: Sequence[int], count: int, who: str) -> dict[int, int] | None:
        """{slot: fd} of `count` slots locked now, or None (and nothing held)."""
        held: dict[int, int] = {}
        for slot in candidates:
            fd = os.open(self._path(slot), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held[slot] = fd
            if len(held) == count:
                for fd in held.values():
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{who} (pid {os.getpid()})".encode(), 0)
                return held
        for fd in held.values():
            os.close(fd)
        return None

    def holders(self, candidates: Sequence[int] | None = None) -> dict[int, str]:
        """{slot: text its holder wrote} for every slot held now (by any process)."""
        busy = {}
        for slot in range(self.size) if candidates is None else candidates:
            try:
                fd = os.open(self._path(slot), os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                busy[slot] = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
        return busy
