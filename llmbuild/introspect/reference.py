"""docs/reference.md: every field of every kind, of nested tables and of `[tool.llmbuild]`, as
Markdown tables generated from the same pydantic models that validate them (like the JSON
Schema), so the reference cannot drift from the code. A test keeps the committed copy fresh.

Regenerate it with `llmbuild schema --reference --out docs/reference.md`.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ..core.addresses import _NAME, MAX_NAME
from ..core.buildfiles import DEFAULTS
from ..core.settings import ENV_OVERRIDES, Settings
from ..core.target import Flag, Ref, Source, TargetFields
from ..plugins import DefaultPlugins, load_kinds
from .schema import write_text

_BOUNDS = ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"),
           (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "≤"))
_SCALARS = {bool: "boolean", int: "integer", float: "float", str: "string"}

HEADER = f"""\
# BUILD.toml reference

<!-- Generated from llmbuild's kinds by `llmbuild schema --reference --out docs/reference.md`; do not edit. -->

Every field of every target kind, of their nested tables, and of `[tool.llmbuild]`, as llmbuild
validates them. Editors can check the same schema as you type: see [editors.md](editors.md).

## Targets, addresses and defaults

* A `BUILD.toml` declares targets as tables `[<kind>.<name>]`, e.g. `[engine.tp2]`.
* A target's **address** is `<dir>:<name>`, `<dir>` being the BUILD.toml's directory relative to the
  workspace root. The kind is not part of it, so **target names are unique across kinds within a
  directory**: `[engine.x]` next to `[checkpoint.x]` is a duplicate address.
* Names take ASCII letters, digits, `_`, `-` and `.`, start with a letter or digit
  (`{_NAME.pattern}`) and hold at most {MAX_NAME} characters: a lookalike (Cyrillic `е`, a
  fullwidth letter) or an invisible character (a zero-width space) is refused and named.
* A field that names another target takes its address: `dir:name` (or `//dir:name`) from the
  workspace root, or `:name` for a target of the same directory.
* A path field is relative to the BUILD.toml's directory, or to the workspace root when written
  `//path`; it must stay inside the workspace or lie under a `data_roots` entry of
  `[tool.llmbuild]`. The content of the files it names enters the target's key.
* `[{DEFAULTS}.<kind>]` sets fields of every target of that kind in its directory and below; a nearer
  BUILD.toml's defaults win, and a target's own value wins over any default. `container` in
  `[tool.llmbuild]` is the farthest default of every kind with a `container` field.

In the tables, a default of "—" means the field is left unset: the flag is not passed, and the
tool's own default for the TensorRT-LLM version applies (or what the description says). **Flag** is
the command-line flag a field becomes (argv is generated from these), with the program in
parentheses when only one of the kind's programs takes it; a flag whose value equals the version's
default is left out, and a boolean of an `enable`/`disable` flag is written as `enable`/`disable`.
"""


def _cell(text: str) -> str:
    """Text for a table cell: `|` escaped, and `<` outside code spans (Markdown would take
    `<family>` for an HTML tag and drop it)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(part if index % 2 else part.replace("<", "&lt;") for index, part in enumerate(parts))


def _nested(annotation: Any) -> list[type[BaseModel]]:
    """The models (tables) a field's annotation holds: `Lora | None`, `list[Request]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _nested(arg)]


def _type(annotation: Any, metadata: tuple = (), plural: bool = False) -> str:
    """A field's type in words: `integer > 0`, `one of "paged", "continuous"`, `list of strings`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], (*args[1:], *metadata), plural)
    bounds = ", ".join(f"{sign} {getattr(meta, attr)}" for meta in metadata
                       for cls, attr, sign in _BOUNDS if isinstance(meta, cls))
    bounds = f" {bounds}" if bounds else ""
    if origin in (typing.Union, types.UnionType):
        kinds = [_type(arg, plural=plural) for arg in args if arg is not type(None)]
        return (", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]) + bounds
    if origin is typing.Literal:
        return ("" if plural else "one of ") + ", ".join(f"`{json.dumps(value)}`" for value in args)
    if origin in (list, tuple):
        return "list of " + ("tables" if _nested(args[0]) else _type(args[0], plural=True))
    if origin is dict:
        return f"table of {_type(args[1], plural=True)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    name = _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{name}s" if plural else name + bounds


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "—"
    if isinstance(value, BaseModel):
        return "(table)"
    return f"`{json.dumps(value)}`"


def _field_type(info: FieldInfo) -> str:
    for meta in info.metadata:
        if isinstance(meta, Ref):
            return f"address of a target of kind `{meta.kind}`"
        if isinstance(meta, Source):
            return _type(info.annotation).replace("string", "path")
    return _type(info.annotation, tuple(info.metadata))


def _flag(info: FieldInfo) -> str:
    return ", ".join(f"`--{meta.name}`" + (f" ({', '.join(meta.tools)})" if meta.tools else "")
                     for meta in info.metadata if isinstance(meta, Flag))


Column = tuple[str, Callable[[str, FieldInfo], str]]  # (header, cell of a field)
_NAME_COLUMN: Column = ("field", lambda name, info: f"`{name}`")
_COMMON_COLUMNS: tuple[Column, ...] = (("type", lambda name, info: _field_type(info)),
                                       ("default", lambda name, info: _default(info)))
_DESCRIPTION: Column = ("description", lambda name, info: info.description or "")
TARGET_COLUMNS = (_NAME_COLUMN, *_COMMON_COLUMNS, ("flag", lambda name, info: _flag(info)), _DESCRIPTION)
def _environment(name: str) -> str:
    overrides = dict(ENV_OVERRIDES)
    for subsystem in DefaultPlugins.subsystems:
        overrides.update(subsystem.env)
    return ", ".join(f"`{variable}`" for variable, key in overrides.items() if key == name)


SETTINGS_COLUMNS = (("setting", _NAME_COLUMN[1]), *_COMMON_COLUMNS,
                    ("environment", lambda name, info: _environment(name)), _DESCRIPTION)


class Table(NamedTuple):
    """One table of the reference: a TOML table's fields, under a heading."""

    heading: str
    level: int
    intro: list[str]
    fields: dict[str, FieldInfo]
    columns: tuple[Column, ...]


def _doc(model: type[BaseModel]) -> list[str]:
    return [" ".join(model.__doc__.split())] if model.__doc__ else []


def _with_nested(top: Table, path: str) -> Iterator[Table]:
    """`top` (the TOML table at `path`), then its nested tables, depth first."""
    yield top
    for name, info in top.fields.items():
        for nested in _nested(info.annotation):
            sub = f"{path}.{name}"
            heading = f"`[[{sub}]]`" if typing.get_origin(info.annotation) is list else f"`[{sub}]`"
            yield from _with_nested(Table(heading, top.level + 1, _doc(nested), nested.model_fields,
                                          top.columns), sub)


def tables() -> Iterator[Table]:
    """Every table the reference shows: the fields all targets take, each kind's own fields and
    nested tables, and [tool.llmbuild]."""
    common = TargetFields.model_fields
    yield Table("Fields every target takes", 2, [], common, TARGET_COLUMNS)
    for name, kind in sorted(load_kinds().items()):
        intro = [kind.help] if kind.help else []
        intro += [*_doc(kind.Fields), f"`[{name}.<name>]` takes these fields besides those every target takes:"]
        own = {field: info for field, info in kind.Fields.model_fields.items() if field not in common}
        yield from _with_nested(Table(f"`{name}`", 2, intro, own, TARGET_COLUMNS), f"{name}.<name>")
    settings = dict(Settings.model_fields)
    for subsystem in DefaultPlugins.subsystems:  # each subsystem's keys sit in the same table
        settings.update(subsystem.model.model_fields)
    yield from _with_nested(Table("`[tool.llmbuild]` (pyproject.toml)", 2, _doc(Settings), settings,
                                  SETTINGS_COLUMNS), "tool.llmbuild")


def _markdown(table: Table) -> list[str]:
    lines = [f"{'#' * table.level} {table.heading}", ""]
    for paragraph in table.intro:
        lines += [paragraph, ""]
    lines += ["| " + " | ".join(header for header, _ in table.columns) + " |", "|" + "---|" * len(table.columns)]
    for name, info in table.fields.items():
        lines.append("| " + " | ".join(_cell(cell(name, info)) for _, cell in table.columns) + " |")
    return [*lines, ""]


def reference_markdown() -> str:
    """docs/reference.md as committed."""
    lines = [HEADER]
    for table in tables():
        lines += _markdown(table)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_reference(path: str | Path) -> Path:
    return write_text(path, reference_markdown())


if __name__ == "__main__":  # python -m llmbuild.introspect.reference [PATH]
    if len(sys.argv) > 1:
        print(write_reference(sys.argv[1]))
    else:
        sys.stdout.write(reference_markdown())
