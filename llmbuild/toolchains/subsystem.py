"""The toolchain subsystem: its `[tool.llmbuild]` settings and the fields of kinds that run tools.

It owns the lane, the TensorRT-LLM version, the default container and the GPU host's
description; the core only hands it the keys it claims.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..core.protocols import Subsystem
from ..core.target import Ref, TargetFields

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
    gpus: int | None = Field(None, gt=0, description="GPUs this host offers (checked against tp x pp).")
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
    host: HostSettings = Field(
        default_factory=HostSettings,
        description="[tool.llmbuild.host]: how this host runs TensorRT-LLM on the GPU lane, and what it offers.")


SUBSYSTEM = Subsystem(ToolchainSettings, env={
    "LLMBUILD_LANE": "lane",
    "LLMBUILD_TRTLLM_VERSION": "trtllm_version",
    "LLMBUILD_TOOLCHAINS_DIR": "toolchains_dir",
})


class ToolFields(TargetFields):
    """Fields of kinds that run programs: which container image runs them, on which GPUs."""

    container: Annotated[str | None, Ref("container")] = Field(
        None, description="The container target whose image runs this target's steps "
        "(default: `container` in [tool.llmbuild]; none: run on this host).")
    gpus: list[int] | None = Field(
        None, description="GPU device IDs this target's steps get (GPU lane; default: any tp x pp GPUs).")
