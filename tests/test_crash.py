"""Crash safety by fault injection: `doit` killed (SIGKILL: a CI timeout; SIGINT: Ctrl-C) at each
named kill point (llmbuild/core/faults.py, armed by LLMBUILD_FAULT) and, from outside, at random
times, then run again without the fault.

After the kill, before the rerun: every committed entry is whole, every dist link names one,
doit's own view (`doit list --status`) calls no target up-to-date whose output is not whole and
current (the interrupted target is not), and every key lock can be taken. After the rerun: every
target built or restored, with the keys and the very output bytes of a clean build; no run waited
for a lock; nothing left in staging and no temporary link in dist/.

CI runs a reduced set that still reaches every kill point family; LLMBUILD_CRASH_FULL=1 runs
every point with both signals and more random kills (README, "Testing").
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from cache_checks import (claims, committed, interruptible, links_name_whole_entries, no_lock_held, nothing_left,
                          remote_entries_whole)
from conftest import MODEL_TOML, TINY_HF, Workspace
from s3_fixtures import BUCKET

pytestmark = pytest.mark.slow

FULL = os.environ.get("LLMBUILD_CRASH_FULL") == "1"
MODEL = "models/tiny-llama"
TARGETS = ("checkpoint", "engine", "repository")
BUILD_TOML = MODEL_TOML + '\n[repository.repository]\nengine = ":engine"\n'
WAITED = ("another process is building the same key; waiting", "is building the same key (its claim")


@dataclass(frozen=True)
class Kill:
    """A kill at `fault` (POINT@N) of a run that starts from `start`: "cold" (empty cache), "upload"
    (empty cache, empty remote: it builds and publishes), "remote" (empty local cache, every entry in
    the remote) or "local" (every entry in the local cache, no dist links). `interrupted`: the target
    the kill stops, never up-to-date afterwards (None: none is half-done)."""

    fault: str
    start: str
    interrupted: str | None
    ci_signal: str | None = None  # the signal the reduced (CI) set tries; None: full set only

    def signals(self) -> tuple[str, ...]:
        return ("KILL", "INT") if FULL else (self.ci_signal,) if self.ci_signal else ()


KILLS = (
    Kill("tool-run@1", "cold", "checkpoint", "KILL"),
    Kill("tool-run@2", "cold", "engine"),
    Kill("output-written@2", "cold", "engine", "INT"),
    Kill("commit-manifest@1", "cold", "checkpoint", "KILL"),
    Kill("commit-manifest@3", "cold", "repository"),
    Kill("restore-staged@2", "remote", "engine", "INT"),
    Kill("dist-link@2", "local", "engine", "KILL"),
    Kill("dist-link@1", "cold", "checkpoint"),
    Kill("remote-upload@2", "upload", None, "KILL"),  # mid-upload of the checkpoint's files
    Kill("remote-download@2", "remote", "checkpoint", "INT"),
    Kill("doit-db-write@1", "local", None, "KILL"),
    Kill("doit-db-write@1", "cold", None),
    Kill("verdict-write@1", "local", None, "INT"),
    Kill("digest-write@1", "cold", None),  # at load
    Kill("digest-write@3", "cold", "checkpoint"),  # the checkpoint's outputs, before its commit
    # cache-gc: added with `llmbuild cache gc` (a kill while it removes entries; see faults.py)
)
#: From outside: the doit process group gets the signal after a random (seeded) delay.
RANDOM = [(seed, ("KILL", "INT")[seed % 2]) for seed in range(8 if FULL else 1)]


def address(target: str) -> str:
    return f"{MODEL}:{target}"


@dataclass(frozen=True)
class Published:
    """A clean build: its workspace, its remote, each target's key, each entry's manifest, how long
    it took (on this machine, now)."""

    ws: Workspace
    url: str
    keys: dict[str, str]
    manifests: dict[str, dict]
    seconds: float


@pytest.fixture(scope="module")
def published(tmp_path_factory, s3_server) -> Published:
    """A clean build of the three targets, published to a remote prefix of its own: the keys and
    output bytes every rerun must reproduce, and the entries the "remote" and "local" starts use."""
    root = tmp_path_factory.mktemp("published")
    url = f"s3://{BUCKET}/crash-{uuid.uuid4().hex[:8]}"
    ws = Workspace(root / "ws", root / "cache")
    ws.add_model("tiny-llama", TINY_HF, BUILD_TOML)
    ws.write_pyproject(f'remote_cache = "{url}"')
    clock = time.monotonic()
    run = ws.doit(env=ws.env(**s3_server.env))
    seconds = time.monotonic() - clock
    assert set(run.built()) == {address(t) for t in TARGETS}
    assert len(remote_entries_whole(s3_server, prefix_of(url))) == 3
    return Published(ws, url, {r["address"]: r["key"] for r in run.records}, committed(ws.cache), seconds)


def prefix_of(url: str) -> str:
    return url.removeprefix(f"s3://{BUCKET}/") + "/"


def start(kind: str, published: Published, tmp_path: Path) -> tuple[Workspace, str | None]:
    """A workspace in the state `kind` names, and its remote URL (None: no remote)."""
    if kind == "local":
        ws = published.ws.copy(tmp_path / "ws", tmp_path / "cache")
        shutil.rmtree(ws.root / "dist" / "models")
        return ws, published.url
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.add_model("tiny-llama", TINY_HF, BUILD_TOML)
    url = {"cold": None, "remote": published.url, "upload": f"s3://{BUCKET}/crash-{uuid.uuid4().hex[:8]}"}[kind]
    if url:
        ws.write_pyproject(f'remote_cache = "{url}"')
    return ws, url


def doit_killed(ws: Workspace, env: dict[str, str], *, after: float | None = None,
                signal_name: str = "KILL") -> subprocess.CompletedProcess:
    """Run doit in a process group of its own; with `after`, send the group the signal after that
    many seconds (if it still runs). Whatever is left of the group afterwards is killed."""
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=interruptible)
    if after is not None:
        try:
            proc.wait(timeout=after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, getattr(signal, f"SIG{signal_name}"))
    stdout, stderr = proc.communicate(timeout=300)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def statuses(ws: Workspace, env: dict[str, str]) -> dict[str, str]:
    """doit's own view: {address: "U" (up-to-date) or "R" (would run)}."""
    listed = ws.doit("list", "--all", "--status", env=env).stdout
    return {line.split()[1]: line.split()[0] for line in listed.splitlines()
            if line[:2] in ("U ", "R ") and line.split()[1] in {address(t) for t in TARGETS}}


def check_nothing_partial(ws: Workspace, env: dict[str, str], published: Published,
                          interrupted: str | None) -> None:
    keys = published.keys
    links = links_name_whole_entries(ws.root, ws.cache)
    status = statuses(ws, env)
    assert set(status) == {address(t) for t in TARGETS}, status
    for target in TARGETS:
        if status[address(target)] == "U":
            assert links.get(f"{MODEL}/{target}") == keys[address(target)], (target, links)
    if interrupted is not None:
        assert status[address(interrupted)] == "R", f"{interrupted} counts as up to date after the kill"
    no_lock_held(ws.cache)


def check_rerun(ws: Workspace, env: dict[str, str], published: Published) -> dict[str, str]:
    keys = published.keys
    run = ws.doit(env=env)
    assert not any(line in run.stderr for line in WAITED), run.stderr
    assert set(run.outcomes.values()) <= {"built", "restored", "up-to-date"}, run.outcomes
    assert run.keys == keys
    links = links_name_whole_entries(ws.root, ws.cache)
    assert links == {f"{MODEL}/{t}": keys[address(t)] for t in TARGETS}
    entries = committed(ws.cache)
    for key in keys.values():
        assert entries[key]["outputs"] == published.manifests[key]["outputs"], "the output differs from a clean build's"
    nothing_left(ws.root, ws.cache)
    no_lock_held(ws.cache)
    return run.outcomes


@pytest.mark.parametrize("kill, signal_name", [pytest.param(kill, name, id=f"{kill.fault}:{name}-{kill.start}")
                                               for kill in KILLS for name in kill.signals()])
def test_killed_at_a_point_then_rerun(kill, signal_name, published, s3_server, tmp_path):
    ws, url = start(kill.start, published, tmp_path)
    env = ws.env(**s3_server.env)
    killed = doit_killed(ws, {**env, "LLMBUILD_FAULT": f"{kill.fault}:{signal_name}"})
    assert f"llmbuild: fault injected at {kill.fault}: SIG{signal_name}" in killed.stderr, killed.stderr
    assert killed.returncode != 0
    check_nothing_partial(ws, env, published, kill.interrupted)
    if url:
        served = remote_entries_whole(s3_server, prefix_of(url))
        if kill.start == "upload":  # stopped while uploading the first entry: none is offered
            assert served == {}
        if signal_name == "INT":  # an interrupted build lets go of its claim; a killed one's expires
            assert claims(s3_server, prefix_of(url)) == []
    outcomes = check_rerun(ws, env, published)
    if kill.interrupted:
        assert outcomes[address(kill.interrupted)] in ("built", "restored")
    print(f"\n{kill.fault}:{signal_name} from {kill.start}: rerun {outcomes}")


@pytest.mark.parametrize("seed, signal_name", [pytest.param(*case, id=f"random-{case[0]}:{case[1]}")
                                               for case in RANDOM])
def test_killed_at_a_random_time_then_rerun(seed, signal_name, published, s3_server, tmp_path):
    """The delay is drawn from the time a clean build takes here (the engine's tool takes a second
    more), so kills land from load to the last link; wherever one lands, the same checks hold."""
    ws, _ = start("cold", published, tmp_path)
    env = ws.env(**s3_server.env, LLMBUILD_TEST_BUILD_SECONDS="1")
    delay = random.Random(seed).uniform(0.05, 0.8) * (published.seconds + 1)
    clock = time.monotonic()
    killed = doit_killed(ws, env, after=delay, signal_name=signal_name)
    ran = time.monotonic() - clock
    check_nothing_partial(ws, env, published, None)
    outcomes = check_rerun(ws, env, published)
    print(f"\nSIG{signal_name} after {delay:.2f} s (the run ended after {ran:.2f} s, exit {killed.returncode}): "
          f"rerun {outcomes}")


if FULL:  # about a minute of waiting for the claim to expire
    def test_the_claim_of_a_killed_uploader_is_taken_over(published, s3_server, tmp_path):
        """SIGKILLed mid-upload, a build's remote claim stays; another workspace waits for it to
        expire (it is not renewed), takes it over and publishes the entry."""
        keys = published.keys
        ws, url = start("upload", published, tmp_path)
        killed = doit_killed(ws, {**ws.env(**s3_server.env), "LLMBUILD_FAULT": "remote-upload@2:KILL"})
        assert "llmbuild: fault injected at remote-upload@2: SIGKILL" in killed.stderr
        assert claims(s3_server, prefix_of(url)) == [keys[address("checkpoint")]]
        assert remote_entries_whole(s3_server, prefix_of(url)) == {}
        other = Workspace(tmp_path / "other", tmp_path / "other-cache")
        other.add_model("tiny-llama", TINY_HF, BUILD_TOML)
        other.write_pyproject(f'remote_cache = "{url}"')
        run = other.doit(env=other.env(**s3_server.env))
        assert "was not renewed for 60 s: taking it over" in run.stderr, run.stderr
        assert run.outcomes == {address(t): "built" for t in TARGETS}
        assert claims(s3_server, prefix_of(url)) == []
        assert set(remote_entries_whole(s3_server, prefix_of(url))) == set(keys.values())


@pytest.mark.parametrize("signal_name", ["KILL", "INT"] if FULL else ["KILL"])
def test_gc_killed_while_evicting_then_rerun(signal_name, published, s3_server, tmp_path):
    """`llmbuild cache gc` killed holding a key's lock, about to evict its entry: no lock stays
    held, nothing partial counts as current, and the rerun brings every target back."""
    ws, _ = start("local", published, tmp_path)  # entries cached, no dist links: gc may evict them
    env = ws.env(**s3_server.env)
    killed = subprocess.run([sys.executable, "-m", "llmbuild", "cache", "gc", "--max-size", "0"], cwd=ws.root,
                            env={**env, "LLMBUILD_FAULT": f"cache-gc@2:{signal_name}"}, capture_output=True,
                            text=True, timeout=300, preexec_fn=interruptible)
    assert f"llmbuild: fault injected at cache-gc@2: SIG{signal_name}" in killed.stderr, killed.stderr
    assert killed.returncode != 0
    check_nothing_partial(ws, env, published, None)
    check_rerun(ws, env, published)
