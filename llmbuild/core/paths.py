"""Path rules for BUILD.toml values (SPEC §3).

Relative paths are relative to the BUILD.toml's directory, `//x` to the
workspace root; absolute paths must lie in the workspace or a data root. After
resolving `..` and symlinks no path may leave those places.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import shown


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


#: Longest path and path component most filesystems take (PATH_MAX, NAME_MAX).
PATH_MAX, NAME_MAX = 4096, 255


def resolve_source(value: str, *, build_dir: Path, root: Path,
                   data_roots: list[Path]) -> tuple[Path | None, str | None]:
    """(resolved path, None) or (None, why it is not allowed)."""
    if "\0" in value:
        return None, f"{shown(value)} holds a NUL character, which no path can"
    encoded = os.fsencode(value)
    if len(encoded) >= PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        return None, f"{shown(value)} is too long for a path ({PATH_MAX - 1} bytes, {NAME_MAX} per name at most)"
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
    if os.path.isabs(value) and not value.startswith("//"):
        roots = ", ".join(str(d) for d in data_roots) or "none declared"
        return None, (f"{shown(value)} is outside the workspace and every data root "
                      f"(data_roots in [tool.llmbuild]: {roots})")
    return None, f"{shown(value)} escapes the workspace (resolves to {resolved})"


def escaping_link(path: Path, allowed: list[Path]) -> tuple[Path, Path] | None:
    """(symlink, where it leads) for the first symlink below the directory `path` that leads out
    of every `allowed` place (the workspace, the data roots), following symlinks as the key's
    digests and the tools do; None when there is none."""
    places = [Path(os.path.realpath(p)) for p in allowed]
    seen: set[str] = set()
    for directory, dirnames, filenames in os.walk(path, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop, or two links to one directory: walked once
            dirnames[:] = []
            continue
        seen.add(real)
        for name in sorted(dirnames + filenames):
            entry = Path(directory) / name
            if entry.is_symlink():
                leads = Path(os.path.realpath(entry))
                if not any(_inside(leads, place) for place in places):
                    return entry, leads
    return None
