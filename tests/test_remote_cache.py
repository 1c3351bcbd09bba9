"""The remote cache on a real S3 server (SeaweedFS's `weed mini`, see s3_fixtures.py).

Workspaces at different paths with caches of their own share one remote: what one builds,
another restores (`"from": "remote"` in dist/run.json), every file verified; a corrupt or
partial remote entry is said, never served, and rebuilt; read mode writes nothing; an
unusable remote is one warning line (or an error when required), never a hang; the secret
key is never written or printed. Each test has a prefix of its own in the shared bucket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import MODEL_TOML, TINY_HF, Workspace
from s3_fixtures import BUCKET, free_ports

pytestmark = pytest.mark.slow

MODEL = "models/tiny-llama"
TARGETS = ("checkpoint", "engine", "repository")
ADDRESSES = {f"{MODEL}:{name}" for name in TARGETS}
BUILD_TOML = MODEL_TOML + '\n[repository.repository]\nengine = ":engine"\n'


def workspace(tmp_path: Path, name: str, settings: str = "") -> Workspace:
    """tiny-llama's checkpoint, engine and repository (no smoke: no server), with a cache of its own."""
    ws = Workspace(tmp_path / name, tmp_path / f"{name}-cache")
    ws.add_model("tiny-llama", TINY_HF, BUILD_TOML)
    ws.write_pyproject(settings)
    return ws


def remote_workspace(tmp_path: Path, name: str, url: str, settings: str = "") -> Workspace:
    return workspace(tmp_path, name, f'remote_cache = "{url}"\n{settings}')


def env(ws: Workspace, s3_server, **extra: str) -> dict[str, str]:
    return ws.env(**{**s3_server.env, **extra})


def outputs(ws: Workspace) -> dict[str, bytes | None]:
    """Every file's bytes and every directory (None) under dist/models, links followed."""
    found: dict[str, bytes | None] = {}
    root = ws.root / "dist" / "models"
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(directory)
        found.update({(here / d).relative_to(root).as_posix(): None for d in dirnames})
        found.update({(here / f).relative_to(root).as_posix(): (here / f).read_bytes() for f in filenames})
    return found


def origins(run) -> dict[str, tuple[str, str | None]]:
    return {r["address"]: (r["outcome"], r.get("from")) for r in run.records}


def prefix(url: str) -> str:
    return url.removeprefix(f"s3://{BUCKET}/") + "/"


def remote_manifests(s3_server, url: str) -> dict[str, dict]:
    client = s3_server.client()
    return {name.rsplit("/", 1)[1].removesuffix(".json"):
            json.loads(client.get_object(Bucket=BUCKET, Key=name)["Body"].read())
            for name in s3_server.objects(prefix(url) + "manifests/")}


def built_once_and_published(tmp_path, s3_server, url: str) -> Workspace:
    first = remote_workspace(tmp_path, "first", url)
    run = first.doit(env=env(first, s3_server))
    assert origins(run) == {a: ("built", None) for a in ADDRESSES}
    for address in ADDRESSES:
        assert f"llmbuild: {address}: uploaded " in run.stderr
    return first


def test_a_second_workspace_restores_everything_from_the_remote(tmp_path, s3_server, remote_url):
    first = built_once_and_published(tmp_path, s3_server, remote_url)
    second = remote_workspace(tmp_path, "second", remote_url)
    run = second.doit(env=env(second, s3_server))
    assert origins(run) == {a: ("restored", "remote") for a in ADDRESSES}
    assert run.keys == {r["address"]: r["key"] for r in json.loads((first.root / "dist/run.json").read_text())["targets"]}
    assert outputs(second) == outputs(first)
    assert outputs(second)["tiny-llama/repository/ensemble/1"] is None  # empty directories come along
    for address in ADDRESSES:
        assert f"llmbuild: {address}: downloaded " in run.stderr

    # content-addressed: the engine's files, also in the repository, are stored once
    manifests = remote_manifests(s3_server, remote_url)
    assert set(manifests) == set(run.keys.values())
    digests = [f["digest"] for m in manifests.values() for f in m["files"].values()]
    blobs = {name.rsplit("/", 1)[1] for name in s3_server.objects(prefix(remote_url) + "blobs/")}
    assert blobs == set(digests) and len(blobs) < len(digests)
    assert not s3_server.objects(prefix(remote_url) + "claims/")

    # the local cache now has them: without dist links they are restored from it
    for name in TARGETS:
        (second.root / "dist" / MODEL / name).unlink()
    again = second.doit(env=env(second, s3_server))
    assert origins(again) == {a: ("restored", "local") for a in ADDRESSES}
    assert "downloaded" not in again.stderr


def test_two_workspaces_started_at_once_build_each_key_once(tmp_path, s3_server, remote_url):
    workspaces = [remote_workspace(tmp_path, name, remote_url) for name in ("left", "right")]
    procs = [subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env=env(ws, s3_server),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for ws in workspaces]
    results = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    rows = [json.loads((ws.root / "dist/run.json").read_text())["targets"] for ws in workspaces]
    for address in ADDRESSES:
        seen = sorted((r["outcome"], r.get("from")) for run in rows for r in run if r["address"] == address)
        assert seen == [("built", None), ("restored", "remote")], (address, results)
    assert outputs(workspaces[0]) == outputs(workspaces[1])
    assert len(remote_manifests(s3_server, remote_url)) == len(ADDRESSES)
    assert not s3_server.objects(prefix(remote_url) + "claims/")


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_remote_entry_is_said_never_served_and_rebuilt(tmp_path, s3_server, remote_url, damage):
    first = built_once_and_published(tmp_path, s3_server, remote_url)
    engine_key = {r["address"]: r["key"] for r in json.loads((first.root / "dist/run.json").read_text())["targets"]}[
        f"{MODEL}:engine"]
    manifest = remote_manifests(s3_server, remote_url)[engine_key]
    blob = f"{prefix(remote_url)}blobs/{manifest['files']['out/rank0.engine']['digest']}"
    client = s3_server.client()
    if damage == "flip":
        content = bytearray(client.get_object(Bucket=BUCKET, Key=blob)["Body"].read())
        content[len(content) // 2] ^= 0x01
        client.put_object(Bucket=BUCKET, Key=blob, Body=bytes(content))
        said = "is corrupt (out/rank0.engine does not match its digest): not used"
    else:
        client.delete_object(Bucket=BUCKET, Key=blob)
        said = "is partial (the content of out/rank0.engine is missing): not used"

    second = remote_workspace(tmp_path, "second", remote_url)
    run = second.doit(env=env(second, s3_server))
    assert f"llmbuild: {MODEL}:engine: the entry of key {engine_key[:12]} in {remote_url} {said}" in run.stderr
    # the repository holds the same engine file: restored once the rebuilt engine replaced the blob
    assert origins(run) == {f"{MODEL}:checkpoint": ("restored", "remote"), f"{MODEL}:engine": ("built", None),
                            f"{MODEL}:repository": ("restored", "remote")}
    assert outputs(second) == outputs(first)

    third = remote_workspace(tmp_path, "third", remote_url)  # the remote was repaired
    assert origins(third.doit(env=env(third, s3_server))) == {a: ("restored", "remote") for a in ADDRESSES}


def test_read_mode_restores_but_never_writes(tmp_path, s3_server, remote_url):
    reader = remote_workspace(tmp_path, "reader", remote_url)
    read_only = env(reader, s3_server, LLMBUILD_REMOTE_CACHE_MODE="read")
    run = reader.doit(env=read_only)
    assert origins(run) == {a: ("built", None) for a in ADDRESSES}
    assert s3_server.objects(prefix(remote_url)) == {}
    assert "uploaded" not in run.stderr

    first = built_once_and_published(tmp_path, s3_server, remote_url)
    before = s3_server.objects(prefix(remote_url))
    fresh = remote_workspace(tmp_path, "fresh", remote_url)
    restored = fresh.doit(env=env(fresh, s3_server, LLMBUILD_REMOTE_CACHE_MODE="read"))
    assert origins(restored) == {a: ("restored", "remote") for a in ADDRESSES}
    assert outputs(fresh) == outputs(first)
    assert s3_server.objects(prefix(remote_url)) == before
    pushed = fresh.llmbuild("cache", "push", check=False, env=env(fresh, s3_server, LLMBUILD_REMOTE_CACHE_MODE="read"))
    assert pushed.returncode == 2
    assert pushed.stderr == (f'llmbuild: error: remote_cache_mode is "read": `llmbuild cache push` would '
                             f"write to {remote_url}\n")


@pytest.fixture
def silent_endpoint():
    """An endpoint that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["closed", "silent"])
def test_an_unusable_remote_is_one_warning_then_local_builds(tmp_path, s3_server, remote_url, silent_endpoint,
                                                             endpoint):
    url = f"http://127.0.0.1:{free_ports(1)[0]}" if endpoint == "closed" else silent_endpoint
    ws = remote_workspace(tmp_path, "ws", remote_url,
                          "remote_cache_connect_timeout = 1\nremote_cache_read_timeout = 1\nremote_cache_retries = 1")
    clock = time.monotonic()
    run = ws.doit(env=env(ws, s3_server, AWS_ENDPOINT_URL=url))
    elapsed = time.monotonic() - clock
    assert origins(run) == {a: ("built", None) for a in ADDRESSES}
    warnings = [line for line in run.stderr.splitlines() if "remote cache" in line]
    assert len(warnings) == 1, run.stderr
    reason = "Could not connect to the endpoint URL" if endpoint == "closed" else "Read timeout on endpoint URL"
    assert warnings[0].startswith(f"llmbuild: warning: remote cache {remote_url} cannot be used ({reason}: ")
    assert warnings[0].endswith("): going on without it")
    assert elapsed < 60, f"an unusable remote took {elapsed:.0f} s"


def test_a_required_remote_that_is_unusable_fails_the_build(tmp_path, s3_server, remote_url):
    ws = remote_workspace(tmp_path, "ws", remote_url, "remote_cache_required = true\nremote_cache_retries = 0")
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    run = ws.doit(env=env(ws, s3_server, AWS_ENDPOINT_URL=closed), check=False)
    assert run.returncode != 0
    assert run.outcomes == {f"{MODEL}:checkpoint": "failed", f"{MODEL}:engine": "skipped",
                            f"{MODEL}:repository": "skipped"}
    note = run.records[0]["note"]
    assert note == (f"remote cache {remote_url} cannot be used (Could not connect to the endpoint URL: "
                    f'"{closed}/{BUCKET}/{prefix(remote_url)}manifests/{run.keys[f"{MODEL}:checkpoint"]}.json") '
                    "and remote_cache_required = true")
    assert not (ws.cache / "entries").exists()


def test_the_secret_key_is_never_written_or_printed(tmp_path, s3_server, remote_url):
    first = built_once_and_published(tmp_path, s3_server, remote_url)
    second = remote_workspace(tmp_path, "second", remote_url)
    said = [second.doit(env=env(second, s3_server))]
    said.append(second.llmbuild("cache", "push", env=env(second, s3_server)))
    wrong = f"wrong-secret-{uuid.uuid4().hex}"
    third = remote_workspace(tmp_path, "third", remote_url)
    refused = third.doit(env=env(third, s3_server, AWS_SECRET_ACCESS_KEY=wrong))
    assert origins(refused) == {a: ("built", None) for a in ADDRESSES}
    assert f"llmbuild: warning: remote cache {remote_url} cannot be used (SignatureDoesNotMatch: " in refused.stderr
    said.append(refused)

    for marker in (s3_server.secret, wrong):
        assert all(marker not in out.stdout + out.stderr for out in said)
        for root in (first.root, first.cache, second.root, second.cache, third.root, third.cache):
            leaked = [p for p in root.rglob("*") if p.is_file() and marker.encode() in p.read_bytes()]
            assert leaked == []
        client = s3_server.client()
        for name in s3_server.objects(prefix(remote_url)):
            assert marker.encode() not in client.get_object(Bucket=BUCKET, Key=name)["Body"].read()


def test_push_then_pull_into_an_empty_cache(tmp_path, s3_server, remote_url):
    local = workspace(tmp_path, "local")
    assert origins(local.doit()) == {a: ("built", None) for a in ADDRESSES}
    with_remote = env(local, s3_server, LLMBUILD_REMOTE_CACHE=remote_url)
    pushed = local.llmbuild("cache", "push", env=with_remote)
    assert pushed.stdout == "".join(f"pushed         {MODEL}:{n}\n" for n in TARGETS) + \
        f"3 pushed to {remote_url}, 0 already there, 0 not built here\n"
    again = local.llmbuild("cache", "push", f"{MODEL}:engine", env=with_remote)
    assert again.stdout == (f"already there  {MODEL}:checkpoint\nalready there  {MODEL}:engine\n"
                            f"0 pushed to {remote_url}, 2 already there, 0 not built here\n")

    empty = workspace(tmp_path, "empty")
    pulled = empty.llmbuild("cache", "pull", f"{MODEL}:repository", env=env(empty, s3_server, LLMBUILD_REMOTE_CACHE=remote_url))
    assert pulled.stdout == "".join(f"pulled         {MODEL}:{n}\n" for n in TARGETS) + \
        f"3 pulled from {remote_url}, 0 already there, 0 not in {remote_url}\n"
    run = empty.doit()  # no remote configured: all from the local cache
    assert origins(run) == {a: ("restored", "local") for a in ADDRESSES}
    assert outputs(empty) == outputs(local)

    elsewhere = f"{remote_url}-empty"
    nothing = workspace(tmp_path, "nothing")
    nothing = nothing.llmbuild("cache", "pull", check=False, env=env(nothing, s3_server, LLMBUILD_REMOTE_CACHE=elsewhere))
    assert nothing.returncode == 1
    assert nothing.stdout.splitlines() == [f"not pulled     {MODEL}:{n}" for n in TARGETS] + \
        [f"0 pulled from {elsewhere}, 0 already there, 3 not in {elsewhere}"]
