"""The seams the core defines and never implements: toolchains, executors, plugins.

A *toolchain* says which programs a step runs and what identifies them (lane,
TensorRT-LLM / TensorRT versions, GPU architecture, the stand-ins' code). An
*executor* says where an argv runs (a local process, a Docker container, a Ray
worker). A step crosses the seam as an `Invocation`: placeholders for paths,
host paths for them, the GPUs it needs, and its environment with secrets named
but never valued, so it can be shipped to another machine and its identity
never holds a secret. A *remote cache* is a second action cache shared between
machines, behind the local one. `Plugins` is what a workspace is loaded with: the
kinds, the settings subsystems, the choice of toolchain and executor per target,
and the remote cache.
Implementations live outside `core/` (`llmbuild.plugins` wires the defaults).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from .steps import PathArg

if TYPE_CHECKING:
    from .cache import Staging
    from .progress import Progress
    from .target import Kind, Target
    from .workspace import Workspace


@dataclass(frozen=True)
class Program:
    """What runs: an argv prefix, or one of llmbuild's own Python modules (the CPU lane's
    stand-ins), which an executor runs with an interpreter that can import llmbuild."""

    argv: tuple[str, ...] = ()
    python_module: str | None = None

    def __post_init__(self) -> None:
        if bool(self.argv) == bool(self.python_module):
            raise ValueError("a Program is either an argv prefix or a python module")


@dataclass(frozen=True)
class Invocation:
    """One program run, ready for any executor.

    `args` keep their placeholders; `paths` give each placeholder's host path (inputs
    and the output directory). `env` holds plain values; `secret_env` only names variables
    the executor passes through from its own environment at run time."""

    program: Program
    args: tuple[str | PathArg, ...]
    paths: Mapping[PathArg, Path]
    work: Path
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()
    gpus: int = 0  # devices the step needs (tp x pp for an engine build)
    devices: tuple[int, ...] = ()  # the GPU IDs its target holds from the host's pool (env names them)
    uses_devices: bool = False  # real GPUs to request (False on the CPU lane)
    tensorrt_llm_runtime: bool = False  # the NCCL/MPI shared memory and ulimits TensorRT-LLM needs

    def resolved_args(self, where: Mapping[PathArg, str | Path] | None = None) -> list[str]:
        """The args with each placeholder replaced by its path in `where` (default: host paths)."""
        where = self.paths if where is None else where
        resolved = []
        for arg in self.args:
            if isinstance(arg, PathArg):
                base = str(where[PathArg(arg.role, arg.field)])
                arg = f"{base}/{arg.sub}" if arg.sub else base
            resolved.append(arg)
        return resolved

    def placeholders(self) -> set[PathArg]:
        """The base placeholders the args use, plus the output."""
        used = {PathArg(a.role, a.field) for a in self.args if isinstance(a, PathArg)}
        return used | {PathArg("out")}


@runtime_checkable
class Executor(Protocol):
    """Where an invocation runs."""

    name: str  # "local", "docker", "ray": what dist/run.json reports

    def run(self, invocation: Invocation, *, log_path: Path, label: str) -> None:
        """Run it to completion, output streamed to log_path; raise BuildFailed on failure."""

    def describe(self, invocation: Invocation) -> dict[str, Any]:
        """What `llmbuild plan` shows: the argv as it would run, and where."""

    def recover(self) -> list[str]:
        """At the start of a run: clean up what a killed earlier run left; one line per thing."""


class Server(Protocol):
    http_url: str


@runtime_checkable
class Toolchain(Protocol):
    """Which programs run, and the identity that enters every key built with them."""

    lane: str
    trtllm_version: str
    tensorrt_version: str | None
    gpu_arch: str | None
    gpus_offered: int  # the host's pool of GPUs steps take theirs from (0: demand not managed)
    gpus_origin: str  # where that number comes from, for messages
    gpu_memory_gib: float | None
    serve_timeout: float | None  # seconds its server may take to be ready, and a request (None: its own)

    @property
    def identity(self) -> dict[str, Any]: ...

    def device_identity(self) -> dict[str, Any]:
        """What a built engine depends on besides its inputs (TensorRT build, GPU arch)."""

    def invocation(self, step: Any, paths: Mapping[PathArg, Path], work: Path,
                   gpus: tuple[int, ...] = ()) -> Invocation:
        """The step's invocation; `gpus`: the IDs its target holds, which its tools see."""

    def serving_unavailable(self, executor: Executor) -> str | None: ...

    def server_identity(self) -> dict[str, Any]: ...

    def serving_command(self, repository: Path, *, executor: Executor, world_size: int) -> dict[str, Any]:
        """What `serve` would start, for `llmbuild plan`: {"tool", "argv"}, maybe "docker_run", "note"."""

    def serve(self, repository: Path, *, executor: Executor, log_path: Path,
              progress: Progress, world_size: int,
              gpus: tuple[int, ...] = ()) -> AbstractContextManager[Server]: ...


@runtime_checkable
class RemoteCache(Protocol):
    """A shared action cache behind the local one (read-through, write-through).

    The core never trusts it: every file `fetch` brings is verified against the manifest
    before the local commit. Problems are the implementation's to report: a corrupt or
    partial entry is said in one line and is a miss; an unreachable store is warned about
    once and is a miss from then on (or an LLMBuildError when the remote is required)."""

    url: str  # where it is, for messages (never a credential)
    writes: bool  # False when it may only be read

    def fetch(self, key: str, staging: Staging, *, label: str) -> dict[str, Any] | None:
        """Download the entry of `key` into `staging` (out/ and the log); return its manifest,
        or None when the remote has no entry to offer."""

    def discard(self, key: str) -> None:
        """The entry `fetch` brought for `key` failed verification: never offer it again."""

    def claim(self, key: str, *, label: str) -> AbstractContextManager[None]:
        """Held while this process builds `key`: a process elsewhere building the same key waits
        for this one's entry instead (a no-op when the remote cannot be written)."""

    def publish(self, key: str, entry: Path, manifest: dict[str, Any], *, label: str) -> None:
        """Upload a committed local entry: content first, manifest last; an entry already
        there is never overwritten (first writer wins)."""

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every entry it holds: {key: its manifest, with `size`, the bytes of its files}."""

    def stored_bytes(self) -> int:
        """What it stores, each content once however many entries name it."""

    def verify(self, key: str) -> str | None:
        """Read every file of the entry afresh and check it against the manifest: what is wrong
        (a few words naming the file), or None."""


class Builder(Protocol):
    """Where a target's whole build runs when not in this process (a Ray cluster): it leaves the
    entry in the remote cache, which the core then restores, every file verified."""

    name: str  # what dist/run.json reports as the row's executor

    def build(self, ws: Workspace, target: Target, key: str, document: Any) -> Any:
        """Build it elsewhere; return what ran there: `node`, `started`, `seconds`, `gpus`."""


@dataclass(frozen=True)
class Subsystem:
    """Settings in `[tool.llmbuild]` owned by one plugin (Pants' subsystems): its keys are
    the model's fields, validated by it; `env` maps environment overrides to keys."""

    model: type[BaseModel]
    env: Mapping[str, str] = field(default_factory=dict)


class Plugins(Protocol):
    """What a workspace is loaded with."""

    kinds: Mapping[str, Kind]
    subsystems: tuple[Subsystem, ...]

    def lane(self, ws: Workspace) -> str: ...

    def field_defaults(self, ws: Workspace) -> dict[str, Any]:
        """Workspace-wide defaults for target fields (below every [defaults] table)."""

    def toolchain_for(self, ws: Workspace, target: Target) -> Toolchain: ...

    def executor_for(self, ws: Workspace, target: Target) -> Executor: ...

    def remote_cache(self, ws: Workspace) -> RemoteCache | None:
        """The remote cache the workspace's settings name (None: none, or turned off)."""

    def builder_for(self, ws: Workspace, target: Target) -> Builder | None:
        """Where the target builds when not in this process (None: here)."""


def iter_subsystem_keys(subsystems: tuple[Subsystem, ...]) -> Iterator[tuple[str, Subsystem]]:
    for subsystem in subsystems:
        for key in subsystem.model.model_fields:
            yield key, subsystem
