"""The toolchain subsystem: its `[tool.llmbuild]` settings and the fields of kinds that run tools.

It owns the lane, the TensorRT-LLM version, the default container, the host's pool of GPUs,
the GPU host's description, what tools get from the environment (secrets, by name) and how
long they may run; the core only hands it the keys it claims. The pool's size
lives here, not in the core's settings: its default comes from NVIDIA's tools and depends on
the lane; the core only takes slots from a pool of that size (`core/slots.py`).
"""

from __future__ import annotations

import functools
import re
import subprocess
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core.errors import LLMBuildError
from ..core.redact import DEFAULT_SECRET_ENV
from ..core.protocols import Subsystem
from ..core.target import Ref, TargetFields
from .llmapi.lane import engine_free_version
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
    modelopt_root: str = Field(
        "/app/Model-Optimizer", description="ModelOpt (Model-Optimizer) checkout holding examples/llm_ptq/hf_ptq.py, "
        "the engine-free lane's quantization.")
    tensorrt_version: str | None = Field(
        None, description="TensorRT version installed here (a container target declares its own).")
    gpu_arch: str | None = Field(
        None, description="GPU architecture engines are built for, e.g. 'sm_90' (H100); enters engine "
        "keys so a shared cache never restores an engine onto another kind of GPU.")
    gpu_memory_gib: float | None = Field(
        None, gt=0, description="Memory per GPU; engines whose weights + KV cache exceed it are warned about.")


#: How long a target's tools may run, by kind (a smoke: its server's start and its requests).
DEFAULT_TIMEOUTS = {"checkpoint": "2h", "engine": "4h", "smoke": "15m"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """Seconds in '90s', '10m', '2h', '1d' (None for 'none': no limit); ValueError otherwise."""
    if text == "none":
        return None
    match = _DURATION.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as '90s', '10m', '2h' or 'none'")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class ToolchainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lane: Literal["cpu", "gpu"] = Field(
        "cpu", description="cpu: llmbuild's CPU stand-ins; gpu: the real TensorRT-LLM tools.")
    trtllm_version: str | None = Field(
        None, description="The TensorRT-LLM version the toolchain stands for (default: llmbuild's default); "
        "1.3.0rc21 and later take the engine-free LLM-API lane.")
    trtllm_version_override: str | None = Field(
        None, description="A TensorRT-LLM version forced on every target, over its container's and its own "
        "trtllm_version (what `llmbuild plan --trtllm-version` sets): shows what each target becomes there.")
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
    secret_env: list[str] = Field(
        default_factory=list, description="Environment variables that are secrets, as names or shell "
        "globs (e.g. 'MY_*_KEY'), added to the built-in ones: " + ", ".join(DEFAULT_SECRET_ENV) + ". Tools "
        "get them from llmbuild's environment by name; their values never enter keys, manifests, logs, "
        "error messages, run.json or plan output (replaced by '<NAME redacted>'). In the environment: "
        "comma-separated.")
    timeouts: dict[str, str] = Field(
        default_factory=dict, description="How long a target's tools may run, by kind, e.g. "
        "{ engine = \"2h\", smoke = \"10m\" } (s, m, h, d; 'none': no limit), over the defaults "
        + ", ".join(f"{kind} {limit}" for kind, limit in DEFAULT_TIMEOUTS.items()) + ". A tool still "
        "running then is stopped with its process group (or its container), its log kept; only that "
        "target fails. A smoke's limit bounds its server's start and each request. In the environment: 'engine=2h,smoke=10m'.")
    host: HostSettings = Field(
        default_factory=HostSettings,
        description="[tool.llmbuild.host]: how this host runs TensorRT-LLM on the GPU lane, and what it offers.")

    @field_validator("trtllm_version", "trtllm_version_override")
    @classmethod
    def _known_version(cls, value: str | None) -> str | None:
        """An unknown version fails here, naming the setting, not when a toolchain is picked."""
        if value is not None:
            resolve_version(value)
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


    @field_validator("secret_env", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """LLMBUILD_SECRET_ENV gives a string."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("timeouts", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """LLMBUILD_TIMEOUTS gives 'kind=duration,...'."""
        if not isinstance(value, str):
            return value
        pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"{value!r}: expected 'kind=duration,...', e.g. 'engine=2h,smoke=10m'")
        return {kind.strip(): limit.strip() for kind, limit in pairs}

    @field_validator("timeouts")
    @classmethod
    def _durations(cls, value: dict[str, str]) -> dict[str, str]:
        for limit in value.values():
            parse_duration(limit)
        return value

    def timeout(self, kind: str) -> float | None:
        """Seconds the tools of a target of `kind` may run (None: no limit)."""
        return parse_duration({**DEFAULT_TIMEOUTS, **self.timeouts}.get(kind, "none"))


SUBSYSTEM = Subsystem(ToolchainSettings, env={
    "LLMBUILD_LANE": "lane",
    "LLMBUILD_TRTLLM_VERSION": "trtllm_version",
    "LLMBUILD_TRTLLM_VERSION_OVERRIDE": "trtllm_version_override",
    "LLMBUILD_TOOLCHAINS_DIR": "toolchains_dir",
    "LLMBUILD_GPUS": "gpus",
    "LLMBUILD_SECRET_ENV": "secret_env",
    "LLMBUILD_TIMEOUTS": "timeouts",
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


class VersionFields(TargetFields):
    """The TensorRT-LLM version a target is built for, when it is not its container's or the workspace's."""

    trtllm_version: str | None = Field(
        None, description="TensorRT-LLM version this target's toolchain stands for (default: its container's, "
        "else trtllm_version in [tool.llmbuild]); 1.3.0rc21 and later build in the engine-free LLM-API lane.")


class ToolFields(VersionFields):
    """Fields of kinds that run programs: which container image runs them, on which GPUs."""

    container: Annotated[str | None, Ref("container")] = Field(
        None, description="The container target whose image runs this target's steps "
        "(default: `container` in [tool.llmbuild]; none: run on this host).")
    gpus: list[int] | None = Field(
        None, description="GPU IDs of the host's pool (`gpus` in [tool.llmbuild]) this target holds while "
        "it runs (default: any tp x pp free ones for an engine or a smoke; none for a checkpoint).")


def resolve_version(name: str) -> str:
    """An engine-free version (>= 1.3.0rc21) its LLM-API table knows, else one of the flag tables'."""
    return engine_free_version(name) or flags.resolve_version(name)
