"""Pants-style addresses: `<dir relative to the workspace root>:<name>`."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import LLMBuildError, odd_character, shown

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Longest target name: it is a file name under dist/ (at most 255 bytes on most filesystems).
MAX_NAME = 128


@dataclass(frozen=True, order=True)
class Address:
    directory: str  # posix, relative to the workspace root; "" for the root
    name: str

    def __str__(self) -> str:
        return f"{self.directory}:{self.name}"

    @property
    def dist_path(self) -> str:
        """Where `dist/` exposes this target's output, relative to dist."""
        return f"{self.directory}/{self.name}" if self.directory else self.name


def check_name(name: str) -> str:
    """Names are plain ASCII, so two that look alike are alike (no Cyrillic 'е', no zero-width space)."""
    if len(name) > MAX_NAME:
        raise LLMBuildError(f"invalid target name {shown(name)}: longer than {MAX_NAME} characters")
    if not _NAME.fullmatch(name):
        raise LLMBuildError(f"invalid target name {shown(name)}{odd_character(name)}; use ASCII letters, "
                            "digits, '_', '-' and '.'")
    return name


def _clean_dir(directory: str) -> str:
    directory = directory.strip("/")
    parts = [p for p in directory.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LLMBuildError(f"'..' is not allowed in an address: {shown(directory)}")
    return "/".join(parts)


def parse_address(text: str, relative_to: str | None = None) -> Address:
    """Parse `dir:name`, `//dir:name` or (in a BUILD.toml) `:name`."""
    text = text.strip()
    if text.startswith("//"):
        text = text[2:]
    elif text.startswith("/"):
        raise LLMBuildError(f"{shown(text)} is a filesystem path, not an address: write //dir:name "
                            "(from the workspace root), dir:name or :name")
    if ":" not in text:
        raise LLMBuildError(f"{shown(text)} is not an address: expected 'dir:name' or ':name'")
    directory, name = text.rsplit(":", 1)
    if not directory and relative_to is not None:
        directory = relative_to
    return Address(_clean_dir(directory), check_name(name))


TAG_PREFIX = "tag:"


@dataclass(frozen=True)
class Spec:
    """A command-line selection: `dir:name`, `dir` (its targets), `dir::` (below) or
    `tag:<name>` (the targets carrying that tag), `dir` relative to the workspace root."""

    directory: str
    name: str | None = None
    recursive: bool = False
    tag: str | None = None

    def matches(self, address: Address, tags: Iterable[str] = ()) -> bool:
        if self.tag is not None:
            return self.tag in tags
        if self.recursive:
            return (not self.directory or address.directory == self.directory
                    or address.directory.startswith(self.directory + "/"))
        if address.directory != self.directory:
            return False
        return self.name is None or self.name == address.name

    def __str__(self) -> str:
        """The spec written from the workspace root (doit's task names are these)."""
        if self.tag is not None:
            return TAG_PREFIX + self.tag
        if self.recursive:
            return f"{self.directory}/::" if self.directory else "::"
        return f"{self.directory}:{self.name}" if self.name else self.directory


def parse_spec(text: str, cwd: str = "") -> Spec:
    """A command-line spec, as Pants reads one run from `cwd` (a directory relative to the
    workspace root): paths are relative to `cwd` (`:engine`, `.`, `./sub::`, `sub:name`,
    `../x`), `//` anchors them at the root (`//models/x:engine`), and `dir:` or `:` alone
    selects a directory's targets. `tag:<name>` selects by tag."""
    text = text.strip()
    if text.startswith(TAG_PREFIX):
        if text == TAG_PREFIX:
            raise LLMBuildError(f"'{text}': name a tag, e.g. tag:fp8")
        return Spec("", tag=text[len(TAG_PREFIX):])
    if text.endswith("::"):
        return Spec(_spec_dir(text[:-2], text, cwd), recursive=True)
    if ":" in text:
        path, name = text.rsplit(":", 1)
        return Spec(_spec_dir(path, text, cwd), check_name(name) if name else None)
    return Spec(_spec_dir(text, text, cwd))


def _spec_dir(path: str, text: str, cwd: str) -> str:
    if path.startswith("//"):
        path = path[2:]
    elif path.startswith("/"):
        raise LLMBuildError(f"'{text}': write a path relative to the current directory, "
                            "or from the workspace root as //dir")
    else:
        path = f"{cwd}/{path}"
    normal = posixpath.normpath(path or ".").strip("/")
    if normal == ".." or normal.startswith("../"):
        raise LLMBuildError(f"'{text}' is outside the workspace")
    return "" if normal == "." else normal
