"""What a kind sees of the world: a narrow view, never the whole workspace.

Its own fields and resolved sources, each dependency's address and published facts
(Bazel's providers: an engine publishes its build limits, a repository what serving
needs), the toolchain and lane it builds with, and a way to report errors and
warnings that name its file, target and key.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .addresses import Address
from .errors import LLMBuildError

if TYPE_CHECKING:
    from .protocols import Toolchain
    from .target import Target, TargetFields
    from .workspace import Workspace


@dataclass(frozen=True)
class Dependency:
    """A dependency as a dependent sees it: where it is and what it publishes."""

    address: Address
    kind: str
    facts: dict[str, Any]


class KindContext:
    def __init__(self, ws: Workspace, target: Target):
        self._ws = ws
        self._target = target
        self.address: Address = target.address
        self.fields: TargetFields = target.fields
        self.sources: dict[str, Path] = target.sources
        self.lane: str = ws.lane
        #: False for plan/render on a machine without the sources: checks that read them skip.
        self.verify_sources: bool = ws.verify_sources

    @cached_property
    def toolchain(self) -> Toolchain:
        return self._ws.toolchain_for(self._target)

    def serving_unavailable(self) -> str | None:
        """Why this target's toolchain and executor cannot run a server, or None."""
        return self.toolchain.serving_unavailable(self._ws.executor_for(self._target))

    def serving_command(self, repository: Path, world_size: int) -> dict[str, Any]:
        """The server this target's toolchain and executor would start on `repository` (for plans)."""
        return self.toolchain.serving_command(repository, executor=self._ws.executor_for(self._target),
                                              world_size=world_size)

    def dep_link(self, field: str) -> Path:
        """Where a dependency's current output is linked under dist/."""
        return self._ws.dist_link(self._target.deps[field])

    @property
    def unavailable(self) -> str | None:
        return self._target.unavailable

    def own_facts(self) -> dict[str, Any]:
        """What this target publishes (computed once, through its kind's `facts`)."""
        return self._ws.facts(self._target)

    def has_dep(self, field: str) -> bool:
        return field in self._target.deps

    def dep(self, field: str) -> Dependency:
        target = self._target.deps[field]
        return Dependency(target.address, target.kind.name, self._ws.facts(target))

    def facts_of(self, field: str) -> dict[str, Any]:
        return self.dep(field).facts

    def error(self, message: str, key: str | None = None) -> LLMBuildError:
        return self._target.error(message, key=key)

    def warn(self, message: str, key: str | None = None) -> None:
        self._ws.warnings.append(f"warning: {self.error(message, key=key)}")
