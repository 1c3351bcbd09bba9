"""Turn declared values into a TensorRT-LLM argv, exactly as a given version accepts it.

A flag whose value equals that version's default is left out, so the argv (and
the key) is canonical: writing `pp_size = 1` or leaving it out builds the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import flags


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flag_args(tool: str, version: str, values: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(argv fragment, {flag: value} actually passed). `values` maps flag names to declared values."""
    table = flags.flag_table(tool, version)
    argv: list[str] = []
    passed: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        flags.check_flag(tool, version, name)
        spec = table[name]
        default = flags.default(tool, version, name)
        if spec.type == "store_true":
            if value:
                argv.append(f"--{name}")
                passed[name] = True
            continue
        if spec.plugin == "feature" and isinstance(value, bool):
            value = "enable" if value else "disable"
        if value == default:
            continue
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        argv += [f"--{name}", *(_render(v) for v in items)]
        passed[name] = list(value) if isinstance(value, (list, tuple)) else value
    return argv, passed
