"""Checks several kinds make, on what they see through their context (not a kind)."""

from __future__ import annotations

from ..core.context import KindContext


def check_gpus(ctx: KindContext, world: int, source: str) -> None:
    """tp x pp ranks (from `source`, a field or target) need that many GPUs: the IDs the target
    lists in `gpus`, or what the host offers."""
    given = getattr(ctx.fields, "gpus", None)
    if given is not None and len(given) != world:
        raise ctx.error(f"tp_size x pp_size is {world} (from {source}) but gpus lists "
                        f"{len(given)} device(s)", key="gpus")
    offered = ctx.toolchain.gpus_offered
    if offered is not None and world > offered:
        raise ctx.error(f"needs {world} GPUs (tp_size x pp_size, from {source}) but "
                        f"[tool.llmbuild.host] gpus = {offered}", key="gpus")
