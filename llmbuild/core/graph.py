"""Resolve reference fields into edges; refuse dangling, wrong-kind and cyclic ones."""

from __future__ import annotations

from .addresses import Address, parse_address
from .errors import LLMBuildError, a_or_an, did_you_mean
from .target import Ref, Target, marked_fields


def resolve_references(targets: list[Target]) -> None:
    by_address = {t.address: t for t in targets}
    for target in targets:
        for field, ref, value in marked_fields(target.fields, Ref):
            try:
                address = parse_address(value, relative_to=target.address.directory)
            except LLMBuildError as err:
                raise target.error(err.message, key=field) from None
            dep = by_address.get(address)
            if dep is None:
                known = [str(a) for a in by_address]
                raise target.error(
                    f"'{value}' refers to {address}, which no BUILD.toml declares"
                    f"{did_you_mean(str(address), known)}", key=field)
            if dep.kind.name != ref.kind:
                raise target.error(
                    f"'{value}' refers to {address}, {a_or_an(dep.kind.name)} target; "
                    f"expected {a_or_an(ref.kind)}", key=field)
            target.deps[field] = dep


def topological_order(targets: list[Target]) -> list[Target]:
    """Dependencies first; otherwise in address order, so listings read by directory."""
    order: list[Target] = []
    done: set[Address] = set()
    path: list[Target] = []

    def visit(target: Target) -> None:
        if target.address in done:
            return
        if target in path:
            cycle = path[path.index(target):] + [target]
            field = next(f for f, dep in cycle[0].deps.items() if dep is cycle[1])
            raise cycle[0].error("dependency cycle: " + " -> ".join(str(t.address) for t in cycle), key=field)
        path.append(target)
        for dep in sorted(target.deps.values(), key=lambda t: t.address):
            visit(dep)
        path.pop()
        done.add(target.address)
        order.append(target)

    for target in sorted(targets, key=lambda t: t.address):
        visit(target)
    return order


def dependencies_closure(selected: list[Target]) -> list[Target]:
    """The selected targets and everything they depend on."""
    seen: dict[Address, Target] = {}
    stack = list(selected)
    while stack:
        target = stack.pop()
        if target.address not in seen:
            seen[target.address] = target
            stack.extend(target.deps.values())
    return list(seen.values())
