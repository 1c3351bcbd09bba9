"""Integrity on restore: a committed entry changed after its commit is never linked into dist/.

Each test starts from a copy of one built workspace (tiny-llama's checkpoint and engine, CPU
lane), damages the engine's entry through its dist link (as a later process would: chmod +w,
then write), and runs the real `doit`: the entry is quarantined, said in one line naming the
target, the file and what differed, and the engine rebuilt (outcome `built` in dist/run.json).
A change that keeps size and mtime passes the stat check; `verify_on_restore = "digest"`
and `llmbuild cache verify` read the content and catch it. Remote entries: `llmbuild cache
verify --remote` re-hashes every blob.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from conftest import MODEL_TOML, TINY_HF, Workspace
from s3_fixtures import BUCKET

MODEL = "models/tiny-llama"
ENGINE, CHECKPOINT = f"{MODEL}:engine", f"{MODEL}:checkpoint"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("integrity")
    ws = Workspace(root / "ws", root / "cache")
    ws.add_model("tiny-llama", TINY_HF, MODEL_TOML)
    run = ws.doit()
    assert run.outcomes == {CHECKPOINT: "built", ENGINE: "built"}
    return ws


@pytest.fixture
def ws(built, tmp_path) -> Workspace:
    return built.copy(tmp_path / "ws", tmp_path / "cache")


def engine_out(ws: Workspace) -> Path:
    return ws.root / "dist" / MODEL / "engine"


def files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def writable(path: Path) -> Path:
    os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)
    return path


def append(out: Path) -> str:
    size = (out / "config.json").stat().st_size
    with open(writable(out / "config.json"), "ab") as handle:
        handle.write(b" ")
    return f"out/config.json is {size + 1} bytes, {size} when committed"


def truncate(out: Path) -> str:
    size = (out / "rank0.engine").stat().st_size
    os.truncate(writable(out / "rank0.engine"), size // 2)
    return f"out/rank0.engine is {size // 2} bytes, {size} when committed"


def delete(out: Path) -> str:
    (out / "config.json").unlink()
    return "out/config.json is missing"


def add(out: Path) -> str:
    (out / "extra.bin").write_bytes(b"not built")
    return "out/extra.bin is not in its manifest"


def touch(out: Path) -> str:
    st = (out / "rank0.engine").stat()
    os.utime(out / "rank0.engine", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    return "out/rank0.engine was modified "


def same_size_and_mtime(out: Path) -> None:
    """Flip one byte of the engine, then put its mtime back: invisible to a stat."""
    path = writable(out / "rank0.engine")
    st = path.stat()
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def corrupt_lines(run_or_proc) -> list[str]:
    return [line for line in (run_or_proc.stdout + run_or_proc.stderr).splitlines() if " is corrupt " in line]


def quarantined(ws: Workspace) -> list[Path]:
    return sorted((ws.cache / "quarantine").iterdir()) if (ws.cache / "quarantine").is_dir() else []


@pytest.mark.parametrize("damage", [append, truncate, delete, add, touch], ids=lambda d: d.__name__)
def test_a_damaged_entry_is_quarantined_said_once_and_rebuilt(ws, damage):
    out = engine_out(ws)
    good = files(out)
    key = os.readlink(out).split("/")[-2]
    said = damage(out)
    explained = ws.llmbuild("explain", ENGINE).stdout
    assert f"the output cached for key {key[:12]} is corrupt ({said}" in explained

    run = ws.doit()
    assert run.outcomes == {CHECKPOINT: "up-to-date", ENGINE: "built"}
    [line] = corrupt_lines(run)
    assert line.startswith(f"llmbuild: {ENGINE}: the cached output of key {key[:12]} is corrupt ({said}")
    [moved] = quarantined(ws)
    assert moved.name.startswith(key) and said in (moved / "why.txt").read_text()
    assert os.readlink(out) == str(ws.cache / "entries" / key[:2] / key / "out")  # the rebuilt entry
    assert files(out) == good  # never the damaged one
    assert ws.doit().outcomes == {CHECKPOINT: "up-to-date", ENGINE: "up-to-date"}


def test_a_change_keeping_size_and_mtime_is_caught_by_digest_verification(ws):
    out = engine_out(ws)
    good = files(out)
    same_size_and_mtime(out)
    os.unlink(out)  # the next run restores it from the local cache

    by_stat = ws.doit()  # the default: one stat per file, which this change passes
    assert by_stat.outcomes[ENGINE] == "restored" and not corrupt_lines(by_stat)
    os.unlink(out)

    run = ws.doit(env=ws.env(LLMBUILD_VERIFY_ON_RESTORE="digest"))
    assert run.outcomes == {CHECKPOINT: "up-to-date", ENGINE: "built"}
    [line] = corrupt_lines(run)
    assert f"{ENGINE}: the cached output of key" in line and "(out/rank0.engine does not match its digest)" in line
    assert files(out) == good


def test_verify_on_restore_is_a_checked_setting(ws):
    ws.write_pyproject('verify_on_restore = "digest"')
    assert ws.doit().outcomes[ENGINE] == "up-to-date"
    ws.write_pyproject('verify_on_restore = "always"')
    run = ws.doit(check=False)
    assert run.returncode != 0
    assert "pyproject.toml" in run.stderr and "verify_on_restore" in run.stderr


def test_cache_verify_reports_quarantines_and_exits_non_zero(ws):
    out = engine_out(ws)
    key = os.readlink(out).split("/")[-2]
    same_size_and_mtime(out)

    proc = ws.llmbuild("cache", "verify", check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"corrupt  {key[:12]}  {ENGINE}  out/rank0.engine does not match its digest: moved to {quarantined(ws)[0]}",
        "2 entries verified, 1 corrupt"]
    again = ws.llmbuild("cache", "verify", CHECKPOINT)
    assert again.stdout.splitlines() == ["1 entries verified, 0 corrupt"]

    run = ws.doit()  # the link names a quarantined entry: rebuilt
    assert run.outcomes == {CHECKPOINT: "up-to-date", ENGINE: "built"}
    assert ws.llmbuild("cache", "verify").stdout.splitlines() == ["2 entries verified, 0 corrupt"]


@pytest.mark.slow
def test_a_corrupt_remote_entry_is_found_by_verify_remote_and_by_a_restore(built, tmp_path, s3_server, remote_url):
    env = built.env(**s3_server.env, LLMBUILD_REMOTE_CACHE=remote_url)
    first = built.copy(tmp_path / "first", tmp_path / "first-cache")
    assert first.llmbuild("cache", "push", env=env).returncode == 0
    keys = {r["address"]: r["key"] for r in json.loads((first.root / "dist/run.json").read_text())["targets"]}
    prefix = remote_url.removeprefix(f"s3://{BUCKET}/") + "/"
    client = s3_server.client()

    def flip(key: str, name: str) -> None:
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}manifests/{key}.json")["Body"].read())
        blob = f"{prefix}blobs/{manifest['files'][name]['digest']}"
        content = bytearray(client.get_object(Bucket=BUCKET, Key=blob)["Body"].read())
        content[len(content) // 2] ^= 0x01
        client.put_object(Bucket=BUCKET, Key=blob, Body=bytes(content))

    assert first.llmbuild("cache", "verify", "--remote", env=env).stdout.splitlines()[-1] == \
        "2 remote entries verified, 0 corrupt"
    size = first.llmbuild("cache", "size", env=env).stdout
    assert f"remote cache {remote_url}: " in size and "2 entries" in size

    flip(keys[ENGINE], "out/rank0.engine")  # found by a restore
    second = Workspace(tmp_path / "second", tmp_path / "second-cache")
    second.add_model("tiny-llama", TINY_HF, MODEL_TOML)
    run = second.doit(env=env)
    assert run.outcomes == {CHECKPOINT: "restored", ENGINE: "built"}
    [line] = corrupt_lines(run)
    assert f"{ENGINE}: the entry of key {keys[ENGINE][:12]} in {remote_url} is corrupt" in line

    flip(keys[CHECKPOINT], "out/rank0.safetensors")  # found by verify --remote, and removed
    proc = first.llmbuild("cache", "verify", "--remote", env=env, check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"corrupt  {keys[CHECKPOINT][:12]}  {CHECKPOINT}  out/rank0.safetensors does not match its digest: removed from {remote_url}",
        "2 remote entries verified, 1 corrupt"]
    assert first.llmbuild("cache", "verify", "--remote", env=env).stdout.splitlines() == [
        "1 remote entries verified, 0 corrupt"]
