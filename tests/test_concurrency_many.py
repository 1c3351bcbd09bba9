"""K >= 4 `doit` processes at once: on one workspace, and on workspaces at different paths sharing
local caches and one remote (S3). Each key is built once, the others wait (said on stderr) and
restore, and every entry, local or remote, matches its manifest.

So that they really wait, the test holds the checkpoint key's lock in each local cache until every
process has said it is waiting; which process then builds is up to the race, what they end with
is not.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
from filelock import FileLock

from cache_checks import committed, links_name_whole_entries, no_lock_held, nothing_left, remote_entries_whole
from conftest import MODEL_TOML, TINY_HF, Workspace
from s3_fixtures import BUCKET

pytestmark = pytest.mark.slow

K = 4
MODEL = "models/tiny-llama"
ADDRESSES = [f"{MODEL}:{t}" for t in ("checkpoint", "engine", "repository")]
BUILD_TOML = MODEL_TOML + '\n[repository.repository]\nengine = ":engine"\n'
LOCAL_WAIT = "another process is building the same key; waiting"
REMOTE_WAIT = "is building the same key (its claim is in"
SUMMARY = re.compile(r"^  (built|restored) +(\S+)", re.MULTILINE)
#: A tool's first line, as doit's progress shows it when stdout is not a terminal.
TOOL_STARTED = re.compile(r"^\d\d:\d\d:\d\d (\S+) +[\d.]+s  \[\S+ cpu-lane\] emulating TensorRT-LLM", re.MULTILINE)


def checkpoint_key(ws: Workspace) -> str:
    from llmbuild.plugins import load_workspace

    loaded = load_workspace(ws.root, ws.env())
    return loaded.key(loaded.targets_by_name[ADDRESSES[0]])[0]


def run_all_at_once(workspaces: list[Workspace], env: dict[str, str], tmp_path: Path) -> list[tuple[str, str]]:
    """Start `doit` in every workspace (one entry per process) while holding the checkpoint key's lock
    in each cache they use; release when each process has said it waits. (stdout, stderr) of each."""
    key = checkpoint_key(workspaces[0])
    logs = [(tmp_path / f"doit{i}.out", tmp_path / f"doit{i}.err") for i in range(len(workspaces))]
    with ExitStack() as held:
        for cache in {ws.cache for ws in workspaces}:
            lock = cache / "locks" / key[:2] / f"{key}.lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(FileLock(str(lock)))
        procs = [subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env={**ws.env(), **env},
                                  stdout=held.enter_context(open(out, "w")), stderr=held.enter_context(open(err, "w")))
                 for ws, (out, err) in zip(workspaces, logs)]
        deadline = time.monotonic() + 300
        while not all(LOCAL_WAIT in err.read_text() for _, err in logs):
            assert all(p.poll() is None for p in procs), [err.read_text() for _, err in logs]
            assert time.monotonic() < deadline, "not every process reached the held lock"
            time.sleep(0.1)
    for proc in procs:
        proc.wait(timeout=600)
    outputs = [(out.read_text(), err.read_text()) for out, err in logs]
    assert [p.returncode for p in procs] == [0] * len(procs), outputs
    return outputs


def builds(outputs: list[tuple[str, str]]) -> dict[str, int]:
    """How many processes built each target (their summaries) and how many ran its tool (their logs)."""
    counted = {a: 0 for a in ADDRESSES}
    for stdout, _ in outputs:
        for outcome, address in SUMMARY.findall(stdout):
            counted[address] += outcome == "built"
    tools = {a: sum(len([m for m in TOOL_STARTED.findall(out) if m == a]) for out, _ in outputs)
             for a in ADDRESSES[:2]}  # the repository kind runs no tool
    assert all(tools[a] == counted[a] for a in tools), (tools, counted)
    return counted


def test_k_processes_on_one_workspace(tmp_path):
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.add_model("tiny-llama", TINY_HF, BUILD_TOML)
    outputs = run_all_at_once([ws] * K, {}, tmp_path)
    counts = builds(outputs)
    assert counts == {a: 1 for a in ADDRESSES}, (counts, outputs)
    for stdout, _ in outputs:  # every process ends with every target current: built, restored or up to date
        assert "3 targets: " in stdout and ", 0 skipped, 0 failed" in stdout, stdout
    assert sum(LOCAL_WAIT in err for _, err in outputs) == K
    entries = committed(ws.cache)
    assert set(links_name_whole_entries(ws.root, ws.cache).values()) == set(entries) and len(entries) == 3
    nothing_left(ws.root, ws.cache)
    no_lock_held(ws.cache)
    print(f"\nK={K} on one workspace: builds {counts}; "
          f"{sum(stdout.count('  restored') for stdout, _ in outputs)} restores")


def test_a_builder_killed_while_others_wait_holds_no_one_up(tmp_path):
    """The first process is SIGKILLed after its engine tool ran, before the commit; K-1 others
    started meanwhile finish: the engine is built once more, by one of them, and nothing is left."""
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.add_model("tiny-llama", TINY_HF, BUILD_TOML)
    with open(tmp_path / "first.err", "w") as err, open(tmp_path / "first.out", "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, text=True, stdout=out,
                                 stderr=err, env=ws.env(LLMBUILD_FAULT="output-written@2:KILL",
                                                        LLMBUILD_TEST_BUILD_SECONDS="3"))
    deadline = time.monotonic() + 300
    while ADDRESSES[1] not in TOOL_STARTED.findall((tmp_path / "first.out").read_text()):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.err").read_text()
        time.sleep(0.05)
    others = [subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env=ws.env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(K - 1)]
    outputs = [proc.communicate(timeout=600) for proc in others]
    assert first.wait(timeout=60) == -9
    assert "llmbuild: fault injected at output-written@2: SIGKILL" in (tmp_path / "first.err").read_text()
    assert [proc.returncode for proc in others] == [0] * (K - 1), outputs
    counts = builds(outputs)
    assert counts == {ADDRESSES[0]: 0, ADDRESSES[1]: 1, ADDRESSES[2]: 1}, (counts, outputs)
    entries = committed(ws.cache)
    assert set(links_name_whole_entries(ws.root, ws.cache).values()) == set(entries) and len(entries) == 3
    nothing_left(ws.root, ws.cache)
    no_lock_held(ws.cache)
    waited = sum(LOCAL_WAIT in err for _, err in outputs)
    print(f"\n1 killed + {K - 1} processes: builds {counts}; {waited} waited for the killed builder's lock")


def test_k_workspaces_sharing_local_caches_and_a_remote(tmp_path, s3_server):
    """Two local caches, two workspaces on each, one remote: a key one cache's builder publishes,
    the other cache restores from the remote (or, racing for the claim, the other way round)."""
    url = f"s3://{BUCKET}/many-{uuid.uuid4().hex[:8]}"
    workspaces = []
    for i in range(K):
        ws = Workspace(tmp_path / f"ws{i}", tmp_path / f"cache{i % 2}")
        ws.add_model("tiny-llama", TINY_HF, BUILD_TOML)
        ws.write_pyproject(f'remote_cache = "{url}"')
        workspaces.append(ws)
    outputs = run_all_at_once(workspaces, s3_server.env, tmp_path)
    assert sum(LOCAL_WAIT in err for _, err in outputs) == K
    origins: dict[str, list[tuple[str, str | None]]] = {a: [] for a in ADDRESSES}
    for ws in workspaces:
        for record in json.loads((ws.root / "dist/run.json").read_text())["targets"]:
            origins[record["address"]].append((record["outcome"], record.get("from")))
    for address, seen in origins.items():
        assert sorted(o for o, _ in seen).count("built") == 1, (address, seen, outputs)
        assert {o for o, _ in seen} <= {"built", "restored"}, (address, seen)
        assert ("restored", "remote") in seen, (address, seen)  # the other cache got it from the remote
    counts = builds(outputs)
    assert counts == {a: 1 for a in ADDRESSES}, counts
    remote = remote_entries_whole(s3_server, url.removeprefix(f"s3://{BUCKET}/") + "/")
    for ws in workspaces:
        entries = committed(ws.cache)
        assert set(entries) == set(remote) and len(entries) == 3
        assert set(links_name_whole_entries(ws.root, ws.cache).values()) == set(entries)
        nothing_left(ws.root, ws.cache)
        no_lock_held(ws.cache)
    claim_waits = sum(err.count(REMOTE_WAIT) for _, err in outputs)
    print(f"\nK={K} workspaces, 2 local caches, 1 remote: builds {counts}; "
          f"outcomes {origins}; {claim_waits} waits for a remote claim")
