"""The toolchain seam: the same Step runs on either lane; only the program differs."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..core.steps import PathArg, Step
from .trtllm import flags

from pathlib import Path

if TYPE_CHECKING:
    from ..core.build import RunContext
    from ..core.workspace import Workspace

#: Secrets the real tools read from the environment: passed through, never recorded.
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
#: What a host step inherits from our environment.
PASSTHROUGH_ENV = (*SECRET_ENV, "HF_HOME", "CUDA_VISIBLE_DEVICES",
                   "NVIDIA_VISIBLE_DEVICES", "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR",
                   "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV")


def resolve(arg: str | PathArg, paths: dict[PathArg, Path]) -> str:
    if not isinstance(arg, PathArg):
        return arg
    base = paths[PathArg(arg.role, arg.field)]
    return str(base / arg.sub) if arg.sub else str(base)


class Toolchain(ABC):
    lane: str

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.trtllm_version = flags.resolve_version(ws.settings.trtllm_version or flags.DEFAULT_VERSION)

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What enters every key built with this toolchain."""
        return {"lane": self.lane, "trtllm_version": self.trtllm_version, **self._identity()}

    def _identity(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def program(self, tool: str) -> list[str]:
        """The argv prefix that runs `tool` on this lane."""

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in PASSTHROUGH_ENV}
        env["LLMBUILD_TRTLLM_VERSION"] = self.trtllm_version
        return env

    def command(self, step: Step, paths: dict[PathArg, Path]) -> list[str]:
        return self.program(step.tool) + [resolve(a, paths) for a in step.argv]

    def run(self, step: Step, ctx: RunContext) -> None:
        from ..executors.local import run_logged

        run_logged(self.command(step, ctx.paths(step)), cwd=ctx.work, log_path=ctx.log,
                   env=self.environment(), label=str(ctx.target.address))

    def device_identity(self) -> dict[str, Any]:
        """What an engine depends on besides its inputs: the TensorRT build and GPU it targets."""
        if self.lane != "gpu":
            return {}
        host = self.ws.settings.host
        return {"tensorrt_version": self.tensorrt_version or host.tensorrt_version, "gpu_arch": host.gpu_arch}

    tensorrt_version: str | None = None

    def serving_unavailable(self) -> str | None:
        """Why this toolchain cannot run Triton, or None."""
        return f"serving on the {self.lane} lane needs the container toolchain"

    def serve(self, repository: Path, *, log_path: Path, progress=print, world_size: int = 1):
        """A context manager running Triton on `repository`; yields an object with `http_url`."""
        raise NotImplementedError

    def server_identity(self) -> dict[str, Any]:
        """What enters the key of a step that serves (the Triton build used)."""
        return {}

    def describe(self, step: Step, paths: dict[PathArg, Path]) -> dict[str, Any]:
        """What `llmbuild plan` shows for a step."""
        return {"lane": self.lane, "tool": step.tool, "program": self.program(step.tool),
                "argv": self.command(step, paths), "gpus": step.gpus}
