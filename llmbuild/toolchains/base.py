"""What every toolchain shares: its identity, the environment tools get, and invocations."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from ..core.protocols import Executor, Invocation, Program
from ..core.redact import DEFAULT_SECRET_ENV
from ..core.steps import PathArg, Step
from .subsystem import GpuPool, HostSettings


class BaseToolchain:
    """A lane's programs for one TensorRT-LLM (and TensorRT) version."""

    lane: str
    uses_devices = False  # whether steps get real GPUs
    tensorrt_llm_runtime = False  # whether steps need TensorRT-LLM's shared memory and ulimits

    def __init__(self, *, trtllm_version: str, host: HostSettings, pool: GpuPool,
                 tensorrt_version: str | None = None, secret_env: tuple[str, ...] = DEFAULT_SECRET_ENV,
                 serve_timeout: float | None = None):
        self.trtllm_version = trtllm_version
        self.secret_env = secret_env  # names and globs: tools get what matches, by name (HF_TOKEN, ...)
        self.serve_timeout = serve_timeout  # a smoke's limit: its server's start, each request
        self.host = host
        self.tensorrt_version = tensorrt_version or host.tensorrt_version
        self.gpu_arch = host.gpu_arch
        self.gpus_offered, self.gpus_origin = pool
        self.gpu_memory_gib = host.gpu_memory_gib

    @cached_property
    def identity(self) -> dict[str, Any]:
        """What enters every key built with this toolchain."""
        return {"lane": self.lane, "trtllm_version": self.trtllm_version, **self._identity()}

    def _identity(self) -> dict[str, Any]:
        return {}

    @cached_property
    def engine_free(self) -> bool:
        """TensorRT-LLM >= 1.3.0rc21: no engines; kinds take the LLM-API lane (toolchains/llmapi)."""
        from .llmapi.tables import is_engine_free

        return is_engine_free(self.trtllm_version)

    @cached_property
    def llmapi_table(self) -> Any:
        """The version's LLM-API table (TorchLlmArgs keys, trtllm-serve options, the llmapi model)."""
        from .llmapi.tables import table_for

        return table_for(self.trtllm_version)

    def program(self, tool: str) -> Program:
        raise NotImplementedError

    def device_identity(self) -> dict[str, Any]:
        return {}

    def invocation(self, step: Step, paths: Mapping[PathArg, Path], work: Path,
                   gpus: tuple[int, ...] = ()) -> Invocation:
        return Invocation(program=self.program(step.tool), args=step.argv, paths=paths, work=work,
                          env={"LLMBUILD_TRTLLM_VERSION": self.trtllm_version, **device_env(gpus)},
                          secret_env=self.secret_env, gpus=step.gpus, devices=gpus, uses_devices=self.uses_devices,
                          tensorrt_llm_runtime=self.tensorrt_llm_runtime)

    def serving_unavailable(self, executor: Executor) -> str | None:
        return None

    def server_identity(self) -> dict[str, Any]:
        return {}


def device_env(gpus: tuple[int, ...]) -> dict[str, str]:
    """What a program holding `gpus` sees: exactly those devices, numbered as nvidia-smi (and
    Docker's device requests) number them, not fastest first as CUDA does by default."""
    if not gpus:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
