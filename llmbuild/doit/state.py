"""The workspace of this doit process (loaded once; forked workers inherit it)."""

from __future__ import annotations

from ..core.workspace import Workspace

_workspace: Workspace | None = None


def workspace() -> Workspace:
    global _workspace
    if _workspace is None:
        _workspace = Workspace.load()
    return _workspace


def loaded() -> Workspace | None:
    return _workspace
