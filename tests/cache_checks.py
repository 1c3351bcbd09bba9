"""What a local or remote cache must look like whatever happened to the processes that used it:
every committed entry whole, every dist link naming one, no lock held, nothing left staged.
(And `interruptible`, for the processes these tests interrupt.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from filelock import FileLock

from llmbuild.core.digests import hash_file


def fresh_digests(out: Path) -> dict[str, str]:
    """{relative path: digest} of every file below `out`, hashed now (no digest cache)."""
    return {(Path(directory) / name).relative_to(out).as_posix(): hash_file(Path(directory) / name)
            for directory, _, names in os.walk(out, followlinks=True) for name in names}


def committed(cache: Path) -> dict[str, dict]:
    """{key: manifest} of every committed entry; asserts each one is whole: its manifest names its
    key and lists exactly the files of its out/, each with the digest it has now."""
    entries: dict[str, dict] = {}
    for entry in sorted((cache / "entries").glob("*/*")):
        if entry.name.startswith("."):  # an eviction in progress: never looked up
            continue
        manifest_path = entry / "manifest.json"
        assert manifest_path.is_file(), f"{entry} is an entry without a manifest"
        manifest = json.loads(manifest_path.read_text())
        assert manifest["key"] == entry.name, entry
        assert fresh_digests(entry / "out") == manifest["outputs"], f"{entry} does not match its manifest"
        entries[entry.name] = manifest
    return entries


def dist_links(root: Path) -> dict[str, Path]:
    """{dist path: where it points} of every link under dist/models (temporary links included)."""
    found: dict[str, Path] = {}
    for directory, dirnames, names in os.walk(root / "dist" / "models"):
        for name in dirnames + names:
            path = Path(directory) / name
            if path.is_symlink():
                found[path.relative_to(root / "dist").as_posix()] = Path(os.readlink(path))
    return found


def links_name_whole_entries(root: Path, cache: Path) -> dict[str, str]:
    """{dist path: key}; asserts every dist link names the out/ of a whole committed entry."""
    entries = committed(cache)
    keys: dict[str, str] = {}
    for name, points_at in dist_links(root).items():
        if name.endswith(".tmp"):  # a link being made (or a killed process's): never looked up
            continue
        key = points_at.parent.name
        assert points_at == cache / "entries" / key[:2] / key / "out" and key in entries, \
            f"dist/{name} -> {points_at}: not a committed entry"
        keys[name] = key
    return keys


def no_lock_held(cache: Path) -> int:
    """Asserts every key lock of the cache can be taken at once; how many there are."""
    locks = sorted((cache / "locks").glob("*/*.lock"))
    for path in locks:
        lock = FileLock(str(path))
        lock.acquire(timeout=0)  # raises filelock.Timeout when someone holds it
        lock.release()
    return len(locks)


def nothing_left(root: Path, cache: Path) -> None:
    """No staging directory in the cache, no temporary link in dist/."""
    staged = sorted(p.name for p in (cache / "staging").glob("*")) if (cache / "staging").exists() else []
    assert staged == [], f"staging directories left: {staged}"
    temporary = [name for name in dist_links(root) if name.endswith(".tmp")]
    assert temporary == [], f"temporary links left in dist/: {temporary}"


def remote_entries_whole(s3_server, prefix: str) -> dict[str, dict]:
    """{key: manifest} of the remote's entries under `prefix` (ending in /); asserts each names its
    key and that the store holds a blob of the listed size for every file it lists."""
    from s3_fixtures import BUCKET

    client = s3_server.client()
    sizes = {o["Key"]: o["Size"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=prefix) for o in page.get("Contents", [])}
    manifests: dict[str, dict] = {}
    for name in sizes:
        if name.startswith(prefix + "manifests/"):
            key = name.rsplit("/", 1)[1].removesuffix(".json")
            manifest = json.loads(client.get_object(Bucket=BUCKET, Key=name)["Body"].read())
            assert manifest["entry"]["key"] == key, name
            for file, listed in manifest["files"].items():
                assert sizes.get(f"{prefix}blobs/{listed['digest']}") == listed["size"], \
                    f"remote entry {key[:12]}: the blob of {file} is missing or partial"
            manifests[key] = manifest
    return manifests


def claims(s3_server, prefix: str) -> list[str]:
    """Keys whose claim object is in the remote under `prefix`."""
    return [name.rsplit("/", 1)[1] for name in s3_server.objects(prefix + "claims/")]


def interruptible() -> None:
    """preexec_fn: SIGINT as at a terminal, even when the tests run where it is ignored (a
    background job of a non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
