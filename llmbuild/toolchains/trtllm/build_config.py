"""trtllm-build's configuration: how its flags and the checkpoint become the engine's ``build_config``.

One model, three readers. The CPU stand-in (``toolchains/cpu/trtllm_build.py``)
writes its engine's ``config.json`` with :func:`build_config`; the ``engine``
kind publishes the ``build_config`` its argv will get from the same function
(so a repository can be generated and checked before the engine exists); the
repository generator reads a built engine's ``config.json`` through
:func:`engine_limits`.

The rules are trtllm-build's (TensorRT-LLM ``tensorrt_llm/commands/build.py``
main, ``tensorrt_llm/builder.py`` ``build()``, ``_init_max_seq_len`` and
``BuildConfig.update_kv_cache_type``, ``tensorrt_llm/_common.py``
``check_max_num_tokens``, ``tensorrt_llm/plugin/plugin.py`` ``PluginConfig``):
``max_seq_len`` defaults to ``max_position_embeddings`` times the rotary
scaling factor (every type but su/longrope/llama3); a ``max_input_len`` above
``max_seq_len`` is clipped to it with a warning, never refused; ``max_num_tokens``
is bounded by ``max_seq_len * max_batch_size``. Nothing here prints or exits:
what trtllm-build logs comes back in ``notes``, what it refuses raises
:class:`BuildConfigError`.
"""

from __future__ import annotations

import math
from argparse import Namespace
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import flags

TOOL = "trtllm-build"
#: The first version whose config.json has the newest layout (no auto_parallel_config, use_mrope).
NEWEST = "1.2.0.dev-main-2025-10"
#: trtllm-build's deduced max_seq_len when the checkpoint has no max_position_embeddings.
DEFAULT_MAX_POSITION_EMBEDDINGS = 2048
#: Rotary scaling types whose factor does not lengthen the sequence (builder._init_max_seq_len).
UNSCALED_ROTARY_TYPES = ("su", "longrope", "llama3")
#: LoraManager's default HF module names for Llama (load_hf_lora).
DEFAULT_TRTLLM_MODULES_TO_HF_MODULES = {
    "attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_dense": "o_proj",
    "mlp_h_to_4h": "gate_proj", "mlp_4h_to_h": "down_proj", "mlp_gate": "up_proj",
}


class BuildConfigError(ValueError):
    """A combination trtllm-build refuses, or an engine config.json that is not one."""


# ------------------------------------------------------------------ versions

def at_least(version: str, other: str) -> bool:
    """Whether `version` is `other` or newer, in the flag tables' order."""
    return flags.VERSIONS.index(version) >= flags.VERSIONS.index(flags.resolve_version(other))


def has_flag(tool: str, version: str, name: str) -> bool:
    return name in flags.flag_table(tool, version)


def plugin_flags(version: str) -> dict[str, str]:
    """{flag: "dtype" | "feature"} for trtllm-build's PluginConfig flags in `version`."""
    return {name: spec.plugin for name, spec in flags.flag_table(TOOL, version).items() if spec.plugin}


# ------------------------------------------------------------------ the model config

def hf_rotary_scaling(hf: Mapping[str, Any]) -> dict | None:
    """The checkpoint's ``rotary_scaling`` as the Llama converter takes it from a HF config.json:
    ``rope_scaling``, or (newer transformers) ``rope_parameters`` without its theta."""
    scaling = hf.get("rope_scaling")
    params = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), dict) else {}
    if scaling is None and params.get("rope_type") not in (None, "default"):
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    return scaling


def rotary_factor(rotary_scaling: Mapping[str, Any] | None) -> float:
    """How much rotary scaling lengthens the sequence (1 for none, su, longrope, llama3)."""
    if not isinstance(rotary_scaling, Mapping):
        return 1
    rtype = rotary_scaling.get("type", rotary_scaling.get("rope_type"))
    return 1 if rtype in UNSCALED_ROTARY_TYPES else rotary_scaling.get("factor", 1.0)


# ------------------------------------------------------------------ plugin config and KV cache

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


def update_kv_cache_type(args: Namespace, version: str, pc: dict, notes: list[str]) -> str | None:
    """BuildConfig.update_kv_cache_type for a transformer model; returns the enum name."""
    if not has_flag(TOOL, version, "kv_cache_type"):  # 0.12: paged_kv_cache is a plugin switch
        return None
    kv_type = getattr(args, "kv_cache_type", None)
    kv_type = str(kv_type).upper() if kv_type is not None else None
    if kv_type is not None and kv_type not in ("CONTINUOUS", "PAGED", "DISABLED"):
        raise BuildConfigError(f"--kv_cache_type: invalid value {kv_type.lower()!r}")
    paged_arg = getattr(args, "paged_kv_cache", None)
    if paged_arg is not None:
        notes.append("Option --paged_kv_cache is deprecated, use --kv_cache_type=paged/disabled instead.")
        if paged_arg not in ("enable", "disable"):
            raise BuildConfigError(f"--paged_kv_cache takes enable or disable, got {paged_arg!r}")
        pc["paged_kv_cache"] = paged_arg == "enable"
    paged = pc.get("paged_kv_cache")
    if kv_type is not None:
        if paged is not None:
            if not ((paged and kv_type == "PAGED") or (not paged and kv_type != "PAGED")):
                raise BuildConfigError(f"--kv_cache_type {kv_type.lower()} contradicts --paged_kv_cache "
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

def init_max_seq_len(pretrained: Mapping[str, Any], bc: dict, notes: list[str], *,
                     model_known: bool = True) -> None:
    """builder._init_max_seq_len: max_seq_len from max_position_embeddings x rotary factor,
    then max_input_len clipped to max_seq_len (a warning, not an error).

    ``model_known=False``: the checkpoint's model config is not at hand (the engine kind
    without its source on this host); an undeclared max_seq_len then stays None.
    """
    factor = rotary_factor(pretrained.get("rotary_scaling"))
    if bc["max_seq_len"] is None:
        if not model_known:
            return
        deduced = pretrained.get("max_position_embeddings") or DEFAULT_MAX_POSITION_EMBEDDINGS
        if factor != 1:
            deduced = math.ceil(deduced * factor)
            notes.append(f"max_seq_len is scaled to {deduced} by rotary scaling {factor}")
        bc["max_seq_len"] = int(deduced)
        notes.append(f"max_seq_len is not specified, using deduced value {deduced}")
    if bc["max_input_len"] > bc["max_seq_len"]:
        notes.append(f"max_input_len is {bc['max_input_len']} is larger than max_seq_len "
                     f"{bc['max_seq_len']}, clipping it to max_seq_len")
        bc["max_input_len"] = bc["max_seq_len"]


def check_max_num_tokens(bc: dict, pc: dict, notes: list[str]) -> None:
    """tensorrt_llm._common.check_max_num_tokens."""
    max_num_tokens, opt_num_tokens = bc["max_num_tokens"], bc["opt_num_tokens"]
    max_batch_size, max_seq_len = bc["max_batch_size"], bc["max_seq_len"]
    if not pc.get("remove_input_padding", True):
        if max_num_tokens is not None or opt_num_tokens is not None:
            max_num_tokens = max_batch_size * max_seq_len
            notes.append("remove_input_padding is not enabled, the specified "
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
        # The real tool infers the cluster from the visible GPU; none is known here.
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


def build_config(args: Namespace, version: str, pretrained: Mapping[str, Any], notes: list[str], *,
                 environ: Mapping[str, str] | None = None, model_known: bool = True) -> dict:
    """The engine's ``build_config`` as trtllm-build of `version` writes it.

    `args`: trtllm-build's parsed argv (``flags.parse_argv``); `pretrained`: the checkpoint
    config, of which architecture, dtype, mapping, max_position_embeddings and
    rotary_scaling are read; `environ`: where BUILDER_FORCE_NUM_PROFILES is read before the
    flag existed.
    """
    arch = pretrained.get("architecture")
    world_size = pretrained["mapping"]["world_size"]
    tp_size = pretrained["mapping"]["tp_size"]
    dtype = pretrained["dtype"]
    gather_context = bool(args.gather_context_logits or args.gather_all_token_logits)
    gather_generation = bool(args.gather_generation_logits or args.gather_all_token_logits)
    if gather_context and args.max_draft_len > 0:
        raise BuildConfigError("Gather context logits is not support with draft len > 0. If want to get the "
                               "accepted tokens' logits from target model, please just enable "
                               "gather_generation_logits")

    pc = plugin_config(args, version, dtype)
    if args.fast_build:
        pc["manage_weights"] = True
    if args.build_config is None and pc.get("multiple_profiles") and args.opt_num_tokens is not None:
        raise BuildConfigError("multiple_profiles is enabled, while opt_num_tokens is set. "
                               "They are not supposed to be working in the same time for now.")
    if pc.get("pp_reduce_scatter") and arch is not None and arch != "MixtralForCausalLM":
        raise BuildConfigError("PP reduce scatter is only supported in the mixtral model.")

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
                          else (environ or {}).get("BUILDER_FORCE_NUM_PROFILES"))
    bc: dict = {
        "max_input_len": args.max_input_len,
        "max_seq_len": args.max_seq_len,
        "opt_batch_size": 8 if at_least(version, "0.15.0") else None,
        "max_batch_size": args.max_batch_size,
        "max_beam_width": args.max_beam_width,
        "max_num_tokens": args.max_num_tokens,
        "opt_num_tokens": args.opt_num_tokens,
        "max_prompt_embedding_table_size": args.max_prompt_embedding_table_size,
        "gather_context_logits": gather_context,
        "gather_generation_logits": gather_generation,
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

    kv_type = update_kv_cache_type(args, version, pc, notes)
    if kv_type is not None:
        bc["kv_cache_type"] = kv_type
    init_max_seq_len(pretrained, bc, notes, model_known=model_known)
    if bc["max_seq_len"] is not None:
        check_max_num_tokens(bc, pc, notes)

    # builder.build(): plugin overrides that depend on the model.
    if pc.get("reduce_fusion") and (tp_size == 1 or arch not in (
            "LlamaForCausalLM", "Gemma2ForCausalLM", "MedusaForCausalLM")):
        notes.append("Overriding reduce_fusion to False")
        pc["reduce_fusion"] = False
    if pc.get("user_buffer") and not pc.get("reduce_fusion"):
        notes.append("Overriding user_buffer to False")
        pc["user_buffer"] = False
    if pc.get("norm_quant_fusion"):
        notes.append("Overriding norm_quant_fusion to False")
        pc["norm_quant_fusion"] = False
    if not pc.get("context_fmha", True):
        pc["use_fp8_context_fmha"] = False
        pc["use_paged_context_fmha"] = False
    elif pc.get("use_fp8_context_fmha"):
        # only with the FP8/W4A8-AWQ/NVFP4 quantization workflows
        pc["use_fp8_context_fmha"] = False
    for name in ("gemm_swiglu_plugin", "low_latency_gemm_swiglu_plugin"):
        if pc.get(name) and not pc.get("use_fused_mlp", True):
            raise BuildConfigError("GemmSwiGLU plugin requires --use_fused_mlp flag")
    pc["nccl_plugin"] = dtype if world_size > 1 else None  # set_nccl_plugin
    bc["plugin_config"] = pc
    return bc


# ------------------------------------------------------------------ reading an engine's config.json

@dataclass(frozen=True)
class EngineLimits:
    """What serving an engine depends on, read from its config.json."""

    max_batch_size: int
    max_beam_width: int
    max_input_len: int | None
    max_seq_len: int | None
    world_size: int
    paged_kv_cache: bool | None
    paged_context_fmha: bool | None
    gpt_attention_plugin: bool | None = None  # in-flight batching needs the plugin
    remove_input_padding: bool | None = None  # ... and packed input


def engine_limits(engine_config: Mapping) -> EngineLimits:
    """The limits and features of the engine whose config.json is `engine_config`
    (as trtllm-build writes it, or as the engine kind publishes it before the build)."""
    if not isinstance(engine_config, Mapping):
        raise BuildConfigError("engine config.json is not a JSON object")
    build = engine_config.get("build_config")
    if not isinstance(build, Mapping):
        raise BuildConfigError("engine config.json has no build_config (is this a trtllm-build engine directory?)")

    def positive_int(key: str, *, required: bool) -> int | None:
        value = build.get(key)
        if value is None:
            if required:
                raise BuildConfigError(f"engine config.json: build_config.{key} is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BuildConfigError(f"engine config.json: build_config.{key} must be a positive integer, "
                                   f"got {value!r}")
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
    return EngineLimits(
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
