"""The JSON Schema of a whole BUILD.toml, generated from the registered kinds' pydantic models.

Never hand-written: every kind's `Fields` model gives its target schema (`model_json_schema()`),
post-processed only where TOML differs from JSON (TOML has no null, so `X | None` becomes `X`).
Editors (Taplo / Even Better TOML) use it to complete and check keys; see docs/editors.md.

Regenerate the committed copy with `python -m llmbuild.introspect.schema docs/buildfile.schema.json`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from ..core.addresses import _NAME, MAX_NAME
from ..core.buildfiles import DEFAULTS
from ..core.errors import a_or_an
from ..plugins import load_kinds

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:llmbuild:buildfile"
#: Target names, as `llmbuild.core.addresses` checks them.
TARGET_NAME_PATTERN = _NAME.pattern
_REF_PREFIX = "#/$defs/"


def _target_def(kind: str) -> str:
    return f"{kind}.target"


def _defaults_def(kind: str) -> str:
    return f"{kind}.defaults"


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
                name = value[len(_REF_PREFIX):]
                value = _REF_PREFIX + renames.get(name, name)
            out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null" and len(node) == 1


def _tomlify(node: Any) -> Any:
    """TOML has no null: drop `null` branches and `null` defaults. A `$ref` with siblings (a
    description) is wrapped in `allOf`: older dialects, which Taplo may use, ignore a `$ref`'s
    siblings, and every dialect reads `allOf` the same way."""
    if isinstance(node, list):
        return [_tomlify(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _tomlify(value) for key, value in node.items()}
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if not _is_null(b)]
        if len(branches) == 1 and not (set(branches[0]) & (set(node) - {"anyOf"})):
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **branches[0]}
        else:
            node["anyOf"] = branches
    if "default" in node and node["default"] is None:
        del node["default"]
    if isinstance(node.get("enum"), list) and None in node["enum"]:
        node["enum"] = [v for v in node["enum"] if v is not None]
    if "$ref" in node and len(node) > 1:
        ref = node.pop("$ref")
        node["allOf"] = [{"$ref": ref}, *node.get("allOf", [])]
    return node


def _sorted(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _sorted(node[key]) for key in sorted(node)}
    if isinstance(node, list):
        return [_sorted(item) for item in node]
    return node


def buildfile_schema() -> dict:
    """A JSON Schema (draft 2020-12) for a whole BUILD.toml, from the registered kinds."""
    kinds = load_kinds()
    defs: dict[str, Any] = {}
    owner: dict[str, str] = {}  # def name -> kind that put it there (for messages)

    properties: dict[str, Any] = {}
    defaults_properties: dict[str, Any] = {}
    for kind_name in sorted(kinds):
        if kind_name == DEFAULTS:
            raise RuntimeError(f"a kind may not be named '{DEFAULTS}'")
        kind = kinds[kind_name]
        generated = kind.Fields.model_json_schema()
        nested = generated.pop("$defs", {})
        renames: dict[str, str] = {}  # a nested model's name -> its name in $defs
        while True:  # rename until no body differs from a same-named definition of another kind
            bodies = {n: _tomlify(_rewrite_refs(nested[n], renames)) for n in nested}
            clashes = sorted(n for n in nested if renames.get(n, n) in defs
                             and defs[renames.get(n, n)] != bodies[n])
            if not clashes:
                break
            for name in clashes:
                if name in renames:
                    raise RuntimeError(f"JSON Schema definition '{renames[name]}' collides "
                                       f"({owner[renames[name]]} and {kind_name})")
                renames[name] = f"{kind_name}.{name}"
        for name in sorted(nested):
            defs.setdefault(renames.get(name, name), bodies[name])
            owner.setdefault(renames.get(name, name), kind_name)
        target = _tomlify(_rewrite_refs(generated, renames))
        help_text = kind.help or f"{a_or_an(kind_name).capitalize()} target."
        target.setdefault("description", help_text)
        target["title"] = f"[{kind_name}.<name>]"
        for reserved in (_target_def(kind_name), _defaults_def(kind_name)):
            if reserved in defs:
                raise RuntimeError(f"JSON Schema definition '{reserved}' collides with a model's name")
        defs[_target_def(kind_name)] = target
        partial = copy.deepcopy(target)
        partial.pop("required", None)
        partial["title"] = f"[{DEFAULTS}.{kind_name}]"
        partial["description"] = (
            f"Defaults for every {kind_name} target declared in this directory and below "
            f"(any subset of {a_or_an(kind_name)} target's fields; a target's own value wins).")
        defs[_defaults_def(kind_name)] = partial

        properties[kind_name] = {
            "type": "object",
            "title": f"{kind_name} targets",
            "description": f"{help_text} One table per target: [{kind_name}.<name>].",
            "propertyNames": {"pattern": TARGET_NAME_PATTERN, "maxLength": MAX_NAME},
            "additionalProperties": {"$ref": _REF_PREFIX + _target_def(kind_name)},
        }
        defaults_properties[kind_name] = {"$ref": _REF_PREFIX + _defaults_def(kind_name)}

    properties[DEFAULTS] = {
        "type": "object",
        "title": "defaults",
        "description": "Field defaults for this BUILD.toml's directory and everything below it, "
                       "per kind: [defaults.<kind>]. A nearer BUILD.toml's defaults win.",
        "properties": defaults_properties,
        "additionalProperties": False,
    }
    schema = {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": "llmbuild BUILD.toml",
        "description": "Targets keyed by kind, then name ([engine.tp2]), plus optional "
                       "[defaults.<kind>] tables. Generated from llmbuild's kinds; do not edit.",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "$defs": defs,
    }
    return _sorted(schema)


def schema_json() -> str:
    """The schema as the committed file holds it: sorted keys, 2-space indent, final newline."""
    return json.dumps(buildfile_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` (atomically; parent directories created). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_schema(path: str | Path) -> Path:
    """Write the schema to `path`. Returns the path."""
    return write_text(path, schema_json())


if __name__ == "__main__":  # python -m llmbuild.introspect.schema [PATH]
    if len(sys.argv) > 1:
        print(write_schema(sys.argv[1]))
    else:
        sys.stdout.write(schema_json())
