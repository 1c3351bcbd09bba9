"""The Target/Field model: typed fields per kind, kept apart from the engine that runs them.

A kind module subclasses `Kind`, declares its pydantic `Fields`, and registers
itself with `@register`. The core finds references, source paths and tool flags
through the `Ref`, `Source` and `Flag` markers on fields, never through a kind's
or a field's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .addresses import Address
from .errors import LLMBuildError, a_or_an, shown, unknown

if TYPE_CHECKING:
    from .build import RunContext
    from .context import KindContext
    from .steps import Plan

Lane = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class Ref:
    """Marks a field holding the address of another target of `kind`."""

    kind: str


@dataclass(frozen=True)
class Source:
    """Marks a field holding a source path (file or directory) whose content enters the key."""


#: No coercion ("8" is not 8, 1 is not true), as the JSON Schema says; TOML integers
#: still fill float fields, as JSON Schema's "number" takes them.
STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True)
class Flag:
    """Marks a field passed to the kind's program as `--name`, so argv is generated from the
    fields, never from a hand-kept list. `tools` limits it to some of the programs a kind runs
    (default: all). How a value is written (a bare switch, enable/disable, left out at the
    version's default) is the program's flag table's business, not the field's."""

    name: str
    tools: tuple[str, ...] = ()

    def applies_to(self, tool: str) -> bool:
        return not self.tools or tool in self.tools


class FieldGroup(BaseModel):
    """A nested table inside a target (e.g. `lora = {...}`)."""

    model_config = STRICT


class TargetFields(BaseModel):
    """Fields every target takes."""

    model_config = STRICT

    description: str = Field("", description="What this target is for; shown by `doit list`.")
    tags: list[str] = Field(default_factory=list, description="Labels: `tag:<name>` on the command "
                            "line selects the targets carrying one (`doit tag:fp8`, `llmbuild plan tag:fp8`).")
    lanes: list[Lane] = Field(
        default_factory=lambda: ["cpu", "gpu"],
        description="Lanes this target builds on; on any other lane it is reported `skipped`.")


class Kind:
    """One target kind: its schema, the inputs its key consumes and its action.

    Every method sees a narrow context (`KindContext`): its own fields and sources, its
    dependencies' published facts, the toolchain and lane, and a way to report problems.
    """

    name: ClassVar[str]
    Fields: ClassVar[type[TargetFields]]
    help: ClassVar[str] = ""
    #: Whether its output is only the files in its entry, so another machine can restore it
    #: from a remote cache (a container's names an image in this host's Docker daemon).
    portable: ClassVar[bool] = True

    def unavailable(self, ctx: KindContext) -> str | None:
        """Why this target cannot build on the active lane, or None."""
        return None

    def check(self, ctx: KindContext) -> None:
        """Validate against sources and dependencies before anything runs."""

    def derived_sources(self, ctx: KindContext) -> dict[str, Path]:
        """Sources that default to something a dependency publishes (e.g. its tokenizer)."""
        return {}

    def output_valid(self, ctx: KindContext, key: str) -> bool:
        """Whether a committed output still stands for its key (e.g. its image still exists)."""
        return True

    def render(self, ctx: KindContext, out: Path) -> None:
        """Write what the target would produce, from declared settings only (`llmbuild render`)."""
        raise LLMBuildError(f"{ctx.address} is {a_or_an(self.name)} target; only targets whose "
                            f"output can be generated without building can be rendered")

    def facts(self, ctx: KindContext) -> dict[str, Any]:
        """What dependents may read about this target before it is built (e.g. an engine's
        declared build config). Dependents read facts, never another kind's module."""
        return {}

    def plan(self, ctx: KindContext) -> Plan:
        """Consumed parameters and the steps (argv lists) that build the output."""
        raise NotImplementedError

    def commands(self, ctx: KindContext) -> list[dict[str, Any]]:
        """What `llmbuild plan` shows for programs the kind runs itself rather than as plan steps
        (a server, `docker build`): each {"tool", "argv"}, maybe "docker_run" and a "note"."""
        return []

    def run(self, ctx: RunContext) -> None:
        """Build into ctx.out. The default runs the plan's steps through the toolchain."""
        for step in ctx.plan.steps:
            ctx.run_step(step)

    def builds_by_steps(self, ctx: KindContext) -> bool:
        """Whether this target's build is only its plan's steps (so another machine can run them:
        the Ray executor); a kind that overrides `run` says when it still is."""
        return type(self).run is Kind.run


KINDS: dict[str, Kind] = {}


def register(kind_cls: type[Kind]) -> type[Kind]:
    """Make a kind known to every workspace loaded afterwards (a plugin module calls this)."""
    if kind_cls.name in KINDS:
        raise RuntimeError(f"kind '{kind_cls.name}' registered twice")
    KINDS[kind_cls.name] = kind_cls()
    return kind_cls


def unregister(name: str) -> None:
    KINDS.pop(name, None)


def kind_named(name: str, kinds: Mapping[str, Kind], *, file: str, target: str) -> Kind:
    if name not in kinds:
        raise LLMBuildError(f"{unknown(f'kind {shown(name)}', name, kinds)}; known kinds: "
                            + ", ".join(sorted(kinds)), file=file, target=target)
    return kinds[name]


def marked_fields(model: BaseModel, marker: type, prefix: str = "", *,
                  unset: bool = False) -> list[tuple[str, Any, Any]]:
    """(dotted field name, marker, value) for every set field carrying `marker`, nested groups
    too, in declaration order; with `unset`, fields left None as well (value None)."""
    found = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and not unset:
            continue
        for meta in info.metadata:
            if isinstance(meta, marker):
                found.append((prefix + name, meta, value))
        if isinstance(value, FieldGroup):
            found.extend(marked_fields(value, marker, prefix + name + ".", unset=unset))
    return found


def flag_values(model: BaseModel, tool: str, derived: dict[str, Any] | None = None) -> dict[str, Any]:
    """{flag name: value} of the fields marked `Flag` for `tool`, in declaration order (which is
    argv order, so it enters keys). `derived` gives the value of a field left unset that the
    kind works out itself (dotted field -> value, e.g. a dtype taken from a dependency)."""
    derived = derived or {}
    values = {}
    for name, flag, value in marked_fields(model, Flag, unset=True):
        value = derived.get(name) if value is None else value
        if value is not None and flag.applies_to(tool):
            values[flag.name] = value
    return values


@dataclass(eq=False)
class Target:
    address: Address
    kind: Kind
    fields: TargetFields
    build_file: str  # relative to the workspace root, for messages
    deps: dict[str, Target] = field(default_factory=dict)  # dotted field -> target
    sources: dict[str, Path] = field(default_factory=dict)  # dotted field -> absolute path
    unavailable: str | None = None  # why it is skipped on the active lane
    failure: str | None = None  # why it fails when run here (found at load, e.g. a missing data-root source)

    def __str__(self) -> str:
        return str(self.address)

    def error(self, message: str, key: str | None = None) -> LLMBuildError:
        return LLMBuildError(message, file=self.build_file,
                             target=f"[{self.kind.name}.{self.address.name}]", key=key)
