"""`llmbuild cache push|pull [SPEC...]`: move entries between the local cache and the remote one.

Both act on the selected targets and everything they depend on, dependencies first (a target's
key needs its dependencies' manifests). An unusable remote is an error here, whatever
`remote_cache_required` says: the command exists only to reach it.
"""

from __future__ import annotations

import sys

from ..core.build import publish_to_remote, restore_from_remote
from ..core.errors import LLMBuildError
from ..core.target import Target
from ..core.workspace import NotReady, Workspace
from .s3 import S3RemoteCache
from .settings import RemoteCacheSettings


def configured_remote(ws: Workspace, *, required: bool = True) -> S3RemoteCache | None:
    """The workspace's remote cache, usable or an error (not required: None when none is set)."""
    options = ws.settings.option(RemoteCacheSettings)
    if options.remote_cache is None or options.remote_cache_mode == "off":
        if not required:
            return None
        raise LLMBuildError("no remote cache: set remote_cache = \"s3://<bucket>/<prefix>\" in "
                            "[tool.llmbuild] or LLMBUILD_REMOTE_CACHE (and remote_cache_mode other than off)")
    return S3RemoteCache.from_settings(options, required=True)


def cache_command(ws: Workspace, action: str, specs: list[str]) -> int:
    """Push or pull; one line per target; exit status 1 when some target could not be moved."""
    remote = configured_remote(ws)
    if action == "push" and not remote.writes:
        raise LLMBuildError("remote_cache_mode is \"read\": `llmbuild cache push` would write to "
                            f"{remote.url}")
    counts = {"moved": 0, "already": 0, "missing": 0}
    for target in _with_dependencies(ws, ws.select(specs)):
        outcome, line = (_push if action == "push" else _pull)(ws, remote, target)
        counts[outcome] += 1
        print(f"{line:<14} {target.address}")
    moved = "pushed to" if action == "push" else "pulled from"
    absent = "not built here" if action == "push" else f"not in {remote.url}"
    print(f"{counts['moved']} {moved} {remote.url}, {counts['already']} already there, {counts['missing']} {absent}")
    return 1 if counts["missing"] else 0


def _with_dependencies(ws: Workspace, chosen: list[Target]) -> list[Target]:
    """The chosen targets and what they need, in build order; only those another machine can
    use (not containers) and that build on this lane."""
    needed: set[Target] = set()
    pending = list(chosen)
    while pending:
        target = pending.pop()
        if target not in needed:
            needed.add(target)
            pending.extend(target.deps.values())
    return [t for t in ws.order if t in needed and t.kind.portable and t.unavailable is None]


def _push(ws: Workspace, remote: S3RemoteCache, target: Target) -> tuple[str, str]:
    try:
        key, _ = ws.key(target)
    except NotReady:
        return "missing", "not built"
    if not ws.cache.is_committed(key):
        return "missing", "not built"
    if remote.has(key):
        return "already", "already there"
    return ("moved", "pushed") if publish_to_remote(ws, remote, target, key) else ("missing", "changed")


def _pull(ws: Workspace, remote: S3RemoteCache, target: Target) -> tuple[str, str]:
    try:
        key, _ = ws.key(target)
    except NotReady:  # a dependency could not be pulled
        return "missing", "not pulled"
    if ws.is_committed(target, key):
        return "already", "already here"
    with ws.cache.lock(key, who=str(target.address)):
        if ws.is_committed(target, key):
            return "already", "already here"
        if restore_from_remote(ws, remote, target, key):
            return "moved", "pulled"
    print(f"llmbuild: {target.address}: {remote.url} has no usable entry for key {key[:12]}", file=sys.stderr)
    return "missing", "not pulled"
