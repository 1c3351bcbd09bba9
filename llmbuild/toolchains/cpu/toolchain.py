"""The CPU lane: llmbuild's own stand-ins take the real tools' argv (development and CI)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...core.digests import code_digest
from ...core.errors import LLMBuildError
from ...core.protocols import Executor, Invocation, Program
from ...core.steps import PathArg, Step
from ..base import BaseToolchain, device_env
from ._common import TEST_BUILD_SECONDS

#: The CPU Triton server and its install serve and build nothing: not part of the stand-ins'
#: identity (a change to them must not rebuild checkpoints and engines).
SERVING_SOURCES = ("server.py", "install.py", "toolchain.py", "openai_server.py")
#: trtllm-build's configuration model, which the trtllm-build stand-in writes config.json with.
BUILD_CONFIG_SOURCE = Path(__file__).parent.parent / "trtllm" / "build_config.py"

STAND_INS = {
    "convert_checkpoint.py:llama": "llmbuild.toolchains.cpu.convert_checkpoint",
    "quantize.py": "llmbuild.toolchains.cpu.quantize",
    "trtllm-build": "llmbuild.toolchains.cpu.trtllm_build",
    "hf_ptq.py": "llmbuild.toolchains.cpu.hf_ptq",  # ModelOpt's, the engine-free lane's quantization
}


class CpuToolchain(BaseToolchain):
    lane = "cpu"

    def __init__(self, *, toolchains_dir: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.toolchains_dir = toolchains_dir

    def _identity(self) -> dict[str, Any]:
        sources = [p for p in Path(__file__).parent.glob("*.py") if p.name not in SERVING_SOURCES]
        return {"implementation": code_digest(*sources, BUILD_CONFIG_SOURCE)}

    def invocation(self, step: Step, paths: Mapping[PathArg, Path], work: Path,
                   gpus: tuple[int, ...] = ()) -> Invocation:
        invocation = super().invocation(step, paths, work, gpus)
        seconds = os.environ.get(TEST_BUILD_SECONDS)
        return replace(invocation, env={**invocation.env, TEST_BUILD_SECONDS: seconds}) if seconds else invocation

    def program(self, tool: str) -> Program:
        if tool not in STAND_INS:
            raise LLMBuildError(f"the CPU lane has no stand-in for {tool}")
        return Program(python_module=STAND_INS[tool])

    def server_identity(self) -> dict[str, Any]:
        from .install import TRITON_VERSION

        return {"tritonserver": TRITON_VERSION,
                "trtllm_serve_stand_in": code_digest(Path(__file__).parent / "openai_server.py")}

    def serving_command(self, repository: Path, *, executor: Executor, world_size: int) -> dict[str, Any]:
        from .install import planned_cpu_triton
        from .server import PLANNED_PORTS, SHM_DEFAULT_PREFIX, TritonServer

        env = planned_cpu_triton(self.toolchains_dir)
        argv = TritonServer(repository, env, log_path=Path("log.txt")).argv(
            ports=PLANNED_PORTS, shm_prefix=f"{SHM_DEFAULT_PREFIX}llmbuild_<pid>_<random>_")
        argv[argv.index("--model-repository") + 1] = str(repository)  # the dist link, not the entry behind it
        return {"tool": "tritonserver", "executor": "local", "argv": argv,
                "note": f"on this host, on free ports (not {'/'.join(map(str, PLANNED_PORTS))}), with "
                        f"PATH and LD_LIBRARY_PATH of the CPU Triton in {env.root}, on a hard-linked copy "
                        f"of the repository"}

    def serve(self, repository: Path, *, executor: Executor, log_path: Path, progress, world_size: int,
              gpus: tuple[int, ...] = ()):
        """The real Triton from the nvidia-pytriton wheel, installed under the cache on first use,
        on this host whatever executor runs the build steps (seeing the GPUs the smoke holds); for a
        repository with a serve.json (trtllm-serve), the OpenAI-compatible stand-in on its argv.
        The one-time install is a phase of its own, not counted in the smoke's seconds."""
        if (repository / "serve.json").is_file():
            from .openai_server import OpenAIStandIn

            progress("starting the CPU-lane trtllm-serve stand-in (llmbuild's PyTorch runtime, not TensorRT-LLM)")
            return OpenAIStandIn(repository, log_path=log_path, environment=device_env(gpus))
        from .install import ensure_cpu_triton, find_cpu_triton
        from .server import TritonServer

        env = find_cpu_triton(self.toolchains_dir)
        if env is None:
            with progress.aside("installing CPU Triton (one time)"):
                env = ensure_cpu_triton(self.toolchains_dir, progress=progress)
        limit = {"ready_timeout": self.serve_timeout} if self.serve_timeout else {}
        return TritonServer(repository, env, log_path=log_path, environment=device_env(gpus), progress=progress,
                            **limit)
