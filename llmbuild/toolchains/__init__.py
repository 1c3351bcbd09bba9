"""Toolchains: which program runs a step, and how, on each lane."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.workspace import Workspace
    from .base import Toolchain


def toolchain_for(ws: Workspace) -> Toolchain:
    from .cpu_lane import CpuToolchain
    from .host import HostToolchain

    lanes = {"cpu": CpuToolchain, "gpu": HostToolchain}
    return lanes[ws.settings.lane](ws)
