"""TensorRT-LLM flag tables per version, and checks over them.

The tables are data (``data/<version>.json``, one file per TensorRT-LLM version,
indexed by ``data/versions.json``): for ``trtllm-build``,
``convert_checkpoint.py`` (Llama/Mixtral) and ``quantize.py``, every flag with
its type, choices, default, nargs and aliases, and the file@commit it was read
from. This module loads them once and answers questions over them: which
versions have a flag, what its default is, and whether an argv parses exactly
as the real tool's argparse parser would parse it.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = [
    "DEFAULT_VERSION", "TOOLS", "UNSET", "VERSIONS", "FlagError", "FlagSpec",
    "argument_parser", "check_flag", "default", "flag_table", "has_tool",
    "lora_target_modules", "parse_argv", "resolve_version", "script_path",
    "versions_with_flag",
]

TOOLS: tuple[str, ...] = ("trtllm-build", "convert_checkpoint.py:llama", "quantize.py")
_PROG = {"trtllm-build": "trtllm-build", "convert_checkpoint.py:llama": "convert_checkpoint.py",
         "quantize.py": "quantize.py"}
_TYPES = {"str": str, "int": int, "float": float}


class FlagError(ValueError):
    """A flag, tool or version that the chosen TensorRT-LLM version does not accept."""


class _Unset:
    """Default of a flag declared with argparse.SUPPRESS: the attribute only exists if given."""

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:  # pickles and copies as the module singleton
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class FlagSpec:
    name: str                   # without leading dashes
    type: str                   # "str" | "int" | "float" | "store_true"
    choices: tuple | None
    default: Any                # a value, None, or UNSET (argparse.SUPPRESS)
    nargs: str | None
    aliases: tuple[str, ...]    # further option strings, with their dashes ("--max_decoder_seq_len", "-sq")
    plugin: str | None          # None | "dtype" (a dtype or "disable") | "feature" ("enable"/"disable")
    since: str | None           # first covered version with the flag; None = already in the oldest
    source: str                 # owner/repo@commit:path the entry describes
    const: Any = None           # value of a bare flag with nargs="?"
    ignore_case: bool = False   # the real parser upper-cases the value first (--kv_cache_type)

    @property
    def option_strings(self) -> tuple[str, ...]:
        return (f"--{self.name}", *self.aliases)


# ---------------------------------------------------------------- loading data

def _load(filename: str) -> dict:
    text = resources.files(__package__).joinpath("data").joinpath(filename).read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _index() -> dict:
    return _load("versions.json")


@functools.cache
def _version_data(version: str) -> dict:
    return _load(f"{version}.json")


VERSIONS: tuple[str, ...] = tuple(v["version"] for v in _index()["versions"])
DEFAULT_VERSION: str = _index()["default"]


@functools.cache
def _names() -> dict[str, str]:
    names = {}
    for entry in _index()["versions"]:
        for name in (entry["version"], *entry["aliases"]):
            names[name] = entry["version"]
    return names


def resolve_version(name: str) -> str:
    """The canonical version string for `name` (a version, `v`-prefixed version, or alias)."""
    names = _names()
    key = str(name).strip()
    if key not in names and key[:1] in "vV" and key[1:] in names:
        key = key[1:]
    if key in names:
        return names[key]
    aliases = [a for e in _index()["versions"] for a in e["aliases"]]
    raise FlagError(f"unknown TensorRT-LLM version {name!r}; known: {', '.join(VERSIONS)} "
                    f"(aliases: {', '.join(aliases)})")


def _tool(tool: str) -> str:
    if tool not in TOOLS:
        raise FlagError(f"unknown TensorRT-LLM tool {tool!r}; known: {', '.join(TOOLS)}")
    return tool


def has_tool(tool: str, version: str) -> bool:
    return _tool(tool) in _version_data(resolve_version(version))["tools"]


def _require_tool(tool: str, version: str) -> dict:
    data = _version_data(version)
    if _tool(tool) not in data["tools"]:
        raise FlagError(f"TensorRT-LLM {version} has no {tool}: {data['no_tools_reason']}")
    return data["tools"][tool]


@functools.cache
def _table(tool: str, version: str) -> dict[str, FlagSpec]:
    table = {}
    for f in _require_tool(tool, version)["flags"]:
        table[f["name"]] = FlagSpec(
            name=f["name"], type=f["type"],
            choices=tuple(f["choices"]) if f["choices"] is not None else None,
            default=UNSET if f.get("unset") else f["default"],
            nargs=f["nargs"], aliases=tuple(f["aliases"]), plugin=f["plugin"],
            since=f["since"], source=f["source"], const=f.get("const"),
            ignore_case=f.get("ignore_case", False))
    return table


@functools.cache
def _option_names(tool: str, version: str) -> dict[str, str]:
    """Every option string of that parser, as written ("--max_decoder_seq_len", "-sq")
    and without its dashes ("max_decoder_seq_len", "sq") -> flag name."""
    names = {}
    for spec in _table(tool, version).values():
        for opt in spec.option_strings:
            names[opt] = names[opt.lstrip("-")] = spec.name
    return names


def flag_table(tool: str, version: str) -> dict[str, FlagSpec]:
    """{flag name without dashes: FlagSpec} for that tool in that version."""
    return dict(_table(tool, resolve_version(version)))


def _lookup(tool: str, version: str, flag: str) -> FlagSpec | None:
    """`flag` is a name or alias without dashes, or an option string as written (exact)."""
    name = _option_names(tool, version).get(str(flag).split("=", 1)[0])
    return _table(tool, version)[name] if name else None


def versions_with_flag(tool: str, flag: str) -> list[str]:
    """The versions (oldest first) whose `tool` has `flag` (a name or alias, dashes optional)."""
    _tool(tool)
    return [v for v in VERSIONS if has_tool(tool, v) and _lookup(tool, v, flag)]


def _where(tool: str, have: list[str]) -> str:
    if not have:
        return "no covered TensorRT-LLM version has it"
    tool_versions = [v for v in VERSIONS if has_tool(tool, v)]
    runs: list[list[str]] = []
    for v in have:
        if runs and tool_versions.index(v) == tool_versions.index(runs[-1][-1]) + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    parts = []
    for run in runs:
        if len(run) == 1 and run[0] != tool_versions[-1]:
            parts.append(run[0])
        elif run[-1] == tool_versions[-1]:
            parts.append(f"{run[0]} and later")
        else:
            parts.append(f"{run[0]} to {run[-1]}")
    return "it exists in " + ", ".join(parts)


def _missing(tool: str, version: str, flag: str) -> FlagError:
    flag = str(flag).split("=", 1)[0]
    shown = flag if flag.startswith("-") else f"--{flag}"
    have = versions_with_flag(tool, flag)
    message = f"{tool} in TensorRT-LLM {version} has no {shown} ({_where(tool, have)})"
    close = difflib.get_close_matches(flag.lstrip("-"), list(_table(tool, version)), n=1, cutoff=0.8)
    if close and not have:  # a typo, most likely
        message += f"; did you mean --{close[0]}?"
    return FlagError(message)


def check_flag(tool: str, version: str, flag: str) -> None:
    """Raise FlagError unless `tool` in `version` accepts `flag` (name or alias, dashes optional)."""
    version = resolve_version(version)
    _require_tool(tool, version)
    if _lookup(tool, version, flag) is None:
        raise _missing(tool, version, flag)


def default(tool: str, version: str, flag: str) -> Any:
    """The value the parsed namespace holds when `flag` is not given (UNSET: no attribute)."""
    version = resolve_version(version)
    check_flag(tool, version, flag)
    return _lookup(tool, version, flag).default


def script_path(tool: str, version: str) -> str | None:
    """The script's path from the TensorRT-LLM repository root; None for a console script."""
    return _require_tool(tool, resolve_version(version))["script"]


def lora_target_modules(version: str) -> tuple[str, ...]:
    """The LoRA module names that version knows (trtllm-build --lora_target_modules choices)."""
    return tuple(_version_data(resolve_version(version))["lora_target_modules"])


# ---------------------------------------------------------------- parsing

def _lowercase(value: str) -> str:
    return value.lower()


def _build_parser(tool: str, version: str, cls: type = argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser = cls(prog=_PROG[tool], description=f"{tool} as in TensorRT-LLM {version}")
    for spec in _table(tool, version).values():
        kwargs: dict[str, Any] = {"dest": spec.name}
        if spec.type == "store_true":
            kwargs.update(action="store_true", default=spec.default)
        else:
            kwargs.update(type=_lowercase if spec.ignore_case else _TYPES[spec.type],
                          default=argparse.SUPPRESS if spec.default is UNSET else spec.default)
            if spec.choices is not None:
                kwargs["choices"] = list(spec.choices)
            if spec.nargs is not None:
                kwargs["nargs"] = spec.nargs
            if spec.nargs == "?":
                kwargs["const"] = spec.const
        parser.add_argument(*spec.option_strings, **kwargs)
    return parser


def argument_parser(tool: str, version: str) -> argparse.ArgumentParser:
    """A fresh parser that parses like the real tool's (types, choices, nargs, aliases, abbreviations)."""
    version = resolve_version(version)
    _require_tool(tool, version)
    return _build_parser(tool, version)


class _ArgvError(Exception):
    pass


class _CheckingParser(argparse.ArgumentParser):
    def error(self, message):  # noqa: D102 - raise instead of printing and exiting
        raise _ArgvError(message)

    def exit(self, status=0, message=None):  # noqa: D102 - e.g. after --help
        raise _ArgvError(message or "--help prints the usage and exits; it is not a build flag")

    def print_help(self, file=None):  # noqa: D102
        pass


@functools.cache
def _checking_parser(tool: str, version: str) -> argparse.ArgumentParser:
    return _build_parser(tool, version, _CheckingParser)


_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


def _option_tokens(argv: list[str]):
    for token in argv:
        if token == "--":
            return
        if token.startswith("-") and token != "-" and not _NEGATIVE_NUMBER.match(token):
            yield token


def parse_argv(tool: str, version: str, argv: list[str]) -> argparse.Namespace:
    """Parse `argv` (without the program) as `tool` of `version` would; FlagError on any error.

    One deliberate difference from the real parser: a flag that this version lacks
    but another version has is an error even where argparse would silently take it
    as an abbreviation of a longer flag (``--use_fp8`` means ``--use_fp8_rowwise``
    to convert_checkpoint.py 0.12.0).
    """
    version = resolve_version(version)
    _require_tool(tool, version)
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
    for token in _option_tokens(argv):
        if _lookup(tool, version, token) is None and versions_with_flag(tool, token):
            raise _missing(tool, version, token)
    try:
        return _checking_parser(tool, version).parse_args(argv)
    except _ArgvError as err:
        message = str(err)
        if message.startswith("unrecognized arguments:"):
            unknown = [t for t in _option_tokens(message.split(":", 1)[1].split())]
            if unknown:
                raise _missing(tool, version, unknown[0]) from None
        raise FlagError(f"{tool} in TensorRT-LLM {version}: {message}{_choice_hint(tool, message)}") from None


def _choice_hint(tool: str, message: str) -> str:
    """For an invalid choice: the versions that accept that value."""
    match = re.match(r"argument (-[^:/ ]+)(?:/\S+)?: invalid choice: '([^']*)'", message)
    if not match:
        return ""
    flag, value = match.groups()
    have = [v for v in versions_with_flag(tool, flag)
            if value in (_lookup(tool, v, flag).choices or ())]
    return f"; {_where(tool, have).replace('it exists in', repr(value) + ' is accepted in')}" if have else ""
