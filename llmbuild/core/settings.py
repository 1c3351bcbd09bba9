"""`[tool.llmbuild]` in a workspace's pyproject.toml, validated like targets."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import LLMBuildError
from .validation import describe_validation_error

PYPROJECT = "pyproject.toml"

#: Environment overrides, for CI runners that share a cache or pick a lane.
ENV_OVERRIDES = {
    "LLMBUILD_CACHE_DIR": "cache",
    "LLMBUILD_DIST_DIR": "dist",
    "LLMBUILD_LANE": "lane",
    "LLMBUILD_TRTLLM_VERSION": "trtllm_version",
    "LLMBUILD_TOOLCHAINS_DIR": "toolchains_dir",
}


class HostSettings(BaseModel):
    """Where a GPU host keeps TensorRT-LLM (the GPU lane's local executor)."""

    model_config = ConfigDict(extra="forbid")
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


class Settings(BaseModel):
    """`[tool.llmbuild]`: where BUILD.toml files, the cache and outputs are; which lane and toolchain."""

    model_config = ConfigDict(extra="forbid")

    build_roots: list[str] = Field(
        default_factory=lambda: ["."],
        description="Directories (relative to the workspace root) searched for BUILD.toml files.")
    ignore: list[str] = Field(
        default_factory=lambda: [".git", ".venv", "node_modules", "__pycache__"],
        description="Directory names never searched for BUILD.toml files.")
    cache: str = Field("cache", description="Action cache directory (may be shared between workspaces).")
    dist: str = Field("dist", description="Where stable links to outputs and run.json are written.")
    toolchains_dir: str | None = Field(
        None, description="Where llmbuild installs tools it provisions itself, such as the CPU "
        "lane's Triton (default: <cache>/toolchains).")
    lane: Literal["cpu", "gpu"] = Field(
        "cpu", description="cpu: llmbuild's CPU stand-ins; gpu: the real TensorRT-LLM tools.")
    trtllm_version: str | None = Field(
        None, description="The TensorRT-LLM version the toolchain stands for (default: llmbuild's default).")
    data_roots: list[str] = Field(
        default_factory=list,
        description="Absolute directories outside the workspace that source paths may point into.")
    container: str | None = Field(
        None, description="Address of the container target (e.g. 'toolchains/trtllm:image') whose "
        "image runs every step that does not name its own container.")
    host: HostSettings = Field(
        default_factory=HostSettings,
        description="[tool.llmbuild.host]: how this host runs TensorRT-LLM on the GPU lane, and what it offers.")


def find_workspace_root(start: Path) -> Path:
    """The nearest directory at or above `start` with `[tool.llmbuild]`."""
    for directory in [start, *start.parents]:
        candidate = directory / PYPROJECT
        if candidate.is_file() and "[tool.llmbuild" in candidate.read_text(errors="replace"):
            return directory
    raise LLMBuildError(
        f"no llmbuild workspace at or above {start}: expected a {PYPROJECT} with [tool.llmbuild]")


def load_settings(root: Path, environ: dict[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    path = root / PYPROJECT
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LLMBuildError(f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise LLMBuildError(f"invalid TOML: {err}", file=PYPROJECT) from None
    table = dict(data.get("tool", {}).get("llmbuild", {}))
    for variable, key in ENV_OVERRIDES.items():
        if environ.get(variable):
            table[key] = environ[variable]
    try:
        return Settings.model_validate(table)
    except ValidationError as err:
        key, message = describe_validation_error(err, Settings)
        raise LLMBuildError(message, file=PYPROJECT, target="[tool.llmbuild]", key=key) from None


def resolve_dir(root: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else root / path
