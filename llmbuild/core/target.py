"""The Target/Field model: typed fields per kind, kept apart from the engine that runs them.

A kind module subclasses `Kind`, declares its pydantic `Fields`, and registers
itself with `@register`. The core finds references and source paths through the
`Ref` and `Source` markers on fields, never through a kind's name.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .addresses import Address
from .errors import LLMBuildError, did_you_mean

if TYPE_CHECKING:
    from .steps import Plan
    from .workspace import Workspace
    from .build import RunContext

Lane = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class Ref:
    """Marks a field holding the address of another target of `kind`."""

    kind: str


@dataclass(frozen=True)
class Source:
    """Marks a field holding a source path (file or directory) whose content enters the key."""


class FieldGroup(BaseModel):
    """A nested table inside a target (e.g. `lora = {...}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetFields(BaseModel):
    """Fields every target takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What this target is for; shown by `doit list`.")
    tags: list[str] = Field(default_factory=list, description="Free-form labels.")
    lanes: list[Lane] = Field(
        default_factory=lambda: ["cpu", "gpu"],
        description="Lanes this target builds on; on any other lane it is reported `skipped`.")


CONTAINER_FIELD = "container"


class ToolFields(TargetFields):
    """Fields of kinds that run programs: which container image runs them."""

    container: Annotated[str | None, Ref("container")] = Field(
        None, description="The container target whose image runs this target's steps "
        "(default: `container` in [tool.llmbuild]; none: run on this host).")
    gpus: list[int] | None = Field(
        None, description="GPU device IDs this target's steps get (GPU lane; default: any tp x pp GPUs).")


class Kind:
    """One target kind: its schema, the inputs its key consumes and its action."""

    name: ClassVar[str]
    Fields: ClassVar[type[TargetFields]]
    help: ClassVar[str] = ""

    def unavailable(self, target: Target, ws: Workspace) -> str | None:
        """Why this target cannot build on the active lane, or None."""
        return None

    def check(self, target: Target, ws: Workspace) -> None:
        """Validate against sources and dependencies before anything runs."""

    def derived_sources(self, target: Target, ws: Workspace) -> dict[str, Path]:
        """Sources that default to something a dependency knows (e.g. its tokenizer)."""
        return {}

    def output_valid(self, target: Target, ws: Workspace, key: str) -> bool:
        """Whether a committed output still stands for its key (e.g. its image still exists)."""
        return True

    def render(self, target: Target, ws: Workspace, out: Path) -> None:
        """Write what the target would produce, from declared settings only (`llmbuild render`)."""
        raise LLMBuildError(f"{target.address} is a {self.name} target; only targets whose "
                            f"output can be generated without building can be rendered")

    def facts(self, target: Target, ws: Workspace) -> dict[str, Any]:
        """What dependents may read about this target before it is built (e.g. an engine's
        declared build config). Dependents read facts, never another kind's module."""
        return {}

    def plan(self, target: Target, ws: Workspace) -> Plan:
        """Consumed parameters and the steps (argv lists) that build the output."""
        raise NotImplementedError

    def run(self, target: Target, ctx: RunContext) -> None:
        """Build into ctx.out. The default runs the plan's steps through the toolchain."""
        for step in ctx.plan.steps:
            ctx.run_step(step)


KINDS: dict[str, Kind] = {}


def register(kind_cls: type[Kind]) -> type[Kind]:
    if kind_cls.name in KINDS:
        raise RuntimeError(f"kind '{kind_cls.name}' registered twice")
    KINDS[kind_cls.name] = kind_cls()
    return kind_cls


def load_kinds() -> dict[str, Kind]:
    """Import every module of `llmbuild.kinds` (each registers itself)."""
    import llmbuild.kinds as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    return KINDS


def kind_named(name: str, *, file: str, target: str) -> Kind:
    kinds = load_kinds()
    if name not in kinds:
        raise LLMBuildError(f"unknown kind '{name}'{did_you_mean(name, kinds)}; known kinds: "
                            + ", ".join(sorted(kinds)), file=file, target=target)
    return kinds[name]


def marked_fields(model: BaseModel, marker: type, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted field name, marker, value) for every set field carrying `marker`, nested groups too."""
    found = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        for meta in info.metadata:
            if isinstance(meta, marker):
                found.append((prefix + name, meta, value))
        if isinstance(value, FieldGroup):
            found.extend(marked_fields(value, marker, prefix + name + "."))
    return found


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

    def check_gpus(self, ws: Workspace, world: int, source: str) -> None:
        """Its tp x pp ranks (from `source`, a field or target) need that many GPUs: the
        IDs it gets, or what the host offers."""
        given = getattr(self.fields, "gpus", None)
        if given is not None and len(given) != world:
            raise self.error(f"tp_size x pp_size is {world} (from {source}) but gpus lists "
                             f"{len(given)} device(s)", key="gpus")
        offered = ws.settings.host.gpus
        if offered is not None and world > offered:
            raise self.error(f"needs {world} GPUs (tp_size x pp_size, from {source}) but "
                             f"[tool.llmbuild.host] gpus = {offered}", key="gpus")

    def warn(self, ws: Workspace, message: str, key: str | None = None) -> None:
        ws.warnings.append(f"warning: {self.error(message, key=key)}")

    def dep(self, field_name: str) -> Target:
        return self.deps[field_name]
