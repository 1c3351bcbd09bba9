"""`llmbuild render`: the files a target would produce, from declared settings only (for review)."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import LLMBuildError
from ..core.target import Target
from ..core.workspace import Workspace


def render_target(ws: Workspace, target: Target, out: Path) -> list[Path]:
    """Render one target into `out` (absent or empty); the files written, relative to it."""
    if target.unavailable and ws.lane not in target.fields.lanes:
        raise LLMBuildError(f"{target.address} is declared for the {'/'.join(target.fields.lanes)} "
                            f"lane; render it with --lane {target.fields.lanes[0]}")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise LLMBuildError(f"--out {out} exists and is not an empty directory")
    target.kind.render(ws.context(target), out)
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
