"""Checks several kinds make, on what they see through their context (not a kind)."""

from __future__ import annotations

import re

from ..core.context import KindContext
from ..core.target import Flag, marked_fields


def gpu_demand(ctx: KindContext, world: int) -> int | tuple[int, ...]:
    """What the target holds while it runs (Plan.gpus): the IDs its `gpus` lists, else `world` GPUs."""
    given = getattr(ctx.fields, "gpus", None)
    return tuple(given) if given is not None else world


def check_gpus(ctx: KindContext, world: int, source: str) -> None:
    """tp x pp ranks (from `source`, a field or target) need that many GPUs: the IDs the target
    lists in `gpus`, or any of the host's pool."""
    given = getattr(ctx.fields, "gpus", None)
    if given is not None and len(given) != world:
        raise ctx.error(f"tp_size x pp_size is {world} (from {source}) but gpus lists "
                        f"{len(given)} device(s)", key="gpus")
    check_pool(ctx, world, f"tp_size x pp_size, from {source}")


def check_pool(ctx: KindContext, count: int, why: str) -> None:
    """The host's pool holds `count` GPUs, and every ID the target's `gpus` lists; without a
    pool (none declared on the CPU lane, no nvidia-smi on the GPU lane) nothing is checked."""
    pool, origin = ctx.toolchain.gpus_offered, ctx.toolchain.gpus_origin
    if not pool:
        return
    if count > pool:
        raise ctx.error(f"needs {count} GPUs ({why}) but the pool has {pool} ({origin})", key="gpus")
    outside = [i for i in getattr(ctx.fields, "gpus", None) or () if i >= pool]
    if outside:
        raise ctx.error(f"gpus lists device {outside[0]} but the pool has {pool} (IDs 0 to {pool - 1}; "
                        f"{origin})", key="gpus")


def flag_field(ctx: KindContext, message: str) -> str | None:
    """The field behind the first `--flag` a tool's refusal names (for the error's key)."""
    named = re.search(r"--(\w+)", message)
    fields = {flag.name: field for field, flag, _ in marked_fields(ctx.fields, Flag, unset=True)}
    return fields.get(named[1]) if named else None
