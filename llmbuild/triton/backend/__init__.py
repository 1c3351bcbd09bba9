"""The tensorrtllm_backend interface the repositories reproduce, as data (``v<version>.json`` here).

Per model of the backend's ``all_models/inflight_batcher_llm`` repository: its
tensors (in ModelConfig's JSON field names: name, data_type, dims without the
batch dim, optional, allow_ragged_batch, reshape), its parameter keys with the
template's value (a ``${placeholder}``, or a literal the backend ships), and
the ensemble's steps; plus the value type the C++ tensorrt_llm backend parses
each parameter as, and docs/llama.md's fill for the one placeholder dtype.
Every section names the upstream file it was transcribed from. The generator
(``..build``) and the wiring checks (``..wiring``) read the interface from here
only.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

#: The tensorrtllm_backend release whose interface the repositories reproduce (pairs with TensorRT-LLM 0.16.0).
BACKEND_VERSION = "0.16.0"


@functools.cache
def interface(version: str = BACKEND_VERSION) -> dict[str, Any]:
    """The whole table of one backend version (read once; callers do not modify it)."""
    data = json.loads(resources.files(__package__).joinpath(f"v{version}.json").read_text(encoding="utf-8"))
    if data["version"] != version:
        raise RuntimeError(f"llmbuild/triton/backend/v{version}.json describes version {data['version']}")
    return data


#: The five models, in the order they are written and checked.
MODEL_NAMES: tuple[str, ...] = tuple(interface()["models"])


def model(name: str) -> dict[str, Any]:
    """One model's table: source, backend or platform, instance_group, input, output, parameters."""
    return interface()["models"][name]


def parameters(name: str) -> dict[str, str]:
    """Parameter key -> the template's value, for model `name`."""
    return model(name)["parameters"]


def ensemble_steps() -> list[dict[str, Any]]:
    """The ensemble's steps: model_name, model_version, input_map, output_map."""
    return model("ensemble")["step"]


def tensorrt_llm_parameter_types() -> dict[str, str]:
    """tensorrt_llm parameter key -> bool | int | float | str | int_list."""
    return interface()["tensorrt_llm_parameter_types"]["types"]


def default(placeholder: str) -> str:
    """docs/llama.md's value for a ``${placeholder}`` the generator has no knob for."""
    return interface()["defaults"]["values"][placeholder]
