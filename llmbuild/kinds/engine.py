"""`engine`: a TensorRT-LLM checkpoint compiled by `trtllm-build`.

Field names are trtllm-build's flags. Plugin fields take a dtype (`"float16"`,
`"auto"`, `"disable"`); feature switches take booleans (written enable/disable).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from ..core.steps import OUT, PathArg, Plan, Step
from ..core.target import FieldGroup, Kind, Ref, Source, ToolFields, register
from ..toolchains.trtllm import flags
from ..toolchains.trtllm.command import flag_args

TOOL = "trtllm-build"
PluginDtype = Literal["auto", "float16", "float32", "bfloat16", "int32", "disable"]


class Lora(FieldGroup):
    """LoRA support: the engine is built with the LoRA plugin."""

    max_rank: PositiveInt = Field(64, description="--max_lora_rank: largest adapter rank served")
    target_modules: list[str] | None = Field(None, description="--lora_target_modules")
    plugin: PluginDtype | None = Field(None, description="--lora_plugin dtype (default: the checkpoint's dtype)")
    dirs: Annotated[list[str], Source()] | None = Field(None, description="--lora_dir: adapters built in")
    ckpt_source: Literal["hf", "nemo"] | None = Field(None, description="--lora_ckpt_source")


class EngineFields(ToolFields):
    checkpoint: Annotated[str, Ref("checkpoint")] = Field(description="The checkpoint target to build from.")
    max_batch_size: PositiveInt | None = None
    max_input_len: PositiveInt | None = None
    max_seq_len: PositiveInt | None = Field(None, description="Default: the model's max_position_embeddings.")
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
        if self.max_input_len and self.max_seq_len and self.max_input_len > self.max_seq_len:
            raise ValueError(f"max_input_len ({self.max_input_len}) must be <= max_seq_len ({self.max_seq_len})")
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

    def facts(self, target, ws):
        """The engine's config.json as declared (version defaults filled in), so a repository
        can be generated and checked before the engine exists; and where its tokenizer is."""
        version = ws.toolchain_for(target).trtllm_version
        checkpoint = ws.facts(target.dep("checkpoint"))
        declared = self._values(target, ws)

        def effective(flag: str) -> Any:
            value = declared.get(flag)
            return flags.default(TOOL, version, flag) if value is None else value

        def enabled(flag: str) -> bool:
            return effective(flag) in (True, "enable")

        gather_all = declared["gather_all_token_logits"]
        lora = target.fields.lora
        return {
            "tokenizer_dir": checkpoint["source_dir"],
            "world_size": checkpoint["world_size"],
            "config": {
                "version": version,
                "pretrained_config": {
                    "dtype": checkpoint["dtype"],
                    "mapping": {"world_size": checkpoint["world_size"], "tp_size": checkpoint["tp_size"],
                                "pp_size": checkpoint["pp_size"]}},
                "build_config": {
                    "max_batch_size": effective("max_batch_size"),
                    "max_input_len": effective("max_input_len"),
                    "max_seq_len": declared.get("max_seq_len")
                    or checkpoint["model"].get("max_position_embeddings"),
                    "max_beam_width": effective("max_beam_width"),
                    "max_num_tokens": effective("max_num_tokens"),
                    "kv_cache_type": (declared.get("kv_cache_type") or "paged").upper(),
                    "gather_context_logits": bool(declared["gather_context_logits"] or gather_all),
                    "gather_generation_logits": bool(declared["gather_generation_logits"] or gather_all),
                    "plugin_config": {"use_paged_context_fmha": enabled("use_paged_context_fmha"),
                                      "lora_plugin": declared.get("lora_plugin")},
                    "lora_config": None if lora is None else {
                        "max_lora_rank": lora.max_rank, "lora_target_modules": lora.target_modules},
                },
            },
        }

    def check(self, target, ws):
        f: EngineFields = target.fields
        build = ws.facts(target)["config"]["build_config"]
        if build["max_seq_len"] and build["max_input_len"] > build["max_seq_len"]:
            raise target.error(f"max_input_len ({build['max_input_len']}) exceeds max_seq_len "
                               f"({build['max_seq_len']}{'' if f.max_seq_len else ', the model max_position_embeddings'})",
                               key="max_input_len")
        if f.lora and f.lora.target_modules:
            known = flags.lora_target_modules(ws.toolchain_for(target).trtllm_version)
            for module in f.lora.target_modules:
                if module not in known:
                    raise target.error(f"'{module}' is not a LoRA target module of TensorRT-LLM "
                                       f"{ws.toolchain_for(target).trtllm_version} (known: {', '.join(known)})",
                                       key="lora.target_modules")

    def plan(self, target, ws):
        f: EngineFields = target.fields
        version = ws.toolchain_for(target).trtllm_version
        io: list = ["--checkpoint_dir", PathArg("dep", "checkpoint"), "--output_dir", OUT]
        if f.lora and f.lora.dirs:
            io += ["--lora_dir", *(PathArg("source", f"lora.dirs.{i}") for i in range(len(f.lora.dirs)))]
        try:
            args, passed = flag_args(TOOL, version, self._values(target, ws))
            step = Step(TOOL, tuple(io + args), gpus=ws.facts(target.dep("checkpoint"))["world_size"])
            flags.parse_argv(TOOL, version, [a if isinstance(a, str) else "PATH" for a in step.argv])
        except flags.FlagError as err:
            raise target.error(str(err)) from None
        return Plan(params=passed, steps=(step,))
