"""Find and parse BUILD.toml files; apply `[defaults.<kind>]` down the tree."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .addresses import Address, check_name
from .errors import LLMBuildError, odd_character, shown, unknown
from .settings import Settings, resolve_dir
from .target import Flag, Kind, Target, kind_named, marked_fields
from .tomlfile import read_toml
from .validation import describe_validation_error

BUILD_FILE = "BUILD.toml"
DEFAULTS = "defaults"
#: A directory name in an address: printable ASCII (no lookalike or invisible character) without ':'.
_DIRECTORY = re.compile(r"[ -9;-~]+")
#: Largest number a tool flag takes: TensorRT-LLM's sizes and counts are 32-bit.
INT32_MAX = 2**31 - 1


@dataclass
class BuildFile:
    rel: str  # e.g. "models/tiny-llama/BUILD.toml"
    directory: str  # e.g. "models/tiny-llama" ("" at the root)
    targets: dict[str, dict[str, dict[str, Any]]]  # kind -> name -> raw fields
    defaults: dict[str, dict[str, Any]]  # kind -> raw fields


#: Directory names never searched, at any depth, whatever `ignore` adds (as are hidden ones).
ALWAYS_IGNORED = frozenset({".git", ".venv", "node_modules", "__pycache__"})


def discover(root: Path, settings: Settings) -> list[Path]:
    """Every BUILD.toml under the build roots. Skipped: ALWAYS_IGNORED names and hidden
    directories, the `ignore` paths (relative to the root; glob patterns), and the cache and
    dist directories, by where they are (an unrelated directory of the same name is searched)."""
    root = root.resolve()
    patterns = [pattern.strip("/").removeprefix("./") for pattern in settings.ignore]
    special = {resolve_dir(root, settings.cache).resolve(), resolve_dir(root, settings.dist).resolve()}

    def skipped(path: Path) -> bool:
        rel = path.relative_to(root).as_posix() if root in path.parents else None
        return (path.name in ALWAYS_IGNORED or path.name.startswith(".") or path in special
                or (rel is not None and any(fnmatch.fnmatchcase(rel, p) for p in patterns)))

    found: list[Path] = []
    for build_root in settings.build_roots:
        top = (root / build_root).resolve()
        if not top.is_relative_to(root):
            raise LLMBuildError(f"{shown(build_root)} is outside the workspace ({top})", file="pyproject.toml",
                                target="[tool.llmbuild]", key="build_roots")
        if not top.is_dir() or (top != root and skipped(top)):
            continue
        for directory, dirnames, filenames in os.walk(top):  # symlinked directories are not entered
            # A BUILD.toml that is a directory or a symlink is found too, and refused when read.
            if BUILD_FILE in filenames or BUILD_FILE in dirnames:
                found.append(Path(directory) / BUILD_FILE)
            dirnames[:] = sorted(d for d in dirnames if d != BUILD_FILE and not skipped(Path(directory) / d))
    # Ancestors of a build root (e.g. the root's own BUILD.toml) still pass defaults down.
    for build_root in settings.build_roots:
        for parent in (root / build_root).resolve().parents:
            candidate = parent / BUILD_FILE
            if candidate.is_file() and (parent == root or root in parent.parents):
                found.append(candidate)
    return sorted(set(found))  # directories are resolved; a BUILD.toml symlink is read, not followed here


def parse(path: Path, root: Path, kinds: Mapping[str, Kind]) -> BuildFile:
    rel = path.relative_to(root.resolve()).as_posix()
    directory = path.parent.relative_to(root.resolve()).as_posix()
    directory = "" if directory == "." else directory
    for part in directory.split("/") if directory else ():
        if not _DIRECTORY.fullmatch(part):
            raise LLMBuildError(f"directory {shown(part)}{odd_character(part) or ': holds a colon'}: directories "
                                "holding BUILD.toml files take printable ASCII names without ':', so "
                                "addresses are unambiguous", file=rel)
    data = read_toml(path, rel, root)
    targets: dict[str, dict[str, dict[str, Any]]] = {}
    defaults: dict[str, dict[str, Any]] = {}
    for kind_name, table in data.items():
        if kind_name == DEFAULTS:
            if not isinstance(table, dict):
                raise LLMBuildError("[defaults] must be a table of [defaults.<kind>] tables", file=rel)
            for default_kind, values in table.items():
                kind = kind_named(default_kind, kinds, file=rel, target=f"[defaults.{default_kind}]")
                if not isinstance(values, dict):
                    raise LLMBuildError("must be a table", file=rel, target=f"[defaults.{default_kind}]")
                for key in values:
                    if key not in kind.Fields.model_fields:
                        raise LLMBuildError(
                            unknown("key", key, kind.Fields.model_fields),
                            file=rel, target=f"[defaults.{default_kind}]", key=key)
                defaults[default_kind] = values
            continue
        kind_named(kind_name, kinds, file=rel, target=f"[{kind_name}]")
        if not isinstance(table, dict):
            raise LLMBuildError(
                f"expected named tables like [{kind_name}.<name>]", file=rel, target=f"[{kind_name}]")
        for name, entry in table.items():
            if not isinstance(entry, dict):  # e.g. a target's key written without its name
                raise LLMBuildError(
                    f"expected a target table [{kind_name}.{name}] (targets are named: "
                    f"[{kind_name}.<name>]), got {entry!r}",
                    file=rel, target=f"[{kind_name}]", key=f"{kind_name}.{name}")
            try:
                check_name(name)
            except LLMBuildError as err:  # the name itself may be a newline or a megabyte
                raise LLMBuildError(err.message, file=rel, target=f"[{kind_name}]") from None
        targets[kind_name] = table
    return BuildFile(rel, directory, targets, defaults)


def _is_ancestor(directory: str, of: str) -> bool:
    return directory == "" or of == directory or of.startswith(directory + "/")


def build_targets(files: list[BuildFile], kinds: Mapping[str, Kind],
                  workspace_defaults: dict[str, Any] | None = None) -> list[Target]:
    """Targets with their fields validated (after defaults); references not yet resolved.

    `workspace_defaults` (from [tool.llmbuild]) apply below every BUILD.toml's [defaults],
    to each kind that has the field."""
    files = sorted(files, key=lambda f: (f.directory.count("/"), f.directory))
    targets: list[Target] = []
    seen: dict[Address, str] = {}
    for build_file in files:
        ancestors = [f for f in files if _is_ancestor(f.directory, build_file.directory)]
        for kind_name, table in build_file.targets.items():
            kind = kind_named(kind_name, kinds, file=build_file.rel, target=kind_name)
            inherited: dict[str, Any] = {}
            origin: dict[str, str] = {}
            for key, value in (workspace_defaults or {}).items():
                if key in kind.Fields.model_fields and value is not None:
                    inherited[key] = value
                    origin[key] = f"pyproject.toml [tool.llmbuild] {key}"
            for ancestor in ancestors:  # root first, nearest last
                for key, value in ancestor.defaults.get(kind_name, {}).items():
                    inherited[key] = value
                    origin[key] = f"{ancestor.rel} [defaults.{kind_name}]"
            for name, raw in table.items():
                address = Address(build_file.directory, name)
                label = f"[{kind_name}.{name}]"
                if address in seen:
                    raise LLMBuildError(f"duplicate address {address} (also declared as {seen[address]})",
                                        file=build_file.rel, target=label)
                seen[address] = label
                values = {**inherited, **raw}
                try:
                    fields = kind.Fields.model_validate(values)
                except ValidationError as err:
                    key, message = describe_validation_error(err, kind.Fields)
                    top = key.split(".")[0]
                    if top in inherited and top not in raw:
                        message += f" (inherited from {origin[top]})"
                    raise LLMBuildError(message, file=build_file.rel, target=label, key=key) from None
                for key, _, value in marked_fields(fields, Flag):
                    if isinstance(value, int) and not isinstance(value, bool) and value > INT32_MAX:
                        raise LLMBuildError(f"Input should be less than or equal to {INT32_MAX} (got {value}): "
                                            "the tools read it as a 32-bit integer",
                                            file=build_file.rel, target=label, key=key)
                targets.append(Target(address, kind, fields, build_file.rel))
    return targets
