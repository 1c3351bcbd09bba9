"""The GPU lane on a host with TensorRT-LLM installed: the real programs, run locally."""

from __future__ import annotations

from typing import Any

from ..core.errors import LLMBuildError
from .base import Toolchain
from .trtllm import flags


class HostToolchain(Toolchain):
    lane = "gpu"

    def _identity(self) -> dict[str, Any]:
        return {"executor": "host"}

    def program(self, tool: str) -> list[str]:
        if not flags.has_tool(tool, self.trtllm_version):
            flags.check_flag(tool, self.trtllm_version, "")
        script = flags.script_path(tool, self.trtllm_version)
        if script is None:  # a console script such as trtllm-build
            return [tool]
        if not script.endswith(".py"):
            raise LLMBuildError(f"unexpected script for {tool}: {script}")
        host = self.ws.settings.host
        return [host.python, f"{host.trtllm_root.rstrip('/')}/{script}"]
