"""Path rules for BUILD.toml values (SPEC §3).

Relative paths are relative to the BUILD.toml's directory, `//x` to the
workspace root; absolute paths must lie in the workspace or a data root. After
resolving `..` and symlinks no path may leave those places.
"""

from __future__ import annotations

import os
from pathlib import Path


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_source(value: str, *, build_dir: Path, root: Path,
                   data_roots: list[Path]) -> tuple[Path | None, str | None]:
    """(resolved path, None) or (None, why it is not allowed)."""
    if value.startswith("//"):
        raw = root / value[2:]
    elif os.path.isabs(value):
        raw = Path(value)
    else:
        raw = build_dir / value
    resolved = Path(os.path.realpath(raw))
    allowed = [Path(os.path.realpath(root))] + [Path(os.path.realpath(d)) for d in data_roots]
    if any(_inside(resolved, place) for place in allowed):
        return resolved, None
    if os.path.isabs(value):
        roots = ", ".join(str(d) for d in data_roots) or "none declared"
        return None, (f"'{value}' is outside the workspace and every data root "
                      f"(data_roots in [tool.llmbuild]: {roots})")
    return None, f"'{value}' escapes the workspace (resolves to {resolved})"
