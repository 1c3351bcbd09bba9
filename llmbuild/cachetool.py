"""`llmbuild cache size|ls|verify|gc`: look after a local cache (and the remote one) that many
workspaces and runs share for months.

Safe beside a running `doit` on the same cache: nothing here waits for a key's lock, and nothing
is removed without it (taken without waiting: a key being built or restored is skipped). `gc`
keeps every entry a registered dist directory links to (each workspace that linked from this
cache registered its dist), and under the key's lock re-checks the entry's last-use stamp, which
linking refreshes under that same lock: an entry linked after gc looked is never evicted.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .core.cache import Cache, remove_tree
from .core.errors import LLMBuildError
from .core.faults import reach
from .core.protocols import RemoteCache
from .core.units import human_size as human
from .core.workspace import NotReady, Workspace

#: Failed attempts and quarantined entries older than this go at every gc (unless --older-than says less).
SET_ASIDE_DAYS = 7
DAY = 86400
_SIZE = re.compile(r"(?i)\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb|t|tb|kib|mib|gib|tib)?\s*")
_UNITS = {"b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """'50GB', '500MB', '1.5G', '2GiB', '0' -> bytes (GB = 10^9, GiB = 2^30)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise LLMBuildError(f"--max-size {text!r}: expected a size such as 50GB, 500MB or 0")
    return int(float(match[1]) * _UNITS[(match[2] or "b").lower()])


def parse_age(text: str) -> float:
    """'14d', '12h', '30m', '2w' -> seconds."""
    match = _AGE.fullmatch(text)
    if match is None:
        raise LLMBuildError(f"--older-than {text!r}: expected an age such as 14d, 12h or 30m")
    return float(match[1]) * _SECONDS[match[2]]


@dataclass
class Entry:
    """A committed entry as the tools see it."""

    key: str
    address: str
    kind: str
    size: int
    used: float  # last use (the entry directory's mtime)
    used_ns: int

    @property
    def directory(self) -> str:
        return self.address.rsplit(":", 1)[0] if ":" in self.address else "?"


def scan(cache: Cache) -> list[Entry]:
    """Every committed entry, with its size (files counted once per inode) and last use."""
    seen: set[tuple[int, int]] = set()
    entries = []
    for key in cache.committed_keys():
        manifest = cache.manifest(key)
        try:
            st = os.stat(cache.entry(key))
        except FileNotFoundError:  # evicted meanwhile
            continue
        if manifest is None:
            continue
        built_by = manifest.get("built_by") or {}
        entries.append(Entry(key, str(built_by.get("address", "?")),
                             str((manifest.get("document") or {}).get("kind", "?")),
                             _tree_size(cache.entry(key), seen), st.st_mtime, st.st_mtime_ns))
    return entries


def _tree_size(path: Path, seen: set[tuple[int, int]]) -> int:
    """Bytes of the files under `path` not counted yet (hard links between entries count once)."""
    total = 0
    for directory, _, filenames in os.walk(path):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def linked_keys(cache: Cache, dists: Iterable[Path]) -> dict[str, list[Path]]:
    """{key: the dist links naming its entry} over the given dist directories."""
    entries = cache.root / "entries"
    found: dict[str, list[Path]] = defaultdict(list)
    for dist in dists:
        for directory, dirnames, filenames in os.walk(dist):
            for name in dirnames + filenames:
                link = Path(directory) / name
                if not link.is_symlink():
                    continue
                pointed = Path(os.readlink(link))
                if pointed.is_relative_to(entries) and len(pointed.relative_to(entries).parts) >= 2:
                    found[pointed.relative_to(entries).parts[1]].append(link)
    return found


def _set_aside(cache: Cache) -> list[tuple[str, Path, float, int]]:
    """(where, path, mtime, size) of every failed attempt and quarantined entry."""
    found = []
    for where in ("failed", "quarantine"):
        for path in sorted((cache.root / where).glob("*")):
            try:
                found.append((where, path, path.stat().st_mtime, _tree_size(path, set())))
            except FileNotFoundError:
                continue
    return found


# -- size and ls ------------------------------------------------------------------------------


def cache_size(ws: Workspace, remote: RemoteCache | None) -> int:
    entries = scan(ws.cache)
    aside = _set_aside(ws.cache)
    staging = _tree_size(ws.cache.root / "staging", set())
    total = sum(e.size for e in entries) + sum(a[3] for a in aside) + staging
    print(f"local cache {ws.cache.root}: {human(total)}")
    print(f"  entries     {human(sum(e.size for e in entries)):>10}  {len(entries)} entries")
    for where in ("failed", "quarantine"):
        mine = [a for a in aside if a[0] == where]
        print(f"  {where:<11} {human(sum(a[3] for a in mine)):>10}  {len(mine)} "
              f"{'attempts' if where == 'failed' else 'entries'}")
    print(f"  staging     {human(staging):>10}")
    _breakdown([(e.kind, e.directory, e.size) for e in entries])
    if remote is not None:
        held = remote.entries()
        rows = [(str((m.get("document") or {}).get("kind", "?")),
                 str((m.get("built_by") or {}).get("address", "?")).rsplit(":", 1)[0], m["size"])
                for m in held.values()]
        print(f"remote cache {remote.url}: {human(remote.stored_bytes())} stored "
              f"({len(held)} entries; a content several entries share is stored once)")
        _breakdown(rows)
    return 0


def _breakdown(rows: list[tuple[str, str, int]]) -> None:
    for title, index in (("by kind", 0), ("by model directory", 1)):
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in rows:
            sums[row[index]][0] += row[2]
            sums[row[index]][1] += 1
        print(f"  {title}:")
        for name, (size, count) in sorted(sums.items(), key=lambda item: -item[1][0]):
            print(f"    {name:<40} {human(size):>10}  {count} entries")


def cache_ls(ws: Workspace, specs: list[str]) -> int:
    """One line per entry: key, kind, address, size, last use, and whether dist links it."""
    linked = linked_keys(ws.cache, {ws.dist, *ws.cache.dists().values()})
    wanted = _keys_of(ws, specs) if specs else None
    entries = [e for e in scan(ws.cache) if wanted is None or e.key in wanted]
    for entry in sorted(entries, key=lambda e: (e.address, -e.used)):
        mark = "linked" if entry.key in linked else ""
        print(f"{entry.key[:12]}  {entry.kind:<11} {entry.address:<44} {human(entry.size):>10}  "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(entry.used))}  {mark}".rstrip())
    print(f"{len(entries)} entries, {human(sum(e.size for e in entries))}")
    return 0


def _keys_of(ws: Workspace, specs: list[str]) -> dict[str, str]:
    """{key: address} of the selected targets whose key can be computed now."""
    found = {}
    for target in ws.select(specs):
        try:
            found[ws.key(target)[0]] = str(target.address)
        except (NotReady, LLMBuildError, OSError):
            continue
    return found


# -- verify -----------------------------------------------------------------------------------


def cache_verify(ws: Workspace, specs: list[str], remote: RemoteCache | None) -> int:
    """Re-hash entries against their manifests; quarantine (or, remotely, discard) the corrupt
    ones, one line each; exit status 1 if any."""
    wanted = _keys_of(ws, specs) if specs else None
    if remote is not None:
        held = remote.entries()
        keys = sorted(held) if wanted is None else sorted(k for k in wanted if k in held)
        corrupt = 0
        for key in keys:
            problem = remote.verify(key)
            if problem is not None:
                corrupt += 1
                remote.discard(key)
                address = (held[key].get("built_by") or {}).get("address", "?")
                print(f"corrupt  {key[:12]}  {address}  {problem}: removed from {remote.url}")
        print(f"{len(keys)} remote entries verified, {corrupt} corrupt")
        return 1 if corrupt else 0
    keys = ws.cache.committed_keys() if wanted is None else sorted(k for k in wanted if ws.cache.is_committed(k))
    corrupt = recorded = 0
    for key in keys:
        try:
            identity = os.stat(ws.cache.entry(key)).st_ino
        except FileNotFoundError:
            continue
        problem = ws.cache.problem(key, rehash=True)
        if problem is None:  # intact; an entry of an earlier llmbuild gets what restores check
            with ws.cache.try_lock(key) as held:
                recorded += held and _inode(ws.cache.entry(key)) == identity and ws.cache.add_records(key)
            continue
        corrupt += 1
        manifest = ws.cache.manifest(key) or {}
        address = (wanted or {}).get(key) or (manifest.get("built_by") or {}).get("address", "?")
        with ws.cache.try_lock(key) as held:  # the same entry still (not evicted and rebuilt meanwhile)
            same = held and _inode(ws.cache.entry(key)) == identity
            where = ws.cache.quarantine(key, problem) if same else None
        what = f"moved to {where}" if where else "in use: left in place"
        print(f"corrupt  {key[:12]}  {address}  {problem}: {what}")
    print(f"{len(keys)} entries verified, {corrupt} corrupt"
          + (f"; {recorded} committed by an earlier llmbuild now carry size and mtime records" if recorded else ""))
    return 1 if corrupt else 0


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


# -- gc ---------------------------------------------------------------------------------------


def cache_gc(ws: Workspace, *, max_size: int | None, older_than: float | None, keep: int,
             keep_revs: list[str], dry_run: bool) -> int:
    """Remove stale staging, old failed attempts and quarantined entries, then evict entries not
    linked from any dist (nor used by --keep-revs, nor among each target's --keep newest): those
    unused for --older-than, then least recently used first until the cache fits --max-size."""
    cache, now = ws.cache, time.time()
    verb = "would remove" if dry_run else "removed"
    removed: list[tuple[str, int]] = []  # (what, bytes)

    def remove(path: Path, what: str, size: int) -> None:
        print(f"{verb} {what}")
        if not dry_run:
            remove_tree(path)
        removed.append((what, size))

    for path in sorted((cache.root / "staging").glob("*")) + sorted((cache.root / "entries").glob("??/.*.evicted.*")):
        key = path.name.lstrip(".").split(".", 1)[0]
        with cache.try_lock(key) as free:  # a live build holds its key's lock; a dead one does not
            if free and path.exists():
                remove(path, f"staging {path.name} (its build is gone)", _tree_size(path, set()))
    aside = _set_aside(cache)
    limit = now - (older_than if older_than is not None else SET_ASIDE_DAYS * DAY)
    newest: dict[tuple[str, str], Path] = {}
    for where, path, mtime, _ in aside:
        newest[(where, path.name.split(".", 1)[0])] = path  # sorted: the last is the newest
    kept_aside = []
    for item in aside:
        where, path, mtime, size = item
        if mtime < limit or newest[(where, path.name.split(".", 1)[0])] != path:
            remove(path, f"{where} {path.name}", size)
        else:
            kept_aside.append(item)

    dists = cache.dists()
    for registration, dist in dists.items():  # a workspace deleted a day ago or more: forgotten
        with contextlib.suppress(FileNotFoundError):  # another gc was first
            if not dist.is_dir() and registration.stat().st_mtime < now - DAY and not dry_run:
                registration.unlink()
    entries = scan(cache)
    linked = linked_keys(cache, {ws.dist, *dists.values()})
    protected = set(linked)
    for rev in keep_revs:
        protected |= keys_at_revision(ws, rev)
    by_address: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_address[entry.address].append(entry)
    for group in by_address.values():
        protected |= {entry.key for entry in sorted(group, key=lambda e: -e.used)[:keep]}

    total = sum(e.size for e in entries) + sum(a[3] for a in kept_aside) + _tree_size(cache.root / "staging", set())
    if max_size is not None:
        for where, path, mtime, size in sorted(kept_aside, key=lambda a: a[2]):  # never restored: first
            if total <= max_size:
                break
            remove(path, f"{where} {path.name}", size)
            total -= size
    skipped = 0
    for entry in sorted(entries, key=lambda e: e.used):  # least recently used first
        old = older_than is not None and entry.used < now - older_than
        big = max_size is not None and total > max_size
        if entry.key in protected or not (old or big):
            continue
        with cache.try_lock(entry.key) as free:
            # linking stamps the entry under this lock: a changed stamp means it was just used
            if not free or _used_ns(cache, entry.key) != entry.used_ns:
                skipped += 1
                continue
            what = f"entry {entry.key[:12]} {entry.address} ({human(entry.size)}, last used " \
                   f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(entry.used))})"
            print(f"{verb} {what}")
            if not dry_run:
                reach("cache-gc")
                cache.evict(entry.key)
            removed.append((what, entry.size))
            total -= entry.size
    freed = sum(size for _, size in removed)
    print(f"{'would free' if dry_run else 'freed'} {human(freed)} ({len(removed)} removed); "
          f"kept {len([e for e in entries if e.key in protected])} protected entries"
          f"{f', skipped {skipped} in use' if skipped else ''}; cache {'would be' if dry_run else 'is'} {human(total)}")
    return 0


def _used_ns(cache: Cache, key: str) -> int | None:
    try:
        return os.stat(cache.entry(key)).st_mtime_ns
    except FileNotFoundError:
        return None


def keys_at_revision(ws: Workspace, rev: str) -> set[str]:
    """The keys the workspace's targets had at git revision `rev`, computed against this cache
    (a target whose dependency has no entry here has no key: nothing of it to keep)."""
    from .introspect.changed import checked_out

    with checked_out(ws, rev) as sides:
        environ = {**os.environ, "LLMBUILD_CACHE_DIR": str(ws.cache.root),
                   "LLMBUILD_DIST_DIR": str(sides.scratch / "dist")}
        try:
            rev_ws = Workspace.load(sides.rev_top / sides.prefix, environ, plugins=ws.plugins)
        except LLMBuildError as err:
            raise LLMBuildError(f"--keep-revs {rev}: {str(err).replace(str(sides.rev_top), str(sides.top))}") from None
        keys = set()
        for target in rev_ws.order:
            if target.unavailable is None:
                try:
                    keys.add(rev_ws.key(target)[0])
                except (NotReady, LLMBuildError, OSError):
                    continue
    print(f"{rev}: its targets would use {len(keys)} keys; their entries are kept")
    return keys

