"""Action keys: a hash over a canonical JSON document of everything a build consumes."""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_SCHEMA = 1


def canonical_json(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key_document(*, kind: str, params: dict[str, Any], steps: list[dict[str, Any]],
                 toolchain: dict[str, Any], sources: dict[str, str],
                 deps: dict[str, str]) -> dict[str, Any]:
    """Never holds a path, a target name or a secret: only placeholders and digests."""
    return {
        "schema": KEY_SCHEMA,
        "kind": kind,
        "params": params,
        "steps": steps,
        "toolchain": toolchain,
        "sources": sources,
        "deps": deps,
    }


def action_key(document: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()
