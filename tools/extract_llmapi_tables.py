"""Write llmbuild/toolchains/llmapi/data/<version>.json, the engine-free TensorRT-LLM tables.

Regenerate with:

    python tools/extract_llmapi_tables.py            # writes every table
    python tools/extract_llmapi_tables.py --check    # exit 1 if a committed table differs

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
REMOVAL = ("NVIDIA/TensorRT-LLM@335107a:docs/source/legacy/tensorrt-backend-removal.md; "
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
# Captured fields from the golden manifest (types, choices); str/path/dict fields, which the
# manifest leaves out, from the TorchLlmArgs signature (docs 1.4.0rc4); defaults from that
# signature, the api_stability references and the facts file.

LLM_ARGS: dict[str, dict] = {
    # model and tokenizer
    "model": f("str", None, "Hugging Face id or local checkpoint directory (required)"),
    "tokenizer": f("str?", None, "tokenizer id or directory; the model's when unset"),
    "tokenizer_mode": lit(["auto", "slow"], "auto"),
    "custom_tokenizer": f("str?", None, "", "prototype"),
    "post_processor_hook": f("str?", None, "", "prototype"),
    "skip_tokenizer_init": f("bool", False),
    "trust_remote_code": f("bool", False),
    "dtype": f("str", "auto", "model weights dtype: auto, float16, bfloat16, float32"),
    "revision": f("str?", None, "Hugging Face revision of the model"),
    "tokenizer_revision": f("str?", None),
    "model_kwargs": f("dict?", None, "overrides of the model's config.json"),
    "load_format": lit(["auto", "dummy", "vision_only", "gms"], "auto", "how weights are loaded"),
    "checkpoint_format": f("str?", None),
    "checkpoint_io_policy": lit(["auto", "native", "rank_striped_read_ahead"], "auto"),
    "backend": lit(["pytorch"], "pytorch", "only the PyTorch backend remains"),
    # parallelism
    "tensor_parallel_size": f("int", 1),
    "pipeline_parallel_size": f("int", 1),
    "context_parallel_size": f("int", 1),
    "gpus_per_node": f("int?", None),
    "moe_cluster_parallel_size": f("int?", None),
    "moe_tensor_parallel_size": f("int?", None),
    "moe_expert_parallel_size": f("int?", None),
    "enable_attention_dp": f("bool", False),
    "enable_lm_head_tp_in_adp": f("bool", False),
    "pp_partition": f("list[int]?", None),
    "cp_config": f("config:CpConfig?", None),
    "attention_dp_config": f("config:AttentionDpConfig?", None),
    "dwdp_config": f("config:DwdpConfig?", None),
    "orchestrator_type": lit(["rpc", "ray"], None, nullable=True),
    "ray_placement_config": f("config:RayPlacementConfig?", None),
    # limits
    "max_batch_size": f("int?", None, "max requests in a batch (trtllm-serve's flag default: 2048)"),
    "max_num_tokens": f("int?", None, "max tokens in a batch (trtllm-serve's flag default: 8192)"),
    "max_seq_len": f("int?", None, "max sequence length (input + output); from the model when unset"),
    "max_input_len": f("int?", None),
    "max_beam_width": f("int?", None, "trtllm-serve's flag default: 1"),
    "max_stats_len": f("int", 1000),
    "encoder_max_batch_size": f("int?", None),
    "encoder_max_num_tokens": f("int?", None),
    # KV cache, LoRA, scheduling
    "kv_cache_config": f("config:KvCacheConfig", None, "KV-cache settings (dtype, memory fraction, block reuse)"),
    "kv_cache_compression_config": f("config:KvCacheCompressionConfig?", None),
    "kv_connector_config": f("config:KvConnectorConfig?", None),
    "enable_lora": f("bool", False),
    "lora_config": f("config:LoraConfig?", None),
    "peft_cache_config": f("config:PeftCacheConfig?", None),
    "scheduler_config": f("config:SchedulerConfig", None),
    "reorder_policy_config": f("config:ReorderPolicyConfig?", None),
    "cache_transceiver_config": f("config:CacheTransceiverConfig?", None, "disaggregated serving transfer"),
    "enable_chunked_prefill": f("bool", False),
    "disable_overlap_scheduler": f("bool", False, "turn the overlap scheduler off (it is on by default)"),
    "batch_wait_timeout_ms": f("float", 0),
    "batch_wait_timeout_iters": f("int", 0),
    "batch_wait_max_tokens_ratio": f("float", 0),
    "stream_interval": f("int", 1),
    # kernels, graphs, compilation
    "attn_backend": lit(["VANILLA", "TRTLLM", "FLASHINFER"], "TRTLLM"),
    "moe_config": f("config:MoeConfig", None),
    "cuda_graph_config": f("config:CudaGraphConfig?", None, "decode CUDA graphs; null turns them off"),
    "encoder_cuda_graph_config": f("config:EncodeCudaGraphConfig?", None),
    "enable_encoder_decoder_mixed_cuda_graph": f("bool", False),
    "prefill_cuda_graph_backend": lit(["disabled", "piecewise", "breakable"], "disabled"),
    "prefill_capture_num_tokens": f("list[int]?", None),
    "torch_compile_config": f("config:TorchCompileConfig?", None),
    "enable_autotuner": f("bool", True),
    "allreduce_strategy": lit(["AUTO", "NCCL", "UB", "MINLATENCY", "ONESHOT", "TWOSHOT", "LOWPRECISION",
                               "MNNVL", "NCCL_SYMMETRIC"], "AUTO", nullable=True),
    "force_dynamic_quantization": f("bool", False),
    "enable_min_latency": f("bool", False),
    "enable_mla_skip_correction": f("bool", False),
    "mla_skip_correction_threshold": f("float", None),
    "use_cute_dsl_bf16_bmm": f("bool", False),
    "use_cute_dsl_bf16_gemm": f("bool", False),
    "use_cute_dsl_blockscaling_bmm": f("bool", False),
    "use_cute_dsl_blockscaling_mm": f("bool", False),
    "use_fine_grained_sync": f("bool", False),
    "enable_low_latency_host_dispatch": f("bool", False),
    "enable_in_graph_sampling": f("bool", False),
    "sampler_force_async_worker": f("bool", False),
    "enable_resource_governor": f("bool", False),
    "nvfp4_gemm_config": f("config:Nvfp4GemmConfig?", None),
    "sparse_attention_config": f("dict?", None, "sparse attention (algorithm-specific keys)"),
    "speculative_config": f("dict?", None, "speculative decoding; keys depend on decoding_type"),
    "guided_decoding_backend": lit(["xgrammar", "llguidance"], None, nullable=True),
    "enable_speculative_beam_history_d2h": f("bool", False),
    # outputs, stats, serving
    "gather_generation_logits": f("bool", False),
    "return_perf_metrics": f("bool", False),
    "perf_metrics_max_requests": f("int", 0),
    "enable_iter_perf_stats": f("bool", False),
    "enable_iter_req_stats": f("bool", False),
    "iter_stats_max_iterations": f("int?", None),
    "request_stats_max_iterations": f("int?", None),
    "print_iter_log": f("bool", False),
    "enable_layerwise_nvtx_marker": f("bool", False),
    "enable_energy_metrics": f("bool", False),
    "prometheus_metrics_config": f("config:PrometheusMetricsConfig?", None),
    "telemetry_config": f("config:TelemetryConfig?", None),
    "layer_wise_benchmarks_config": f("dict?", None),
    "garbage_collection_gen0_threshold": f("int", 20000),
    "num_postprocess_workers": f("int", 0),
    "postprocess_tokenizer_dir": f("str?", None),
    "num_serve_frontends": f("int", 1),
    "reasoning_parser": f("str?", None),
    "generation_config": lit(["auto", "trtllm"], "trtllm"),
    "enable_early_first_token_response": f("bool", False),
    "batched_logits_processor": f("any?", None, "Python object; not settable from YAML"),
    # multimodal / encoder
    "multimodal_config": f("config:MultimodalConfig?", None),
    "mm_encoder_only": f("bool", False),
    "disable_mm_encoder": f("bool", False),
    "encode_only": f("bool", False),
    "gms_config": f("config:GmsConfig?", None),
    "mx_config": f("dict?", None),
}

# ---------------------------------------------------------------- nested configs

CUDA_GRAPH = {
    "batch_sizes": f("list[int]?", None, "batch sizes to capture"),
    "max_batch_size": f("int", 0, "largest captured batch; 128 when neither this nor batch_sizes is set"),
    "enable_padding": f("bool", False, "round batches up to the next captured size"),
    "mode": lit(["decode"], "decode"),
}
ENCODE_CUDA_GRAPH = {
    "batch_sizes": f("list[int]?", None),
    "max_batch_size": f("int", 0),
    "enable_padding": f("bool", False),
    "mode": lit(["encode"], "encode"),
    "num_tokens": f("list[int]?", None),
    "max_num_token": f("int", 0),
    "seq_lens": f("list[int]?", None),
    "max_seq_len": f("int", 0),
}

CONFIGS: dict[str, dict[str, dict]] = {
    "KvCacheConfig": {
        "enable_block_reuse": f("bool", True),
        "max_tokens": f("int?", None),
        "max_attention_window": f("list[int]?", None),
        "sink_token_length": f("int?", None),
        "free_gpu_memory_fraction": f("float?", 0.9, "fraction of free GPU memory for the KV cache"),
        "host_cache_size": f("int?", None),
        "disk_cache_size": f("int?", None),
        "disk_cache_path": f("str?", None),
        "disk_prefetch_num_reqs": f("int", None),
        "secondary_offload_min_priority": f("int?", None),
        "cross_kv_cache_fraction": f("float?", None),
        "enable_partial_reuse": f("bool", True),
        "copy_on_partial_reuse": f("bool", True),
        "use_uvm": f("bool", False),
        "max_gpu_total_bytes": f("int", 0),
        "dtype": lit(["auto", "float16", "bfloat16", "float32", "fp8", "fp8_ds_mla", "nvfp4"], "auto",
                     "KV-cache dtype (was top-level kv_cache_dtype)"),
        "tokens_per_block": f("int", 32),
        "use_kv_cache_manager_v2": f("bool|str", "auto", "true, false or 'auto'"),
        "avg_seq_len": f("int?", None),
        "pool_ratio": f("list[float]?", None),
        "max_util_for_resume": f("float", None),
        "fp8_context_mla_kv_len_cap": f("int?", None),
        "enable_swa_scratch_reuse": f("bool", None),
        "event_buffer_max_size": f("int", 0),
        "attention_dp_events_gather_period_ms": f("int", 5),
        "iteration_stats_interval": f("int", None),
        "kv_cache_event_hash_algo": lit(["auto", "v1_block_key", "v2_sha256", "v2_sha256_64"], "auto"),
        "kv_events_config": f("config:KvEventsConfig?", None),
        "block_reuse_config": f("config:BlockReuseConfig?", None),
        "mamba_ssm_cache_dtype": lit(["auto", "float16", "bfloat16", "float32"], "auto"),
        "mamba_ssm_stochastic_rounding": f("bool", False),
        "mamba_ssm_philox_rounds": f("int", None),
        "mamba_state_config": f("config:MambaStateConfig?", None),
        "enable_kv_pool_rebalance": f("bool", False),
        "kv_pool_rebalance_check_interval": f("int", None),
        "kv_pool_rebalance_cooldown_secs": f("float", None),
        "kv_pool_rebalance_min_sampled_kv_caches": f("int", None),
        "kv_pool_rebalance_moving_average_decay": f("float", None),
        "kv_pool_rebalance_ratio_threshold": f("float", None),
        "kv_pool_rebalance_target_ratio_update_interval": f("int", None),
    },
    "KvEventsConfig": {
        "enable_kv_cache_events": f("bool", False),
        "publisher": lit(["null", "zmq"], None, nullable=True),
        "buffer_steps": f("int", None),
        "hwm": f("int", None),
        "max_queue_size": f("int", None),
    },
    "BlockReuseConfig": {
        "policy": lit(["all_reusable", "per_request", "per_conversation"], "all_reusable"),
        "max_num_turns": f("int", None),
    },
    "MambaStateConfig": {
        "enable_branch_snapshot": f("bool", False),
        "periodic_snapshot_interval": f("int", None),
    },
    "CudaGraphConfig": CUDA_GRAPH,
    "EncodeCudaGraphConfig": ENCODE_CUDA_GRAPH,
    "TorchCompileConfig": {
        "enable_fullgraph": f("bool", True),
        "enable_inductor": f("bool", False),
        "enable_piecewise_cuda_graph": f("bool", False, "deprecated alias of prefill_cuda_graph_backend: piecewise"),
        "capture_num_tokens": f("list[int]?", None, "deprecated alias of prefill_capture_num_tokens"),
        "enable_userbuffers": f("bool", True),
        "max_num_streams": f("int", 3),
    },
    "SchedulerConfig": {
        "capacity_scheduler_policy": lit(["MAX_UTILIZATION", "GUARANTEED_NO_EVICT", "STATIC_BATCH"],
                                         "GUARANTEED_NO_EVICT"),
        "context_chunking_policy": lit(["FIRST_COME_FIRST_SERVED", "EQUAL_PROGRESS", "FORCE_CHUNK"], None,
                                       nullable=True),
        "dynamic_batch_config": f("config:DynamicBatchConfig?", None),
        "enable_prefix_aware_scheduling": f("bool", False),
        "use_python_scheduler": f("bool", False),
        "waiting_queue_policy": lit(["fcfs", "priority"], "fcfs"),
    },
    "DynamicBatchConfig": {
        "enable_batch_size_tuning": f("bool", None),
        "enable_max_num_tokens_tuning": f("bool", None),
        "dynamic_batch_moving_average_window": f("int", None),
    },
    "LoraConfig": {
        "lora_dir": f("list[str]", [], "adapter directories loaded at start"),
        "lora_ckpt_source": lit(["hf", "nemo"], "hf"),
        "max_lora_rank": f("int", 64),
        "lora_target_modules": f("list[str]", []),
        "trtllm_modules_to_hf_modules": f("dict", None),
        "max_loras": f("int?", None),
        "max_cpu_loras": f("int?", None),
        "swap_gate_up_proj_lora_b_weight": f("bool", True),
        "cuda_graph_specialize_lora": f("bool", None),
        "overlap_lora_and_base": f("bool", False),
    },
    "PeftCacheConfig": {k: f("int", None) for k in (
        "num_host_module_layer", "num_device_module_layer", "optimal_adapter_size", "max_adapter_size",
        "num_put_workers", "num_ensure_workers", "num_copy_streams", "max_pages_per_block_host",
        "max_pages_per_block_device", "host_cache_size")} | {
        "device_cache_percent": f("float", None),
        "lora_prefetch_dir": f("str?", None),
    },
    "MoeConfig": {
        "backend": lit(["AUTO", "CUTLASS", "CUTEDSL", "TRTLLM", "DEEPGEMM", "DENSEGEMM", "VANILLA", "TRITON",
                        "MARLIN", "MEGAMOE_DEEPGEMM", "MEGAMOE_CUTEDSL"], "AUTO"),
        "max_num_tokens": f("int?", None),
        "load_balancer": f("dict|str?", None, "expert load balancer: a mapping or a YAML file path"),
        "disable_finalize_fusion": f("bool", False),
        "use_low_precision_moe_combine": f("bool", False),
    },
    "CacheTransceiverConfig": {
        "backend": lit(["DEFAULT", "UCX", "NIXL", "MOONCAKE", "MPI"], None, nullable=True),
        "max_tokens_in_buffer": f("int?", None, "must be >= the longest input in disaggregated serving"),
        "kv_transfer_timeout_ms": f("int?", None),
        "kv_transfer_sender_future_timeout_ms": f("int?", None),
        "kv_transfer_poll_interval_ms": f("int?", None),
        "kv_cache_bounce_size_mb": f("int", None),
        "enable_pipelined_transfer": f("bool", None),
        "transceiver_runtime": lit(["CPP", "PYTHON", "auto"], None, nullable=True),
    },
    "CpConfig": {
        "cp_type": lit(["ULYSSES", "RING", "HELIX"], None),
        "tokens_per_block": f("int?", None),
        "use_nccl_for_alltoall": f("bool?", None),
        "fifo_version": f("int?", None),
    },
    "AttentionDpConfig": {
        "enable_balance": f("bool", False),
        "timeout_iters": f("int", None),
        "batching_wait_iters": f("int", None),
        "enable_kv_cache_aware_routing": f("bool", False),
        "kv_cache_routing_account_for_in_transfer": f("bool", None),
        "kv_cache_routing_cold_start_warmup": f("bool", None),
        "kv_cache_routing_conversation_affinity": f("bool", None),
        "kv_cache_routing_fair_share_multiplier": f("float", None),
        "kv_cache_routing_load_balance_weight": f("float", None),
        "kv_cache_routing_match_rate_threshold": f("float", None),
        "kv_cache_routing_max_sessions": f("int", None),
        "kv_cache_routing_new_conv_placement": lit(["round_robin", "least_queued"], "round_robin"),
    },
    "DwdpConfig": {
        "dwdp_size": f("int", None), "num_groups": f("int", None), "num_experts_per_worker": f("int", None),
        "num_prefetch_experts": f("int", None), "contention_opt": f("bool", None),
    },
    "RayPlacementConfig": {
        "defer_workers_init": f("bool", False),
        "per_worker_gpu_share": f("float?", None),
        "placement_bundle_indices": f("list?", None),
        "placement_groups": f("any?", None),
    },
    "KvCacheCompressionConfig": {
        "algorithm": lit(["quantization_for_cold_page", "triattention"], None),
        "beta": f("int", None), "budget": f("int", None),
        "eviction_mode": lit(["union", "per_head", "per_layer_perhead"], None),
        "normalize_scores": f("bool", None),
        "quant": lit(["nvfp4"], None),
    },
    "KvConnectorConfig": {
        "connector": f("str?", None, "lmcache, lmcache-mp, kvbm, or a module"),
        "connector_module": f("str?", None),
        "connector_scheduler_class": f("str?", None),
        "connector_worker_class": f("str?", None),
    },
    "ReorderPolicyConfig": {
        "policy_name": lit(["AgentTree"], None, nullable=True),
        "policy_args": f("dict?", None),
    },
    "Nvfp4GemmConfig": {
        "allowed_backends": f("list[str]", None, "cutlass, cublaslt, cutedsl, cuda_core, marlin"),
    },
    "PrometheusMetricsConfig": {k: f("list[float]?", None) for k in (
        "e2e_request_latency_buckets", "request_decode_time_buckets", "request_inference_time_buckets",
        "request_prefill_time_buckets", "request_queue_time_buckets", "time_per_output_token_buckets",
        "time_to_first_token_buckets")},
    "TelemetryConfig": {
        "disabled": f("bool", False),
        "usage_context": lit(["unknown", "llm_class", "cli_serve", "cli_bench", "cli_eval", "disaggregated"],
                             "unknown"),
    },
    "MultimodalConfig": {
        "encoder_cache_max_bytes": f("int", None),
        "encoder_scheduling_policy": lit(["DISABLED", "DEFAULT", "EAGER"], None),
        "encoder_side_stream_max_ahead": f("int", None),
        "video_pruning_rate": f("float?", None),
    },
    "GmsConfig": {
        "mode": lit(["auto", "rw", "ro"], "auto"),
        "socket_path": f("str?", None),
    },
}

# Configs whose uncaptured (string) fields the manifest does not list: unknown keys there are
# only reported when they look like a typo of a known key.
OPEN_CONFIGS = ["KvConnectorConfig", "RayPlacementConfig", "MultimodalConfig", "GmsConfig", "CpConfig",
                "KvCacheCompressionConfig", "PeftCacheConfig", "MoeConfig", "CacheTransceiverConfig",
                "AttentionDpConfig", "DwdpConfig"]

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
    "free_gpu_memory_fraction": {"now": "kv_cache_config.free_gpu_memory_fraction", "since": "1.0.0rc4",
                                 "note": "trtllm-serve's --free_gpu_memory_fraction flag sets this key"},
    "build_config": {"now": None, "since": "1.3.0rc21", "flattened": True,
                     "note": "BuildConfig is gone with the TensorRT backend; max_batch_size, max_num_tokens, "
                             "max_seq_len and max_beam_width are top-level keys"},
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
    "triton_config": {
        "max_batch_size": {"type": "int", "default": 0,
                           "description": "copied into the Triton config by auto_complete_config; the "
                                          "default model.yaml says batching is not supported (JIRA-4496)"},
        "decoupled": {"type": "bool", "default": False,
                      "description": "model_transaction_policy.decoupled (streaming)"},
        "cancellation_check_period_ms": {"type": "int", "default": 100,
                                         "description": "how often model.py checks for cancelled requests"},
        "multimodal": {"type": "bool", "default": False, "description": "read the image_url input"},
    },
    "extra_model_yaml_keys": {
        "logits_post_processors": {"type": "dict", "default": None,
                                   "description": "name -> 'module.path:attr', chosen per request"},
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
    ("--model", "str", None, "Hugging Face id or local path (--model-path is an obsolete alias)"),
    ("--served-model-name", "str", None, ""),
    ("--extra-engine-args", "str", "", "path of a TorchLlmArgs YAML"),
    ("--override-engine-args", "str", "", "a Python dict literal merged over the YAML"),
    ("--tensor-parallel-size", "int", 1, ""),
    ("--pipeline-parallel-size", "int", 1, ""),
    ("--expert-parallel-size", "int", None, ""),
    ("--enable-attention-dp", "bool", False, ""),
    ("--kv-block-size", "int", 32, "kv_cache_config.tokens_per_block"),
    ("--gpus-per-node", "int", None, ""),
    ("--max-batch-size", "int", None, "TensorRT-LLM's own default when unset"),
    ("--max-num-tokens", "int", None, "TensorRT-LLM's own default when unset"),
    ("--max-seq-len", "int", None, ""),
    ("--max-beam-width", "int", None, ""),
    ("--free-gpu-memory-fraction", "float", 0.9, "kv_cache_config.free_gpu_memory_fraction"),
    ("--publish-kv-events", "bool", False, ""),
    ("--load-format", "str", "auto", "auto, or gms (GPU Memory Service)"),
    ("--disaggregation-mode", "choice", "agg", "agg, pd, prefill, decode, encode"),
    ("--enable-multimodal", "bool", False, ""),
    ("--guided-decoding-backend", "str", None, ""),
]


def dynamo(version: str) -> dict:
    pins = {"1.3.0rc29": "v1.6.0"}
    release = pins.get(version)
    flags = [{"flag": fl, "type": ty, "default": de, "description": ds} for fl, ty, de, ds in DYNAMO_FLAGS]
    if release:
        note = f"Dynamo {release} pins TensorRT-LLM {version}"
    elif version == "1.3.0rc21":
        note = ("no Dynamo release pins 1.3.0rc21 (v1.3.1 pins rc19, v1.4.0 rc22); the flags are those "
                "of the first release on the engine-free API")
    else:
        note = f"no Dynamo release pins TensorRT-LLM {version} yet; flags as of Dynamo v1.6.0"
    return {"module": "dynamo.trtllm", "release": release, "note": note, "flags": flags,
            "env_prefix": "DYN_TRTLLM_", "source": f"{DYNAMO_ARGS}; {DYNAMO_DOC}; {DYNAMO_COMPAT}"}


# ---------------------------------------------------------------- per version

COMMON_SOURCES = {
    "llm_args": f"{MANIFEST} (captured keys, types, choices); {TORCH_ARGS_DOC} (string keys, defaults); "
                f"{LLM_ARGS_PY} (CudaGraphConfig fields and defaults)",
    "configs": f"{MANIFEST}; {LLM_ARGS_PY}; /work/shared/facts/trtllm-llmapi.md section 1.4 (defaults)",
    "moved": RENAMES,
    "engine_only": REMOVAL,
    "trtllm_serve": SERVE_CLI,
    "llmapi_model": f"{PBTXT}; {MODEL_YAML}; {MODEL_PY} (triton_config keys read by model.py)",
}

VERSIONS = {
    "1.3.0rc21": "v1.3.0rc21 could not be read (see the module docstring): the keys are the 1.4.0rc-line "
                 "main snapshot named per group, the nearest stored source. Keys added after rc21 are "
                 "accepted here too, so this table can be lenient but does not refuse valid rc21 keys that "
                 "main still has.",
    "1.3.0rc29": "v1.3.0rc29 could not be read (see the module docstring): the keys are the 1.4.0rc-line "
                 "main snapshot named per group, the nearest stored source (Dynamo v1.6.0 pins this version).",
    "1.4.0rc4": "the 1.4.0rc line: main snapshot named per group (the v1.4.0rc4 tag itself could not be "
                "read; its TorchLlmArgs reference page is the docs source named for llm_args).",
}


def table(version: str) -> dict:
    return {
        "version": version,
        "sources": [f"{group}: {src}" for group, src in COMMON_SOURCES.items()]
                   + [f"dynamo: {DYNAMO_ARGS}; {DYNAMO_DOC}", f"note: {VERSIONS[version]}"],
        "llm_args": LLM_ARGS,
        "configs": CONFIGS,
        "open_configs": OPEN_CONFIGS,
        "moved": MOVED,
        "engine_only": {k: {"now": now, "gone_since": "1.3.0rc21", "note": note}
                        for k, (now, note) in ENGINE_ONLY.items()},
        "trtllm_serve": {"command": "trtllm-serve serve", "model": "positional (no --model flag)",
                         "options": serve_options()},
        "llmapi_model": LLMAPI_MODEL,
        "dynamo": dynamo(version),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed tables, write nothing")
    args = ap.parse_args(argv)
    stale = []
    for version in VERSIONS:
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
