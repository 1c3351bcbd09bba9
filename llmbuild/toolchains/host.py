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
        try:
            script = flags.script_path(tool, self.trtllm_version)
        except flags.FlagError as err:
            raise LLMBuildError(str(err)) from None
        if script is None:  # a console script such as trtllm-build
            return [tool]
        host = self.ws.settings.host
        return [host.python, f"{host.trtllm_root.rstrip('/')}/{script}"]
