"""The toolchain subsystem: its `[tool.llmbuild]` settings and the fields of kinds that run tools.

It owns the lane, the TensorRT-LLM version, the default container, the host's pool of GPUs
and the GPU host's description; the core only hands it the keys it claims. The pool's size
lives here, not in the core's settings: its default comes from NVIDIA's tools and depends on
the lane; the core only takes slots from a pool of that size (`core/slots.py`).
"""

from __future__ import annotations

import functools
import subprocess
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core.errors import LLMBuildError
from ..core.protocols import Subsystem
from ..core.target import Ref, TargetFields
from .trtllm import flags

#: The field naming the container target whose image runs a target's steps.
CONTAINER_FIELD = "container"


class HostSettings(BaseModel):
    """Where a GPU host keeps TensorRT-LLM (the GPU lane's local executor)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    python: str = Field("python3", description="Interpreter that runs convert_checkpoint.py / quantize.py.")
    trtllm_root: str = Field(
        "/app/tensorrt_llm",
        description="TensorRT-LLM source checkout holding examples/ (the path inside NGC images).")
    tensorrt_version: str | None = Field(
        None, description="TensorRT version installed here (a container target declares its own).")
    gpu_arch: str | None = Field(
        None, description="GPU architecture engines are built for, e.g. 'sm_90' (H100); enters engine "
        "keys so a shared cache never restores an engine onto another kind of GPU.")
    gpu_memory_gib: float | None = Field(
        None, gt=0, description="Memory per GPU; engines whose weights + KV cache exceed it are warned about.")


class ToolchainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lane: Literal["cpu", "gpu"] = Field(
        "cpu", description="cpu: llmbuild's CPU stand-ins; gpu: the real TensorRT-LLM tools.")
    trtllm_version: str | None = Field(
        None, description="The TensorRT-LLM version the toolchain stands for (default: llmbuild's default).")
    container: str | None = Field(
        None, description="Address of the container target (e.g. 'toolchains/trtllm:image') whose "
        "image runs every step that does not name its own container.")
    toolchains_dir: str | None = Field(
        None, description="Where llmbuild installs tools it provisions itself, such as the CPU "
        "lane's Triton (default: <cache>/toolchains).")
    gpus: int | None = Field(
        None, ge=0, description="GPUs on this host that steps take theirs from: an engine build holds "
        "tp x pp of them, a smoke its engine's world size, any target the IDs its `gpus` lists, while "
        "it runs, and its tools see exactly those in CUDA_VISIBLE_DEVICES. Every doit process on the "
        "host using the same cache shares the pool. More than the pool offers is an error at load. "
        "Default: on the GPU lane what `nvidia-smi -L` lists, on the CPU lane 0; 0: GPU demand is "
        "not managed. On the CPU lane a number simulates that many GPUs (scheduling only).")
    host: HostSettings = Field(
        default_factory=HostSettings,
        description="[tool.llmbuild.host]: how this host runs TensorRT-LLM on the GPU lane, and what it offers.")

    @field_validator("trtllm_version")
    @classmethod
    def _known_version(cls, value: str | None) -> str | None:
        """An unknown version fails here, naming the setting, not when a toolchain is picked."""
        if value is not None:
            flags.resolve_version(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _host_gpus_moved(cls, data: Any) -> Any:
        """`[tool.llmbuild.host] gpus` became the pool's `gpus` (one setting, both lanes)."""
        host = data.get("host") if isinstance(data, dict) else None
        if isinstance(host, dict) and "gpus" in host:
            raise LLMBuildError(f"moved: write gpus = {host['gpus']!r} in [tool.llmbuild] (the host's pool "
                                f"of GPUs, on both lanes)", file="pyproject.toml", target="[tool.llmbuild]",
                                key="host.gpus")
        return data


SUBSYSTEM = Subsystem(ToolchainSettings, env={
    "LLMBUILD_LANE": "lane",
    "LLMBUILD_TRTLLM_VERSION": "trtllm_version",
    "LLMBUILD_TOOLCHAINS_DIR": "toolchains_dir",
    "LLMBUILD_GPUS": "gpus",
})


class GpuPool(NamedTuple):
    size: int  # 0: GPU demand is not managed
    origin: str  # where the size comes from, for messages


def gpu_pool(options: ToolchainSettings) -> GpuPool:
    """The declared `gpus`; else, on the GPU lane, what nvidia-smi lists; else 0. The CPU lane
    simulates GPUs only when a pool is declared: a laptop's CPU builds are never held back."""
    if options.gpus is not None:
        return GpuPool(options.gpus, "gpus in [tool.llmbuild]")
    if options.lane == "gpu":
        return GpuPool(nvidia_smi_gpus(), "the GPUs nvidia-smi -L lists")
    return GpuPool(0, "none declared")


@functools.cache
def nvidia_smi_gpus() -> int:
    """How many GPUs `nvidia-smi -L` lists (0 without nvidia-smi); asked once per process."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listed.returncode != 0:
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())


class ToolFields(TargetFields):
    """Fields of kinds that run programs: which container image runs them, on which GPUs."""

    container: Annotated[str | None, Ref("container")] = Field(
        None, description="The container target whose image runs this target's steps "
        "(default: `container` in [tool.llmbuild]; none: run on this host).")
    gpus: list[int] | None = Field(
        None, description="GPU IDs of the host's pool (`gpus` in [tool.llmbuild]) this target holds while "
        "it runs (default: any tp x pp free ones for an engine or a smoke; none for a checkpoint).")
