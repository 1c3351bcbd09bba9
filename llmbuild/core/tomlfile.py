"""Read a BUILD.toml or pyproject.toml that may be anything a checkout can hold: a directory, a
FIFO (opening it would block), a dangling or looping symlink, a symlink out of the workspace,
bytes that are not UTF-8, a byte order mark, or tables nested thousands deep. Each is one line
naming the file, never a traceback or a hang."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from .errors import LLMBuildError, odd_character, shown

#: Deepest nesting of tables and arrays read (a BUILD.toml needs 3: kind, target, field group).
MAX_DEPTH = 32
#: TOML integers are 64-bit (tomllib reads any size; the tools would get a number nothing holds).
INT64 = 2**63

_FILE_TYPES = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
               stat.S_ISBLK: "a block device"}


def read_toml(path: Path, rel: str, root: Path) -> dict[str, Any]:
    """The parsed file; `rel` names it in errors; a symlink must stay inside `root`."""
    def refuse(message: str) -> LLMBuildError:
        return LLMBuildError(message, file=rel)

    if path.is_symlink():
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError:
            raise refuse(f"is a dangling symlink (to {shown(os.readlink(path))})") from None
        except (OSError, RuntimeError) as err:  # RuntimeError: a loop, before Python 3.13
            raise refuse(f"cannot be read: a symlink loop ({err.__class__.__name__})") from None
        if not real.is_relative_to(root.resolve()):
            raise refuse(f"is a symlink to {real}, outside the workspace")
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise refuse("is a directory, not a file")
        for test, what in _FILE_TYPES.items():
            if test(mode):
                raise refuse(f"is not a regular file ({what})")
        data = path.read_bytes()
    except OSError as err:
        raise refuse(f"cannot be read: {err.strerror or err}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        raise refuse("starts with a byte order mark (U+FEFF): TOML files are plain UTF-8; save it without one")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise refuse(f"is not UTF-8: byte 0x{data[err.start]:02x} at line {line}, column {column}") from None
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise refuse(f"invalid TOML: {err}{_character_at(text, str(err))}") from None
    except RecursionError:
        raise refuse(f"invalid TOML: tables or arrays nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise refuse(f"invalid TOML: {err}") from None
    _check_values(parsed, (), rel)
    return parsed


def _character_at(text: str, error: str) -> str:
    """What the character a TOML error points at is, when it is a lookalike or invisible one
    (bare keys are ASCII: a Cyrillic 'е' in one is a syntax error at that very character)."""
    where = re.search(r"at line (\d+), column (\d+)\)$", error)
    if where is None:
        return ""
    lines = text.splitlines()
    line, column = int(where[1]), int(where[2])
    return odd_character(lines[line - 1][column - 1]) if line <= len(lines) and column <= len(lines[line - 1]) else ""


def _check_values(value: Any, path: tuple[str, ...], rel: str) -> None:
    """No nesting deeper than MAX_DEPTH, no integer beyond 64 bits. The first two keys name
    the table ([engine.e], [tool.llmbuild]), the rest the key."""
    def refuse(message: str) -> LLMBuildError:
        return LLMBuildError(message, file=rel, target=f"[{'.'.join(path[:2])}]", key=".".join(path[2:]) or None)

    if len(path) > MAX_DEPTH:
        raise refuse(f"tables or arrays nested too deeply (more than {MAX_DEPTH} levels)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_values(item, (*path, key), rel)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_values(item, (*path, str(index)), rel)
    elif isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        raise refuse(f"{shown(value)} is beyond TOML's 64-bit integers")
