"""The workspace of this doit process (loaded once; forked workers inherit it)."""

from __future__ import annotations

from ..core.workspace import Workspace
from ..plugins import load_workspace

_workspace: Workspace | None = None


def workspace() -> Workspace:
    global _workspace
    if _workspace is None:
        _workspace = load_workspace()
    return _workspace


def loaded() -> Workspace | None:
    return _workspace
