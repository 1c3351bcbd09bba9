"""Why a target would rebuild: its key document now against the last one committed for it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.keys import Change, KeyDocument
from ..core.target import Target
from ..core.workspace import NotReady, Workspace

UP_TO_DATE, RESTORABLE, SKIPPED, REBUILD = "up to date", "restorable from cache", "skipped", "would build"
FAILS = "would fail"


@dataclass
class Explanation:
    address: str
    state: str
    reasons: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.address}: {self.state}"] + [f"  - {r}" for r in self.reasons]


def explain(ws: Workspace, target: Target) -> Explanation:
    address = str(target.address)
    if target.unavailable:
        return Explanation(address, SKIPPED, [target.unavailable])
    if target.failure:
        return Explanation(address, FAILS, [target.failure])
    last = _last_committed(ws, target)
    try:
        key, document = ws.key(target)
    except NotReady:
        reasons = []
        for dep in target.deps.values():
            if not _built(ws, dep):
                why = explain(ws, dep)
                reasons += [f"needs {dep.address} first ({why.state}):"] + [f"  {r}" for r in why.reasons]
        if last is not None:  # a dependency's output is not known yet: compare the rest
            reasons += [c.describe() for c in _changes(ws, target, last, ws.key_document(target, partial=True))
                        if c.section != "dependency"]
        return Explanation(address, REBUILD, reasons)
    if ws.is_up_to_date(target):
        return Explanation(address, UP_TO_DATE)
    if ws.is_committed(target, key):
        problem = ws.cache.problem(key)
        if problem is not None:
            return Explanation(address, REBUILD, [f"the output cached for key {key[:12]} is corrupt ({problem}): "
                                                  "it will be quarantined"])
        return Explanation(address, RESTORABLE, [f"key {key[:12]} is in the cache; dist/ will link it"])
    if last is None:
        return Explanation(address, REBUILD, ["never built here (no committed output linked in dist/)"])
    changes = _changes(ws, target, last, document)
    return Explanation(address, REBUILD, [c.describe() for c in changes] or [
        f"the output cached for key {key[:12]} is no longer usable"])


def _changes(ws: Workspace, target: Target, last: dict[str, Any], document: KeyDocument) -> list[Change]:
    return KeyDocument.from_dict(last["document"]).diff(
        document, old_files=last.get("source_files", {}), new_files=ws.source_files(target),
        dep_addresses={name: str(dep.address) for name, dep in target.deps.items()})


def _built(ws: Workspace, target: Target) -> bool:
    try:
        return ws.is_committed(target, ws.key(target)[0])
    except NotReady:
        return False


def _last_committed(ws: Workspace, target: Target) -> dict[str, Any] | None:
    """The manifest dist/ links for this target, if any."""
    try:
        out = Path(os.readlink(ws.dist_link(target)))
    except OSError:
        return None
    return ws.cache.manifest(out.parent.name)
