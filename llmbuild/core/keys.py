"""Action keys: a hash over a canonical document of everything a build consumes.

The same document says why a target rebuilds: `KeyDocument.diff` lists what differs,
typed by section, for `llmbuild explain`, `llmbuild changed` and `doit info` alike.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY_SCHEMA = 1

#: What a Change can be about, in the order `diff` reports them.
SECTIONS = ("schema", "kind", "param", "step", "flag", "toolchain", "source", "dependency")


class _Absent(enum.Enum):
    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


#: The old or new value of an entry one side does not have.
ABSENT = _Absent.ABSENT


def canonical_json(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _short(value: Any) -> str:
    text = str(value)
    if text.startswith(("sha256:", "blake3:")) and len(text) > 19:
        return text[:19] + "…"
    return text if len(text) <= 80 else text[:77] + "…"


@dataclass(frozen=True)
class Change:
    """One difference between two key documents (old -> new)."""

    section: str  # one of SECTIONS
    name: str  # dotted parameter, --flag, toolchain entry, source or dependency field;
    #            steps: "N.program", "N.argv" (positionals or order), "count"
    old: Any = ABSENT
    new: Any = ABSENT
    files: tuple[str, ...] = ()  # source: the files whose content differs, when both listings are known
    address: str = ""  # dependency: the target the field names, when known

    def describe(self) -> str:
        """The human sentence `llmbuild explain` prints."""
        old, new = _short(self.old), _short(self.new)
        if self.section == "schema":
            return f"key schema: {old} -> {new}"
        if self.section == "kind":
            return f"kind: {old} -> {new}"
        if self.section == "step":
            if self.name == "count":
                return f"number of steps: {old} -> {new}"
            index, part = self.name.split(".", 1)
            return f"step {index}: {part} {old} -> {new}"
        label = {"param": "parameter", "flag": "argv flag", "toolchain": "toolchain",
                 "source": "source", "dependency": "dependency"}[self.section]
        digests = self.section in ("source", "dependency")  # values not worth showing
        if self.old is ABSENT:
            return f"{label} {self.name}: added" + ("" if digests else f" ({new})")
        if self.new is ABSENT:
            return f"{label} {self.name}: removed" + ("" if digests else f" (was {old})")
        if self.section == "source":
            shown = ", ".join(n or "(the file)" for n in self.files[:5])
            more = f" and {len(self.files) - 5} more" if len(self.files) > 5 else ""
            return f"source {self.name}: content of {shown}{more} changed" if self.files \
                else f"source {self.name}: content changed"
        if self.section == "dependency" and self.address:
            return f"dependency {self.name}: output of {self.address} changed"
        return f"{label} {self.name}: {old} -> {new}"


@dataclass(frozen=True)
class KeyDocument:
    """Never holds a path, a target name or a secret: only placeholders and digests.

    `llmbuild changed` builds one whose `deps` name the dependencies' addresses instead of
    their output digests (a static document: nothing needs to be built to compare it)."""

    kind: str
    params: dict[str, Any]
    steps: list[dict[str, Any]]
    toolchain: dict[str, Any]
    sources: dict[str, str]
    deps: dict[str, str | None]
    schema: int = KEY_SCHEMA

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> KeyDocument:
        """From a manifest's "document" (missing sections read as empty)."""
        return cls(kind=document.get("kind", ""), params=document.get("params", {}),
                   steps=document.get("steps", []), toolchain=document.get("toolchain", {}),
                   sources=document.get("sources", {}), deps=document.get("deps", {}),
                   schema=document.get("schema", 0))

    def as_dict(self) -> dict[str, Any]:
        """The plain form manifests store."""
        return {"schema": self.schema, "kind": self.kind, "params": self.params, "steps": self.steps,
                "toolchain": self.toolchain, "sources": self.sources, "deps": self.deps}

    def canonical_json(self) -> str:
        return canonical_json(self.as_dict())

    @property
    def key(self) -> str:
        """The action key: sha256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def diff(self, other: KeyDocument, *, old_files: Mapping[str, Mapping[str, str]] | None = None,
             new_files: Mapping[str, Mapping[str, str]] | None = None,
             dep_addresses: Mapping[str, str] | None = None) -> list[Change]:
        """What changed from this document (old) to `other` (new); empty iff they are equal.

        old_files/new_files: {source field: {file: digest}} of each side, to name the changed
        files; dep_addresses: {dependency field: address}, to name the dependency."""
        changes = [Change("schema", "schema", self.schema, other.schema)] if self.schema != other.schema else []
        if self.kind != other.kind:  # another kind's parameters and steps are not comparable
            return changes + [Change("kind", "kind", self.kind, other.kind)]
        params = _entries("param", _flatten(self.params), _flatten(other.params))
        changes += params
        changes += _step_changes(self.steps, other.steps, {c.name.split(".")[-1] for c in params})
        changes += _entries("toolchain", self.toolchain, other.toolchain)
        old_files, new_files = old_files or {}, new_files or {}
        for change in _entries("source", self.sources, other.sources):
            before, after = old_files.get(change.name), new_files.get(change.name)
            files = () if before is None or after is None else tuple(
                sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n)))
            changes.append(Change("source", change.name, change.old, change.new, files=files))
        addresses = dep_addresses or {}
        changes += [Change("dependency", c.name, c.old, c.new, address=addresses.get(c.name, ""))
                    for c in _entries("dependency", self.deps, other.deps)]
        return changes


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted name: leaf} of nested tables (lists are leaves)."""
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


def _entries(section: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    return [Change(section, name, old.get(name, ABSENT), new.get(name, ABSENT))
            for name in sorted(set(old) | set(new), key=str)
            if name not in old or name not in new or old[name] != new[name]]


def _step_changes(old: list[dict[str, Any]], new: list[dict[str, Any]], params: set[str]) -> list[Change]:
    """Programs and argv flags step by step; a flag named like a changed parameter is that change."""
    changes = []
    for index, (before, after) in enumerate(zip(old, new), start=1):
        if before.get("tool") != after.get("tool"):
            changes.append(Change("step", f"{index}.program", before.get("tool"), after.get("tool")))
        argv_old, argv_new = before.get("argv", []), after.get("argv", [])
        flags = _entries("flag", _flags(argv_old), _flags(argv_new))
        changes += [c for c in flags if c.name.lstrip("-") not in params]
        if not flags and argv_old != argv_new:  # positional arguments or the order
            changes.append(Change("step", f"{index}.argv", " ".join(argv_old), " ".join(argv_new)))
    if len(old) != len(new):
        changes.append(Change("step", "count", len(old), len(new)))
    return changes
