"""`engine`: a TensorRT-LLM checkpoint compiled by `trtllm-build`.

Field names are trtllm-build's flags. Plugin fields take a dtype (`"float16"`,
`"auto"`, `"disable"`); feature switches take booleans (written enable/disable).
"""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from ..core.steps import OUT, PathArg, Plan, Step
from ..core.target import FieldGroup, Kind, Ref, Source, ToolFields, register
from ..toolchains.trtllm import flags
from ..toolchains.trtllm.build_config import BuildConfigError, build_config, hf_rotary_scaling
from ..toolchains.trtllm.command import flag_args

TOOL = "trtllm-build"
PluginDtype = Literal["auto", "float16", "float32", "bfloat16", "int32", "disable"]


class Lora(FieldGroup):
    """LoRA support: the engine is built with the LoRA plugin."""

    max_rank: PositiveInt = Field(64, description="--max_lora_rank: largest adapter rank served")
    target_modules: list[str] | None = Field(None, description="--lora_target_modules")
    plugin: PluginDtype | None = Field(None, description="--lora_plugin dtype (default: the checkpoint's dtype)")
    dirs: Annotated[list[str] | None, Source()] = Field(None, description="--lora_dir: adapters built in")
    ckpt_source: Literal["hf", "nemo"] | None = Field(None, description="--lora_ckpt_source")


class EngineFields(ToolFields):
    checkpoint: Annotated[str, Ref("checkpoint")] = Field(description="The checkpoint target to build from.")
    max_batch_size: PositiveInt | None = None
    max_input_len: PositiveInt | None = Field(
        None, description="Longest prompt; trtllm-build clips it to max_seq_len (default 1024).")
    max_seq_len: PositiveInt | None = Field(
        None, description="Default: the model's max_position_embeddings times its rotary scaling factor.")
    max_num_tokens: PositiveInt | None = None
    opt_num_tokens: PositiveInt | None = None
    max_beam_width: PositiveInt | None = None
    max_prompt_embedding_table_size: NonNegativeInt | None = None
    kv_cache_type: Literal["paged", "continuous", "disabled"] | None = None
    tokens_per_block: PositiveInt | None = None
    gpt_attention_plugin: PluginDtype | None = None
    gemm_plugin: Literal["auto", "float16", "float32", "bfloat16", "int32", "fp8", "nvfp4", "disable"] | None = None
    nccl_plugin: PluginDtype | None = None
    moe_plugin: PluginDtype | None = None
    context_fmha: bool | None = None
    use_paged_context_fmha: bool | None = Field(None, description="Needed for KV-cache reuse and chunked context.")
    use_fp8_context_fmha: bool | None = None
    remove_input_padding: bool | None = None
    multiple_profiles: bool | None = None
    use_fused_mlp: bool | None = None
    reduce_fusion: bool | None = None
    user_buffer: bool | None = None
    pp_reduce_scatter: bool | None = None
    logits_dtype: Literal["float16", "float32"] | None = None
    gather_context_logits: bool = False
    gather_generation_logits: bool = False
    gather_all_token_logits: bool = False
    speculative_decoding_mode: Literal["draft_tokens_external", "lookahead_decoding", "medusa",
                                       "explicit_draft_tokens", "eagle"] | None = None
    max_draft_len: NonNegativeInt | None = None
    strip_plan: bool = False
    weight_sparsity: bool = False
    weight_streaming: bool = False
    fast_build: bool = False
    workers: PositiveInt | None = Field(None, description="--workers: parallel rank builds (capped at GPUs)")
    profiling_verbosity: Literal["layer_names_only", "detailed", "none"] | None = None
    log_level: Literal["internal_error", "error", "warning", "info", "verbose", "debug", "trace"] | None = None
    lora: Lora | None = Field(None, description="Build with the LoRA plugin, e.g. { max_rank = 32 }.")

    @model_validator(mode="after")
    def _consistent(self):
        if self.multiple_profiles and self.opt_num_tokens:
            raise ValueError("multiple_profiles cannot be combined with opt_num_tokens (trtllm-build refuses it)")
        if self.gather_context_logits and (self.max_draft_len or 0) > 0:
            raise ValueError("gather_context_logits cannot be combined with max_draft_len > 0")
        return self


# Engine field -> trtllm-build flag, in argv order. Booleans on plugin features become enable/disable.
FLAG_FIELDS = (
    "max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "opt_num_tokens",
    "max_beam_width", "max_prompt_embedding_table_size", "kv_cache_type", "tokens_per_block",
    "gpt_attention_plugin", "gemm_plugin", "nccl_plugin", "moe_plugin", "context_fmha",
    "use_paged_context_fmha", "use_fp8_context_fmha", "remove_input_padding", "multiple_profiles",
    "use_fused_mlp", "reduce_fusion", "user_buffer", "pp_reduce_scatter", "logits_dtype",
    "gather_context_logits", "gather_generation_logits", "gather_all_token_logits",
    "speculative_decoding_mode", "max_draft_len", "strip_plan", "weight_sparsity",
    "weight_streaming", "fast_build", "workers", "profiling_verbosity", "log_level",
)


@register
class Engine(Kind):
    name = "engine"
    Fields = EngineFields
    help = "TensorRT-LLM checkpoint -> engine directory (trtllm-build)."

    def _values(self, target, ws) -> dict[str, Any]:
        f: EngineFields = target.fields
        values: dict[str, Any] = {name: getattr(f, name) for name in FLAG_FIELDS}
        if f.lora:
            checkpoint = ws.facts(target.dep("checkpoint"))
            values["lora_plugin"] = f.lora.plugin or checkpoint["dtype"]
            values["max_lora_rank"] = f.lora.max_rank
            values["lora_target_modules"] = f.lora.target_modules
            values["lora_ckpt_source"] = f.lora.ckpt_source
        return values

    def _argv(self, target, ws) -> tuple[list, dict[str, Any], Namespace]:
        """(argv, {flag: value} passed, the namespace trtllm-build of this version parses it to)."""
        f: EngineFields = target.fields
        version = ws.toolchain_for(target).trtllm_version
        io: list = ["--checkpoint_dir", PathArg("dep", "checkpoint"), "--output_dir", OUT]
        if f.lora and f.lora.dirs:
            io += ["--lora_dir", *(PathArg("source", f"lora.dirs.{i}") for i in range(len(f.lora.dirs)))]
        try:
            args, passed = flag_args(TOOL, version, self._values(target, ws))
            argv = io + args
            parsed = flags.parse_argv(TOOL, version, [a if isinstance(a, str) else "PATH" for a in argv])
        except flags.FlagError as err:
            raise target.error(str(err)) from None
        return argv, passed, parsed

    def facts(self, target, ws):
        """The engine's config.json as trtllm-build will write it for this argv (the same
        model the CPU stand-in builds with), so a repository can be generated and checked
        before the engine exists; and where its tokenizer is."""
        version = ws.toolchain_for(target).trtllm_version
        checkpoint = ws.facts(target.dep("checkpoint"))
        model = checkpoint["model"]
        pretrained = {
            "architecture": (model.get("architectures") or [None])[0],
            "dtype": checkpoint["dtype"],
            "mapping": {"world_size": checkpoint["world_size"], "tp_size": checkpoint["tp_size"],
                        "pp_size": checkpoint["pp_size"]},
            "max_position_embeddings": model.get("max_position_embeddings"),
            "rotary_scaling": hf_rotary_scaling(model),
        }
        try:
            build = build_config(self._argv(target, ws)[2], version, pretrained, [], model_known=bool(model))
        except BuildConfigError as err:
            raise target.error(str(err)) from None
        return {
            "tokenizer_dir": checkpoint["source_dir"],
            "world_size": checkpoint["world_size"],
            "config": {"version": version, "pretrained_config": pretrained, "build_config": build},
        }

    def check(self, target, ws):
        f: EngineFields = target.fields
        build = ws.facts(target)["config"]["build_config"]
        if f.max_input_len and build["max_seq_len"] and f.max_input_len > build["max_seq_len"]:
            target.warn(ws, f"max_input_len ({f.max_input_len}) is larger than max_seq_len "
                        f"({build['max_seq_len']}{'' if f.max_seq_len else ', from the model config'}); "
                        f"trtllm-build clips it to {build['max_seq_len']}", key="max_input_len")
        if f.lora and f.lora.dirs:
            for index in range(len(f.lora.dirs)):
                check_adapter(target, target.sources[f"lora.dirs.{index}"], f.lora,
                              self._values(target, ws)["lora_plugin"])
        if ws.settings.lane == "gpu":
            target.check_gpus(ws, ws.facts(target)["world_size"], str(target.dep("checkpoint").address))
            estimate_memory(target, ws)

    def plan(self, target, ws):
        argv, passed, _ = self._argv(target, ws)
        step = Step(TOOL, tuple(argv), gpus=ws.facts(target.dep("checkpoint"))["world_size"])
        return Plan(params=passed, steps=(step,), extra_identity=ws.toolchain_for(target).device_identity())


#: TensorRT-LLM LoRA module -> Hugging Face (PEFT) module name, as its HF LoRA loader maps them.
HF_LORA_MODULES = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_dense": "o_proj",
                   "mlp_h_to_4h": "gate_proj", "mlp_4h_to_h": "down_proj", "mlp_gate": "up_proj"}
SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}


def check_adapter(target, adapter: Path, lora: Lora, plugin_dtype: str) -> None:
    """A built-in LoRA adapter must fit the engine: rank, target modules, dtype."""
    config_path = adapter / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise target.error(f"{config_path} is not a readable PEFT adapter config: {err}", key="lora.dirs") from None
    rank = config.get("r")
    if isinstance(rank, int) and rank > lora.max_rank:
        raise target.error(f"adapter {adapter.name} has rank {rank}, above the engine's max_rank "
                           f"{lora.max_rank} (lora.max_rank)", key="lora.max_rank")
    if lora.target_modules:
        allowed = {HF_LORA_MODULES.get(m, m) for m in lora.target_modules}
        extra = sorted(set(config.get("target_modules") or []) - allowed)
        if extra:
            raise target.error(f"adapter {adapter.name} adapts {', '.join(extra)}, which the engine is not "
                               f"built for (lora.target_modules: {', '.join(lora.target_modules)})",
                               key="lora.target_modules")
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file() and plugin_dtype not in (None, "auto", "disable"):
        with open(weights, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        dtypes = {SAFETENSORS_DTYPES.get(t["dtype"], t["dtype"]) for k, t in header.items() if k != "__metadata__"}
        if dtypes and dtypes != {plugin_dtype}:
            raise target.error(f"adapter {adapter.name} holds {', '.join(sorted(dtypes))} weights but the "
                               f"LoRA plugin is {plugin_dtype} (lora.plugin)", key="lora.plugin")


BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "auto": 2}


def estimate_memory(target, ws) -> None:
    """Weights + a full KV cache per GPU against the declared GPU memory: a warning, as the real
    runtime sizes the KV cache to what is free instead of failing."""
    memory = ws.settings.host.gpu_memory_gib
    facts = ws.facts(target)
    model = ws.facts(target.dep("checkpoint"))["model"]
    if memory is None or not model:
        return
    hidden, layers = model.get("hidden_size", 0), model.get("num_hidden_layers", 0)
    heads = model.get("num_attention_heads", 1)
    kv_heads = model.get("num_key_value_heads") or heads
    head_dim = model.get("head_dim") or hidden // heads
    experts = model.get("num_local_experts") or 1
    inter, vocab = model.get("intermediate_size", 0), model.get("vocab_size", 0)
    per_layer = hidden * (heads + 2 * kv_heads) * head_dim + heads * head_dim * hidden \
        + experts * 3 * hidden * inter + 2 * hidden
    params = layers * per_layer + 2 * vocab * hidden
    build = facts["config"]["build_config"]
    dtype_bytes = BYTES.get(facts["config"]["pretrained_config"]["dtype"], 2)
    kv = 2 * layers * kv_heads * head_dim * dtype_bytes * build["max_batch_size"] * (build["max_seq_len"] or 0)
    per_gpu = (params * dtype_bytes + kv) / facts["world_size"] / 2**30
    if per_gpu > memory:
        target.warn(ws, f"weights + a full KV cache need about {per_gpu:.1f} GiB per GPU "
                    f"(max_batch_size {build['max_batch_size']} x max_seq_len {build['max_seq_len']}) but "
                    f"[tool.llmbuild.host] gpu_memory_gib = {memory}; the runtime will hold fewer sequences")
