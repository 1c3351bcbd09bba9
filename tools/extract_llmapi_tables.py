"""Write llmbuild/toolchains/llmapi/data/<version>.json, the engine-free TensorRT-LLM tables.

Regenerate with:

    python tools/extract_llmapi_tables.py            # writes every table
    python tools/extract_llmapi_tables.py --check    # exit 1 if a committed table differs

Check a table against a TensorRT-LLM checkout (a tag's tensorrt_llm/llmapi/llm_args.py, read with
Python's ast; tensorrt_llm is never imported), then edit the facts below to match:

    git -C TensorRT-LLM show v1.3.0rc29:tensorrt_llm/llmapi/llm_args.py > /tmp/llm_args.py
    python tools/extract_llmapi_tables.py --compare /tmp/llm_args.py --version 1.3.0rc29

How the facts were gathered (and why they are transcribed here rather than parsed from a checkout):
the NVIDIA/TensorRT-LLM snapshot (2.5 GB) is over what the build machine could fetch, PyPI only
carries stub sdists for 1.3.0rc*/1.4.0rc* (the wheels live on pypi.nvidia.com), and so no tag
checkout could be parsed here. The facts below were read file by file from the stored copies of
the upstream sources named in SOURCES (repo@commit:path); where a tag could not be read, the
nearest stored commit is named instead, and every table says which. Only facts (key names, types,
choices, defaults, stability tags, tensor names) are kept; no upstream code.

Notation of a field: "type" is int | float | bool | str | dict | any | list[T] | literal
(with choices) | config:<Name>, alternatives joined by "|"; a trailing "?" means null is allowed.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "llmbuild" / "toolchains" / "llmapi" / "data"

TRTLLM_MAIN = "NVIDIA/TensorRT-LLM@0004396720054fd8e205cbf616f21f0b57c6b412"
MANIFEST = f"{TRTLLM_MAIN}:tensorrt_llm/usage/llm_args_golden_manifest.json"
LLM_ARGS_PY = f"{TRTLLM_MAIN}:tensorrt_llm/llmapi/llm_args.py"
SERVE_CLI = ("NVIDIA/TensorRT-LLM@029e223d527d2ff453062555f7aef86517a2847c:"
             "tests/unittest/api_stability/references/trtllm_serve_cli.yaml")
PBTXT = ("NVIDIA/TensorRT-LLM@0a71057313ec0626527e164a8fc0205c5822e2f5:"
         "triton_backend/all_models/llmapi/tensorrt_llm/config.pbtxt")
MODEL_YAML = ("NVIDIA/TensorRT-LLM@0ebb1536ac12bbe27201185de960df3ab00bcecc:"
              "triton_backend/all_models/llmapi/tensorrt_llm/1/model.yaml")
MODEL_PY = ("NVIDIA/TensorRT-LLM@b35ac1b64368513d215c57d2ed01d62d910df8da:"
            "triton_backend/all_models/llmapi/tensorrt_llm/1/model.py")
TORCH_ARGS_DOC = "https://nvidia.github.io/TensorRT-LLM/1.4.0rc4/llm-api/reference/TorchLlmArgs.html"
DYNAMO_ARGS = ("ai-dynamo/dynamo@0a6a115c6cd15ae95647e90c55be2ea06b36e66f:"
               "components/src/dynamo/trtllm/backend_args.py")
DYNAMO_DOC = "https://docs.nvidia.com/dynamo/v1.6.0/reference/backends/tensor-rt-llm-configuration"
DYNAMO_COMPAT = "ai-dynamo/dynamo docs 'Compatibility' / releases.json (v1.4.0 -> 1.3.0rc22, v1.5.0 -> rc25, v1.6.0 -> rc29)"
REMOVAL = ("NVIDIA/TensorRT-LLM#15918 (BREAKING: remove the legacy TensorRT backend, BuildConfig, TrtLlmArgs); "
           "NVIDIA/TensorRT-LLM@335107a:docs/source/legacy/tensorrt-backend-removal.md; "
           "ai-dynamo/dynamo@0a6a115:components/src/dynamo/trtllm/backend_args.py "
           "(comment: trtllm >= 1.3.0rc21 removed BuildConfig)")
RENAMES = ("ai-dynamo/dynamo@20bff1d:examples/backends/trtllm/engine_configs/qwen3/agg.yaml (comments); "
           "NVIDIA/TensorRT-LLM#18901 (top-level kv_cache_dtype rejected)")


def f(type_: str, default=None, desc: str = "", status: str | None = None, choices=None) -> dict:
    """One field; a trailing '?' on the type makes it nullable."""
    nullable = type_.endswith("?")
    d: dict = {"type": type_.rstrip("?")}
    if nullable:
        d["nullable"] = True
    if choices is not None:
        d["choices"] = list(choices)
    d["default"] = default
    if status:
        d["status"] = status
    if desc:
        d["description"] = desc
    return d


def lit(choices, default=None, desc: str = "", status: str | None = None, nullable: bool = False) -> dict:
    return f("literal" + ("?" if nullable else ""), default, desc, status, choices)


# ---------------------------------------------------------------- TorchLlmArgs (top level)
# Every field of BaseLlmArgs and TorchLlmArgs (LLM_ARGS_PY): type, default, stability tag
# (Field(status=...); no tag = stable); choices from the golden manifest (MANIFEST).

P, B, D = "prototype", "beta", "deprecated"

LLM_ARGS: dict[str, dict] = {
    # BaseLlmArgs: model and tokenizer
    "model": f("str", None, "Hugging Face id or local checkpoint directory (required)"),
    "tokenizer": f("str?", None, "tokenizer id or directory; the model's when unset"),
    "tokenizer_mode": lit(["auto", "slow"], "auto"),
    "custom_tokenizer": f("str?", None, "a built-in alias or a Python import path", P),
    "post_processor_hook": f("str?", None, "Python import path of a post-processing hook", P),
    "skip_tokenizer_init": f("bool", False),
    "trust_remote_code": f("bool", False),
    "tensor_parallel_size": f("int", 1),
    "dtype": f("str", "auto", "model dtype: auto (from config.json), float16, bfloat16, float32"),
    "revision": f("str?", None, "Hugging Face revision of the model"),
    "tokenizer_revision": f("str?", None),
    "model_kwargs": f("dict?", None, "overrides of the model's config.json", P),
    # BaseLlmArgs: parallelism
    "pipeline_parallel_size": f("int", 1),
    "context_parallel_size": f("int", 1),
    "gpus_per_node": f("int?", None, "", B),
    "moe_cluster_parallel_size": f("int?", None, "", D),
    "moe_tensor_parallel_size": f("int?", None),
    "moe_expert_parallel_size": f("int?", None),
    "enable_attention_dp": f("bool", False, "", B),
    "enable_lm_head_tp_in_adp": f("bool", False, "", P),
    "pp_partition": f("list[int]?", None, "layers per pipeline rank", P),
    "cp_config": f("config:CpConfig?", None, "", P),
    # BaseLlmArgs: LoRA, KV cache, scheduling
    "enable_lora": f("bool", False),
    "lora_config": f("config:LoraConfig?", None),
    "kv_cache_config": f("config:KvCacheConfig", {}, "KV-cache settings (dtype, memory fraction, block reuse)"),
    "enable_chunked_prefill": f("bool", False),
    "guided_decoding_backend": lit(["xgrammar", "llguidance"], None, nullable=True),
    "batched_logits_processor": f("any?", None, "a Python object; not settable from YAML"),
    "iter_stats_max_iterations": f("int?", None, "", P),
    "request_stats_max_iterations": f("int?", None, "", P),
    "peft_cache_config": f("config:PeftCacheConfig?", None, "", P),
    "scheduler_config": f("config:SchedulerConfig", {}, "", P),
    "cache_transceiver_config": f("config:CacheTransceiverConfig?", None, "disaggregated KV transfer", P),
    "sparse_attention_config": f("dict?", None, "keys depend on `algorithm`", P),
    "kv_cache_compression_config": f("config:KvCacheCompressionConfig?", None, "", P),
    "speculative_config": f("dict?", None, "keys depend on `decoding_type`"),
    # BaseLlmArgs: limits (BuildConfig's fields since 1.3.0rc21)
    "max_batch_size": f("int?", 2048, "max requests scheduled together"),
    "max_input_len": f("int?", 1024),
    "max_seq_len": f("int?", None, "max input + output length; from the model config when unset"),
    "max_beam_width": f("int?", 1),
    "max_num_tokens": f("int?", 8192, "max batched tokens per iteration"),
    # BaseLlmArgs: outputs, serving, metrics
    "gather_generation_logits": f("bool", False, "", P),
    "num_postprocess_workers": f("int", 0, "", P),
    "postprocess_tokenizer_dir": f("str?", None, "", P),
    "num_serve_frontends": f("int", 1, "trtllm-serve HTTP frontends per executor (1..64)", P),
    "reasoning_parser": f("str?", None, "", P),
    "decoding_config": f("any?", None, "use speculative_config", D),
    "otlp_traces_endpoint": f("str?", None, "", P),
    "return_perf_metrics": f("bool", False, "", P),
    "perf_metrics_output_dir": f("str?", None, "", P),
    "perf_metrics_max_requests": f("int", 0, "no longer used", D),
    "prometheus_metrics_config": f("config:PrometheusMetricsConfig?", None, "", P),
    "enable_energy_metrics": f("bool", False, "", P),
    "orchestrator_type": lit(["rpc", "ray"], None, "None uses MPI", P, nullable=True),
    "env_overrides": f("dict?", None, "environment variables for the workers", P),
    "telemetry_config": f("config:TelemetryConfig", {}, "", P),
    # TorchLlmArgs
    "generation_config": lit(["auto", "trtllm"], "trtllm", "sampling defaults from generation_config.json", P),
    "garbage_collection_gen0_threshold": f("int", 20000, "", B),
    "cuda_graph_config": f("config:CudaGraphConfig?", {}, "decode CUDA graphs (on by default); null turns them "
                                                          "off", B),
    "encoder_cuda_graph_config": f("config:EncodeCudaGraphConfig?", None, "", P),
    "enable_encoder_decoder_mixed_cuda_graph": f("bool", True, "", P),
    "multimodal_config": f("config:MultimodalConfig?", {}, "", P),
    "attention_dp_config": f("config:AttentionDpConfig?", None, "", B),
    "disable_overlap_scheduler": f("bool", False, "turn the overlap scheduler (on by default) off", B),
    "moe_config": f("config:MoeConfig", {}, "", B),
    "nvfp4_gemm_config": f("config:Nvfp4GemmConfig", {}, "", B),
    "dwdp_config": f("config:DwdpConfig?", None, "", P),
    "encoder_max_batch_size": f("int?", None, "", P),
    "encoder_max_num_tokens": f("int?", None, "", P),
    "attn_backend": f("str", "TRTLLM", "attention backend: TRTLLM, FLASHINFER, VANILLA", B),
    "enable_mla_skip_correction": f("bool", False, "", P),
    "mla_skip_correction_threshold": f("float", 8.0, "", P),
    "sampler_force_async_worker": f("bool", False, "", P),
    "enable_in_graph_sampling": f("bool", False, "", P),
    "enable_speculative_beam_history_d2h": f("bool", False, "", P),
    "enable_early_first_token_response": f("bool", False, "", P),
    "enable_low_latency_host_dispatch": f("bool", False, "", P),
    "enable_iter_perf_stats": f("bool", False, "", P),
    "enable_iter_req_stats": f("bool", False, "", P),
    "print_iter_log": f("bool", False, "", B),
    "batch_wait_timeout_ms": f("float", 0, "", P),
    "batch_wait_timeout_iters": f("int", 0, "", P),
    "batch_wait_max_tokens_ratio": f("float", 0, "", P),
    "torch_compile_config": f("config:TorchCompileConfig?", None, "", P),
    "enable_autotuner": f("bool", True, "", P),
    "use_fine_grained_sync": f("bool", False, "", P),
    "enable_layerwise_nvtx_marker": f("bool", False, "", B),
    "load_format": f("str|int", "auto", "auto, dummy, vision_only or gms (any case)"),
    "enable_min_latency": f("bool", False, "", B),
    "stream_interval": f("int", 1),
    "force_dynamic_quantization": f("bool", False, "", P),
    "allreduce_strategy": lit(["AUTO", "NCCL", "UB", "MINLATENCY", "ONESHOT", "TWOSHOT", "LOWPRECISION",
                               "MNNVL", "NCCL_SYMMETRIC"], "AUTO", "", B, nullable=True),
    "checkpoint_loader": f("any?", None, "a Python object; not settable from YAML", P),
    "checkpoint_format": f("str?", None, "HF when unset; MX for ModelExpress", P),
    "checkpoint_io_policy": lit(["auto", "native", "rank_striped_read_ahead"], "auto", "", P),
    "mx_config": f("config:ModelExpressConfig", {}, "", P),
    "gms_config": f("config:GmsConfig", {}, "", P),
    "kv_connector_config": f("config:KvConnectorConfig?", None, "", P),
    "mm_encoder_only": f("bool", False, "", P),
    "disable_mm_encoder": f("bool", False, "", P),
    "encode_only": f("bool", False, "", P),
    "ray_worker_extension_cls": f("str?", None, "", P),
    "ray_placement_config": f("config:RayPlacementConfig?", None, "", P),
    "ray_worker_nsight_options": f("dict?", None, "", P),
    "sleep_config": f("config:SleepConfig?", None, "", P),
    "reorder_policy_config": f("config:ReorderPolicyConfig?", None, "", P),
    "enable_resource_governor": f("bool", False, "", P),
    "use_cute_dsl_blockscaling_mm": f("bool", False, "", P),
    "use_cute_dsl_blockscaling_bmm": f("bool", False, "", P),
    "use_cute_dsl_bf16_bmm": f("bool", False, "", P),
    "use_cute_dsl_bf16_gemm": f("bool", False, "", P),
    "max_stats_len": f("int", 1000, "", P),
    "layer_wise_benchmarks_config": f("dict", {}, "", P),
    "backend": lit(["pytorch"], "pytorch", "only the PyTorch backend remains", D),
}

# Prefill CUDA graphs left torch_compile_config (whose two keys became deprecated aliases) by
# 1.3.0rc27 at the latest (PREFILL_DOCS).
LLM_ARGS |= {
    "prefill_cuda_graph_backend": lit(["disabled", "piecewise", "breakable"], "disabled", "", P),
    "prefill_capture_num_tokens": f("list[int]?", None, "token buckets for prefill CUDA graphs", P),
    # A beta key in NVIDIA/TensorRT-LLM@ea35fd67:tests/unittest/api_stability/references/llm.yaml;
    # the main snapshot drops it on input ('auto'/'TorchSampler' with a warning, 'TRTLLMSampler' refused).
    "sampler_type": lit(["auto", "TorchSampler", "TRTLLMSampler"], "auto",
                        "TorchSampler is the only sampler in later versions", B),
}

# ---------------------------------------------------------------- nested configs (LLM_ARGS_PY)

BASE_CUDA_GRAPH = {
    "batch_sizes": f("list[int]?", None, "batch sizes to capture"),
    "max_batch_size": f("int", 0, "largest captured batch; 128 when neither this nor batch_sizes is set"),
    "enable_padding": f("bool", False, "round batches up to the next captured size"),
}
ENCODE_ONLY_CUDA_GRAPH = {
    "num_tokens": f("list[int]?", None),
    "max_num_token": f("int", 0),
    "seq_lens": f("list[int]?", None),
    "max_seq_len": f("int", 0),
}


def torch_compile(line_1_4: bool) -> dict:
    out = {
        "enable_fullgraph": f("bool", True),
        "enable_inductor": f("bool", False),
        "enable_piecewise_cuda_graph": f("bool", False, "deprecated alias of prefill_cuda_graph_backend: "
                                                        "piecewise"),
        "capture_num_tokens": f("list[int]?", None, "deprecated alias of prefill_capture_num_tokens"),
        "enable_userbuffers": f("bool", True),
        "max_num_streams": f("int", 3),
    }
    if line_1_4:   # in the 1.4.0rc1 TorchCompileConfig reference, not in 1.3.0rc27's (PREFILL_DOCS)
        out["compile_only_piecewise_graphs"] = f("bool", False)
    return out


CONFIGS: dict[str, dict[str, dict]] = {
    "KvCacheConfig": {
        "enable_block_reuse": f("bool", True),
        "max_tokens": f("int?", None),
        "max_attention_window": f("list[int]?", None),
        "sink_token_length": f("int?", None, "ignored on the PyTorch backend", D),
        "free_gpu_memory_fraction": f("float?", 0.9, "fraction of free GPU memory for the KV cache"),
        "host_cache_size": f("int?", None),
        "disk_cache_size": f("int?", None),
        "disk_cache_path": f("str?", None),
        "cross_kv_cache_fraction": f("float?", None),
        "secondary_offload_min_priority": f("int?", None),
        "event_buffer_max_size": f("int", 0),
        "attention_dp_events_gather_period_ms": f("int", 5),
        "kv_events_config": f("config:KvEventsConfig?", None, "", P),
        "enable_partial_reuse": f("bool", True),
        "copy_on_partial_reuse": f("bool", True),
        "use_uvm": f("bool", False),
        "max_gpu_total_bytes": f("int", 0),
        "iteration_stats_interval": f("int", 1),
        "dtype": lit(["auto", "float16", "bfloat16", "float32", "fp8", "fp8_ds_mla", "nvfp4"], "auto",
                     "KV-cache dtype (a top-level kv_cache_dtype in 1.0)"),
        "mamba_ssm_cache_dtype": lit(["auto", "float16", "bfloat16", "float32"], "auto"),
        "mamba_ssm_stochastic_rounding": f("bool", False),
        "mamba_ssm_philox_rounds": f("int", 10),
        "tokens_per_block": f("int", 32, "tokens per KV-cache block (trtllm-build's --tokens_per_block)"),
        "mamba_state_cache_interval": f("int?", None, "alias of mamba_state_config.periodic_snapshot_interval", D),
        "mamba_state_config": f("config:MambaStateConfig", {}),
        "use_kv_cache_manager_v2": f("bool|literal", "auto", "", P, ["auto"]),
        "enable_swa_scratch_reuse": f("bool", False, "", P),
        "kv_cache_event_hash_algo": lit(["auto", "v1_block_key", "v2_sha256", "v2_sha256_64"], "auto", "", P),
        "max_util_for_resume": f("float", 0.95, "", P),
        "enable_kv_pool_rebalance": f("bool", False, "", P),
        "kv_pool_rebalance_min_sampled_kv_caches": f("int", 2000, "", P),
        "kv_pool_rebalance_cooldown_secs": f("float", 120.0, "", P),
        "kv_pool_rebalance_target_ratio_update_interval": f("int", 100, "", P),
        "kv_pool_rebalance_ratio_threshold": f("float", 1.25, "", P),
        "kv_pool_rebalance_moving_average_decay": f("float", 0.9999, "", P),
        "kv_pool_rebalance_check_interval": f("int", 10, "", P),
        "disk_prefetch_num_reqs": f("int", 0),
        "fp8_context_mla_kv_len_cap": f("int?", None, "", P),
        "pool_ratio": f("list[float]?", None, "", P),
        "avg_seq_len": f("int?", None, "", P),
        "block_reuse_config": f("config:BlockReuseConfig", {}, "", P),
    },
    "KvEventsConfig": {
        "enable_kv_cache_events": f("bool", False),
        "publisher": lit(["null", "zmq"], None, nullable=True),
        "endpoint": f("str", "tcp://*:5557"),
        "replay_endpoint": f("str?", None),
        "buffer_steps": f("int", 10000),
        "hwm": f("int", 100000),
        "max_queue_size": f("int", 100000),
        "topic": f("str", ""),
    },
    "BlockReuseConfig": {
        "policy": lit(["all_reusable", "per_request", "per_conversation"], "all_reusable", "", P),
        "max_num_turns": f("int", 1, "", P),
    },
    "MambaStateConfig": {
        "periodic_snapshot_interval": f("int", 0, "", P),
        "additional_snapshot_offsets_from_start": f("list[int]", [], "", P),
        "additional_snapshot_offsets_from_end": f("list[int]", [], "", P),
        "enable_branch_snapshot": f("bool", False, "", P),
    },
    "CudaGraphConfig": {
        **BASE_CUDA_GRAPH,
        "mode": lit(["decode", "encode"], "decode", "encode when an encoder key is set"),
        **ENCODE_ONLY_CUDA_GRAPH,
    },
    "EncodeCudaGraphConfig": {**BASE_CUDA_GRAPH, "mode": lit(["encode"], "encode"), **ENCODE_ONLY_CUDA_GRAPH},
    "SchedulerConfig": {
        "capacity_scheduler_policy": lit(["MAX_UTILIZATION", "GUARANTEED_NO_EVICT", "STATIC_BATCH"],
                                         "GUARANTEED_NO_EVICT"),
        "context_chunking_policy": lit(["FIRST_COME_FIRST_SERVED", "EQUAL_PROGRESS", "FORCE_CHUNK"], None,
                                       nullable=True),
        "dynamic_batch_config": f("config:DynamicBatchConfig?", None, "TensorRT backend only"),
        "waiting_queue_policy": lit(["fcfs", "priority"], "fcfs"),
        "use_python_scheduler": f("bool", False),
        "enable_prefix_aware_scheduling": f("bool", True),
    },
    "DynamicBatchConfig": {
        "enable_batch_size_tuning": f("bool", True),
        "enable_max_num_tokens_tuning": f("bool", False),
        "dynamic_batch_moving_average_window": f("int", 128),
    },
    "LoraConfig": {   # NVIDIA/TensorRT-LLM@04b4c03:tensorrt_llm/_torch/peft/lora/config.py
        "lora_dir": f("list[str]", [], "adapter directories loaded at start"),
        "lora_ckpt_source": lit(["hf", "nemo"], "hf"),
        "max_lora_rank": f("int", 64),
        "lora_target_modules": f("list[str]", []),
        "trtllm_modules_to_hf_modules": f("dict", {}),
        "max_loras": f("int?", None, "adapters held in GPU memory"),
        "max_cpu_loras": f("int?", None, "adapters held in host memory"),
        "swap_gate_up_proj_lora_b_weight": f("bool", True),
        "overlap_lora_and_base": f("bool", False),
        "cuda_graph_specialize_lora": f("bool", False),
    },
    "PeftCacheConfig": {
        "num_host_module_layer": f("int", 0), "num_device_module_layer": f("int", 0),
        "optimal_adapter_size": f("int", 8), "max_adapter_size": f("int", 64),
        "num_put_workers": f("int", 1), "num_ensure_workers": f("int", 1), "num_copy_streams": f("int", 1),
        "max_pages_per_block_host": f("int", 24), "max_pages_per_block_device": f("int", 8),
        "device_cache_percent": f("float", 0.02), "host_cache_size": f("int", 1024 ** 3),
        "lora_prefetch_dir": f("str?", None, "not supported"),
    },
    "CacheTransceiverConfig": {
        "backend": lit(["DEFAULT", "UCX", "NIXL", "MOONCAKE", "MPI"], None, nullable=True),
        "transceiver_runtime": lit(["CPP", "PYTHON", "auto"], "auto", nullable=True),
        "max_tokens_in_buffer": f("int?", None, "must be >= the longest input in disaggregated serving"),
        "kv_transfer_timeout_ms": f("int?", 60000),
        "kv_transfer_sender_future_timeout_ms": f("int?", 1000),
        "kv_transfer_poll_interval_ms": f("int?", 5000),
        "kv_cache_bounce_size_mb": f("int", 0),
        "enable_pipelined_transfer": f("bool", False),
    },
    "DwdpConfig": {
        "dwdp_size": f("int", 1), "num_groups": f("int", 1), "num_experts_per_worker": f("int", 0),
        "num_prefetch_experts": f("int", 0), "contention_opt": f("bool", False),
    },
    "RayPlacementConfig": {
        "defer_workers_init": f("bool", False),
        "placement_groups": f("list?", None),
        "placement_bundle_indices": f("list?", None),
        "per_worker_gpu_share": f("float?", None),
    },
    "ModelExpressConfig": {
        "server_url": f("str?", None, "", P),
        "server_query_timeout_s": f("int?", None, "ignored", D),
        "preshard_strategy": f("str", "per_module", "", P),
    },
    "GmsConfig": {
        "socket_path": f("str?", None, "", P),
        "mode": lit(["auto", "rw", "ro"], "auto", "", P),
        "tag": f("str", "weights", "", P),
    },
    "SleepConfig": {"restore_modes": f("dict", None, "component -> NONE, MEMSET, CPU or PINNED")},
    "ReorderPolicyConfig": {
        "policy_name": lit(["AgentTree"], None, nullable=True),
        "policy_args": f("config:AgentTreeConfig", {}),
    },
    "AgentTreeConfig": {
        "agent_percentage": f("float", 0.0),
        "agent_types": f("list[str]?", None),
        "agent_inflight_seq_num": f("int", 2 ** 31 - 1),
    },
    "KvCacheCompressionConfig": {   # the union of its two algorithms' fields
        "algorithm": lit(["quantization_for_cold_page", "triattention"], None),
        "quant": lit(["nvfp4"], "nvfp4", "quantization_for_cold_page"),
        "scale_checkpoint_path": f("str?", None, "quantization_for_cold_page"),
        "eviction_mode": lit(["union", "per_head", "per_layer_perhead"], "union", "triattention"),
        "normalize_scores": f("bool", True, "triattention"),
        "budget": f("int", 2048, "triattention"),
        "beta": f("int", 128, "triattention"),
        "calibration_path": f("str", None, "triattention (required)"),
    },
    "PrometheusMetricsConfig": {k: f("list[float]?", None, "", P) for k in (
        "e2e_request_latency_buckets", "time_to_first_token_buckets", "time_per_output_token_buckets",
        "request_queue_time_buckets", "request_prefill_time_buckets", "request_decode_time_buckets",
        "request_inference_time_buckets")},
    "MoeConfig": {
        "backend": lit(["AUTO", "CUTLASS", "CUTEDSL", "TRTLLM", "DEEPGEMM", "DENSEGEMM", "VANILLA", "TRITON",
                        "MARLIN", "MEGAMOE_DEEPGEMM", "MEGAMOE_CUTEDSL"], "AUTO"),
        "max_num_tokens": f("int?", None, "tokens per fused-MoE call; larger inputs are chunked"),
        "load_balancer": f("dict|str?", None, "MoeLoadBalancerConfig as a mapping, or a YAML file path"),
        "disable_finalize_fusion": f("bool", False),
        "use_low_precision_moe_combine": f("bool", False),
    },
    "Nvfp4GemmConfig": {
        "allowed_backends": f("list[literal]", ["cutlass", "cublaslt", "cuda_core"], "",
                              choices=["cutlass", "cublaslt", "cutedsl", "cuda_core", "marlin"]),
    },
    "AttentionDpConfig": {
        "enable_balance": f("bool", False), "timeout_iters": f("int", 50), "batching_wait_iters": f("int", 10),
        "enable_kv_cache_aware_routing": f("bool", False),
        "kv_cache_routing_load_balance_weight": f("float", 1.0),
        "kv_cache_routing_match_rate_threshold": f("float", 0.1),
        "kv_cache_routing_fair_share_multiplier": f("float", 2.0),
        "kv_cache_routing_cold_start_warmup": f("bool", False),
        "kv_cache_routing_account_for_in_transfer": f("bool", False),
        "kv_cache_routing_conversation_affinity": f("bool", False),
        "kv_cache_routing_max_sessions": f("int", 65536),
        "kv_cache_routing_new_conv_placement": lit(["round_robin", "least_queued"], "round_robin"),
    },
    "CpConfig": {
        "cp_type": f("str", "ULYSSES", "ULYSSES, RING or HELIX"),
        "tokens_per_block": f("int?", None, "HELIX"),
        "use_nccl_for_alltoall": f("bool?", None, "HELIX"),
        "fifo_version": f("int?", None, "HELIX"),
    },
    "MultimodalConfig": {
        "encoder_cuda_graph": f("dict?", None, "", P),
        "encoder_side_stream_max_ahead": f("int", 0, "", P),
        "encoder_cache_max_bytes": f("int|str", 134217728, "bytes, or a string such as '512MB'", P),
        "encoder_scheduling_policy": lit(["DISABLED", "DEFAULT", "EAGER"], "DEFAULT", "", P),
        "video_pruning_rate": f("float?", None, "", P),
    },
    # Known from the golden manifest only (numeric/categorical fields): open, see OPEN_CONFIGS.
    "KvConnectorConfig": {   # KvCacheConnectorConfig; its first fields only (LLM_ARGS_PY via the code index)
        "connector": f("str?", None, "a named preset: lmcache, lmcache-mp, kvbm", P),
        "connector_module": f("str?", None, "import path of the connector module", P),
        "connector_scheduler_class": f("str?", None, "", P),
        "connector_worker_class": f("str?", None, "", P),
    },
    "TelemetryConfig": {
        "disabled": f("bool", False),
        "usage_context": lit(["unknown", "llm_class", "cli_serve", "cli_bench", "cli_eval", "disaggregated"],
                             "unknown"),
    },
}

# The classes above known only from the golden manifest (which lists no string fields): an
# unknown key there is only reported when it looks like a typo of a known one.
OPEN_CONFIGS = ["KvConnectorConfig", "TelemetryConfig"]

# ---------------------------------------------------------------- renames users hit

MOVED = {
    # "since": a version in which the old key is refused at the latest (the sources above show the
    # new key there); every table here is later than all of them.
    "kv_cache_dtype": {"now": "kv_cache_config.dtype", "since": "1.3.0rc21",
                       "note": "the KV-cache dtype lives in kv_cache_config (a top-level LLM argument in 1.0)"},
    "use_cuda_graph": {"now": "cuda_graph_config", "since": "1.0.0rc4",
                       "note": "cuda_graph_config: {} (or its keys) turns CUDA graphs on, null turns them off"},
    "cuda_graph_batch_sizes": {"now": "cuda_graph_config.batch_sizes", "since": "1.0.0rc4"},
    "cuda_graph_max_batch_size": {"now": "cuda_graph_config.max_batch_size", "since": "1.0.0rc4"},
    "cuda_graph_padding_enabled": {"now": "cuda_graph_config.enable_padding", "since": "1.0.0rc4"},
    "enable_overlap_scheduler": {"now": "disable_overlap_scheduler", "since": "1.0.0rc4",
                                 "note": "inverted: the overlap scheduler is on by default, "
                                         "disable_overlap_scheduler: true turns it off"},
    "pytorch_backend_config": {"now": None, "since": "1.0.0rc4", "flattened": True,
                               "note": "pytorch_backend_config was flattened into the top level"},
    "free_gpu_memory_fraction": {"now": "kv_cache_config.free_gpu_memory_fraction", "since": None,
                                 "note": "only trtllm-serve's --free_gpu_memory_fraction flag is top level"},
    "build_config": {"now": None, "since": "1.3.0rc21", "flattened": True,
                     "note": "BuildConfig is gone with the TensorRT backend; max_batch_size, max_num_tokens, "
                             "max_seq_len and max_beam_width are top-level keys"},
}

# Renamed in the 1.4.0rc line (a model validator in LLM_ARGS_PY says so).
MOVED_1_4 = {
    "kv_cache_config.block_reuse_config.block_reuse_policy": {
        "now": "kv_cache_config.block_reuse_config.policy", "since": "1.4.0rc4"},
}

# ---------------------------------------------------------------- engine (trtllm-build) fields

ENGINE_ONLY = {
    "gemm_plugin": (None, "the PyTorch backend chooses GEMM kernels itself"),
    "gpt_attention_plugin": ("attn_backend", "attention kernels are picked with attn_backend"),
    "nccl_plugin": (None, "collectives are chosen at run time (see allreduce_strategy)"),
    "moe_plugin": ("moe_config.backend", ""),
    "lora_plugin": ("lora_config", "enable LoRA with lora_config (max_lora_rank, lora_target_modules)"),
    "context_fmha": (None, "fused attention is always on"),
    "use_paged_context_fmha": (None, "paged context attention is always on"),
    "use_fp8_context_fmha": ("kv_cache_config.dtype", "an fp8 KV cache (kv_cache_config.dtype: fp8) "
                                                      "with an FP8 checkpoint"),
    "remove_input_padding": (None, "inputs are always packed"),
    "paged_kv_cache": (None, "the KV cache is always paged"),
    "kv_cache_type": (None, "the KV cache is always paged"),
    "tokens_per_block": ("kv_cache_config.tokens_per_block", ""),
    "multiple_profiles": (None, "there are no TensorRT optimization profiles"),
    "use_fused_mlp": (None, ""),
    "reduce_fusion": (None, ""),
    "user_buffer": ("torch_compile_config.enable_userbuffers", ""),
    "pp_reduce_scatter": (None, ""),
    "strongly_typed": (None, "there is no TensorRT network to type"),
    "opt_num_tokens": (None, "there are no TensorRT optimization profiles"),
    "max_prompt_embedding_table_size": (None, "multimodal embeddings need no table size"),
    "logits_dtype": (None, ""),
    "gather_context_logits": (None, "request context logits per request (SamplingParams.return_context_logits)"),
    "gather_all_token_logits": (None, "request logits per request (SamplingParams)"),
    "speculative_decoding_mode": ("speculative_config", "speculative_config.decoding_type"),
    "max_draft_len": ("speculative_config.max_draft_len", ""),
    "strip_plan": (None, "there is no engine plan"),
    "weight_sparsity": (None, ""),
    "weight_streaming": (None, ""),
    "fast_build": (None, "there is no engine build"),
    "workers": (None, "there is no engine build"),
    "profiling_verbosity": (None, "there is no engine to profile"),
}

# ---------------------------------------------------------------- trtllm-serve serve options
# name, flags, type, default, status, is_flag, multiple, choices  (SERVE_CLI)

SERVE = [
    ("agent_percentage", ["--agent_percentage"], "float", 0.0, "prototype"),
    ("agent_types", ["--agent_types"], "str", None, "prototype"),
    ("allow_request_chat_template", ["--allow_request_chat_template"], "bool", False, "prototype", True),
    ("backend", ["--backend"], "choice", "pytorch", "deprecated", False, False, ["_autodeploy", "pytorch"]),
    ("chat_template", ["--chat_template"], "str", None, "prototype"),
    ("context_parallel_size", ["--context_parallel_size", "--cp_size"], "int", 1, "beta"),
    ("custom_module_dirs", ["--custom_module_dirs"], "path", None, "prototype", False, True),
    ("custom_tokenizer", ["--custom_tokenizer"], "str", None, "prototype"),
    ("disagg_cluster_uri", ["--disagg_cluster_uri"], "str", None, "prototype"),
    ("enable_attention_dp", ["--enable_attention_dp"], "bool", False, "beta", True),
    ("enable_chunked_prefill", ["--enable_chunked_prefill"], "bool", False, "prototype", True),
    ("enable_visual_gen", ["--enable_visual_gen"], "bool", False, "prototype", True),
    ("extra_llm_api_options", ["--config", "--extra_llm_api_options"], "str", None, "prototype"),
    ("fail_fast_on_attention_window_too_large", ["--fail_fast_on_attention_window_too_large"], "bool", True,
     "deprecated", True),
    ("free_gpu_memory_fraction", ["--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction"], "float",
     0.9, "beta"),
    ("generation_config", ["--generation-config"], "choice", "trtllm", "prototype", False, False,
     ["auto", "trtllm"]),
    ("gpus_per_node", ["--gpus_per_node"], "int", None, "beta"),
    ("grpc", ["--grpc"], "bool", False, "prototype", True),
    ("host", ["--host"], "str", "localhost", "beta"),
    ("kv_cache_dtype", ["--kv_cache_dtype"], "choice", "auto", "prototype", False, False, ["auto", "fp8", "nvfp4"]),
    ("log_level", ["--log_level"], "choice", "info", "beta", False, False,
     ["debug", "error", "info", "internal_error", "trace", "verbose", "warning"]),
    ("max_batch_size", ["--max_batch_size"], "int", 2048, "beta"),
    ("max_beam_width", ["--max_beam_width"], "int", 1, "beta"),
    ("max_num_tokens", ["--max_num_tokens"], "int", 8192, "beta"),
    ("max_seq_len", ["--max_seq_len"], "int", None, "beta"),
    ("media_io_kwargs", ["--media_io_kwargs"], "str", None, "prototype"),
    ("metadata_server_config_file", ["--metadata_server_config_file"], "str", None, "prototype"),
    ("middleware", ["--middleware"], "str", None, "prototype", False, True),
    ("moe_cluster_parallel_size", ["--cluster_size", "--moe_cluster_parallel_size"], "int", None, "deprecated"),
    ("moe_expert_parallel_size", ["--ep_size", "--moe_expert_parallel_size"], "int", None, "beta"),
    ("num_postprocess_workers", ["--num_postprocess_workers"], "int", 0, "prototype"),
    ("num_serve_frontends", ["--num_serve_frontends"], "int", 1, "prototype"),
    ("num_input_processor_workers", ["--num_input_processor_workers"], "int", 8, "prototype"),
    ("num_media_load_workers", ["--num_media_load_workers"], "int", 8, "prototype"),
    ("otlp_traces_endpoint", ["--otlp_traces_endpoint"], "str", None, "prototype"),
    ("pipeline_parallel_size", ["--pipeline_parallel_size", "--pp_size"], "int", 1, "beta"),
    ("port", ["--port"], "int", 8000, "beta"),
    ("post_processor_hook", ["--post_processor_hook"], "str", None, "prototype"),
    ("reasoning_parser", ["--reasoning_parser"], "choice", None, "prototype", False, False,
     ["auto", "deepseek-r1", "deepseek_v4", "gemma4", "kimi_k2", "kimi_k25", "kimi_k3", "laguna", "minimax_m2",
      "minimax_m2_append_think", "minimax_m3", "nano-v3", "nemotron-v3", "poolside_v1", "qwen3", "qwen3_5"]),
    ("report_addr", ["--report_addr"], "str", None, "prototype"),
    ("revision", ["--hf_revision", "--revision"], "str", None, "beta"),
    ("served_model_name", ["--served_model_name"], "str", None, "prototype"),
    ("server_role", ["--server_role"], "str", None, "prototype"),
    ("telemetry", ["--no-telemetry", "--telemetry"], "bool", True, "beta", True),
    ("tensor_parallel_size", ["--tensor_parallel_size", "--tp_size"], "int", 1, "beta"),
    ("tokenizer", ["--tokenizer"], "str", None, "beta"),
    ("tool_parser", ["--tool_parser"], "choice", None, "prototype", False, False,
     ["auto", "deepseek_v3", "deepseek_v31", "deepseek_v32", "deepseek_v4", "gemma4", "glm4", "glm47", "kimi_k2",
      "kimi_k3", "minimax_m2", "minimax_m3", "poolside_v1", "qwen3", "qwen3_coder"]),
    ("trust_remote_code", ["--trust_remote_code"], "bool", False, "beta", True),
    ("video_pruning_rate", ["--video_pruning_rate"], "float", None, "prototype"),
    ("visual_gen_args", ["--visual_gen_args"], "str", None, "prototype"),
]


def serve_options() -> list[dict]:
    out = []
    for row in SERVE:
        name, flags, type_, default, status, *rest = row
        is_flag = rest[0] if len(rest) > 0 else False
        multiple = rest[1] if len(rest) > 1 else False
        choices = rest[2] if len(rest) > 2 else None
        out.append({"name": name, "flags": flags, "type": type_, "default": default, "status": status,
                    "is_flag": is_flag, "multiple": multiple, "choices": choices})
    return out


# ---------------------------------------------------------------- the llmapi Triton model (PBTXT)

def t(name, dtype, dims, optional=False):
    return {"name": name, "data_type": dtype, "dims": dims, "optional": optional}


LLMAPI_INPUTS = [
    t("text_input", "TYPE_STRING", [-1]),
    t("image_url", "TYPE_STRING", [-1], True),
    t("streaming", "TYPE_BOOL", [1], True),
    t("sampling_param_best_of", "TYPE_INT32", [1], True),
    t("sampling_param_temperature", "TYPE_FP32", [1], True),
    t("sampling_param_top_k", "TYPE_INT32", [1], True),
    t("sampling_param_top_p", "TYPE_FP32", [1], True),
    t("sampling_param_frequency_penalty", "TYPE_FP32", [1], True),
    t("sampling_param_presence_penalty", "TYPE_FP32", [1], True),
    t("sampling_param_max_tokens", "TYPE_INT32", [1], True),
    t("sampling_param_stop", "TYPE_STRING", [-1], True),
    t("sampling_param_seed", "TYPE_UINT64", [1], True),
    t("sampling_param_exclude_input_from_output", "TYPE_BOOL", [1], True),
    t("sampling_param_return_perf_metrics", "TYPE_BOOL", [1], True),
    t("return_finish_reason", "TYPE_BOOL", [1], True),
    t("return_stop_reason", "TYPE_BOOL", [1], True),
    t("return_cumulative_logprob", "TYPE_BOOL", [1], True),
    t("stop", "TYPE_BOOL", [1], True),
    t("lora_id", "TYPE_UINT64", [1], True),
    t("lora_name", "TYPE_STRING", [1], True),
    t("lora_path", "TYPE_STRING", [1], True),
    t("lora_ckpt_source", "TYPE_STRING", [1], True),
]
LLMAPI_OUTPUTS = [
    t("text_output", "TYPE_STRING", [-1]),
    t("finish_reason", "TYPE_STRING", [-1]),
    t("stop_reason", "TYPE_STRING", [-1]),
    t("cumulative_logprob", "TYPE_FP32", [-1]),
    t("kv_cache_reused_block", "TYPE_INT32", [-1]),
    t("kv_cache_missed_block", "TYPE_INT32", [-1]),
    t("kv_cache_alloc_new_blocks", "TYPE_INT32", [-1]),
    t("kv_cache_alloc_total_blocks", "TYPE_INT32", [-1]),
    t("kv_cache_hit_rate", "TYPE_FP32", [-1]),
    t("arrival_time_ns", "TYPE_INT64", [1]),
    t("first_scheduled_time_ns", "TYPE_INT64", [1]),
    t("first_token_time_ns", "TYPE_INT64", [1]),
    t("last_token_time_ns", "TYPE_INT64", [1]),
    t("acceptance_rate", "TYPE_FP32", [1]),
    t("total_accepted_draft_tokens", "TYPE_INT32", [1]),
    t("total_draft_tokens", "TYPE_INT32", [1]),
]

LLMAPI_MODEL = {
    "name": "tensorrt_llm",
    "backend": "python",
    "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
    "inputs": LLMAPI_INPUTS,
    "outputs": LLMAPI_OUTPUTS,
    "not_in_config_pbtxt": ["max_batch_size", "model_transaction_policy.decoupled"],
    "triton_config": {   # MODEL_PY: auto_complete_config and initialize read these
        "max_batch_size": {"type": "int", "default": 0, "required": True,
                           "description": "copied into the Triton config by auto_complete_config; the "
                                          "default model.yaml says batching is not supported (JIRA-4496)"},
        "decoupled": {"type": "bool", "default": False, "required": True,
                      "description": "model_transaction_policy.decoupled (streaming)"},
        "cancellation_check_period_ms": {"type": "int", "default": 100,
                                         "description": "how often model.py checks for cancelled requests"},
        "multimodal": {"type": "bool", "default": False,
                       "description": "read the image_url input (config.pbtxt comment, PBTXT)"},
    },
    "default_model_yaml": {
        "model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "backend": "pytorch",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "triton_config": {"max_batch_size": 0, "decoupled": False},
    },
    "config_env": {"LLM_CONFIG_PATH": "model.yaml (in the model version directory) when unset"},
}

# ---------------------------------------------------------------- Dynamo (DYNAMO_ARGS, DYNAMO_DOC)

DYNAMO_FLAGS = [
    ("--model", "str", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "Hugging Face id or local path (--model-path is "
                                                              "an obsolete alias)"),
    ("--served-model-name", "str", None, "derived from the model path when unset"),
    ("--extra-engine-args", "str", "", "path of a TorchLlmArgs YAML"),
    ("--override-engine-args", "str", "", "a Python dict literal merged over the YAML"),
    ("--tensor-parallel-size", "int", 1, ""),
    ("--pipeline-parallel-size", "int", 1, ""),
    ("--expert-parallel-size", "int", None, ""),
    ("--enable-attention-dp", "bool", False, "negatable (--no-enable-attention-dp)"),
    ("--kv-block-size", "int", 32, "kv_cache_config.tokens_per_block"),
    ("--gpus-per-node", "int", None, ""),
    ("--max-batch-size", "int", 2048, "default: TensorRT-LLM's BaseLlmArgs.max_batch_size"),
    ("--max-num-tokens", "int", 8192, "default: TensorRT-LLM's BaseLlmArgs.max_num_tokens"),
    ("--max-seq-len", "int", None, "default: TensorRT-LLM's BaseLlmArgs.max_seq_len"),
    ("--max-beam-width", "int", 1, "default: TensorRT-LLM's BaseLlmArgs.max_beam_width"),
    ("--free-gpu-memory-fraction", "float", 0.9, "kv_cache_config.free_gpu_memory_fraction"),
    ("--publish-kv-events", "bool", False, "obsolete alias --publish-events-and-metrics"),
    ("--load-format", "str", "auto", "auto, or gms (GPU Memory Service)"),
    ("--model-loader-extra-config", "str", "", "JSON object for the model loader"),
    ("--disaggregation-mode", "choice", "agg", "agg, pd, prefill, decode, encode"),
    ("--enable-multimodal", "bool", False, ""),
    ("--guided-decoding-backend", "choice", None, "xgrammar, llguidance"),
]


def dynamo(version: str) -> dict:
    pins = {"1.3.0rc29": "v1.6.0"}
    release = pins.get(version)
    flags = [{"flag": fl, "type": ty, "default": de, "description": ds} for fl, ty, de, ds in DYNAMO_FLAGS]
    if release:
        note = f"Dynamo {release} pins TensorRT-LLM {version}"
    elif version == "1.3.0rc21":
        note = ("no Dynamo release pins 1.3.0rc21 (v1.3.1 pins rc19, v1.4.0 rc22): the flags are those "
                "of the Dynamo source named, which reads the max-* defaults from TensorRT-LLM itself")
    else:
        note = f"no Dynamo release pins TensorRT-LLM {version} yet; flags as of Dynamo v1.6.0"
    return {"module": "dynamo.trtllm", "release": release, "note": note, "flags": flags,
            "env_prefix": "DYN_TRTLLM_", "yaml_flag": "--extra-engine-args",
            "source": f"{DYNAMO_ARGS}; {DYNAMO_DOC}; {DYNAMO_COMPAT}"}


# ---------------------------------------------------------------- per version

PREFILL_DOCS = ("https://nvidia.github.io/TensorRT-LLM/1.3.0rc27/llm-api/reference/TorchCompileConfig.html "
                "(capture_num_tokens and enable_piecewise_cuda_graph deprecated for the prefill_* keys; no "
                "compile_only_piecewise_graphs); "
                "https://nvidia.github.io/TensorRT-LLM/1.4.0rc1/llm-api/reference/TorchCompileConfig.html "
                "(compile_only_piecewise_graphs)")

COMMON_SOURCES = {
    "llm_args": f"{LLM_ARGS_PY} (BaseLlmArgs, TorchLlmArgs: names, types, defaults, status tags); "
                f"{MANIFEST} (choices); {TORCH_ARGS_DOC}",
    "configs": f"{LLM_ARGS_PY} (KvCacheConfig, SchedulerConfig, CudaGraphConfig, ...); "
               "NVIDIA/TensorRT-LLM@04b4c0306912aa8e772b9f00bc1bbd61e0e9c878:tensorrt_llm/_torch/peft/lora/config.py "
               f"(LoraConfig); {MANIFEST} (KvConnectorConfig, TelemetryConfig: numeric/categorical fields "
               "only)",
    "moved": f"{RENAMES}; {LLM_ARGS_PY} (block_reuse_policy); NVIDIA/TensorRT-LLM@000a01de:"
             "tests/unittest/api_stability/references/llm.yaml (1.0.0rc4: kv_cache_dtype still top level, "
             "cuda_graph_config and disable_overlap_scheduler already there)",
    "engine_only": REMOVAL,
    "trtllm_serve": f"{SERVE_CLI} (the reference exists since NVIDIA/TensorRT-LLM#15643, merged 2026-06-26, "
                    "before the TensorRT-backend removal)",
    "llmapi_model": f"{PBTXT} (tensors); {MODEL_YAML} (default model.yaml); {MODEL_PY} (triton_config keys; "
                    "every other model.yaml key goes to LLM(**kwargs)). Other stored config.pbtxt versions, "
                    "whose order is not known: c8c6df08 (without the LoRA inputs) and 0ebb1536 (adds "
                    "sampling_param_logits_post_processor_name with a model.yaml logits_post_processors key, "
                    "without image_url); this table follows 0a71057",
}

NOTES = {
    "1.3.0rc21": "the v1.3.0rc21 tag could not be read here (see tools/extract_llmapi_tables.py): keys are "
                 "those of the stored main snapshot named per group, without what only the 1.4.0rc docs "
                 "show (torch_compile_config.compile_only_piecewise_graphs). Keys added to main after rc21 "
                 "are accepted here too: lenient, it never refuses a key main still has.",
    "1.3.0rc29": "the v1.3.0rc29 tag could not be read here: as 1.3.0rc21, from the nearest stored sources, "
                 "checked against the 1.3.0rc27 docs for the prefill CUDA graph keys (Dynamo v1.6.0 pins "
                 "this version).",
    "1.4.0rc4": "the 1.4.0rc line: the stored main snapshot named per group plus the 1.4.0rc1 docs "
                "(the v1.4.0rc4 tag itself could not be read).",
}


def _stable_by_default(fields: dict[str, dict]) -> dict[str, dict]:
    """llm_args.py tags only non-stable fields (Field(status=...)); untagged means stable."""
    return {k: {**v, "status": v.get("status", "stable")} for k, v in fields.items()}


def table(version: str) -> dict:
    line_1_4 = version.startswith("1.4.")
    configs = {**CONFIGS, "TorchCompileConfig": torch_compile(line_1_4)}
    configs = {name: fields if name in OPEN_CONFIGS else _stable_by_default(fields)
               for name, fields in sorted(configs.items())}
    moved = {**MOVED, **(MOVED_1_4 if line_1_4 else {})}
    sources = [f"{group}: {src}" for group, src in COMMON_SOURCES.items()]
    sources.append(f"llm_args (prefill CUDA graph keys), configs (TorchCompileConfig): {PREFILL_DOCS}")
    sources += [f"dynamo: {DYNAMO_ARGS}; {DYNAMO_DOC}; {DYNAMO_COMPAT}", f"note: {NOTES[version]}"]
    return {
        "version": version,
        "sources": sources,
        "llm_args": _stable_by_default(LLM_ARGS),
        "configs": configs,
        "open_configs": OPEN_CONFIGS,
        "moved": moved,
        "engine_only": {k: {"now": now, "gone_since": "1.3.0rc21", "note": note}
                        for k, (now, note) in ENGINE_ONLY.items()},
        "trtllm_serve": {"command": "trtllm-serve serve", "model": "positional (no --model flag)",
                         "options": serve_options()},
        "llmapi_model": LLMAPI_MODEL,
        "dynamo": dynamo(version),
    }


# ---------------------------------------------------------------- --compare: fields of an llm_args.py (ast)

def source_fields(source: str) -> dict[str, dict[str, dict]]:
    """class name -> field name -> {"default", "status"} for every class of an llm_args.py that
    declares pydantic fields, inherited fields included (classes of the same file only)."""
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    own: dict[str, dict[str, dict]] = {}
    for name, node in classes.items():
        fields = {}
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            field, annotation = stmt.target.id, ast.unparse(stmt.annotation)
            if field.startswith("_") or annotation.startswith("ClassVar") or field == "model_config":
                continue
            fields[field] = _field_facts(stmt.value)
        own[name] = fields

    def resolved(name: str, seen: tuple = ()) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for base in classes[name].bases:
            base_name = ast.unparse(base)
            if base_name in classes and base_name not in seen:
                out.update(resolved(base_name, (*seen, name)))
        out.update(own[name])
        return out

    return {name: resolved(name) for name in classes if resolved(name)}


def _field_facts(value: ast.expr | None) -> dict:
    """Default and stability tag of `x: T = Field(...)` / `x: T = literal`."""
    if value is None:
        return {"default": None, "status": "stable", "required": True}
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("Field", "PydanticField"):
        kwargs = {k.arg: k.value for k in value.keywords if k.arg}
        status = kwargs.get("status")
        facts = {"status": _literal(status) if status is not None else "stable"}
        if "default" in kwargs or value.args:
            facts["default"] = _literal(kwargs.get("default", value.args[0] if value.args else None))
        elif "default_factory" in kwargs:
            facts["default"] = {"list": [], "dict": {}}.get(ast.unparse(kwargs["default_factory"]), {})
        else:
            facts.update(default=None, required=True)
        return facts
    return {"default": _literal(value), "status": "stable"}


def _literal(node: ast.expr):
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if all(isinstance(n, (ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop))
           for n in ast.walk(node)):   # constant arithmetic such as 1024**3
        return eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})
    return ast.unparse(node).rsplit(".", 1)[-1].lower()   # an enum member: its name


def compare(source: str, version: str) -> list[str]:
    """Where table(version) and an llm_args.py disagree on TorchLlmArgs and the nested classes
    both know: missing or extra keys, other defaults, other stability tags."""
    found = source_fields(source)
    t = table(version)
    pairs = [("TorchLlmArgs", t["llm_args"])] + [(n, fl) for n, fl in t["configs"].items()
                                                 if n not in t["open_configs"]]
    lines = []
    for cls, fields in pairs:
        src = found.get(cls) or found.get({"CudaGraphConfig": "DecodeCudaGraphConfig",
                                           "KvEventsConfig": "KVEventsConfig",
                                           "ReorderPolicyConfig": "ReorderRequestPolicyConfig",
                                           "KvConnectorConfig": "KvCacheConnectorConfig"}.get(cls, ""))
        if src is None:
            lines.append(f"{cls}: not in the source")
            continue
        lines += [f"{cls}.{k}: in the source, not in the table" for k in sorted(set(src) - set(fields))]
        lines += [f"{cls}.{k}: in the table, not in the source" for k in sorted(set(fields) - set(src))]
        for k in sorted(set(src) & set(fields)):
            for what in ("default", "status"):
                a, b = fields[k].get(what), src[k].get(what)
                if what == "default" and (src[k].get("required") or isinstance(b, str) and a == b.lower()):
                    continue
                if a != b and not (isinstance(a, str) and isinstance(b, str) and a.lower() == b.lower()):
                    lines.append(f"{cls}.{k}: {what} {a!r} in the table, {b!r} in the source")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed tables, write nothing")
    ap.add_argument("--compare", metavar="LLM_ARGS_PY", help="diff a table against this llm_args.py")
    ap.add_argument("--version", choices=list(NOTES), help="the table --compare checks")
    args = ap.parse_args(argv)
    if args.compare:
        if not args.version:
            ap.error("--compare needs --version")
        diffs = compare(Path(args.compare).read_text(encoding="utf-8"), args.version)
        print("\n".join(diffs) if diffs else f"{args.version}: the table matches {args.compare}")
        return 1 if diffs else 0
    stale = []
    for version in NOTES:
        text = json.dumps(table(version), indent=1, sort_keys=False) + "\n"
        path = OUT / f"{version}.json"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale LLM-API tables: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
