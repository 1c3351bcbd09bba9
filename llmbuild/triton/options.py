"""The Triton knobs of a repository, as one pydantic model.

Every range and choice is a constraint of the field itself, so a bad value is
refused where it is written (the repository target's key in BUILD.toml), not
later while building. Checks that need the engine (a batch size above the
engine's, KV-cache reuse without paged context FMHA, ...) are made by
:func:`llmbuild.triton.build.build_configs`.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.errors import did_you_mean
from . import backend
from .backend import BACKEND_VERSION

#: tensorrt_llm parameters written from a field of their own or from the engine: not extra_parameters.
MANAGED_PARAMETERS = {
    "gpt_model_type": "batching_strategy",
    "gpt_model_path": "the engine the repository is built from",
    "max_beam_width": "the engine's build_config.max_beam_width",
    "batch_scheduler_policy": "batch_scheduler_policy",
    "kv_cache_free_gpu_mem_fraction": "kv_cache_free_gpu_mem_fraction",
    "max_tokens_in_paged_kv_cache": "max_tokens_in_paged_kv_cache",
    "max_attention_window_size": "max_attention_window_size",
    "enable_kv_cache_reuse": "enable_kv_cache_reuse",
    "enable_chunked_context": "enable_chunked_context",
    "exclude_input_in_output": "exclude_input_in_output",
    "gpu_device_ids": "gpu_device_ids",
}
DECODING_MODES = ("top_k", "top_p", "top_k_top_p", "beam_search", "medusa", "redrafter", "lookahead", "eagle")
#: What the C++ backend reads as a boolean.
BOOL_WORDS = {"true": True, "True": True, "TRUE": True, "1": True,
              "false": False, "False": False, "FALSE": False, "0": False}
#: GPU ids of instances: ',' within an instance, ';' between instances.
GPU_IDS = r"^\d+(,\d+)*(;\d+(,\d+)*)*$"


def bool_str(value: bool) -> str:
    return "true" if value else "false"


def _parameter_value(key: str, value: str | int | float | bool, kind: str) -> str:
    """`value` as the string the backend parses for a parameter of `kind`; ValueError if it cannot."""
    where = f"tensorrt_llm parameter '{key}'"
    text = bool_str(value) if isinstance(value, bool) else str(value)
    if text == "" or "${" in text:
        raise ValueError(f"{where}: value {text!r} is empty or an unfilled placeholder")
    if kind == "bool":
        if text not in BOOL_WORDS:
            raise ValueError(f"{where}: {text!r} is not a boolean (true/false)")
        return bool_str(BOOL_WORDS[text])
    if kind == "int" and not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"{where}: {text!r} is not an integer")
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{where}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: {text!r} is not a finite number")
    if key == "decoding_mode" and text not in DECODING_MODES:
        raise ValueError(f"{where}: {text!r} is not one of {', '.join(DECODING_MODES)}")
    if key == "participant_ids" and not re.match(GPU_IDS, text):
        raise ValueError(f"{where}: {text!r} is not a comma-separated list of ranks")
    return text


class ServingOptions(BaseModel):
    """The Triton knobs a user sets. ``None`` leaves the parameter out (the backend's default).

    Defaults follow the backend's ``docs/llama.md`` and the backends' own
    defaults; engine limits (batch size, beam width, sequence length) always
    come from the engine, never from here.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    decoupled: bool = Field(
        False, description="Decoupled tensorrt_llm and tensorrt_llm_bls: needed for streaming.")
    entrypoint: Literal["ensemble", "tensorrt_llm_bls"] = Field(
        "ensemble", description="The model clients call (smoke requests' default endpoint).")
    max_queue_delay_microseconds: int = Field(
        0, ge=0, description="tensorrt_llm dynamic_batching.max_queue_delay_microseconds.")
    max_queue_size: int = Field(
        0, ge=0, description="tensorrt_llm dynamic_batching default_queue_policy.max_queue_size (0: unbounded).")
    batching_strategy: Literal["inflight_fused_batching", "inflight_batching", "V1"] = Field(
        "inflight_fused_batching",
        description="tensorrt_llm gpt_model_type; in-flight batching needs a paged KV cache, the attention "
                    "plugin and packed input in the engine.")
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] | None = Field(
        None, description="tensorrt_llm batch_scheduler_policy.")
    kv_cache_free_gpu_mem_fraction: float | None = Field(
        None, gt=0, le=1, description="tensorrt_llm kv_cache_free_gpu_mem_fraction: share of free GPU memory "
                                      "for the KV cache, in (0, 1].")
    max_tokens_in_paged_kv_cache: int | None = Field(
        None, ge=1, description="tensorrt_llm max_tokens_in_paged_kv_cache.")
    max_attention_window_size: int | None = Field(
        None, ge=1, description="tensorrt_llm max_attention_window_size (default and maximum: the engine's "
                                "max_seq_len).")
    enable_kv_cache_reuse: bool | None = Field(
        None, description="tensorrt_llm enable_kv_cache_reuse; needs an engine with use_paged_context_fmha.")
    enable_chunked_context: bool | None = Field(
        None, description="tensorrt_llm enable_chunked_context; needs an engine with use_paged_context_fmha.")
    exclude_input_in_output: bool | None = Field(
        None, description="tensorrt_llm exclude_input_in_output: answers hold only the new tokens.")
    preprocessing_instance_count: int = Field(1, ge=1, description="preprocessing instance_group count.")
    postprocessing_instance_count: int = Field(1, ge=1, description="postprocessing instance_group count.")
    bls_instance_count: int = Field(1, ge=1, description="tensorrt_llm_bls instance_group count.")
    logits_datatype: Literal["TYPE_FP32", "TYPE_FP16"] = Field(
        "TYPE_FP32", description="Data type of the context and generation logits outputs.")
    accumulate_tokens: bool = Field(
        False, description="tensorrt_llm_bls accumulate_tokens: each streamed answer holds the whole text so far.")
    triton_max_batch_size: int | None = Field(
        None, ge=1, description="max_batch_size of the five models (default and maximum: the engine's).")
    extra_parameters: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description=f"Any other tensorrt_llm parameter of tensorrtllm_backend "
                                          f"{BACKEND_VERSION}, e.g. {{ normalize_log_probs = false }}.",
        json_schema_extra=lambda schema: schema.update(propertyNames={"enum": sorted(
            set(backend.tensorrt_llm_parameter_types()) - set(MANAGED_PARAMETERS))}))
    add_special_tokens: bool = Field(True, description="preprocessing add_special_tokens.")
    skip_special_tokens: bool = Field(True, description="postprocessing skip_special_tokens.")
    gpu_device_ids: str | None = Field(
        None, pattern=GPU_IDS, description="tensorrt_llm gpu_device_ids (GPU lane): ',' between the GPUs of "
                                           "one instance, ';' between instances, e.g. '0,1;2,3'.")
    serve_root: str = Field(
        "/models", pattern=r"^/", description="Absolute path the repository is mounted at in the serving "
                                              "container (GPU lane).")

    @field_validator("logits_datatype")
    @classmethod
    def _logits_in_this_backend(cls, value: str) -> str:
        if value != "TYPE_FP32":
            raise ValueError(f"logits_datatype {value} needs tensorrtllm_backend 0.17 or later; "
                             f"{BACKEND_VERSION} always returns TYPE_FP32 logits")
        return value

    @field_validator("extra_parameters")
    @classmethod
    def _known_parameters(cls, value: dict) -> dict[str, str]:
        """Known keys not set otherwise, values as the strings the backend parses (booleans as true/false)."""
        types = backend.tensorrt_llm_parameter_types()
        shipped = {k: v for k, v in backend.parameters("tensorrt_llm").items() if "${" not in v}
        checked = {}
        for key, raw in value.items():
            where = f"tensorrt_llm parameter '{key}'"
            if key not in types:
                raise ValueError(f"{where} is not a tensorrtllm_backend {BACKEND_VERSION} parameter"
                                 f"{did_you_mean(key, types)}")
            if key in MANAGED_PARAMETERS:
                raise ValueError(f"{where} is set by {MANAGED_PARAMETERS[key]}, not extra_parameters")
            if key in shipped:
                raise ValueError(f"{where} is '{shipped[key]}' as the backend ships it, not extra_parameters")
            checked[key] = _parameter_value(key, raw, types[key])
        return checked
