"""GPU slots: a pool of the host's GPUs shared by every process through file locks."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmbuild.core.slots import SlotPool

from conftest import REPO

#: A process taking `want` slots of a pool `rounds` times, holding them `seconds` each time
#: (forever when negative): prints the slots once held, appends {who, slots, start, end} to
#: `record` after each release.
HOLDER = """\
import json, sys, time
from pathlib import Path
from llmbuild.core.slots import SlotPool
directory, size, want, seconds, rounds, record, who = sys.argv[1:]
for _ in range(int(rounds)):
    with SlotPool(Path(directory), int(size)).hold(int(want), who=who) as slots:
        start = time.time()
        print(" ".join(map(str, slots)), flush=True)
        time.sleep(float(seconds) if float(seconds) >= 0 else 3600)
        end = time.time()
    with open(record, "a") as handle:
        handle.write(json.dumps({"who": who, "slots": slots, "start": start, "end": end}) + "\\n")
"""


def holder(tmp_path: Path, *, size: int, want: int, who: str, seconds: float = -1,
           rounds: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "slots"), str(size), str(want), str(seconds),
         str(rounds), str(tmp_path / "record.jsonl"), who],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def never_overlap(intervals: list[tuple[float, float, set[int]]], slack: float = 0.0) -> None:
    """Intervals (start, end, slots) that share a slot never overlap."""
    for (s1, e1, a), (s2, e2, b) in itertools.combinations(intervals, 2):
        if a & b:
            assert e1 <= s2 + slack or e2 <= s1 + slack, ((s1, e1, a), (s2, e2, b))


class Taker(threading.Thread):
    """Holds `want` slots of `pool` in a thread, records what it got and when, and whether it
    waited; releases when `release` is set."""

    def __init__(self, pool: SlotPool, want):
        super().__init__(daemon=True)
        self.pool, self.want = pool, want
        self.waited: list[dict[int, str]] = []
        self.got: tuple[int, ...] | None = None
        self.when = 0.0
        self.release = threading.Event()
        self.start()

    def run(self) -> None:
        with self.pool.hold(self.want, who="taker", on_wait=self.waited.append) as slots:
            self.got, self.when = slots, time.time()
            self.release.wait(timeout=60)


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -------------------------------------------------------------------------- the pool


def test_a_waiter_holds_nothing_and_takes_all_it_needs_once_another_process_releases(tmp_path):
    """Pool of 3, another process holds 2: a target needing 2 waits, leaving the free slot to
    others, and gets two as soon as that process is gone."""
    other = holder(tmp_path, size=3, want=2, who="models/a:engine")
    assert other.stdout.readline().split() == ["0", "1"]
    pool = SlotPool(tmp_path / "slots", 3)
    waiter = Taker(pool, 2)
    wait_until(lambda: waiter.waited)
    assert waiter.waited == [{0: f"models/a:engine (pid {other.pid})", 1: f"models/a:engine (pid {other.pid})"}]
    third = Taker(pool, [2])  # the free slot is not held by the waiter
    wait_until(lambda: third.got is not None, timeout=5)
    assert third.got == (2,) and waiter.got is None
    third.release.set()
    third.join()
    released = time.time()
    other.send_signal(signal.SIGTERM)
    other.wait()
    wait_until(lambda: waiter.got is not None)
    assert len(waiter.got) == 2 and waiter.when >= released
    waiter.release.set()


def test_a_sigkilled_holder_releases_its_slots(tmp_path):
    victim = holder(tmp_path, size=2, want=2, who="models/a:engine")
    assert victim.stdout.readline().split() == ["0", "1"]
    pool = SlotPool(tmp_path / "slots", 2)
    assert set(pool.holders()) == {0, 1}
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    def must_not_wait(holders):
        raise AssertionError(f"slots still held after SIGKILL: {holders}")

    with pool.hold(2, on_wait=must_not_wait) as slots:
        assert slots == (0, 1)
    assert pool.holders() == {}


def test_listed_ids_wait_only_for_those(tmp_path):
    pool = SlotPool(tmp_path / "slots", 3)
    with pool.hold(1, who="first") as first:
        assert first == (0,)
        with pool.hold([2, 1], on_wait=lambda holders: pytest.fail("1 and 2 are free")) as listed:
            assert listed == (1, 2)
        zero = Taker(pool, [0])
        wait_until(lambda: zero.waited)
        assert zero.waited == [{0: f"first (pid {os.getpid()})"}] and zero.got is None
    wait_until(lambda: zero.got is not None)
    assert zero.got == (0,)
    zero.release.set()
    with pytest.raises(ValueError, match="pool of 3"):
        with pool.hold([3]):
            pass


def test_processes_needing_two_of_three_never_deadlock_or_share_a_slot(tmp_path):
    """Four processes each take 2 of 3 slots, five times over: holding one while waiting for
    another, three of them could each sit on one slot forever; all-or-nothing always finishes."""
    procs = [holder(tmp_path, size=3, want=2, who=f"p{i}", seconds=0.05, rounds=5) for i in range(4)]
    for proc in procs:
        proc.stdout.read()
        assert proc.wait(timeout=120) == 0
    held = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert len(held) == 20 and {len(r["slots"]) for r in held} == {2}
    never_overlap([(r["start"], r["end"], set(r["slots"])) for r in held])
