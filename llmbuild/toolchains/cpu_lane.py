"""The CPU lane: llmbuild's own stand-ins take the real tools' argv (development and CI)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..core.digests import code_digest
from ..core.errors import LLMBuildError
from .base import Toolchain

STAND_INS = {
    "convert_checkpoint.py:llama": "llmbuild.toolchains.cpu.convert_checkpoint",
    "quantize.py": "llmbuild.toolchains.cpu.quantize",
    "trtllm-build": "llmbuild.toolchains.cpu.trtllm_build",
}
CPU_SOURCES = Path(__file__).parent / "cpu"
#: The CPU Triton server and its install: they serve and build nothing, so they are not part
#: of the stand-ins' identity (a change to them must not rebuild checkpoints and engines).
SERVING_SOURCES = ("server.py", "install.py")
#: trtllm-build's configuration model, which the trtllm-build stand-in writes config.json with.
BUILD_CONFIG_SOURCE = Path(__file__).parent / "trtllm" / "build_config.py"


class CpuToolchain(Toolchain):
    lane = "cpu"

    def _identity(self) -> dict[str, Any]:
        sources = [p for p in CPU_SOURCES.glob("*.py") if p.name not in SERVING_SOURCES]
        return {"implementation": code_digest(*sources, BUILD_CONFIG_SOURCE)}

    def serving_unavailable(self) -> str | None:
        return None

    def serve(self, repository: Path, *, log_path: Path, progress=print, world_size: int = 1):
        """The real Triton from the nvidia-pytriton wheel, installed under the cache on first use."""
        from .cpu.install import ensure_cpu_triton
        from .cpu.server import TritonServer

        env = ensure_cpu_triton(self.ws.toolchains_dir, progress=progress)
        return TritonServer(repository, env, log_path=log_path)

    def server_identity(self) -> dict[str, Any]:
        from .cpu.install import TRITON_VERSION

        return {"tritonserver": TRITON_VERSION}

    def program(self, tool: str) -> list[str]:
        if tool not in STAND_INS:
            raise LLMBuildError(f"the CPU lane has no stand-in for {tool}")
        return [sys.executable, "-m", STAND_INS[tool]]
