"""Why a target would rebuild: its key document now against the last one committed for it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .target import Target
    from .workspace import Workspace

UP_TO_DATE, RESTORABLE, SKIPPED, REBUILD = "up to date", "restorable from cache", "skipped", "would build"
FAILS = "would fail"


@dataclass
class Explanation:
    address: str
    state: str
    reasons: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.address}: {self.state}"] + [f"  - {r}" for r in self.reasons]


def _short(value: Any) -> str:
    text = str(value)
    if text.startswith("sha256:"):
        return text[:19] + "…"
    return text if len(text) <= 80 else text[:77] + "…"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat or {prefix: {}}
    return {prefix: value}


def _flags(argv: list[str]) -> dict[str, str]:
    """{--flag: value(s)} of an argv, so a diff reads flag by flag."""
    flags: dict[str, str] = {}
    current = None
    for token in argv:
        if token.startswith("--"):
            current = token
            flags[current] = ""
        elif current is not None:
            flags[current] = f"{flags[current]} {token}".strip()
    return flags


def _changes(old: dict[str, Any], new: dict[str, Any], label: str) -> list[tuple[str, str]]:
    """(name, sentence) for every entry that differs."""
    changes = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            changes.append((name, f"{label} {name}: added ({_short(new[name])})"))
        elif name not in new:
            changes.append((name, f"{label} {name}: removed (was {_short(old[name])})"))
        elif old[name] != new[name]:
            changes.append((name, f"{label} {name}: {_short(old[name])} -> {_short(new[name])}"))
    return changes


def _source_files_changed(old: dict[str, str], new: dict[str, str]) -> str:
    names = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    shown = ", ".join(n or "(the file)" for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"content of {shown}" if names else "content"


def document_diff(ws: Workspace, target: Target, old: dict[str, Any], new: dict[str, Any],
                  old_sources: dict[str, dict[str, str]]) -> list[str]:
    reasons = []
    params = _changes(_flatten(old.get("params", {})), _flatten(new.get("params", {})), "parameter")
    reasons += [sentence for _, sentence in params]
    named = {name.split(".")[-1] for name, _ in params}
    for index, (old_step, new_step) in enumerate(zip(old.get("steps", []), new.get("steps", []))):
        if old_step.get("tool") != new_step.get("tool"):
            reasons.append(f"step {index + 1}: program {old_step.get('tool')} -> {new_step.get('tool')}")
        flag_changes = _changes(_flags(old_step.get("argv", [])), _flags(new_step.get("argv", [])), "argv flag")
        reasons += [s for name, s in flag_changes if name.lstrip("-") not in named]
    if len(old.get("steps", [])) != len(new.get("steps", [])):
        reasons.append(f"number of steps: {len(old.get('steps', []))} -> {len(new.get('steps', []))}")
    reasons += [s for _, s in _changes(old.get("toolchain", {}), new.get("toolchain", {}), "toolchain")]
    for name in sorted(set(old.get("sources", {})) | set(new.get("sources", {}))):
        if old.get("sources", {}).get(name) != new.get("sources", {}).get(name):
            files = ws.source_files(target).get(name, {})
            reasons.append(f"source {name}: {_source_files_changed(old_sources.get(name, {}), files)} changed")
    for name in sorted(set(old.get("deps", {})) | set(new.get("deps", {}))):
        if old.get("deps", {}).get(name) != new.get("deps", {}).get(name):
            dep = target.deps.get(name)
            reasons.append(f"dependency {name}: output of {dep.address if dep else name} changed")
    return reasons or ["key document changed (no field-level difference found)"]


def explain(ws: Workspace, target: Target) -> Explanation:
    from .workspace import NotReady

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
        if last is not None:
            document = ws.key_document(target, partial=True)
            reasons += [r for r in document_diff(ws, target, last["document"], document,
                                                 last.get("source_files", {}))
                        if not r.startswith("dependency ") and not r.startswith("key document")]
        return Explanation(address, REBUILD, reasons)
    if ws.is_up_to_date(target):
        return Explanation(address, UP_TO_DATE)
    if ws.is_committed(target, key):
        return Explanation(address, RESTORABLE, [f"key {key[:12]} is in the cache; dist/ will link it"])
    if last is None:
        return Explanation(address, REBUILD, ["never built here (no committed output linked in dist/)"])
    return Explanation(address, REBUILD,
                       document_diff(ws, target, last["document"], document, last.get("source_files", {})))


def _built(ws: Workspace, target: Target) -> bool:
    from .workspace import NotReady

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
