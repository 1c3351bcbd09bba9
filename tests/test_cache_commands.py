"""`llmbuild cache ls|size|gc` on a real cache, and `gc` beside a running `doit`.

The workspace is a git repository: commit v1 (engine max_batch_size = 4) was built, then v2
(max_batch_size = 8): the cache holds the checkpoint and the v2 engine, which dist/ links, and
the v1 engine, which nothing links. gc evicts only that one, unless told to keep what v1's
targets would use (--keep-revs) or each target's newest (--keep). Failed attempts,
quarantined entries and staging directories of builds that are gone are bounded too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import MODEL_TOML, TINY_HF, Workspace
from llmbuild.core.cache import Cache

MODEL = "models/tiny-llama"
ENGINE, CHECKPOINT = f"{MODEL}:engine", f"{MODEL}:checkpoint"
DAY = 86400


def git(ws: Workspace, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=ws.root,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("commands")
    ws = Workspace(root / "ws", root / "cache")
    ws.add_model("tiny-llama", TINY_HF, MODEL_TOML)
    (ws.root / ".gitignore").write_text("dist/\n")
    git(ws, "init", "-q", ".")
    git(ws, "add", "-A")
    git(ws, "commit", "-qm", "v1")
    assert ws.doit().built() == {CHECKPOINT, ENGINE}
    ws.write(f"{MODEL}/BUILD.toml", MODEL_TOML.replace("max_batch_size = 4", "max_batch_size = 8"))
    git(ws, "commit", "-qam", "v2")
    assert ws.doit().built() == {ENGINE}
    return ws


@pytest.fixture
def ws(built, tmp_path) -> Workspace:
    return built.copy(tmp_path / "ws", tmp_path / "cache")


def entries(ws: Workspace) -> set[str]:
    return {p.parent.name for p in ws.cache.glob("entries/??/*/manifest.json")}


def linked(ws: Workspace) -> dict[str, str]:
    return {name: os.readlink(ws.root / "dist" / MODEL / name).split("/")[-2] for name in ("checkpoint", "engine")}


def v1_engine(ws: Workspace) -> str:
    [key] = entries(ws) - set(linked(ws).values())
    return key


def last_used(ws: Workspace, key: str, days_ago: float) -> None:
    when = time.time() - days_ago * DAY
    os.utime(ws.cache / "entries" / key[:2] / key, (when, when))


def test_ls_and_size(ws):
    v1 = v1_engine(ws)
    lines = ws.llmbuild("cache", "ls").stdout.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("3 entries, ")
    rows = {line.split()[0]: line.split() for line in lines[:-1]}
    assert {key[:12] for key in entries(ws)} == set(rows)
    assert rows[v1[:12]][1:3] == ["engine", ENGINE] and rows[v1[:12]][-1] != "linked"
    assert {key[:12] for key, row in rows.items() if row[-1] == "linked"} == {k[:12] for k in linked(ws).values()}
    assert len(ws.llmbuild("cache", "ls", CHECKPOINT).stdout.splitlines()) == 2

    size = ws.llmbuild("cache", "size").stdout
    assert size.startswith(f"local cache {ws.cache}: ")
    [by_kind] = [line.split() for line in size.splitlines() if line.strip().startswith("engine ")]
    assert by_kind[-2:] == ["2", "entries"]
    [by_dir] = [line.split() for line in size.splitlines() if line.strip().startswith(f"{MODEL} ")]
    assert by_dir[-2:] == ["3", "entries"]


def test_gc_max_size_evicts_what_dist_does_not_link(ws):
    v1 = v1_engine(ws)
    dry = ws.llmbuild("cache", "gc", "--max-size", "0", "--dry-run").stdout
    assert f"would remove entry {v1[:12]} {ENGINE}" in dry and len(entries(ws)) == 3

    out = ws.llmbuild("cache", "gc", "--max-size", "0").stdout
    assert f"removed entry {v1[:12]} {ENGINE}" in out and "kept 2 protected entries" in out
    assert entries(ws) == set(linked(ws).values())
    assert ws.doit().outcomes == {CHECKPOINT: "up-to-date", ENGINE: "up-to-date"}

    big = ws.llmbuild("cache", "gc", "--max-size", "50GB").stdout  # fits: nothing goes
    assert "removed" not in big.replace("(0 removed)", "") and len(entries(ws)) == 2


def test_gc_keeps_what_keep_revs_would_use(ws):
    v1 = v1_engine(ws)
    out = ws.llmbuild("cache", "gc", "--max-size", "0", "--keep-revs", "HEAD~1").stdout
    assert "HEAD~1: its targets would use 2 keys; their entries are kept" in out
    assert v1 in entries(ws) and "removed entry" not in out

    git(ws, "checkout", "-q", "HEAD~1", "--", MODEL)  # back to v1: restored, not built
    assert ws.doit().outcomes == {CHECKPOINT: "up-to-date", ENGINE: "restored"}


def test_gc_older_than_and_keep(ws):
    v1, v2 = v1_engine(ws), linked(ws)["engine"]
    last_used(ws, v1, 40)
    last_used(ws, v2, 30)
    assert "removed entry" not in ws.llmbuild("cache", "gc", "--older-than", "50d").stdout
    assert "removed entry" not in ws.llmbuild("cache", "gc", "--older-than", "14d", "--keep", "2").stdout
    assert len(entries(ws)) == 3
    out = ws.llmbuild("cache", "gc", "--older-than", "14d", "--keep", "1").stdout
    assert f"removed entry {v1[:12]} {ENGINE}" in out
    assert entries(ws) == set(linked(ws).values())


def test_failed_quarantine_and_staging_are_bounded(ws):
    cache = Cache(ws.cache)
    attempts = [ws.cache / "failed" / f"{'f' * 64}.2026010{n}T000000.1" for n in range(3)]
    for attempt in attempts:
        (attempt / "out").mkdir(parents=True)
    kept = attempts[-1]
    old = ws.cache / "failed" / f"{'e' * 64}.20200101T000000.1"
    old.mkdir()
    quarantined = ws.cache / "quarantine" / f"{'d' * 64}.20200101T000000.1"
    shutil.copytree(ws.cache / "entries", quarantined)
    for path in (old, quarantined):
        os.utime(path, (0, 0))
    dead = ws.cache / "staging" / f"{'c' * 64}.999999"
    (dead / "out").mkdir(parents=True)
    live_key = "b" * 64
    with cache.lock(live_key):
        live = cache.stage(live_key)
        out = ws.llmbuild("cache", "gc").stdout
        assert live.path.is_dir(), out  # its build holds the key's lock: left alone
    assert not dead.exists() and f"removed staging {dead.name}" in out
    assert not old.exists() and list((ws.cache / "failed").iterdir()) == [kept]  # the newest of each key
    assert not quarantined.exists() and f"removed quarantine {quarantined.name}" in out
    assert len(entries(ws)) == 3  # no limit given: no entry goes


def test_sizes_and_ages_are_checked(ws):
    for flag, value, said in (("--max-size", "5XB", "expected a size such as 50GB"),
                              ("--older-than", "two weeks", "expected an age such as 14d")):
        proc = ws.llmbuild("cache", "gc", flag, value, check=False)
        assert proc.returncode == 2 and f"llmbuild: error: {flag} {value!r}: {said}" in proc.stderr


@pytest.mark.slow
def test_gc_max_size_zero_in_a_loop_never_breaks_a_running_doit(ws, tmp_path, tiny_models):
    """A second workspace on the same cache builds a new model and restores tiny-llama's v1
    entries while `gc --max-size 0` runs again and again, from both workspaces."""
    assert ws.doit().outcomes == {CHECKPOINT: "up-to-date", ENGINE: "up-to-date"}  # its dist: registered
    v1 = v1_engine(ws)
    for n in range(5):  # evictable entries, so every gc has work
        shutil.copytree(ws.cache / "entries" / v1[:2] / v1, ws.cache / "entries" / "00" / f"{n:064d}")
    other = Workspace(tmp_path / "other", ws.cache)
    other.add_model("tiny-llama", TINY_HF, MODEL_TOML)  # v1: in the cache, linked by no dist
    other.add_model("seed1", tiny_models[1])  # not built anywhere yet
    doit = subprocess.Popen([sys.executable, "-m", "doit", "-n", "2"], cwd=other.root, env=other.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs, evicted = 0, 0
    while doit.poll() is None:
        for where in (other, ws):
            gc = where.llmbuild("cache", "gc", "--max-size", "0")
            runs += 1
            evicted += gc.stdout.count("removed entry ")
    stdout, stderr = doit.communicate()
    assert doit.returncode == 0, stdout + stderr
    assert runs >= 2 and evicted >= 5, (runs, evicted)

    run = other.doit()  # nothing the running doit linked was evicted
    assert set(run.outcomes.values()) == {"up-to-date"}, run.outcomes
    assert other.llmbuild("cache", "verify").stdout.splitlines()[-1].endswith(" 0 corrupt")
    for name in ("tiny-llama", "seed1"):
        for target in ("checkpoint", "engine"):
            assert (other.root / "dist" / "models" / name / target / "config.json").is_file()
    assert ws.doit().outcomes == {CHECKPOINT: "up-to-date", ENGINE: "up-to-date"}
