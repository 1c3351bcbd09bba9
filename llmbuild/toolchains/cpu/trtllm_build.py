"""CPU-lane stand-in for ``trtllm-build``.

    python -m llmbuild.toolchains.cpu.trtllm_build --checkpoint_dir CKPT_DIR \\
        --output_dir ENGINE_DIR [--max_batch_size N] [--max_input_len N] \\
        [--max_seq_len N] [--gemm_plugin auto] [--lora_plugin auto] ...

The argv is parsed by the shared flag table of the emulated TensorRT-LLM
version (``$LLMBUILD_TRTLLM_VERSION``, default ``flags.DEFAULT_VERSION``).
The engine directory gets:

* ``config.json`` -- ``version``, ``pretrained_config`` (the checkpoint config),
  ``build_config`` derived from the flags the way trtllm-build derives it
  (``tensorrt_llm/commands/build.py`` main + ``builder.py`` ``build()``,
  ``_init_max_seq_len``, ``BuildConfig.update_kv_cache_type`` and
  ``_common.check_max_num_tokens``), plus one extra top-level key
  ``"llmbuild_lane": "cpu"`` and a ``"llmbuild_note"`` saying this is
  llmbuild's CPU-lane stand-in, not a TensorRT engine.
* ``rank{N}.engine`` for every rank -- **not** a TensorRT plan: a safetensors
  file with that rank's checkpoint tensors (as ``runtime.CpuEngine`` needs
  them) and metadata ``llmbuild_lane = cpu``.

Everything is byte-reproducible.  ``--dry_run`` writes only config.json, like
the real tool.  Options whose effect the CPU runtime cannot reproduce
(speculative decoding, StreamingLLM, LoRA adapters via --lora_dir, custom model
classes, auto parallel, quantized checkpoints) exit 2 with "... is not
supported on the CPU lane".  Not written: the TensorRT timing cache
(``--output_timing_cache``) and ``--fast_build``'s managed-weights files.
"""

from __future__ import annotations

import math
import os
import sys
from argparse import Namespace
from pathlib import Path

from . import _common
from ._common import ToolError, Unsupported, UsageError, at_least, has_flag, plugin_flags, progress

PROG = "trtllm-build"
TOOL = "trtllm-build"
ARCHITECTURES = ("LlamaForCausalLM", "MixtralForCausalLM")
NEWEST = "1.2.0.dev-main-2025-10"

# LoraManager's default HF module names for Llama (load_hf_lora).
DEFAULT_TRTLLM_MODULES_TO_HF_MODULES = {
    "attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_dense": "o_proj",
    "mlp_h_to_4h": "gate_proj", "mlp_4h_to_h": "down_proj", "mlp_gate": "up_proj",
}


# ------------------------------------------------------------------ plugin config

def plugin_config(args: Namespace, version: str, model_dtype: str) -> dict:
    """PluginConfig.from_arguments + the fields trtllm-build never exposes, as to_dict() writes them.

    Values are stored as given ("auto" stays "auto": PluginConfig.to_dict dumps the raw
    fields); "disable" becomes null (dtype plugins) or false (features).
    """
    pc: dict = {"dtype": model_dtype}
    for name, kind in plugin_flags(version).items():
        value = getattr(args, name, None)
        if kind == "dtype":
            pc[name] = None if value in (None, "disable") else value
        else:
            pc[name] = value == "enable"
    pc["tokens_per_block"] = args.tokens_per_block
    for name in ("smooth_quant_gemm_plugin", "identity_plugin", "layernorm_quantization_plugin",
                 "rmsnorm_quantization_plugin", "weight_only_groupwise_quant_matmul_plugin",
                 "weight_only_quant_matmul_plugin"):
        pc[name] = None
    pc.update(quantize_per_token_plugin=False, quantize_tensor_plugin=False, manage_weights=False)
    pc.setdefault("paged_kv_cache", None)
    if at_least(version, "0.15.0"):
        pc["qserve_gemm_plugin"] = None
    if at_least(version, "0.16.0"):
        pc["smooth_quant_plugins"] = True
    return pc


def update_kv_cache_type(args: Namespace, version: str, pc: dict) -> str | None:
    """BuildConfig.update_kv_cache_type for a transformer model; returns the enum name."""
    if not has_flag(TOOL, version, "kv_cache_type"):  # 0.12: paged_kv_cache is a plugin switch
        return None
    kv_type = getattr(args, "kv_cache_type", None)
    kv_type = str(kv_type).upper() if kv_type is not None else None
    if kv_type is not None and kv_type not in ("CONTINUOUS", "PAGED", "DISABLED"):
        raise UsageError(f"--kv_cache_type: invalid value {kv_type.lower()!r}")
    paged_arg = getattr(args, "paged_kv_cache", None)
    if paged_arg is not None:
        progress(PROG, "Option --paged_kv_cache is deprecated, use --kv_cache_type=paged/disabled instead.")
        if paged_arg not in ("enable", "disable"):
            raise UsageError(f"--paged_kv_cache takes enable or disable, got {paged_arg!r}")
        pc["paged_kv_cache"] = paged_arg == "enable"
    paged = pc.get("paged_kv_cache")
    if kv_type is not None:
        if paged is not None:
            if not ((paged and kv_type == "PAGED") or (not paged and kv_type != "PAGED")):
                raise ToolError(f"--kv_cache_type {kv_type.lower()} contradicts --paged_kv_cache "
                                f"{'enable' if paged else 'disable'}")
        else:
            pc["paged_kv_cache"] = kv_type == "PAGED"
    elif paged is not None:
        kv_type = "PAGED" if paged else "CONTINUOUS"
    else:
        kv_type = "PAGED"
        pc["paged_kv_cache"] = True
    pc["paged_state"] = False  # override_attri('paged_state', False) for non-Mamba models
    return kv_type


# ------------------------------------------------------------------ derived lengths

def init_max_seq_len(pretrained: dict, bc: dict) -> None:
    """builder._init_max_seq_len: max_seq_len from max_position_embeddings x rotary factor."""
    scaling = pretrained.get("rotary_scaling")
    factor = 1.0
    if isinstance(scaling, dict):
        rtype = scaling.get("type", scaling.get("rope_type"))
        if rtype not in ("su", "longrope", "llama3"):
            factor = scaling.get("factor", 1.0)
    if bc["max_seq_len"] is None:
        deduced = pretrained.get("max_position_embeddings") or 2048
        if factor != 1:
            deduced = math.ceil(deduced * factor)
            progress(PROG, f"max_seq_len is scaled to {deduced} by rotary scaling {factor}")
        bc["max_seq_len"] = int(deduced)
        progress(PROG, f"max_seq_len is not specified, using deduced value {deduced}")
    if bc["max_input_len"] > bc["max_seq_len"]:
        progress(PROG, f"max_input_len is {bc['max_input_len']} is larger than max_seq_len "
                       f"{bc['max_seq_len']}, clipping it to max_seq_len")
        bc["max_input_len"] = bc["max_seq_len"]


def check_max_num_tokens(bc: dict, pc: dict) -> None:
    """tensorrt_llm._common.check_max_num_tokens."""
    max_num_tokens, opt_num_tokens = bc["max_num_tokens"], bc["opt_num_tokens"]
    max_batch_size, max_seq_len = bc["max_batch_size"], bc["max_seq_len"]
    if not pc.get("remove_input_padding", True):
        if max_num_tokens is not None or opt_num_tokens is not None:
            max_num_tokens = max_batch_size * max_seq_len
            progress(PROG, "remove_input_padding is not enabled, the specified "
                           "max_num_tokens/opt_num_tokens will be ignored.")
        bc["max_num_tokens"], bc["opt_num_tokens"] = max_num_tokens, opt_num_tokens
        return
    if max_num_tokens is None:
        max_num_tokens = max_seq_len * max_batch_size
    if opt_num_tokens is None and not pc.get("multiple_profiles", False):
        opt_num_tokens = min(max_batch_size * bc["max_beam_width"], max_num_tokens)
    if max_num_tokens > max_seq_len * max_batch_size:
        max_num_tokens = max_seq_len * max_batch_size
    context_fmha = pc.get("context_fmha", True)
    if max_num_tokens < bc["max_input_len"] and not context_fmha:
        max_num_tokens = bc["max_input_len"]
    elif max_num_tokens < pc["tokens_per_block"] and context_fmha:
        max_num_tokens = pc["tokens_per_block"]
    if opt_num_tokens is not None and opt_num_tokens > max_num_tokens:
        opt_num_tokens = max_num_tokens
    bc["max_num_tokens"], bc["opt_num_tokens"] = max_num_tokens, opt_num_tokens


# ------------------------------------------------------------------ build config

def _auto_parallel_config(args: Namespace) -> dict:
    return {
        "world_size": getattr(args, "auto_parallel", 1),
        "gpus_per_node": getattr(args, "gpus_per_node", 8),
        # The real tool infers the cluster from the visible GPU; the CPU lane has none.
        "cluster_key": getattr(args, "cluster_key", None),
        "cluster_info": None,
        "sharding_cost_model": "alpha_beta",
        "comm_cost_model": "alpha_beta",
        "enable_pipeline_parallelism": False,
        "enable_shard_unbalanced_shape": False,
        "enable_shard_dynamic_shape": False,
        "enable_reduce_scatter": True,
        "builder_flags": None,
        "debug_mode": False,
        "infer_shape": True,
        "validation_mode": False,
        "same_buffer_io": {"past_key_value_(\\d+)": "present_key_value_\\1"},
        "same_spec_io": {},
        "sharded_io_allowlist": ["past_key_value_\\d+", "present_key_value_\\d*"],
        "fill_weights": False,
        "parallel_config_cache": None,
        "profile_cache": None,
        "dump_path": None,
        "debug_outputs": [],
    }


def build_config(args: Namespace, version: str, pretrained: dict) -> dict:
    """The engine's ``build_config`` as trtllm-build of `version` writes it."""
    arch = pretrained["architecture"]
    world_size = pretrained["mapping"]["world_size"]
    tp_size = pretrained["mapping"]["tp_size"]
    dtype = pretrained["dtype"]

    pc = plugin_config(args, version, dtype)
    if args.fast_build:
        pc["manage_weights"] = True
    if args.build_config is None and pc.get("multiple_profiles") and args.opt_num_tokens is not None:
        raise ToolError("multiple_profiles is enabled, while opt_num_tokens is set. "
                        "They are not supposed to be working in the same time for now.")
    if pc.get("pp_reduce_scatter") and arch != "MixtralForCausalLM":
        raise ToolError("PP reduce scatter is only supported in the mixtral model.")

    lora_config = {"lora_dir": [], "lora_ckpt_source": "hf", "max_lora_rank": 64,
                   "lora_target_modules": [], "trtllm_modules_to_hf_modules": {}}
    if pc.get("lora_plugin") is not None:
        lora_config.update(lora_ckpt_source=args.lora_ckpt_source, max_lora_rank=args.max_lora_rank)
        if args.lora_target_modules is not None:
            lora_config["lora_target_modules"] = list(args.lora_target_modules)
        if args.lora_ckpt_source == "hf":
            lora_config["trtllm_modules_to_hf_modules"] = dict(DEFAULT_TRTLLM_MODULES_TO_HF_MODULES)

    force_num_profiles = (getattr(args, "builder_force_num_profiles", None)
                          if has_flag(TOOL, version, "builder_force_num_profiles")
                          else os.environ.get("BUILDER_FORCE_NUM_PROFILES"))
    bc: dict = {
        "max_input_len": args.max_input_len,
        "max_seq_len": args.max_seq_len,
        "opt_batch_size": 8 if at_least(version, "0.15.0") else None,
        "max_batch_size": args.max_batch_size,
        "max_beam_width": args.max_beam_width,
        "max_num_tokens": args.max_num_tokens,
        "opt_num_tokens": args.opt_num_tokens,
        "max_prompt_embedding_table_size": args.max_prompt_embedding_table_size,
        "gather_context_logits": args.gather_context_logits,
        "gather_generation_logits": args.gather_generation_logits,
        "strongly_typed": True,
        "force_num_profiles": force_num_profiles,
        "profiling_verbosity": args.profiling_verbosity,
        "enable_debug_output": args.enable_debug_output,
        "max_draft_len": args.max_draft_len,
        "speculative_decoding_mode": 1,  # SpeculativeDecodingMode.NONE
        "use_refit": False,
        "input_timing_cache": args.input_timing_cache,
        "output_timing_cache": args.output_timing_cache,
        "lora_config": lora_config,
        "weight_sparsity": args.weight_sparsity,
        "weight_streaming": args.weight_streaming,
        "use_strip_plan": bool(args.strip_plan),
        "max_encoder_input_len": args.max_encoder_input_len,
    }
    if has_flag(TOOL, version, "builder_opt"):
        bc["builder_opt"] = args.builder_opt
    if not at_least(version, NEWEST):
        bc["auto_parallel_config"] = _auto_parallel_config(args)
    if has_flag(TOOL, version, "monitor_memory"):
        bc["monitor_memory"] = args.monitor_memory
    if at_least(version, NEWEST):
        bc["use_mrope"] = False
    else:
        # build_model: build_config.use_fused_mlp = kwargs['use_fused_mlp'] -- the raw argparse
        # value ("enable"/"disable" from 0.13 on); False for non-FP8 quantized checkpoints.
        bc["use_fused_mlp"] = args.use_fused_mlp

    kv_type = update_kv_cache_type(args, version, pc)
    if kv_type is not None:
        bc["kv_cache_type"] = kv_type
    init_max_seq_len(pretrained, bc)
    check_max_num_tokens(bc, pc)

    # builder.build(): plugin overrides that depend on the model.
    if pc.get("reduce_fusion") and (tp_size == 1 or arch not in (
            "LlamaForCausalLM", "Gemma2ForCausalLM", "MedusaForCausalLM")):
        progress(PROG, "Overriding reduce_fusion to False")
        pc["reduce_fusion"] = False
    if pc.get("user_buffer") and not pc.get("reduce_fusion"):
        progress(PROG, "Overriding user_buffer to False")
        pc["user_buffer"] = False
    if pc.get("norm_quant_fusion"):
        progress(PROG, "Overriding norm_quant_fusion to False")
        pc["norm_quant_fusion"] = False
    if not pc.get("context_fmha", True):
        pc["use_fp8_context_fmha"] = False
        pc["use_paged_context_fmha"] = False
    elif pc.get("use_fp8_context_fmha"):
        # only with the FP8/W4A8-AWQ/NVFP4 quantization workflows
        pc["use_fp8_context_fmha"] = False
    for name in ("gemm_swiglu_plugin", "low_latency_gemm_swiglu_plugin"):
        if pc.get(name) and not pc.get("use_fused_mlp", True):
            raise ToolError("GemmSwiGLU plugin requires --use_fused_mlp flag")
    pc["nccl_plugin"] = dtype if world_size > 1 else None  # set_nccl_plugin
    bc["plugin_config"] = pc
    return bc


# ------------------------------------------------------------------ checkpoint

def read_checkpoint(ckpt_dir: Path) -> tuple[dict, list[dict]]:
    """(checkpoint config, [tensors of rank N]) after checking it is usable here."""
    cfg = _common.read_json(ckpt_dir / "config.json", "--checkpoint_dir")
    arch = cfg.get("architecture")
    if arch not in ARCHITECTURES:
        raise UsageError(f"architecture {arch!r} is not supported by the CPU-lane trtllm-build "
                         f"(llmbuild stand-in builds {', '.join(ARCHITECTURES)}); build on the GPU lane")
    quant = cfg.get("quantization") or {}
    for key in ("quant_algo", "kv_cache_quant_algo"):
        if quant.get(key):
            raise Unsupported(f"a quantized checkpoint ({key} {quant[key]})")
    mapping = cfg.get("mapping") or {}
    try:
        tp, pp = int(mapping["tp_size"]), int(mapping["pp_size"])
        cp = int(mapping.get("cp_size", 1))
        world = int(mapping["world_size"])
    except (KeyError, TypeError, ValueError):
        raise ToolError(f"{ckpt_dir / 'config.json'}: mapping lacks tp_size/pp_size/world_size") from None
    if world != tp * pp * cp:
        raise ToolError(f"world_size must equal to tp_size * pp_size * cp_size, but got "
                        f"{world} != {tp} * {pp} * {cp}")
    if cp != 1:
        raise Unsupported("a context-parallel checkpoint (cp_size > 1)")
    missing = [f"rank{r}.safetensors" for r in range(world) if not (ckpt_dir / f"rank{r}.safetensors").exists()]
    if missing:
        raise ToolError(f"--checkpoint_dir {ckpt_dir}: world size {world} needs rank0..rank{world - 1}"
                        f".safetensors; missing {', '.join(missing)}")
    extra = _common.stale_rank_files(ckpt_dir, ".safetensors", world)
    if extra:
        raise ToolError(f"--checkpoint_dir {ckpt_dir}: rank files beyond world size {world}: "
                        f"{', '.join(extra)} (left over from another conversion?)")
    ranks = [_common.load_safetensors(ckpt_dir / f"rank{r}.safetensors", "--checkpoint_dir")[0]
             for r in range(world)]
    # Every pipeline stage holds a block of layers; together they must be the model.
    total = 0
    for p in range(pp):
        tensors = ranks[p * tp]
        layers = {int(n.split(".")[2]) for n in tensors if n.startswith("transformer.layers.")}
        if layers != set(range(len(layers))):
            raise ToolError(f"rank{p * tp}.safetensors: layer indices {sorted(layers)} are not 0..n-1")
        total += len(layers)
        first, last = p == 0, p == pp - 1
        for name, needed in (("transformer.vocab_embedding.weight", first), ("lm_head.weight", last),
                             ("transformer.ln_f.weight", last)):
            if needed and name not in tensors:
                raise ToolError(f"rank{p * tp}.safetensors: no {name}")
    if total != cfg.get("num_hidden_layers"):
        raise ToolError(f"the rank files hold {total} layers, config.json says "
                        f"num_hidden_layers = {cfg.get('num_hidden_layers')}")
    return cfg, ranks


# ------------------------------------------------------------------ main

def check_unsupported(args: Namespace) -> None:
    if args.speculative_decoding_mode is not None:
        raise Unsupported(f"--speculative_decoding_mode {args.speculative_decoding_mode}")
    if args.lora_dir:
        raise Unsupported("--lora_dir (LoRA adapters)")
    if getattr(args, "streamingllm", "disable") == "enable":
        raise Unsupported("--streamingllm enable")
    if args.model_cls_file is not None or args.model_cls_name is not None:
        raise Unsupported("--model_cls_file/--model_cls_name (custom model classes)")
    if getattr(args, "auto_parallel", 1) != 1:
        raise Unsupported("--auto_parallel")
    if args.build_config is not None:
        raise Unsupported("--build_config (a BuildConfig JSON file)")


def main(argv: list[str]) -> int:
    version, args = _common.parse(TOOL, argv)
    if at_least(version, NEWEST):
        progress(PROG, "Option --gather_generation_logits is deprecated, a build flag is not required "
                       "anymore. Use --output_generation_logits at runtime instead.")
    if args.gather_all_token_logits:
        args.gather_context_logits = True
        args.gather_generation_logits = True
    if args.gather_context_logits and args.max_draft_len > 0:
        raise ToolError("Gather context logits is not support with draft len > 0. If want to get the "
                        "accepted tokens' logits from target model, please just enable "
                        "gather_generation_logits")
    check_unsupported(args)
    if args.checkpoint_dir is None:
        if args.model_config is not None:
            raise Unsupported("--model_config without --checkpoint_dir (an engine with random weights)")
        raise UsageError("either --checkpoint_dir or --model_config is required")
    ckpt_dir, out = Path(args.checkpoint_dir), Path(args.output_dir)
    pretrained, ranks = read_checkpoint(ckpt_dir)
    if args.logits_dtype is not None:
        pretrained["logits_dtype"] = args.logits_dtype
    if not at_least(version, NEWEST):
        pretrained["mapping"]["gpus_per_node"] = getattr(args, "gpus_per_node", 8)
    if getattr(args, "streamingllm", "disable") == "enable" and pretrained["architecture"] != "LlamaForCausalLM":
        raise ToolError("StreamingLLM is only supported in the llama model.")
    progress(PROG, f"emulating TensorRT-LLM {version}: {pretrained['architecture']} "
                   f"world_size={pretrained['mapping']['world_size']} -> {out}")
    bc = build_config(args, version, pretrained)
    config = {
        "version": version,
        "pretrained_config": pretrained,
        "build_config": bc,
        "llmbuild_lane": _common.LANE,
        "llmbuild_note": _common.NOTE,
    }
    out.mkdir(parents=True, exist_ok=True)
    world = pretrained["mapping"]["world_size"]
    if not args.dry_run:
        for rank, tensors in enumerate(ranks):
            metadata = {"llmbuild_lane": _common.LANE, "llmbuild_note": _common.NOTE,
                        "format": "llmbuild-cpu-engine", "rank": str(rank),
                        "trtllm_version_emulated": version}
            _common.write_safetensors(out / f"rank{rank}.engine", tensors, metadata)
            progress(PROG, f"wrote rank{rank}.engine ({len(tensors)} tensors; CPU-lane, not a TensorRT plan)")
    _common.write_json(out / "config.json", config)
    progress(PROG, f"wrote {out / 'config.json'} (max_batch_size={bc['max_batch_size']}, "
                   f"max_input_len={bc['max_input_len']}, max_seq_len={bc['max_seq_len']})")
    extra = _common.stale_rank_files(out, ".engine", world)
    if extra:
        progress(PROG, f"note: {out} also holds {', '.join(extra)} from an earlier build")
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(PROG, main))
