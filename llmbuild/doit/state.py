"""The workspace of this doit process (loaded once; forked workers inherit it)."""

from __future__ import annotations

from pathlib import Path

from doit import get_initial_workdir

from ..core.workspace import Workspace
from ..plugins import load_workspace

_workspace: Workspace | None = None


def workspace() -> Workspace:
    global _workspace
    if _workspace is None:  # doit has moved to the dodo file's directory; specs are read from where it started
        started = get_initial_workdir()
        _workspace = load_workspace(cwd=Path(started) if started else None)
    return _workspace


def loaded() -> Workspace | None:
    return _workspace
