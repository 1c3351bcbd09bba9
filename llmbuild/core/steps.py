"""What a target's build consists of: argv lists whose paths are placeholders.

Keys see the placeholders, never real paths, so a key does not depend on where
the workspace, the cache or a source lives. Executors swap in real paths (host
paths, or mount points inside a container).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union


@dataclass(frozen=True)
class PathArg:
    """A path in an argv: a source field, a dependency's output, or this target's output."""

    role: Literal["source", "dep", "out"]
    field: str = ""
    sub: str = ""

    def placeholder(self) -> str:
        name = self.role if self.role == "out" else f"{self.role}:{self.field}"
        return "${" + name + "}" + (f"/{self.sub}" if self.sub else "")


OUT = PathArg("out")
Arg = Union[str, PathArg]


@dataclass(frozen=True)
class Step:
    """One program run. `tool` names the program as the toolchain knows it."""

    tool: str
    argv: tuple[Arg, ...]
    gpus: int = 0  # GPUs the step needs on the GPU lane (tp x pp for engine builds)

    def key_document(self) -> dict[str, Any]:
        return {"tool": self.tool,
                "argv": [a.placeholder() if isinstance(a, PathArg) else a for a in self.argv]}


@dataclass(frozen=True)
class Plan:
    """The consumed parameters (canonical: defaults dropped) and the steps."""

    params: dict[str, Any]
    steps: tuple[Step, ...] = ()
    extra_identity: dict[str, Any] = field(default_factory=dict)  # e.g. digest of generator code
    #: GPUs the target holds while it runs, taken from the host's pool: how many (any free
    #: ones), or exactly these IDs. Not in the key: which devices ran a build does not change it.
    gpus: int | tuple[int, ...] = 0
    #: Files the kind writes itself, {name: text}, shown by `llmbuild plan` (e.g. a generated YAML).
    #: Not in the key: the params they come from are.
    files: dict[str, str] = field(default_factory=dict)
