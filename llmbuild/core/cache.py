"""The action cache: key -> immutable output directory + manifest.

    <cache>/entries/ab/abcd.../{out/, manifest.json, log.txt}   committed (manifest written last)
    <cache>/locks/ab/abcd....lock                                 one builder per key (flock: dies with its process)
    <cache>/staging/abcd....<pid>/                               a build in progress
    <cache>/failed/abcd....<time>/                               a failed attempt, with its log

An entry is committed by one atomic rename of a complete staging directory, so
a killed build never leaves something that counts as done.
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

from filelock import FileLock, Timeout

from .faults import reach

MANIFEST = "manifest.json"
OUT = "out"
LOG = "log.txt"


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

    @contextmanager
    def lock(self, key: str, *, who: str = "") -> Iterator[None]:
        """Hold the key's lock for as long as a build takes; say so while waiting."""
        path = self.root / "locks" / key[:2] / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
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
            _remove_tree(stale)
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
        _write_json(staging.path / MANIFEST, manifest)
        reach("commit-manifest")
        target = self.entry(staging.key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # committed meanwhile by a builder that did not lock (should not happen)
            _remove_tree(staging.path)
        else:
            os.rename(staging.path, target)
        return target

    def drop(self, staging: Staging) -> None:
        """Remove a staging directory that will not be committed."""
        _remove_tree(staging.path)

    def evict(self, key: str) -> None:
        """Drop a committed entry (call with the key's lock held)."""
        entry = self.entry(key)
        if entry.exists():
            doomed = entry.with_name(f".{key}.evicted.{os.getpid()}")
            os.rename(entry, doomed)
            _remove_tree(doomed)

    def keep_failed(self, staging: Staging) -> Path:
        failed = self.root / "failed" / f"{staging.key}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging.path, failed)
        return failed


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # processes writing one run.json at once
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _remove_tree(path: Path) -> None:
    def make_writable(func, failed_path, _exc):
        os.chmod(os.path.dirname(failed_path), 0o755)
        os.chmod(failed_path, 0o755)
        func(failed_path)
    shutil.rmtree(path, onexc=make_writable) if sys.version_info >= (3, 12) else \
        shutil.rmtree(path, onerror=make_writable)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, data)
