"""Pants-style addresses: `<dir relative to the workspace root>:<name>`."""

from __future__ import annotations

import re
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


@dataclass(frozen=True)
class Spec:
    """A command-line selection: `dir:name`, `dir` (its targets) or `dir::` (below)."""

    directory: str
    name: str | None = None
    recursive: bool = False

    def matches(self, address: Address) -> bool:
        if self.recursive:
            return (not self.directory or address.directory == self.directory
                    or address.directory.startswith(self.directory + "/"))
        if address.directory != self.directory:
            return False
        return self.name is None or self.name == address.name


def parse_spec(text: str) -> Spec:
    text = text.strip()
    if text.startswith("//"):
        text = text[2:]
    if text.endswith("::"):
        return Spec(_clean_dir(text[:-2]), recursive=True)
    if ":" in text:
        address = parse_address(text)
        return Spec(address.directory, address.name)
    return Spec(_clean_dir(text))
