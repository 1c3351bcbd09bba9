"""The five ``config.pbtxt`` of a TensorRT-LLM Triton model repository, built as protobuf.

The repository is the one of the TensorRT-LLM backend's ``inflight_batcher_llm``
(tensorrtllm_backend v0.16.0, which pairs with TensorRT-LLM 0.16.0): models
``preprocessing``, ``tensorrt_llm``, ``postprocessing``, ``ensemble`` and
``tensorrt_llm_bls``, with the backend's own model, tensor and parameter names,
dtypes and dims (text-only, but the multimodal and optional tensors and the
parameter keys the stock model.py files index are kept, so a user can swap in
the stock preprocessing/postprocessing/BLS or their own).

Every config is a ``tritonclient.grpc.model_config_pb2.ModelConfig`` filled
from the tables below and the engine's own ``config.json``; nothing is a
template, so there is no placeholder to leave unfilled. Unset knobs are left
out (the backends then use their defaults) instead of being written as
``${x}``. :func:`check_wiring` checks the contract between the files before
anything is written.

Paths in parameters are relative to the repository root (``tokenizer_dir``,
the preprocessing ``gpt_model_path``, the CPU lane's engine); our model.py
files resolve them against the root, so the same repository works at any host
path and mounted at ``serve_root`` in a container. Only the GPU lane's
``tensorrt_llm`` (the C++ backend, which does not resolve relative paths)
gets an absolute ``<serve_root>/tensorrt_llm/1/engine``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc.model_config_pb2 import ModelConfig

from ..core.errors import LLMBuildError, did_you_mean

__all__ = [
    "BACKEND_VERSION",
    "ENGINE_DIR",
    "MODEL_NAMES",
    "TOKENIZER_DIR",
    "ModelConfig",
    "RepositoryError",
    "ServingOptions",
    "build_configs",
    "check_wiring",
    "tensorrt_llm_parameter_keys",
    "to_pbtxt",
]

#: The tensorrtllm_backend release whose interface these configs reproduce.
BACKEND_VERSION = "0.16.0"
#: The five models, in the order they are written and checked.
MODEL_NAMES = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")
#: Where the repository keeps the tokenizer and the engine, relative to its root.
TOKENIZER_DIR = "preprocessing/1/tokenizer"
ENGINE_DIR = "tensorrt_llm/1/engine"

Lane = Literal["cpu", "gpu"]


class RepositoryError(LLMBuildError, ValueError):
    """An inconsistent or impossible repository; the message is one line naming the model and key."""


# --------------------------------------------------------------------------------------------
# Tensor tables (tensorrtllm_backend v0.16.0, all_models/inflight_batcher_llm/*/config.pbtxt).
# (name, dtype without TYPE_, dims without the batch dim, flags): flags are
# "opt" = optional, "ragged" = allow_ragged_batch, "reshape" = reshape { shape: [] }.
# --------------------------------------------------------------------------------------------

_Spec = tuple[str, str, tuple[int, ...], str]

PREPROCESSING_INPUTS: tuple[_Spec, ...] = (
    ("QUERY", "STRING", (1,), ""),
    ("DECODER_QUERY", "STRING", (1,), "opt"),
    ("IMAGE_BYTES", "UINT8", (-1, -1, -1, -1), "opt"),
    ("IMAGE_URL", "STRING", (1,), "opt"),
    ("VIDEO_BYTES", "UINT8", (-1, -1, -1, -1), "opt"),
    ("REQUEST_OUTPUT_LEN", "INT32", (1,), ""),
    ("BAD_WORDS_DICT", "STRING", (-1,), "opt"),
    ("STOP_WORDS_DICT", "STRING", (-1,), "opt"),
    ("EMBEDDING_BIAS_WORDS", "STRING", (-1,), "opt"),
    ("EMBEDDING_BIAS_WEIGHTS", "FP32", (-1,), "opt"),
    ("END_ID", "INT32", (1,), "opt"),
    ("PAD_ID", "INT32", (1,), "opt"),
    ("PROMPT_TABLE_EXTRA_ID", "UINT64", (1,), "opt"),
)
PREPROCESSING_OUTPUTS: tuple[_Spec, ...] = (
    ("INPUT_ID", "INT32", (-1,), ""),
    ("REQUEST_INPUT_LEN", "INT32", (1,), ""),
    ("DECODER_INPUT_ID", "INT32", (-1,), ""),
    ("REQUEST_DECODER_INPUT_LEN", "INT32", (1,), ""),
    ("BAD_WORDS_IDS", "INT32", (2, -1), ""),
    ("STOP_WORDS_IDS", "INT32", (2, -1), ""),
    ("EMBEDDING_BIAS", "FP32", (-1,), ""),
    # [-1] feeding tensorrt_llm's [1] input is what the backend ships; it loads fine.
    ("REQUEST_OUTPUT_LEN", "INT32", (-1,), ""),
    ("OUT_END_ID", "INT32", (1,), ""),
    ("OUT_PAD_ID", "INT32", (1,), ""),
    ("OUT_PROMPT_TABLE_EXTRA_IDS", "UINT64", (-1,), ""),
    ("PIXEL_VALUES", "FP16", (-1, -1, -1, -1), ""),
    ("ASPECT_RATIO_IDS", "INT64", (-1,), ""),
    ("ASPECT_RATIO_MASK", "INT64", (-1, -1), ""),
    ("CROSS_ATTENTION_MASK", "INT64", (-1, -1, -1), ""),
    ("IMAGE_SIZES", "INT64", (2,), ""),
    ("IS_VIDEO_INPUT", "BOOL", (1,), ""),
)

TENSORRT_LLM_INPUTS: tuple[_Spec, ...] = (
    ("input_ids", "INT32", (-1,), "opt ragged"),
    ("encoder_input_features", "FP16", (-1, -1), "opt ragged"),
    ("encoder_output_lengths", "INT32", (1,), "opt reshape"),
    ("input_lengths", "INT32", (1,), "reshape"),
    ("request_output_len", "INT32", (1,), "reshape"),
    ("num_return_sequences", "INT32", (1,), "opt reshape"),
    ("draft_input_ids", "INT32", (-1,), "opt ragged"),
    ("decoder_input_ids", "INT32", (-1,), "opt ragged"),
    ("decoder_input_lengths", "INT32", (1,), "opt reshape"),
    ("draft_logits", "FP32", (-1, -1), "opt ragged"),
    ("draft_acceptance_threshold", "FP32", (1,), "opt reshape"),
    ("end_id", "INT32", (1,), "opt reshape"),
    ("pad_id", "INT32", (1,), "opt reshape"),
    ("stop_words_list", "INT32", (2, -1), "opt ragged"),
    ("bad_words_list", "INT32", (2, -1), "opt ragged"),
    ("embedding_bias", "FP32", (-1,), "opt ragged"),
    ("beam_width", "INT32", (1,), "opt reshape"),
    ("temperature", "FP32", (1,), "opt reshape"),
    ("runtime_top_k", "INT32", (1,), "opt reshape"),
    ("runtime_top_p", "FP32", (1,), "opt reshape"),
    ("runtime_top_p_min", "FP32", (1,), "opt reshape"),
    ("runtime_top_p_decay", "FP32", (1,), "opt reshape"),
    ("runtime_top_p_reset_ids", "INT32", (1,), "opt reshape"),
    ("len_penalty", "FP32", (1,), "opt reshape"),
    ("early_stopping", "BOOL", (1,), "opt reshape"),
    ("repetition_penalty", "FP32", (1,), "opt reshape"),
    ("min_length", "INT32", (1,), "opt reshape"),
    ("beam_search_diversity_rate", "FP32", (1,), "opt reshape"),
    ("presence_penalty", "FP32", (1,), "opt reshape"),
    ("frequency_penalty", "FP32", (1,), "opt reshape"),
    ("random_seed", "UINT64", (1,), "opt reshape"),
    ("return_log_probs", "BOOL", (1,), "opt reshape"),
    ("return_context_logits", "BOOL", (1,), "opt reshape"),
    ("return_generation_logits", "BOOL", (1,), "opt reshape"),
    ("return_kv_cache_reuse_stats", "BOOL", (1,), "opt reshape"),
    ("exclude_input_in_output", "BOOL", (1,), "opt reshape"),
    ("stop", "BOOL", (1,), "opt reshape"),
    ("streaming", "BOOL", (1,), "opt reshape"),
    ("prompt_embedding_table", "FP16", (-1, -1), "opt ragged"),
    ("prompt_table_extra_ids", "UINT64", (-1,), "opt ragged"),
    ("prompt_vocab_size", "INT32", (1,), "opt reshape"),
    ("cross_attention_mask", "BOOL", (-1, -1), "opt ragged"),
    ("lora_task_id", "UINT64", (1,), "opt reshape"),
    ("lora_weights", "FP16", (-1, -1), "opt ragged"),
    ("lora_config", "INT32", (-1, 3), "opt ragged"),
    ("context_phase_params", "UINT8", (-1,), "opt ragged"),
    ("skip_cross_attn_blocks", "BOOL", (1,), "opt ragged"),
)
TENSORRT_LLM_OUTPUTS: tuple[_Spec, ...] = (
    ("output_ids", "INT32", (-1, -1), ""),
    ("sequence_length", "INT32", (-1,), ""),
    ("cum_log_probs", "FP32", (-1,), ""),
    ("output_log_probs", "FP32", (-1, -1), ""),
    ("context_logits", "FP32", (-1, -1), ""),
    ("generation_logits", "FP32", (-1, -1, -1), ""),
    ("batch_index", "INT32", (1,), ""),
    ("sequence_index", "INT32", (1,), ""),
    ("context_phase_params", "UINT8", (-1,), ""),
    ("kv_cache_alloc_new_blocks", "INT32", (1,), ""),
    ("kv_cache_reused_blocks", "INT32", (1,), ""),
    ("kv_cache_alloc_total_blocks", "INT32", (1,), ""),
)

POSTPROCESSING_INPUTS: tuple[_Spec, ...] = (
    ("TOKENS_BATCH", "INT32", (-1, -1), ""),
    ("SEQUENCE_LENGTH", "INT32", (-1,), ""),
)
POSTPROCESSING_OUTPUTS: tuple[_Spec, ...] = (("OUTPUT", "STRING", (-1,), ""),)

ENSEMBLE_INPUTS: tuple[_Spec, ...] = (
    ("text_input", "STRING", (1,), ""),
    ("decoder_text_input", "STRING", (1,), "opt"),
    ("max_tokens", "INT32", (1,), ""),
    ("num_return_sequences", "INT32", (1,), "opt"),
    ("bad_words", "STRING", (-1,), "opt"),
    ("stop_words", "STRING", (-1,), "opt"),
    ("exclude_input_in_output", "BOOL", (1,), "opt"),
    ("end_id", "INT32", (1,), "opt"),
    ("pad_id", "INT32", (1,), "opt"),
    ("top_k", "INT32", (1,), "opt"),
    ("top_p", "FP32", (1,), "opt"),
    ("temperature", "FP32", (1,), "opt"),
    ("length_penalty", "FP32", (1,), "opt"),
    ("repetition_penalty", "FP32", (1,), "opt"),
    ("min_length", "INT32", (1,), "opt"),
    ("presence_penalty", "FP32", (1,), "opt"),
    ("frequency_penalty", "FP32", (1,), "opt"),
    ("random_seed", "UINT64", (1,), "opt"),
    ("return_log_probs", "BOOL", (1,), "opt"),
    ("return_context_logits", "BOOL", (1,), "opt"),
    ("return_generation_logits", "BOOL", (1,), "opt"),
    ("return_kv_cache_reuse_stats", "BOOL", (1,), "opt"),
    ("beam_width", "INT32", (1,), "opt"),
    ("stream", "BOOL", (1,), "opt"),
    ("prompt_embedding_table", "FP16", (-1, -1), "opt"),
    ("prompt_table_extra_id", "UINT64", (1,), "opt"),
    ("prompt_vocab_size", "INT32", (1,), "opt"),
    ("embedding_bias_words", "STRING", (-1,), "opt"),
    ("embedding_bias_weights", "FP32", (-1,), "opt"),
    ("lora_task_id", "UINT64", (1,), "opt"),
    ("lora_weights", "FP16", (-1, -1), "opt ragged"),
    ("lora_config", "INT32", (-1, 3), "opt ragged"),
)
#: Ensemble and BLS outputs: text_output, then every tensorrt_llm output except
#: output_ids, sequence_length and context_phase_params (same order, dtype, dims).
_ENTRY_OUTPUT_SKIP = frozenset({"output_ids", "sequence_length", "context_phase_params"})
ENTRY_OUTPUTS: tuple[_Spec, ...] = (("text_output", "STRING", (-1,), ""),) + tuple(
    s for s in TENSORRT_LLM_OUTPUTS if s[0] not in _ENTRY_OUTPUT_SKIP
)

BLS_INPUTS: tuple[_Spec, ...] = (
    ("text_input", "STRING", (1,), ""),
    ("decoder_text_input", "STRING", (1,), "opt"),
    ("image_input", "FP16", (-1, 3, -1, -1), "opt"),
    ("image_bytes_input", "UINT8", (-1, -1, -1, -1), "opt"),
    ("image_url_input", "STRING", (1,), "opt"),
    ("video_bytes_input", "UINT8", (-1, -1, -1, -1), "opt"),
    ("max_tokens", "INT32", (1,), ""),
    ("bad_words", "STRING", (-1,), "opt"),
    ("stop_words", "STRING", (-1,), "opt"),
    ("exclude_input_in_output", "BOOL", (1,), "opt"),
    ("end_id", "INT32", (1,), "opt"),
    ("pad_id", "INT32", (1,), "opt"),
    ("top_k", "INT32", (1,), "opt"),
    ("top_p", "FP32", (1,), "opt"),
    ("temperature", "FP32", (1,), "opt"),
    ("length_penalty", "FP32", (1,), "opt"),
    ("repetition_penalty", "FP32", (1,), "opt"),
    ("min_length", "INT32", (1,), "opt"),
    ("presence_penalty", "FP32", (1,), "opt"),
    ("frequency_penalty", "FP32", (1,), "opt"),
    ("random_seed", "UINT64", (1,), "opt"),
    ("return_log_probs", "BOOL", (1,), "opt reshape"),
    ("return_context_logits", "BOOL", (1,), "opt reshape"),
    ("return_generation_logits", "BOOL", (1,), "opt reshape"),
    ("num_return_sequences", "INT32", (1,), "opt reshape"),
    ("beam_width", "INT32", (1,), "opt"),
    ("stream", "BOOL", (1,), "opt"),
    ("prompt_embedding_table", "FP16", (-1, -1), "opt"),
    ("prompt_vocab_size", "INT32", (1,), "opt"),
    ("prompt_table_extra_id", "UINT64", (1,), "opt"),
    ("embedding_bias_words", "STRING", (-1,), "opt"),
    ("embedding_bias_weights", "FP32", (-1,), "opt"),
    ("num_draft_tokens", "INT32", (1,), "opt"),
    ("use_draft_logits", "BOOL", (1,), "opt reshape"),
    ("lora_task_id", "UINT64", (1,), "opt reshape"),
    ("lora_weights", "FP16", (-1, -1), "opt ragged"),
    ("lora_config", "INT32", (-1, 3), "opt ragged"),
    ("return_kv_cache_reuse_stats", "BOOL", (1,), "opt reshape"),
)

# Ensemble wiring: (step model, {step input: ensemble tensor}, {step output: ensemble tensor}).
ENSEMBLE_STEPS: tuple[tuple[str, dict[str, str], dict[str, str]], ...] = (
    (
        "preprocessing",
        {
            "QUERY": "text_input",
            "DECODER_QUERY": "decoder_text_input",
            "REQUEST_OUTPUT_LEN": "max_tokens",
            "BAD_WORDS_DICT": "bad_words",
            "STOP_WORDS_DICT": "stop_words",
            "EMBEDDING_BIAS_WORDS": "embedding_bias_words",
            "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights",
            "END_ID": "end_id",
            "PAD_ID": "pad_id",
            "PROMPT_TABLE_EXTRA_ID": "prompt_table_extra_id",
        },
        {
            "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN",
            "INPUT_ID": "_INPUT_ID",
            "REQUEST_DECODER_INPUT_LEN": "_REQUEST_DECODER_INPUT_LEN",
            "DECODER_INPUT_ID": "_DECODER_INPUT_ID",
            "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN",
            "STOP_WORDS_IDS": "_STOP_WORDS_IDS",
            "BAD_WORDS_IDS": "_BAD_WORDS_IDS",
            "EMBEDDING_BIAS": "_EMBEDDING_BIAS",
            "OUT_END_ID": "_PREPROCESSOR_END_ID",
            "OUT_PAD_ID": "_PREPROCESSOR_PAD_ID",
            "OUT_PROMPT_TABLE_EXTRA_IDS": "_OUT_PROMPT_TABLE_EXTRA_IDS",
        },
    ),
    (
        "tensorrt_llm",
        {
            "input_ids": "_INPUT_ID",
            "decoder_input_ids": "_DECODER_INPUT_ID",
            "input_lengths": "_REQUEST_INPUT_LEN",
            "decoder_input_lengths": "_REQUEST_DECODER_INPUT_LEN",
            "exclude_input_in_output": "exclude_input_in_output",
            "request_output_len": "_REQUEST_OUTPUT_LEN",
            "end_id": "_PREPROCESSOR_END_ID",
            "pad_id": "_PREPROCESSOR_PAD_ID",
            "embedding_bias": "_EMBEDDING_BIAS",
            "runtime_top_k": "top_k",
            "runtime_top_p": "top_p",
            "temperature": "temperature",
            "len_penalty": "length_penalty",
            "repetition_penalty": "repetition_penalty",
            "min_length": "min_length",
            "presence_penalty": "presence_penalty",
            "frequency_penalty": "frequency_penalty",
            "random_seed": "random_seed",
            "return_log_probs": "return_log_probs",
            "return_context_logits": "return_context_logits",
            "return_generation_logits": "return_generation_logits",
            "return_kv_cache_reuse_stats": "return_kv_cache_reuse_stats",
            "num_return_sequences": "num_return_sequences",
            "beam_width": "beam_width",
            "streaming": "stream",
            "prompt_embedding_table": "prompt_embedding_table",
            "prompt_vocab_size": "prompt_vocab_size",
            "stop_words_list": "_STOP_WORDS_IDS",
            "bad_words_list": "_BAD_WORDS_IDS",
            "prompt_table_extra_ids": "_OUT_PROMPT_TABLE_EXTRA_IDS",
            "lora_task_id": "lora_task_id",
            "lora_weights": "lora_weights",
            "lora_config": "lora_config",
        },
        {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH"}
        | {s[0]: s[0] for s in ENTRY_OUTPUTS if s[0] != "text_output"},
    ),
    (
        "postprocessing",
        {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"},
        {"OUTPUT": "text_output"},
    ),
)

#: What our BLS model.py (and the stock one) call: model -> (inputs it sends, outputs it asks for).
#: The BLS hard-codes the preprocessing/postprocessing names; the LLM's comes from a parameter.
BLS_CONTRACT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "preprocessing": (
        ("QUERY", "REQUEST_OUTPUT_LEN", "BAD_WORDS_DICT", "STOP_WORDS_DICT", "EMBEDDING_BIAS_WORDS",
         "EMBEDDING_BIAS_WEIGHTS", "END_ID", "PAD_ID", "DECODER_QUERY", "PROMPT_TABLE_EXTRA_ID"),
        ("INPUT_ID", "REQUEST_INPUT_LEN", "DECODER_INPUT_ID", "REQUEST_DECODER_INPUT_LEN", "BAD_WORDS_IDS",
         "STOP_WORDS_IDS", "EMBEDDING_BIAS", "OUT_END_ID", "OUT_PAD_ID", "OUT_PROMPT_TABLE_EXTRA_IDS"),
    ),
    "tensorrt_llm": (
        ("input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "bad_words_list",
         "stop_words_list", "embedding_bias", "streaming", "exclude_input_in_output",
         "return_context_logits", "return_generation_logits"),
        ("output_ids", "sequence_length"),
    ),
    "postprocessing": (("TOKENS_BATCH", "SEQUENCE_LENGTH"), ("OUTPUT",)),
}

# --------------------------------------------------------------------------------------------
# tensorrt_llm parameters (v0.16.0 template: 37 keys) and the kind of value each takes.
# --------------------------------------------------------------------------------------------

_BOOL, _INT, _FLOAT, _STR = "bool", "int", "float", "str"
_TRTLLM_PARAMETERS: Mapping[str, str] = MappingProxyType({
    "max_beam_width": _INT,
    "FORCE_CPU_ONLY_INPUT_TENSORS": _STR,
    "gpt_model_type": _STR,
    "gpt_model_path": _STR,
    "encoder_model_path": _STR,
    "max_tokens_in_paged_kv_cache": _INT,
    "max_attention_window_size": "int_list",
    "sink_token_length": _INT,
    "batch_scheduler_policy": _STR,
    "kv_cache_free_gpu_mem_fraction": _FLOAT,
    "cross_kv_cache_fraction": _FLOAT,
    "kv_cache_host_memory_bytes": _INT,
    "kv_cache_onboard_blocks": _BOOL,
    "exclude_input_in_output": _BOOL,
    "cancellation_check_period_ms": _INT,
    "stats_check_period_ms": _INT,
    "iter_stats_max_iterations": _INT,
    "request_stats_max_iterations": _INT,
    "enable_kv_cache_reuse": _BOOL,
    "normalize_log_probs": _BOOL,
    "enable_chunked_context": _BOOL,
    "gpu_device_ids": _STR,
    "participant_ids": _STR,
    "lora_cache_optimal_adapter_size": _INT,
    "lora_cache_max_adapter_size": _INT,
    "lora_cache_gpu_memory_fraction": _FLOAT,
    "lora_cache_host_memory_bytes": _INT,
    "decoding_mode": _STR,
    "executor_worker_path": _STR,
    "medusa_choices": _STR,
    "eagle_choices": _STR,
    "gpu_weights_percent": _FLOAT,
    "enable_context_fmha_fp32_acc": _BOOL,
    "multi_block_mode": _BOOL,
    "cuda_graph_mode": _BOOL,
    "cuda_graph_cache_size": _INT,
    "speculative_decoding_fast_logits": _BOOL,
})
#: Keys with their own ServingOptions field, or derived from the engine: not settable through extra_parameters.
_MANAGED_KEYS: Mapping[str, str] = MappingProxyType({
    "gpt_model_type": "ServingOptions.batching_strategy",
    "gpt_model_path": "the engine the repository is built from",
    "max_beam_width": "the engine's build_config.max_beam_width",
    "batch_scheduler_policy": "ServingOptions.batch_scheduler_policy",
    "kv_cache_free_gpu_mem_fraction": "ServingOptions.kv_cache_free_gpu_mem_fraction",
    "max_tokens_in_paged_kv_cache": "ServingOptions.max_tokens_in_paged_kv_cache",
    "max_attention_window_size": "ServingOptions.max_attention_window_size",
    "enable_kv_cache_reuse": "ServingOptions.enable_kv_cache_reuse",
    "enable_chunked_context": "ServingOptions.enable_chunked_context",
    "exclude_input_in_output": "ServingOptions.exclude_input_in_output",
    "gpu_device_ids": "ServingOptions.gpu_device_ids",
    "FORCE_CPU_ONLY_INPUT_TENSORS": "llmbuild (always 'no', as the backend ships it)",
    "executor_worker_path": "llmbuild (the backend's fixed path)",
})
_DECODING_MODES = ("top_k", "top_p", "top_k_top_p", "beam_search", "medusa", "redrafter", "lookahead", "eagle")
_SCHEDULER_POLICIES = ("guaranteed_no_evict", "max_utilization")
_BATCHING_STRATEGIES = ("inflight_fused_batching", "inflight_batching", "V1")
_BOOL_WORDS = {"true": True, "True": True, "TRUE": True, "1": True,
               "false": False, "False": False, "FALSE": False, "0": False}
_EXECUTOR_WORKER_PATH = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"
_GPU_IDS_RE = re.compile(r"^\d+(,\d+)*(;\d+(,\d+)*)*$")


def tensorrt_llm_parameter_keys() -> frozenset[str]:
    """Every parameter key the v0.16.0 tensorrt_llm model declares (the facts table: 37)."""
    return frozenset(_TRTLLM_PARAMETERS)


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingOptions:
    """The Triton knobs a user sets. ``None`` = leave the parameter out (backend default).

    Defaults follow the backend's ``docs/llama.md`` and the backends' own
    defaults; engine limits (batch size, beam width, sequence length) always
    come from the engine, never from here.
    """

    decoupled: bool = False
    entrypoint: Literal["ensemble", "tensorrt_llm_bls"] = "ensemble"
    max_queue_delay_microseconds: int = 0
    max_queue_size: int = 0
    batching_strategy: Literal["inflight_fused_batching", "inflight_batching", "V1"] = "inflight_fused_batching"
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] | None = None
    kv_cache_free_gpu_mem_fraction: float | None = None
    max_tokens_in_paged_kv_cache: int | None = None
    max_attention_window_size: int | None = None
    enable_kv_cache_reuse: bool | None = None
    enable_chunked_context: bool | None = None
    exclude_input_in_output: bool | None = None
    preprocessing_instance_count: int = 1
    postprocessing_instance_count: int = 1
    bls_instance_count: int = 1
    logits_datatype: Literal["TYPE_FP32", "TYPE_FP16"] = "TYPE_FP32"
    accumulate_tokens: bool = False
    #: None = the engine's max_batch_size; larger than the engine's is an error.
    triton_max_batch_size: int | None = None
    #: Any other tensorrt_llm parameter key of the v0.16 table, as strings.
    extra_parameters: Mapping[str, str] = field(default_factory=dict)
    add_special_tokens: bool = True
    skip_special_tokens: bool = True
    #: GPUs per instance: ',' inside a group, ';' between groups (GPU lane).
    gpu_device_ids: str | None = None
    #: Where the repository is mounted on the GPU lane (in the container).
    serve_root: str = "/models"


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Engine:
    max_batch_size: int
    max_beam_width: int
    max_input_len: int | None
    max_seq_len: int | None
    world_size: int
    paged_kv_cache: bool | None
    paged_context_fmha: bool | None
    gpt_attention_plugin: bool | None = None  # in-flight batching needs the plugin
    remove_input_padding: bool | None = None  # ... and packed input



def _engine_facts(engine_config: Mapping) -> _Engine:
    if not isinstance(engine_config, Mapping):
        raise RepositoryError("engine config.json is not a JSON object")
    build = engine_config.get("build_config")
    if not isinstance(build, Mapping):
        raise RepositoryError("engine config.json has no build_config (is this a trtllm-build engine directory?)")

    def positive_int(key: str, *, required: bool) -> int | None:
        value = build.get(key)
        if value is None:
            if required:
                raise RepositoryError(f"engine config.json: build_config.{key} is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RepositoryError(f"engine config.json: build_config.{key} must be a positive integer, got {value!r}")
        return value

    pretrained = engine_config.get("pretrained_config")
    mapping = (pretrained.get("mapping") if isinstance(pretrained, Mapping) else None) or {}
    world_size = mapping.get("world_size")
    if not isinstance(world_size, int) or world_size < 1:
        tp, pp = mapping.get("tp_size", 1), mapping.get("pp_size", 1)
        world_size = tp * pp if isinstance(tp, int) and isinstance(pp, int) else 1

    plugin = build.get("plugin_config") if isinstance(build.get("plugin_config"), Mapping) else {}
    kv_type = build.get("kv_cache_type")
    paged: bool | None = None
    if isinstance(kv_type, str):
        paged = kv_type.upper().endswith("PAGED")
    elif isinstance(plugin.get("paged_kv_cache"), bool):
        paged = plugin["paged_kv_cache"]
    fmha = plugin.get("use_paged_context_fmha")
    attention = plugin.get("gpt_attention_plugin", "auto")
    packed = plugin.get("remove_input_padding")
    return _Engine(
        max_batch_size=positive_int("max_batch_size", required=True),
        max_beam_width=positive_int("max_beam_width", required=False) or 1,
        max_input_len=positive_int("max_input_len", required=False),
        max_seq_len=positive_int("max_seq_len", required=False),
        world_size=world_size,
        paged_kv_cache=paged,
        paged_context_fmha=fmha if isinstance(fmha, bool) else None,
        gpt_attention_plugin=attention not in (None, "disable", False),
        remove_input_padding=packed if isinstance(packed, bool) else None,
    )


def _bool_str(value: bool) -> str:
    return "true" if value else "false"


def _check_extra_value(key: str, value: object) -> str:
    where = f"tensorrt_llm parameter '{key}'"
    if not isinstance(value, str):
        raise RepositoryError(f"{where}: value must be a string, got {value!r}")
    if value == "" or "${" in value:
        raise RepositoryError(f"{where}: value {value!r} is empty or an unfilled placeholder")
    kind = _TRTLLM_PARAMETERS[key]
    if kind == _BOOL:
        if value not in _BOOL_WORDS:
            raise RepositoryError(f"{where}: {value!r} is not a boolean (true/false)")
        return _bool_str(_BOOL_WORDS[value])
    if kind == _INT:
        if not re.fullmatch(r"-?\d+", value):
            raise RepositoryError(f"{where}: {value!r} is not an integer")
    elif kind == _FLOAT:
        try:
            number = float(value)
        except ValueError:
            raise RepositoryError(f"{where}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise RepositoryError(f"{where}: {value!r} is not a finite number")
    elif key == "decoding_mode" and value not in _DECODING_MODES:
        raise RepositoryError(f"{where}: {value!r} is not one of {', '.join(_DECODING_MODES)}")
    elif key == "participant_ids" and not _GPU_IDS_RE.match(value):
        raise RepositoryError(f"{where}: {value!r} is not a comma-separated list of ranks")
    return value


def _tensor(cls, spec: _Spec):
    name, dtype, dims, flags = spec
    t = cls(name=name, data_type=mc.DataType.Value("TYPE_" + dtype), dims=list(dims))
    words = flags.split()
    if "opt" in words:
        t.optional = True
    if "ragged" in words:
        t.allow_ragged_batch = True
    if "reshape" in words:
        t.reshape.SetInParent()  # reshape { shape: [ ] }: the backend sees [B]
    return t


def _with_dtype(specs: Iterable[_Spec], overrides: Mapping[str, str]) -> tuple[_Spec, ...]:
    return tuple((n, overrides.get(n, d), dims, f) for n, d, dims, f in specs)


def _model(name: str, *, max_batch_size: int, inputs, outputs, backend: str | None = None,
           platform: str | None = None) -> ModelConfig:
    cfg = ModelConfig(name=name, max_batch_size=max_batch_size)
    if backend:
        cfg.backend = backend
    if platform:
        cfg.platform = platform
    cfg.input.extend(_tensor(mc.ModelInput, s) for s in inputs)
    cfg.output.extend(_tensor(mc.ModelOutput, s) for s in outputs)
    return cfg


def _instances(cfg: ModelConfig, count: int) -> None:
    cfg.instance_group.add(count=count, kind=mc.ModelInstanceGroup.KIND_CPU)


def _params(cfg: ModelConfig, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        cfg.parameters[key].string_value = value


def _check_options(options: ServingOptions, lane: str) -> None:
    if lane not in ("cpu", "gpu"):
        raise RepositoryError(f"lane must be 'cpu' or 'gpu', got {lane!r}")
    if options.entrypoint not in ("ensemble", "tensorrt_llm_bls"):
        raise RepositoryError(f"entrypoint must be 'ensemble' or 'tensorrt_llm_bls', got {options.entrypoint!r}")
    if options.batching_strategy not in _BATCHING_STRATEGIES:
        raise RepositoryError(
            f"tensorrt_llm parameter 'gpt_model_type': batching_strategy {options.batching_strategy!r} "
            f"is not one of {', '.join(_BATCHING_STRATEGIES)}")
    if options.batch_scheduler_policy is not None and options.batch_scheduler_policy not in _SCHEDULER_POLICIES:
        raise RepositoryError(
            f"tensorrt_llm parameter 'batch_scheduler_policy': {options.batch_scheduler_policy!r} "
            f"is not one of {', '.join(_SCHEDULER_POLICIES)}")
    for model, attr in (("preprocessing", "preprocessing_instance_count"),
                        ("postprocessing", "postprocessing_instance_count"),
                        ("tensorrt_llm_bls", "bls_instance_count")):
        count = getattr(options, attr)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise RepositoryError(f"model '{model}': instance_group count ({attr}) must be at least 1, got {count!r}")
    for attr in ("max_queue_delay_microseconds", "max_queue_size"):
        value = getattr(options, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise RepositoryError(f"model 'tensorrt_llm': {attr} must be an integer >= 0, got {value!r}")
    fraction = options.kv_cache_free_gpu_mem_fraction
    if fraction is not None and not (0.0 < float(fraction) <= 1.0):
        raise RepositoryError(
            f"tensorrt_llm parameter 'kv_cache_free_gpu_mem_fraction': {fraction!r} is not in (0, 1]")
    if options.max_tokens_in_paged_kv_cache is not None and options.max_tokens_in_paged_kv_cache < 1:
        raise RepositoryError(
            f"tensorrt_llm parameter 'max_tokens_in_paged_kv_cache': must be positive, "
            f"got {options.max_tokens_in_paged_kv_cache!r}")
    if options.logits_datatype not in ("TYPE_FP32", "TYPE_FP16"):
        raise RepositoryError(f"logits_datatype must be TYPE_FP32 or TYPE_FP16, got {options.logits_datatype!r}")
    if options.logits_datatype != "TYPE_FP32":
        raise RepositoryError(
            f"models 'tensorrt_llm', 'ensemble', 'tensorrt_llm_bls': logits_datatype {options.logits_datatype} "
            f"needs tensorrtllm_backend 0.17 or later; {BACKEND_VERSION} always returns TYPE_FP32 logits")
    if options.gpu_device_ids is not None and not _GPU_IDS_RE.match(options.gpu_device_ids):
        raise RepositoryError(
            f"tensorrt_llm parameter 'gpu_device_ids': {options.gpu_device_ids!r} is not GPU ids "
            f"(',' within an instance, ';' between instances, e.g. '0,1;2,3')")
    if not options.serve_root.startswith("/"):
        raise RepositoryError(f"serve_root must be an absolute path in the container, got {options.serve_root!r}")
    if not isinstance(options.extra_parameters, Mapping):
        raise RepositoryError("extra_parameters must be a mapping of parameter key to string value")
    for key in options.extra_parameters:
        if key not in _TRTLLM_PARAMETERS:
            raise RepositoryError(
                f"tensorrt_llm parameter '{key}': not a tensorrtllm_backend {BACKEND_VERSION} parameter"
                f"{did_you_mean(str(key), _TRTLLM_PARAMETERS)}")
        if key in _MANAGED_KEYS:
            raise RepositoryError(f"tensorrt_llm parameter '{key}': set by {_MANAGED_KEYS[key]}, not extra_parameters")


def _tensorrt_llm_parameters(options: ServingOptions, engine: _Engine, *, lane: str) -> dict[str, str]:
    if lane == "gpu":
        engine_path = options.serve_root.rstrip("/") + "/" + ENGINE_DIR
    else:
        engine_path = ENGINE_DIR
    params: dict[str, str] = {
        "gpt_model_type": options.batching_strategy,
        "gpt_model_path": engine_path,
        "max_beam_width": str(engine.max_beam_width),
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "executor_worker_path": _EXECUTOR_WORKER_PATH,
    }
    inflight = options.batching_strategy != "V1"
    if inflight and engine.paged_kv_cache is False:
        raise RepositoryError(
            f"tensorrt_llm parameter 'gpt_model_type': {options.batching_strategy} needs an engine built with a "
            f"paged KV cache; this engine was not (rebuild with --kv_cache_type paged, or use batching_strategy V1)")
    for needed, flag in ((engine.gpt_attention_plugin, "--gpt_attention_plugin <dtype>"),
                         (engine.remove_input_padding, "--remove_input_padding enable")):
        if inflight and needed is False:
            raise RepositoryError(
                f"tensorrt_llm parameter 'gpt_model_type': {options.batching_strategy} needs an engine built "
                f"with {flag}; this engine was not (rebuild it so, or use batching_strategy V1)")
    if options.batch_scheduler_policy is not None:
        params["batch_scheduler_policy"] = options.batch_scheduler_policy
    if options.kv_cache_free_gpu_mem_fraction is not None:
        params["kv_cache_free_gpu_mem_fraction"] = repr(float(options.kv_cache_free_gpu_mem_fraction))
    if options.max_tokens_in_paged_kv_cache is not None:
        params["max_tokens_in_paged_kv_cache"] = str(int(options.max_tokens_in_paged_kv_cache))
    window = options.max_attention_window_size
    if window is not None:
        if window < 1:
            raise RepositoryError(f"tensorrt_llm parameter 'max_attention_window_size': must be positive, got {window}")
        if engine.max_seq_len is not None and window > engine.max_seq_len:
            raise RepositoryError(
                f"tensorrt_llm parameter 'max_attention_window_size': {window} is larger than the engine's "
                f"max_seq_len; the engine was built with max_seq_len={engine.max_seq_len}")
        params["max_attention_window_size"] = str(window)
    elif engine.max_seq_len is not None:
        params["max_attention_window_size"] = str(engine.max_seq_len)
    for key, needs_fmha in (("enable_kv_cache_reuse", True), ("enable_chunked_context", True)):
        value = getattr(options, key)
        if value is None:
            continue
        if value and needs_fmha and engine.paged_context_fmha is False:
            raise RepositoryError(
                f"tensorrt_llm parameter '{key}': needs an engine built with --use_paged_context_fmha enable; "
                f"this engine was built without it")
        params[key] = _bool_str(value)
    if options.exclude_input_in_output is not None:
        params["exclude_input_in_output"] = _bool_str(options.exclude_input_in_output)
    if options.gpu_device_ids is not None:
        for group in options.gpu_device_ids.split(";"):
            if len(group.split(",")) != engine.world_size:
                raise RepositoryError(
                    f"tensorrt_llm parameter 'gpu_device_ids': group {group!r} has {len(group.split(','))} GPU(s) "
                    f"but the engine was built for world_size={engine.world_size}")
        params["gpu_device_ids"] = options.gpu_device_ids
    for key, value in sorted(options.extra_parameters.items()):
        params[key] = _check_extra_value(key, value)
    return params


def build_configs(options: ServingOptions, engine_config: dict, *, lane: Lane) -> dict[str, ModelConfig]:
    """The five ModelConfigs for the engine whose ``config.json`` is ``engine_config``.

    Engine limits come from ``build_config`` (max_batch_size, max_beam_width,
    max_seq_len); ``options`` only choose within them. The lanes differ only in
    the ``tensorrt_llm`` model: ``gpu`` runs the C++ ``tensorrtllm`` backend on
    ``<serve_root>/tensorrt_llm/1/engine``, ``cpu`` runs our Python model on
    ``tensorrt_llm/1/engine`` (relative to the repository root). Raises
    :class:`RepositoryError` on anything inconsistent; the result has passed
    :func:`check_wiring`.
    """
    _check_options(options, lane)
    engine = _engine_facts(engine_config)

    batch = options.triton_max_batch_size
    if batch is None:
        batch = engine.max_batch_size
    elif isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise RepositoryError(f"triton_max_batch_size must be a positive integer, got {batch!r}")
    elif batch > engine.max_batch_size:
        raise RepositoryError(
            f"model 'tensorrt_llm': triton_max_batch_size {batch} is larger than the engine's max_batch_size; "
            f"the engine was built with max_batch_size={engine.max_batch_size}")

    logits = {"context_logits": options.logits_datatype[5:], "generation_logits": options.logits_datatype[5:]}
    entry_outputs = _with_dtype(ENTRY_OUTPUTS, logits)

    pre = _model("preprocessing", backend="python", max_batch_size=batch,
                 inputs=PREPROCESSING_INPUTS, outputs=PREPROCESSING_OUTPUTS)
    _params(pre, {
        "tokenizer_dir": TOKENIZER_DIR,
        "add_special_tokens": _bool_str(options.add_special_tokens),
        # Read only for multimodal models; the stock model.py indexes both keys.
        "visual_model_path": "",
        "gpt_model_path": ENGINE_DIR,
    })
    _instances(pre, options.preprocessing_instance_count)

    llm = _model("tensorrt_llm", backend="tensorrtllm" if lane == "gpu" else "python", max_batch_size=batch,
                 inputs=TENSORRT_LLM_INPUTS, outputs=_with_dtype(TENSORRT_LLM_OUTPUTS, logits))
    llm.model_transaction_policy.decoupled = options.decoupled
    llm.model_transaction_policy.SetInParent()
    llm.dynamic_batching.preferred_batch_size.append(batch)
    llm.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_microseconds
    llm.dynamic_batching.default_queue_policy.max_queue_size = options.max_queue_size
    llm.dynamic_batching.default_queue_policy.SetInParent()
    _instances(llm, 1)  # literal in the backend: it places work on GPUs itself
    _params(llm, _tensorrt_llm_parameters(options, engine, lane=lane))

    post = _model("postprocessing", backend="python", max_batch_size=batch,
                  inputs=POSTPROCESSING_INPUTS, outputs=POSTPROCESSING_OUTPUTS)
    post.dynamic_batching.SetInParent()
    _params(post, {"tokenizer_dir": TOKENIZER_DIR, "skip_special_tokens": _bool_str(options.skip_special_tokens)})
    _instances(post, options.postprocessing_instance_count)

    ens = _model("ensemble", platform="ensemble", max_batch_size=batch, inputs=ENSEMBLE_INPUTS,
                 outputs=entry_outputs)
    for model_name, input_map, output_map in ENSEMBLE_STEPS:
        step = ens.ensemble_scheduling.step.add(model_name=model_name, model_version=-1)
        for key, value in input_map.items():
            step.input_map[key] = value
        for key, value in output_map.items():
            step.output_map[key] = value

    bls = _model("tensorrt_llm_bls", backend="python", max_batch_size=batch, inputs=BLS_INPUTS,
                 outputs=entry_outputs)
    bls.model_transaction_policy.decoupled = options.decoupled
    bls.model_transaction_policy.SetInParent()
    _params(bls, {"accumulate_tokens": _bool_str(options.accumulate_tokens),
                  "tensorrt_llm_model_name": "tensorrt_llm"})
    _instances(bls, options.bls_instance_count)

    configs = {"preprocessing": pre, "tensorrt_llm": llm, "postprocessing": post, "ensemble": ens,
               "tensorrt_llm_bls": bls}
    check_wiring(configs)
    return configs


# --------------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------------


def _dtype_name(value: int) -> str:
    return mc.DataType.Name(value)


def _strings(msg) -> Iterable[tuple[str, str]]:
    """(field path, value) of every string anywhere in a message."""
    for desc, value in msg.ListFields():
        if desc.message_type is not None and desc.message_type.GetOptions().map_entry:
            for k, v in value.items():
                if isinstance(v, str):
                    yield f"{desc.name}[{k}]", v
                elif hasattr(v, "ListFields"):
                    for path, s in _strings(v):
                        yield f"{desc.name}[{k}].{path}", s
        elif isinstance(value, str):
            yield desc.name, value
        elif hasattr(value, "ListFields"):
            yield from ((f"{desc.name}.{p}", s) for p, s in _strings(value))
        elif hasattr(value, "__len__"):  # a repeated field
            for item in value:
                if isinstance(item, str):
                    yield desc.name, item
                elif hasattr(item, "ListFields"):
                    yield from ((f"{desc.name}.{p}", s) for p, s in _strings(item))


def check_wiring(configs: Mapping[str, ModelConfig]) -> None:
    """Check the cross-file contract of the five models; raise :class:`RepositoryError` on the first break.

    * all five models are there, each named as its key, with max_batch_size >= 1,
      instance counts >= 1 and no unfilled ``${...}`` anywhere;
    * every ensemble step names a model of the repository; every input_map/output_map
      key is a real input/output of that step model; every required step input is
      mapped; every consumed tensor is an ensemble input or produced by exactly one
      step; every ensemble input is consumed and every ensemble output produced;
      tensors that meet agree in dtype;
    * the ensemble's max_batch_size is at most each member's, the BLS's at most each
      model it calls;
    * ``decoupled`` agrees between tensorrt_llm and tensorrt_llm_bls (streaming needs both);
    * the tensors the BLS sends and asks for exist in the models it calls, and its
      outputs match the LLM's in dtype;
    * tensorrt_llm parameter keys are known v0.16 keys.
    """
    missing = [n for n in MODEL_NAMES if n not in configs]
    if missing:
        raise RepositoryError(f"repository: model '{missing[0]}' is missing (a TensorRT-LLM repository has "
                              f"{', '.join(MODEL_NAMES)})")
    for key, cfg in configs.items():
        if cfg.name != key:
            raise RepositoryError(f"model '{key}': config name is '{cfg.name}'; it must match the model directory")
        if cfg.max_batch_size < 1:
            raise RepositoryError(f"model '{key}': max_batch_size must be at least 1, got {cfg.max_batch_size}")
        for group in cfg.instance_group:
            if group.count < 1:
                raise RepositoryError(f"model '{key}': instance_group count must be at least 1, got {group.count}")
        for path, value in _strings(cfg):
            if "${" in value:
                raise RepositoryError(f"model '{key}': {path} holds an unfilled placeholder {value!r}")
        names = [t.name for t in cfg.input]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise RepositoryError(f"model '{key}': input '{sorted(dup)[0]}' is declared twice")
        names = [t.name for t in cfg.output]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise RepositoryError(f"model '{key}': output '{sorted(dup)[0]}' is declared twice")

    def inputs(name: str) -> dict[str, mc.ModelInput]:
        return {t.name: t for t in configs[name].input}

    def outputs(name: str) -> dict[str, mc.ModelOutput]:
        return {t.name: t for t in configs[name].output}

    llm_cfg, bls_cfg = configs["tensorrt_llm"], configs["tensorrt_llm_bls"]

    # decoupled: streaming needs the LLM and the BLS decoupled, and a non-decoupled BLS
    # cannot make a blocking call to a decoupled LLM.
    llm_dec = llm_cfg.model_transaction_policy.decoupled
    bls_dec = bls_cfg.model_transaction_policy.decoupled
    if llm_dec != bls_dec:
        raise RepositoryError(
            f"model 'tensorrt_llm_bls': decoupled is {str(bls_dec).lower()} but model 'tensorrt_llm' has "
            f"decoupled {str(llm_dec).lower()}; they must agree")
    for name in ("preprocessing", "postprocessing"):
        if configs[name].model_transaction_policy.decoupled:
            raise RepositoryError(f"model '{name}': must not be decoupled (the ensemble and BLS expect one response)")

    for key in llm_cfg.parameters:
        if key not in _TRTLLM_PARAMETERS:
            raise RepositoryError(
                f"model 'tensorrt_llm': parameter '{key}' is not a tensorrtllm_backend {BACKEND_VERSION} parameter"
                f"{did_you_mean(key, _TRTLLM_PARAMETERS)}")

    # ---- ensemble
    ens = configs["ensemble"]
    if ens.platform != "ensemble" or not ens.HasField("ensemble_scheduling"):
        raise RepositoryError("model 'ensemble': platform must be 'ensemble' with ensemble_scheduling steps")
    ens_inputs = {t.name: t for t in ens.input}
    ens_outputs = {t.name: t for t in ens.output}
    producers: dict[str, tuple[str, str, int]] = {}  # ensemble tensor -> (step model, step output, dtype)
    for t in ens.input:
        producers[t.name] = ("ensemble", t.name, t.data_type)
    for step in ens.ensemble_scheduling.step:
        model = step.model_name
        if model not in configs or model == "ensemble":
            raise RepositoryError(f"model 'ensemble': step model '{model}' is not a model of this repository")
        outs = outputs(model)
        for key, value in step.output_map.items():
            if key not in outs:
                raise RepositoryError(
                    f"model 'ensemble': step '{model}' output_map names '{key}', which is not an output of model "
                    f"'{model}'{did_you_mean(key, outs)}")
            if value in producers:
                who = producers[value][0]
                raise RepositoryError(
                    f"model 'ensemble': tensor '{value}' is produced twice (by '{who}' and by step '{model}')")
            producers[value] = (model, key, outs[key].data_type)
    consumed: set[str] = set()
    for step in ens.ensemble_scheduling.step:
        model = step.model_name
        ins = inputs(model)
        member = configs[model]
        if ens.max_batch_size > member.max_batch_size:
            raise RepositoryError(
                f"model 'ensemble': max_batch_size {ens.max_batch_size} is larger than member '{model}' "
                f"max_batch_size {member.max_batch_size}")
        for key, value in step.input_map.items():
            if key not in ins:
                raise RepositoryError(
                    f"model 'ensemble': step '{model}' input_map names '{key}', which is not an input of model "
                    f"'{model}'{did_you_mean(key, ins)}")
            if value not in producers:
                raise RepositoryError(
                    f"model 'ensemble': step '{model}' input '{key}' reads tensor '{value}', which no step produces "
                    f"and is not an ensemble input{did_you_mean(value, producers)}")
            src, src_name, dtype = producers[value]
            if dtype != ins[key].data_type:
                raise RepositoryError(
                    f"model 'ensemble': tensor '{value}' is {_dtype_name(dtype)} ({src} '{src_name}') but step "
                    f"'{model}' input '{key}' is {_dtype_name(ins[key].data_type)}")
            consumed.add(value)
        for name, t in ins.items():
            if not t.optional and name not in step.input_map:
                raise RepositoryError(
                    f"model 'ensemble': required input '{name}' of step '{model}' is not mapped")
    for name in ens_inputs:
        if name not in consumed:
            raise RepositoryError(f"model 'ensemble': input '{name}' is not consumed by any step")
    for name, t in ens_outputs.items():
        if name not in producers or producers[name][0] == "ensemble":
            raise RepositoryError(f"model 'ensemble': output '{name}' is not produced by any step")
        src, src_name, dtype = producers[name]
        if dtype != t.data_type:
            raise RepositoryError(
                f"model 'ensemble': output '{name}' is {_dtype_name(t.data_type)} but step '{src}' output "
                f"'{src_name}' is {_dtype_name(dtype)}")

    # ---- BLS
    llm_name = bls_cfg.parameters["tensorrt_llm_model_name"].string_value \
        if "tensorrt_llm_model_name" in bls_cfg.parameters else ""
    llm_name = llm_name or "tensorrt_llm"
    if llm_name not in configs:
        raise RepositoryError(
            f"model 'tensorrt_llm_bls': parameter 'tensorrt_llm_model_name' names '{llm_name}', "
            f"which is not a model of this repository")
    for called, (sent, wanted) in BLS_CONTRACT.items():
        target = llm_name if called == "tensorrt_llm" else called
        member = configs[target]
        if bls_cfg.max_batch_size > member.max_batch_size:
            raise RepositoryError(
                f"model 'tensorrt_llm_bls': max_batch_size {bls_cfg.max_batch_size} is larger than "
                f"'{target}' max_batch_size {member.max_batch_size}")
        ins, outs = inputs(target), outputs(target)
        for name in sent:
            if name not in ins:
                raise RepositoryError(
                    f"model 'tensorrt_llm_bls': sends '{name}' to model '{target}', which has no such input")
        for name in wanted:
            if name not in outs:
                raise RepositoryError(
                    f"model 'tensorrt_llm_bls': reads '{name}' from model '{target}', which has no such output")
    bls_ins = inputs("tensorrt_llm_bls")
    for name in ("text_input", "max_tokens"):
        if name not in bls_ins:
            raise RepositoryError(f"model 'tensorrt_llm_bls': input '{name}' is missing")
    llm_outs = outputs(llm_name)
    for name, t in outputs("tensorrt_llm_bls").items():
        if name == "text_output":
            continue
        if name not in llm_outs:
            raise RepositoryError(
                f"model 'tensorrt_llm_bls': output '{name}' is not an output of model '{llm_name}'")
        if llm_outs[name].data_type != t.data_type:
            raise RepositoryError(
                f"model 'tensorrt_llm_bls': output '{name}' is {_dtype_name(t.data_type)} but model '{llm_name}' "
                f"returns {_dtype_name(llm_outs[name].data_type)}")
    if "text_output" not in outputs("tensorrt_llm_bls"):
        raise RepositoryError("model 'tensorrt_llm_bls': output 'text_output' is missing")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def to_pbtxt(config: ModelConfig) -> str:
    """``config.pbtxt`` text: protobuf text format (maps sorted by key) under a one-line header."""
    body = text_format.MessageToString(config, as_utf8=True)
    return f"# Generated by llmbuild for tensorrtllm_backend v{BACKEND_VERSION}; edit the build, not this file.\n{body}"
