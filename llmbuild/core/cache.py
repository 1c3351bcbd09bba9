"""The action cache: key -> immutable output directory + manifest.

    <cache>/entries/ab/abcd.../{out/, manifest.json, log.txt}   committed (manifest written last)
    <cache>/locks/ab/abcd....lock                                 one builder per key (flock: dies with its process)
    <cache>/staging/abcd....<pid>/                               a build in progress
    <cache>/failed/abcd....<time>.<pid>/                         a failed attempt, with its log
    <cache>/quarantine/abcd....<time>.<pid>/                     an entry found corrupt, with why.txt
    <cache>/workspaces/<digest>                                  a dist directory linking into this cache

An entry is committed by one atomic rename of a complete staging directory, so
a killed build never leaves something that counts as done. Its manifest records each output
file's digest, size and mtime and each directory's mtime at commit (`files`, `dirs`): any later
write into the entry changes one of them, which one `stat` per file finds before the entry is
linked (`problem`). The entry directory's own mtime is its last use (stamped when linked).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import blake3
from filelock import FileLock, Timeout

from .digests import hash_file
from .faults import reach

MANIFEST = "manifest.json"
OUT = "out"
LOG = "log.txt"
WHY = "why.txt"
#: Failed attempts kept per key (older ones go when a new one is kept).
FAILED_PER_KEY = 3


@dataclass(frozen=True)
class Staging:
    key: str
    path: Path

    @property
    def out(self) -> Path:
        return self.path / OUT

    @property
    def log(self) -> Path:
        return self.path / LOG


class Cache:
    def __init__(self, root: Path):
        self.root = root
        self._registered: set[Path] = set()

    def entry(self, key: str) -> Path:
        return self.root / "entries" / key[:2] / key

    def out(self, key: str) -> Path:
        return self.entry(key) / OUT

    def is_committed(self, key: str) -> bool:
        return (self.entry(key) / MANIFEST).is_file()

    def manifest(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.entry(key) / MANIFEST).read_text())
        except FileNotFoundError:
            return None

    def _lock_file(self, key: str) -> FileLock:
        path = self.root / "locks" / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(path))

    @contextmanager
    def try_lock(self, key: str) -> Iterator[bool]:
        """The key's lock if no one holds it (True), else False at once: for maintenance, which
        never waits for a build or restore and never touches what one is using."""
        lock = self._lock_file(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    @contextmanager
    def lock(self, key: str, *, who: str = "") -> Iterator[None]:
        """Hold the key's lock for as long as a build takes; say so while waiting."""
        lock = self._lock_file(key)
        try:
            lock.acquire(timeout=0.5)
        except Timeout:
            print(f"llmbuild: {who or key[:12]}: another process is building the same key; waiting",
                  file=sys.stderr, flush=True)
            lock.acquire(timeout=-1)
        try:
            yield
        finally:
            lock.release()

    def stage(self, key: str) -> Staging:
        """A fresh staging directory. Call with the key's lock held: leftovers of killed builds go."""
        staging_root = self.root / "staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        for stale in staging_root.glob(f"{key}.*"):
            remove_tree(stale)
        path = staging_root / f"{key}.{os.getpid()}"
        (path / OUT).mkdir(parents=True)
        return Staging(key, path)

    def commit(self, staging: Staging, manifest: dict[str, Any]) -> Path:
        for directory, _, files in os.walk(staging.out):
            for name in files:
                full = Path(directory) / name
                mode = os.stat(full, follow_symlinks=False).st_mode
                if not stat.S_ISLNK(mode):
                    os.chmod(full, stat.S_IMODE(mode) & ~0o222)  # outputs are immutable
        if isinstance(manifest.get("outputs"), dict):
            manifest = {**manifest, **_records(staging.out, manifest["outputs"])}
        _write_json(staging.path / MANIFEST, manifest)
        reach("commit-manifest")
        target = self.entry(staging.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # committed meanwhile by a builder that did not lock (should not happen)
            remove_tree(staging.path)
        else:
            os.rename(staging.path, target)
        return target

    def drop(self, staging: Staging) -> None:
        """Remove a staging directory that will not be committed."""
        remove_tree(staging.path)

    def evict(self, key: str) -> None:
        """Drop a committed entry (call with the key's lock held)."""
        entry = self.entry(key)
        if entry.exists():
            doomed = entry.with_name(f".{key}.evicted.{os.getpid()}")
            os.rename(entry, doomed)
            remove_tree(doomed)

    def keep_failed(self, staging: Staging) -> Path:
        """Keep a failed attempt (its log and partial output); only the key's newest few stay."""
        failed = self._set_aside("failed", staging.key, staging.path)
        for old in sorted(failed.parent.glob(f"{staging.key}.*"))[:-FAILED_PER_KEY]:
            remove_tree(old)
        return failed

    def _set_aside(self, where: str, key: str, path: Path) -> Path:
        moved = self.root / where / f"{key}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        moved.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, moved)
        return moved

    def quarantine(self, key: str, why: str) -> Path:
        """Move a corrupt entry out of the entries (call with the key's lock held): never linked
        again, kept with why for a look, removed by `llmbuild cache gc`."""
        moved = self._set_aside("quarantine", key, self.entry(key))
        (moved / WHY).write_text(why + "\n")
        return moved

    def problem(self, key: str, *, rehash: bool = False) -> str | None:
        """What differs in a committed entry from what its manifest recorded at commit, in a few
        words naming the file (None: intact; an entry without records, committed by an earlier
        llmbuild, is not checked here). One `stat` per file and directory; `rehash`: also every
        file's content, read afresh (never from the digest table: a write that keeps size and
        mtime keeps the table's row too)."""
        manifest = self.manifest(key)
        if manifest is None:
            return "its manifest is missing"
        problem = _changed(self.out(key), manifest) if "files" in manifest else None
        if problem is None and rehash and isinstance(manifest.get("outputs"), dict):
            return _rehashed(self.out(key), manifest["outputs"])
        return problem

    def add_records(self, key: str) -> bool:
        """Give an entry committed by an earlier llmbuild (a manifest without `files`) the records
        `problem` checks; call once its content was verified, with the key's lock held."""
        manifest = self.manifest(key)
        if manifest is None or "files" in manifest or not isinstance(manifest.get("outputs"), dict):
            return False
        _write_json(self.entry(key) / MANIFEST, {**manifest, **_records(self.out(key), manifest["outputs"])})
        return True

    def stamp_used(self, key: str) -> None:
        """Record that the entry was just used (linked): `gc` evicts least recently used first, and
        re-reads the stamp under the key's lock (an exact clock, unlike the coarse one of the
        file system's own times: a stamp always differs from the mtime it replaces)."""
        now = time.time_ns()
        try:
            os.utime(self.entry(key), ns=(now, now))
        except FileNotFoundError:
            pass

    def last_used(self, key: str) -> float:
        return os.stat(self.entry(key)).st_mtime

    def register_dist(self, dist: Path) -> None:
        """Remember a dist directory that links into this cache: `gc` keeps what it links."""
        if dist in self._registered:
            return
        name = blake3.blake3(str(dist).encode()).hexdigest()[:32]
        path = self.root / "workspaces" / name
        if not path.exists():
            write_json_atomic(path, {"dist": str(dist)})
        self._registered.add(dist)

    def dists(self) -> dict[Path, Path]:
        """{registration: dist directory} of every dist registered with this cache."""
        found = {}
        for path in sorted((self.root / "workspaces").glob("*")):
            try:
                found[path] = Path(json.loads(path.read_text())["dist"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def committed_keys(self) -> list[str]:
        """Every committed key."""
        return sorted(p.parent.name for p in (self.root / "entries").glob(f"??/*/{MANIFEST}"))


def _records(out: Path, outputs: dict[str, str]) -> dict[str, Any]:
    """`files` {name: digest, size, mtime_ns} and `dirs` {name: mtime_ns} of a complete output
    (what `problem` compares with later)."""
    files, dirs = {}, {}
    for name, digest in outputs.items():
        st = os.stat(out / name)
        files[name] = {"digest": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    for directory, dirnames, _ in os.walk(out, followlinks=True):
        dirs[Path(directory).relative_to(out).as_posix()] = os.stat(directory).st_mtime_ns
    return {"files": files, "dirs": dirs}


def _changed(out: Path, manifest: dict[str, Any]) -> str | None:
    files: dict[str, dict[str, Any]] = manifest["files"]
    dirs: dict[str, int] = manifest.get("dirs", {})
    for name, record in sorted(files.items()):
        try:
            st = os.stat(out / name)
        except OSError:
            return f"out/{name} is missing"
        if st.st_size != record["size"]:
            return f"out/{name} is {st.st_size} bytes, {record['size']} when committed"
        if st.st_mtime_ns != record["mtime_ns"]:
            return f"out/{name} was modified {_when(st.st_mtime_ns)} after its commit ({_when(record['mtime_ns'])})"
    for name, mtime in sorted(dirs.items()):
        try:
            changed = os.stat(out / name).st_mtime_ns != mtime
        except OSError:
            return f"out/{name} is missing"
        if changed:
            listed = {f for f in files if (Path(f).parent.as_posix() == name)} | \
                     {d for d in dirs if d != name and Path(d).parent.as_posix() == name}
            here = {(Path(name) / entry).as_posix() if name != "." else entry for entry in os.listdir(out / name)}
            extra = sorted(here - listed)
            return f"out/{extra[0]} is not in its manifest" if extra else \
                f"out/{name} was modified {_when(os.stat(out / name).st_mtime_ns)} after its commit"
    return None


def _rehashed(out: Path, outputs: dict[str, str]) -> str | None:
    """Every file under `out` read and hashed afresh, compared with the manifest's listing."""
    found = {}
    for directory, dirnames, filenames in os.walk(out, followlinks=True):
        dirnames.sort()
        for name in filenames:
            found[(Path(directory) / name).relative_to(out).as_posix()] = Path(directory) / name
    for name in sorted(set(found) | set(outputs)):
        if name not in found:
            return f"out/{name} is missing"
        if name not in outputs:
            return f"out/{name} is not in its manifest"
        if hash_file(found[name]) != outputs[name]:
            return f"out/{name} does not match its digest"
    return None


def _when(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns / 1e9))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes writing one run.json at once
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def remove_tree(path: Path) -> None:
    def make_writable(func, failed_path, _exc):
        os.chmod(os.path.dirname(failed_path), 0o755)
        os.chmod(failed_path, 0o755)
        func(failed_path)
    shutil.rmtree(path, onexc=make_writable) if sys.version_info >= (3, 12) else \
        shutil.rmtree(path, onerror=make_writable)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, data)
