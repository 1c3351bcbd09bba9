"""CPU-lane stand-in for TensorRT-LLM's Llama/Mixtral ``convert_checkpoint.py``.

    python -m llmbuild.toolchains.cpu.convert_checkpoint --model_dir HF_DIR \\
        --output_dir CKPT_DIR [--dtype auto|float16|bfloat16|float32] \\
        [--tp_size N] [--pp_size N] [--moe_tp_size N] [--moe_ep_size N] ...

The argv is parsed by the shared flag table of the emulated TensorRT-LLM
version (``$LLMBUILD_TRTLLM_VERSION``, default ``flags.DEFAULT_VERSION``), so
exactly the flags that version's script accepts are accepted.  The output is a
TensorRT-LLM checkpoint directory -- ``config.json`` plus one
``rank{N}.safetensors`` per rank with TensorRT-LLM's tensor names and real
tensor/pipeline-parallel split (see ``_weights.py``) -- written byte-for-byte
reproducibly.  This is llmbuild's stand-in, not TensorRT-LLM: the rank files
carry ``llmbuild_lane = cpu`` in their safetensors metadata.

Only unquantized Hugging Face checkpoints are converted.  Options that need
TensorRT-LLM's GPU kernels or calibration to be reproduced faithfully
(weight-only/SmoothQuant/FP8/NVFP4/GPTQ/AWQ quantization, INT8/FP8 KV cache,
Meta checkpoints, context parallelism, ...) exit 2 with "... is not supported
on the CPU lane".  Knobs that do not change the output (``--workers``,
``--load_model_on_cpu``, ``--load_by_shard``, ``--log_level``, calibration
settings) are accepted and ignored.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from ..trtllm.build_config import hf_rotary_scaling
from . import _common
from ._common import ToolError, Unsupported, UsageError, at_least, progress
from ._weights import load_hf_weights, pp_layers, rank_weights, read_hf_config

PROG = "convert_checkpoint.py"
TOOL = "convert_checkpoint.py:llama"
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MixtralForCausalLM")


# ------------------------------------------------------------------ configuration

def resolve_dtype(requested: str, hf_cfg: dict) -> str:
    """--dtype auto takes the model's dtype; float32 or unknown becomes float16 (infer_dtype)."""
    if requested != "auto":
        return requested
    declared = hf_cfg.get("torch_dtype") or hf_cfg.get("dtype")
    if declared in ("float16", "bfloat16"):
        return declared
    return "float16"


def resolve_mapping(tp: int, pp: int, cp: int, moe_tp: int, moe_ep: int, version: str) -> dict:
    """The checkpoint's ``mapping`` (TensorRT-LLM's Mapping rules for MoE TP/EP sizes)."""
    for name, value in (("--tp_size", tp), ("--pp_size", pp), ("--cp_size", cp)):
        if value < 1:
            raise ToolError(f"{name} must be >= 1, got {value}")
    if moe_tp == -1 and moe_ep == -1:
        moe_tp, moe_ep = tp, 1
    elif moe_tp == -1:
        moe_tp = tp // moe_ep if moe_ep > 0 else 0
    elif moe_ep == -1:
        moe_ep = tp // moe_tp if moe_tp > 0 else 0
    if moe_tp < 1 or moe_ep < 1 or moe_tp * moe_ep != tp:
        raise ToolError(f"tp_size must equal to moe_tp_size * moe_ep_size, but got "
                        f"{tp} != {moe_tp} * {moe_ep}")
    mapping = {"world_size": tp * pp * cp, "gpus_per_node": 8, "cp_size": cp, "tp_size": tp,
               "pp_size": pp, "moe_tp_size": moe_tp, "moe_ep_size": moe_ep}
    if at_least(version, "1.2.0.dev-main-2025-10"):
        mapping.update(moe_cluster_size=1, attn_tp_size=tp * cp, attn_cp_size=1)
    elif at_least(version, "0.16.0"):
        mapping["auto_parallel"] = False
    return mapping


def _rope(hf: dict) -> tuple[float, dict | None]:
    params = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), dict) else {}
    theta = hf.get("rope_theta", params.get("rope_theta", 10000.0))
    return float(theta), hf_rotary_scaling(hf)


def _moe_dict(version: str, num_experts: int, top_k: int, mode) -> dict:
    if at_least(version, "0.16.0"):
        return {"num_experts": num_experts, "shared_expert_intermediate_size": 0, "top_k": top_k,
                "normalization_mode": mode, "sparse_mixer_epsilon": 0.01, "tp_mode": 0,
                "device_limited_n_group": 0, "device_limited_topk_group": 0,
                "device_limited_routed_scaling_factor": 1}
    if at_least(version, "0.15.0.dev2024102900"):
        return {"num_experts": num_experts, "moe_intermediate_size": 0, "num_shared_experts": 0,
                "top_k": top_k, "normalization_mode": mode, "sparse_mixer_epsilon": 0.01, "tp_mode": 0}
    return {"num_experts": num_experts, "top_k": top_k, "normalization_mode": mode,
            "sparse_mixer_epsilon": 0.01, "tp_mode": 0}


def checkpoint_config(hf: dict, *, dtype: str, mapping: dict, version: str,
                      use_parallel_embedding: bool = False, embedding_sharding_dim: int = 0,
                      disable_weight_only_quant_plugin: bool = False) -> dict:
    """The checkpoint ``config.json`` TensorRT-LLM's LLaMAConfig.from_hugging_face + to_dict write."""
    archs = hf.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UsageError(f"architecture {arch!r} is not supported by the CPU-lane converter "
                         f"(llmbuild stand-in converts {', '.join(SUPPORTED_ARCHITECTURES)}); "
                         f"build on the GPU lane")
    try:
        hidden = int(hf["hidden_size"])
        heads = int(hf["num_attention_heads"])
        layers = int(hf["num_hidden_layers"])
        inter = int(hf["intermediate_size"])
        vocab = int(hf["vocab_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ToolError(f"config.json of the Hugging Face model lacks a usable {err}") from None
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    head_size = int(hf.get("head_dim") or hidden // heads)
    if hf.get("mlp_bias"):
        raise UsageError("a Llama with mlp_bias is not supported by the CPU-lane converter "
                         "(llmbuild stand-in); build on the GPU lane")
    theta, scaling = _rope(hf)
    is_moe = arch == "MixtralForCausalLM"
    num_experts = int(hf.get("num_local_experts", 0)) if is_moe else 0
    top_k = int(hf.get("num_experts_per_tok", 0)) if is_moe else 0
    cfg = {
        "architecture": arch,
        "dtype": dtype,
        "logits_dtype": "float32",
        "vocab_size": vocab,
        "max_position_embeddings": int(hf.get("max_position_embeddings", 2048)),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_size": head_size,
        "hidden_act": "swiglu" if is_moe else hf.get("hidden_act", "silu"),
        "intermediate_size": inter,
        "norm_epsilon": float(hf.get("rms_norm_eps", 1e-6)),
        "position_embedding_type": "rope_gpt_neox",
        "use_parallel_embedding": bool(use_parallel_embedding),
        "embedding_sharding_dim": int(embedding_sharding_dim),
        "qk_layernorm": False,
        "mapping": mapping,
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None, "group_size": 128,
                         "smoothquant_val": 0.5, "clamp_val": None, "has_zero_point": False,
                         "pre_quant_scale": False, "exclude_modules": None},
        "mlp_bias": False,
        "attn_bias": bool(hf.get("attention_bias", False)),
        "rotary_base": theta,
        "rotary_scaling": scaling,
        "residual_mlp": False,
        "disable_weight_only_quant_plugin": bool(disable_weight_only_quant_plugin),
        "moe": _moe_dict(version, num_experts, top_k, 1 if is_moe else None),
        "remove_duplicated_kv_heads": False,
    }
    if at_least(version, "0.15.0"):
        cfg["quantization"]["use_meta_recipe"] = False
    if not at_least(version, "0.16.0"):
        cfg["share_embedding_table"] = False
    if at_least(version, "0.15.0.dev2024102900"):
        cfg.update(fc_after_embed=False, use_input_layernorm_in_first_layer=True,
                   use_last_layernorm=True, layer_idx_offset=0)
    if at_least(version, "0.16.0"):
        cfg.update(rotary_embedding_dim=head_size, runtime_defaults=None,
                   tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)))
    if at_least(version, "1.2.0.dev-main-2025-10"):
        cfg.update(embedding_multiplier=1.0, attention_multiplier=1.0, residual_multiplier=1.0,
                   output_multiplier_scale=1.0)
    return cfg


def check_parallel_rules(cfg: dict, version: str) -> None:
    """The layout rules the real converter (or the engine it feeds) enforces."""
    m = cfg["mapping"]
    tp, pp = m["tp_size"], m["pp_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    layers = cfg["num_hidden_layers"]
    if heads % tp:
        raise ToolError(f"num_attention_heads ({heads}) must be divisible by tp_size ({tp})")
    if kv < tp and tp % kv:
        raise ToolError(f"tp_size ({tp}) must be a multiple of num_key_value_heads ({kv}) "
                        f"to duplicate the KV heads")
    if kv >= tp and kv % tp:
        raise ToolError(f"num_key_value_heads ({kv}) must be divisible by tp_size ({tp})")
    experts = cfg["moe"]["num_experts"]
    if experts:
        if experts % m["moe_ep_size"]:
            raise ToolError(f"num_experts ({experts}) must be divisible by moe_ep_size ({m['moe_ep_size']})")
        if cfg["intermediate_size"] % m["moe_tp_size"]:
            raise ToolError(f"intermediate_size ({cfg['intermediate_size']}) must be divisible by "
                            f"moe_tp_size ({m['moe_tp_size']})")
    elif cfg["intermediate_size"] % tp:
        raise ToolError(f"intermediate_size ({cfg['intermediate_size']}) must be divisible by tp_size ({tp})")
    if cfg["use_parallel_embedding"] and cfg["embedding_sharding_dim"] == 1 and cfg["hidden_size"] % tp:
        raise ToolError(f"hidden_size ({cfg['hidden_size']}) must be divisible by tp_size ({tp}) "
                        f"for --embedding_sharding_dim 1")
    if pp > layers:
        raise ToolError("pp size cannot be larger than num_hidden_layers "
                        f"({pp} > {layers})")
    if sum(len(pp_layers(layers, pp, r, version)) for r in range(pp)) != layers:
        raise ToolError(f"num_hidden_layers ({layers}) is not divisible by pp_size ({pp}): TensorRT-LLM "
                        f"{version} gives each pipeline stage num_layers // pp_size layers and would "
                        f"drop {layers % pp}")


def write_checkpoint(prog: str, version: str, model_dir: Path, output_dir: Path, cfg: dict,
                     config_only: bool = False) -> None:
    hf_path = Path(model_dir)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = cfg["mapping"]["world_size"]
    if config_only:
        _common.write_json(out / "config.json", cfg)
        progress(prog, f"wrote {out / 'config.json'} (config only)")
        return
    progress(prog, f"loading {hf_path}")
    hf = load_hf_weights(hf_path)
    _common.write_json(out / "config.json", cfg)
    for rank in range(world):
        tensors = rank_weights(hf, cfg, rank, version)
        metadata = {"llmbuild_lane": _common.LANE, "llmbuild_note": _common.NOTE,
                    "trtllm_version_emulated": version}
        _common.write_safetensors(out / f"rank{rank}.safetensors", tensors, metadata)
        progress(prog, f"wrote rank{rank}.safetensors ({len(tensors)} tensors)")


# ------------------------------------------------------------------ main

_UNSUPPORTED_SWITCHES = {
    "use_weight_only": "--use_weight_only (weight-only quantization; the real layout is produced by "
                       "TensorRT-LLM's GPU preprocessing kernels)",
    "smoothquant": "--smoothquant",
    "use_qserve": "--use_qserve",
    "int8_kv_cache": "--int8_kv_cache (needs activation calibration)",
    "fp8_kv_cache": "--fp8_kv_cache",
    "use_fp8": "--use_fp8",
    "use_nvfp4": "--use_nvfp4",
    "use_fp8_rowwise": "--use_fp8_rowwise",
    "use_meta_fp8_rowwise_recipe": "--use_meta_fp8_rowwise_recipe",
    "per_group": "--per_group",
    "quant_ckpt_path": "--quant_ckpt_path (GPTQ/AWQ checkpoints)",
    "meta_ckpt_dir": "--meta_ckpt_dir (Meta checkpoints)",
    "remove_duplicated_kv_heads": "--remove_duplicated_kv_heads",
}


def check_unsupported(args: Namespace) -> None:
    for name, what in _UNSUPPORTED_SWITCHES.items():
        value = getattr(args, name, None)
        if value not in (None, False):
            raise Unsupported(what)
    if getattr(args, "cp_size", 1) != 1:
        raise Unsupported("--cp_size > 1 (context parallelism)")
    if args.model_dir is None:
        raise Unsupported("converting without --model_dir (a dummy-weight checkpoint)")


def main(argv: list[str]) -> int:
    version, args = _common.parse(TOOL, argv)
    check_unsupported(args)
    hf_cfg = read_hf_config(Path(args.model_dir))
    mapping = resolve_mapping(args.tp_size, args.pp_size, getattr(args, "cp_size", 1),
                              args.moe_tp_size, args.moe_ep_size, version)
    cfg = checkpoint_config(hf_cfg, dtype=resolve_dtype(args.dtype, hf_cfg), mapping=mapping,
                            version=version, use_parallel_embedding=args.use_parallel_embedding,
                            embedding_sharding_dim=args.embedding_sharding_dim,
                            disable_weight_only_quant_plugin=args.disable_weight_only_quant_plugin)
    check_parallel_rules(cfg, version)
    progress(PROG, f"emulating TensorRT-LLM {version}: {cfg['architecture']} {cfg['dtype']} "
                   f"tp={mapping['tp_size']} pp={mapping['pp_size']} -> {args.output_dir}")
    write_checkpoint(PROG, version, Path(args.model_dir), Path(args.output_dir), cfg,
                     config_only=args.save_config_only)
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(PROG, main))
