"""`engine`: a TensorRT-LLM checkpoint compiled by `trtllm-build`.

Field names are trtllm-build's flags, and argv is generated from the fields'
`Flag` markers. Plugin fields take a dtype (`"float16"`, `"auto"`, `"disable"`);
feature switches take booleans (written enable/disable).
"""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from ..core.context import KindContext
from ..core.steps import OUT, PathArg, Plan, Step
from ..core.target import FieldGroup, Flag, Kind, Ref, Source, flag_values, register
from ..toolchains.llmapi import lane as llmapi
from ..toolchains.subsystem import ToolFields
from ..toolchains.trtllm import flags
from ..toolchains.trtllm.build_config import BuildConfigError, build_config, hf_rotary_scaling
from ..toolchains.trtllm.command import flag_args
from ._shared import check_gpus, flag_field, gpu_demand

TOOL = "trtllm-build"
PluginDtype = Literal["auto", "float16", "float32", "bfloat16", "int32", "disable"]


class Lora(FieldGroup):
    """LoRA support: the engine is built with the LoRA plugin."""

    # Declaration order is argv order (it enters keys).
    plugin: Annotated[PluginDtype | None, Flag("lora_plugin")] = Field(
        None, description="--lora_plugin: dtype of the LoRA plugin (default: the checkpoint's dtype).")
    max_rank: Annotated[PositiveInt, Flag("max_lora_rank")] = Field(
        64, description="--max_lora_rank: largest adapter rank served; sizes the plugin's workspace (default 64).")
    target_modules: Annotated[list[str] | None, Flag("lora_target_modules")] = Field(
        None, description="--lora_target_modules: modules adapters may adapt, in TensorRT-LLM's names "
        "(attn_q, attn_k, attn_v, attn_dense, mlp_h_to_4h, mlp_4h_to_h, mlp_gate, ...; default: those "
        "the adapters in dirs adapt).")
    dirs: Annotated[list[str] | None, Source()] = Field(
        None, description="--lora_dir: adapter directories built into the engine (Hugging Face PEFT or "
        "NeMo); the first gives the LoRA config (default: none, adapters come with requests).")
    ckpt_source: Annotated[Literal["hf", "nemo"] | None, Flag("lora_ckpt_source")] = Field(
        None, description="--lora_ckpt_source: format of the adapters, hf or nemo (default hf).")


class EngineFields(ToolFields):
    # Declaration order is argv order (it enters keys).
    checkpoint: Annotated[str, Ref("checkpoint")] = Field(
        description="The checkpoint target to build from (--checkpoint_dir).")
    max_batch_size: Annotated[PositiveInt | None, Flag("max_batch_size")] = Field(
        None, description="--max_batch_size: most sequences in one batch (default 2048; 256 before 0.14).")
    max_input_len: Annotated[PositiveInt | None, Flag("max_input_len")] = Field(
        None, description="--max_input_len: longest prompt, in tokens (default 1024); trtllm-build clips it "
        "to max_seq_len.")
    max_seq_len: Annotated[PositiveInt | None, Flag("max_seq_len")] = Field(
        None, description="--max_seq_len: longest sequence, prompt plus generated tokens (default: the model's "
        "max_position_embeddings, times its rope scaling factor where it declares one, except for llama3, "
        "longrope and su rope types).")
    max_num_tokens: Annotated[PositiveInt | None, Flag("max_num_tokens")] = Field(
        None, description="--max_num_tokens: most tokens one engine step processes, summed over the batch "
        "without padding (default 8192).")
    opt_num_tokens: Annotated[PositiveInt | None, Flag("opt_num_tokens")] = Field(
        None, description="--opt_num_tokens: token count the engine is tuned for (default: max_batch_size x "
        "max_beam_width); not with multiple_profiles.")
    max_beam_width: Annotated[PositiveInt | None, Flag("max_beam_width")] = Field(
        None, description="--max_beam_width: widest beam search (default 1: no beam search).")
    max_prompt_embedding_table_size: Annotated[NonNegativeInt | None, Flag("max_prompt_embedding_table_size")] = Field(
        None, description="--max_prompt_embedding_table_size: rows of prompt-tuning or multimodal embeddings "
        "(default 0: none).")
    kv_cache_type: Annotated[Literal["paged", "continuous", "disabled"] | None, Flag("kv_cache_type")] = Field(
        None, description="--kv_cache_type (TensorRT-LLM 0.13+): paged, continuous or disabled KV cache "
        "(default paged); in-flight batching needs paged.")
    tokens_per_block: Annotated[PositiveInt | None, Flag("tokens_per_block")] = Field(
        None, description="--tokens_per_block: tokens per block of the paged KV cache (default 64; 32 in 1.x).")
    gpt_attention_plugin: Annotated[PluginDtype | None, Flag("gpt_attention_plugin")] = Field(
        None, description="--gpt_attention_plugin: dtype of the attention plugin, or disable (default auto: "
        "the model's dtype); in-flight batching needs it.")
    gemm_plugin: Annotated[Literal["auto", "float16", "float32", "bfloat16", "int32", "fp8", "nvfp4", "disable"]
                           | None, Flag("gemm_plugin")] = Field(
        None, description="--gemm_plugin: dtype of the GEMM plugin (fp8, nvfp4 for quantized models), or "
        "disable (default disable; unset in 1.x).")
    nccl_plugin: Annotated[PluginDtype | None, Flag("nccl_plugin")] = Field(
        None, description="--nccl_plugin: dtype of the NCCL plugin that tensor- and pipeline-parallel ranks "
        "communicate through, or disable (default auto).")
    moe_plugin: Annotated[PluginDtype | None, Flag("moe_plugin")] = Field(
        None, description="--moe_plugin: dtype of the mixture-of-experts plugin, or disable (default auto).")
    context_fmha: Annotated[bool | None, Flag("context_fmha")] = Field(
        None, description="--context_fmha enable|disable: fused multi-head attention for the prompt "
        "(default enable).")
    use_paged_context_fmha: Annotated[bool | None, Flag("use_paged_context_fmha")] = Field(
        None, description="--use_paged_context_fmha enable|disable: context FMHA over the paged KV cache; "
        "needed for KV-cache reuse and chunked context (default disable; enable in 1.x).")
    use_fp8_context_fmha: Annotated[bool | None, Flag("use_fp8_context_fmha")] = Field(
        None, description="--use_fp8_context_fmha enable|disable: FP8 context FMHA for FP8 models "
        "(default disable; enable in 1.x).")
    remove_input_padding: Annotated[bool | None, Flag("remove_input_padding")] = Field(
        None, description="--remove_input_padding enable|disable: pack a batch's tokens without padding "
        "(default enable); in-flight batching needs it.")
    multiple_profiles: Annotated[bool | None, Flag("multiple_profiles")] = Field(
        None, description="--multiple_profiles enable|disable: several TensorRT optimization profiles for "
        "varied token counts (default disable); not with opt_num_tokens.")
    use_fused_mlp: Annotated[bool | None, Flag("use_fused_mlp")] = Field(
        None, description="--use_fused_mlp enable|disable: fuse the MLP's gate and up projections into one "
        "GEMM (default enable; in 0.12 a switch, off unless given).")
    reduce_fusion: Annotated[bool | None, Flag("reduce_fusion")] = Field(
        None, description="--reduce_fusion enable|disable: fuse the tensor-parallel all-reduce with the "
        "residual add and norm (default disable).")
    user_buffer: Annotated[bool | None, Flag("user_buffer")] = Field(
        None, description="--user_buffer enable|disable (TensorRT-LLM 0.16+): user buffers for the fused "
        "all-reduce, with reduce_fusion (default disable).")
    pp_reduce_scatter: Annotated[bool | None, Flag("pp_reduce_scatter")] = Field(
        None, description="--pp_reduce_scatter enable|disable (TensorRT-LLM 0.15+): reduce-scatter between "
        "pipeline stages; Mixtral only (default disable).")
    logits_dtype: Annotated[Literal["float16", "float32"] | None, Flag("logits_dtype")] = Field(
        None, description="--logits_dtype: dtype of the logits the engine returns (default: the "
        "checkpoint's logits_dtype, float32).")
    gather_context_logits: Annotated[bool, Flag("gather_context_logits")] = Field(
        False, description="--gather_context_logits: the engine can return the prompt's logits (default "
        "off); not with max_draft_len > 0.")
    gather_generation_logits: Annotated[bool, Flag("gather_generation_logits")] = Field(
        False, description="--gather_generation_logits: the engine can return the generated tokens' "
        "logits (default off).")
    gather_all_token_logits: Annotated[bool, Flag("gather_all_token_logits")] = Field(
        False, description="--gather_all_token_logits: both gather_context_logits and "
        "gather_generation_logits (default off).")
    speculative_decoding_mode: Annotated[Literal["draft_tokens_external", "lookahead_decoding", "medusa",
                                                 "explicit_draft_tokens", "eagle"] | None,
                                         Flag("speculative_decoding_mode")] = Field(
        None, description="--speculative_decoding_mode: how draft tokens are proposed (eagle from "
        "TensorRT-LLM 0.15; default: no speculative decoding).")
    max_draft_len: Annotated[NonNegativeInt | None, Flag("max_draft_len")] = Field(
        None, description="--max_draft_len: most draft tokens checked per step in speculative decoding "
        "(default 0).")
    strip_plan: Annotated[bool, Flag("strip_plan")] = Field(
        False, description="--strip_plan: a weight-stripped engine, refitted with the weights at load "
        "(default off).")
    weight_sparsity: Annotated[bool, Flag("weight_sparsity")] = Field(
        False, description="--weight_sparsity: let TensorRT use 2:4 structured-sparse weights (default off).")
    weight_streaming: Annotated[bool, Flag("weight_streaming")] = Field(
        False, description="--weight_streaming: weights may stay in host memory and stream to the GPU "
        "(default off).")
    fast_build: Annotated[bool, Flag("fast_build")] = Field(
        False, description="--fast_build: skip some optimizations for a faster build; weights are kept "
        "outside the engine (default off).")
    workers: Annotated[PositiveInt | None, Flag("workers")] = Field(
        None, description="--workers: ranks built in parallel (default 1; capped at the visible GPUs).")
    profiling_verbosity: Annotated[Literal["layer_names_only", "detailed", "none"] | None,
                                   Flag("profiling_verbosity")] = Field(
        None, description="--profiling_verbosity: layer detail kept in the engine for profilers "
        "(default layer_names_only).")
    log_level: Annotated[Literal["internal_error", "error", "warning", "info", "verbose", "debug", "trace"] | None,
                         Flag("log_level")] = Field(
        None, description="--log_level: how much trtllm-build logs (default info; trace in 1.x).")
    lora: Lora | None = Field(None, description="Build with the LoRA plugin, e.g. { max_rank = 32 } "
                              "(default: no LoRA); in the engine-free lane enable_lora + lora_config.max_lora_rank.")
    llm_args: dict[str, Any] | None = Field(
        None, description="Engine-free lane (TensorRT-LLM >= 1.3.0rc21) only: further TorchLlmArgs keys passed "
        "through to the LLM-API YAML, nested tables as in the YAML, e.g. { cuda_graph_config = { max_batch_size = "
        "16 } }; checked against the version's table (unknown or moved keys are errors).")

    @model_validator(mode="after")
    def _consistent(self):
        if self.multiple_profiles and self.opt_num_tokens:
            raise ValueError("multiple_profiles cannot be combined with opt_num_tokens (trtllm-build refuses it)")
        if self.gather_context_logits and (self.max_draft_len or 0) > 0:
            raise ValueError("gather_context_logits cannot be combined with max_draft_len > 0")
        return self


@register
class Engine(Kind):
    name = "engine"
    Fields = EngineFields
    help = "TensorRT-LLM checkpoint -> engine directory (trtllm-build)."

    def _values(self, ctx) -> dict[str, Any]:
        """trtllm-build's flags, from the fields; an unset LoRA plugin takes the checkpoint's dtype."""
        return flag_values(ctx.fields, TOOL, derived={"lora.plugin": ctx.facts_of("checkpoint")["dtype"]})

    def _argv(self, ctx) -> tuple[list, dict[str, Any], Namespace]:
        """(argv, {flag: value} passed, the namespace trtllm-build of this version parses it to)."""
        f: EngineFields = ctx.fields
        version = ctx.toolchain.trtllm_version
        io: list = ["--checkpoint_dir", PathArg("dep", "checkpoint"), "--output_dir", OUT]
        if f.lora and f.lora.dirs:
            io += ["--lora_dir", *(PathArg("source", f"lora.dirs.{i}") for i in range(len(f.lora.dirs)))]
        try:
            args, passed = flag_args(TOOL, version, self._values(ctx))
            argv = io + args
            parsed = flags.parse_argv(TOOL, version, [a if isinstance(a, str) else "PATH" for a in argv])
        except flags.FlagError as err:
            raise ctx.error(str(err), key=flag_field(ctx, str(err))) from None
        return argv, passed, parsed

    def facts(self, ctx):
        if ctx.toolchain.engine_free:  # no engine: the LLM-API options YAML
            return llmapi.engine_facts(ctx)
        return self._engine_facts(ctx)

    def _engine_facts(self, ctx):
        """The engine's config.json as trtllm-build will write it for this argv (the same model
        the CPU stand-in builds with), so a repository can be generated and checked before the
        engine exists; where its tokenizer is; and the toolchain that builds it (an engine only
        loads in that TensorRT-LLM / TensorRT)."""
        toolchain = ctx.toolchain
        version = toolchain.trtllm_version
        checkpoint = ctx.facts_of("checkpoint")
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
            build = build_config(self._argv(ctx)[2], version, pretrained, [], model_known=bool(model))
        except BuildConfigError as err:
            raise ctx.error(str(err)) from None
        return {
            "tokenizer_dir": checkpoint["source_dir"],
            "world_size": checkpoint["world_size"],
            "built_with": {"trtllm_version": version,
                           "tensorrt_version": toolchain.device_identity().get("tensorrt_version"),
                           "container": str(ctx.dep("container").address) if ctx.has_dep("container") else None},
            "config": {"version": version, "pretrained_config": pretrained, "build_config": build},
        }

    def check(self, ctx):
        f: EngineFields = ctx.fields
        facts = ctx.own_facts()
        if ctx.toolchain.engine_free:
            check_gpus(ctx, facts["world_size"], str(ctx.dep("checkpoint").address))
            return
        if f.llm_args is not None:
            raise ctx.error(f"llm_args is for the engine-free lane (TensorRT-LLM >= {llmapi.ENGINE_FREE_SINCE}); "
                            f"this engine is built by trtllm-build of TensorRT-LLM {ctx.toolchain.trtllm_version}",
                            key="llm_args")
        build = facts["config"]["build_config"]
        if f.max_input_len and build["max_seq_len"] and f.max_input_len > build["max_seq_len"]:
            ctx.warn(f"max_input_len ({f.max_input_len}) is larger than max_seq_len "
                     f"({build['max_seq_len']}{'' if f.max_seq_len else ', from the model config'}); "
                     f"trtllm-build clips it to {build['max_seq_len']}", key="max_input_len")
        if f.lora and f.lora.dirs:
            for index in range(len(f.lora.dirs)):
                check_adapter(ctx, ctx.sources[f"lora.dirs.{index}"], f.lora, self._values(ctx)["lora_plugin"])
        check_gpus(ctx, facts["world_size"], str(ctx.dep("checkpoint").address))
        if ctx.lane == "gpu":
            estimate_memory(ctx)

    def plan(self, ctx):
        if ctx.toolchain.engine_free:
            return llmapi.engine_plan(ctx)
        argv, passed, _ = self._argv(ctx)
        world = ctx.facts_of("checkpoint")["world_size"]
        step = Step(TOOL, tuple(argv), gpus=world)
        return Plan(params=passed, steps=(step,), extra_identity=ctx.toolchain.device_identity(),
                    gpus=gpu_demand(ctx, world))

    def run(self, ctx):
        if ctx.toolchain.engine_free:
            llmapi.write_engine(ctx)
        else:
            super().run(ctx)

    def builds_by_steps(self, ctx):
        return not ctx.toolchain.engine_free


#: TensorRT-LLM LoRA module -> Hugging Face (PEFT) module name, as its HF LoRA loader maps them.
HF_LORA_MODULES = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_dense": "o_proj",
                   "mlp_h_to_4h": "gate_proj", "mlp_4h_to_h": "down_proj", "mlp_gate": "up_proj"}
SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}


def check_adapter(ctx: KindContext, adapter: Path, lora: Lora, plugin_dtype: str) -> None:
    """A built-in LoRA adapter must fit the engine: rank, target modules, dtype."""
    config_path = adapter / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise ctx.error(f"{config_path} is not a readable PEFT adapter config: {err}", key="lora.dirs") from None
    rank = config.get("r")
    if isinstance(rank, int) and rank > lora.max_rank:
        raise ctx.error(f"adapter {adapter.name} has rank {rank}, above the engine's max_rank "
                           f"{lora.max_rank} (lora.max_rank)", key="lora.max_rank")
    if lora.target_modules:
        allowed = {HF_LORA_MODULES.get(m, m) for m in lora.target_modules}
        extra = sorted(set(config.get("target_modules") or []) - allowed)
        if extra:
            raise ctx.error(f"adapter {adapter.name} adapts {', '.join(extra)}, which the engine is not "
                               f"built for (lora.target_modules: {', '.join(lora.target_modules)})",
                               key="lora.target_modules")
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file() and plugin_dtype not in (None, "auto", "disable"):
        with open(weights, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        dtypes = {SAFETENSORS_DTYPES.get(t["dtype"], t["dtype"]) for k, t in header.items() if k != "__metadata__"}
        if dtypes and dtypes != {plugin_dtype}:
            raise ctx.error(f"adapter {adapter.name} holds {', '.join(sorted(dtypes))} weights but the "
                               f"LoRA plugin is {plugin_dtype} (lora.plugin)", key="lora.plugin")


BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "auto": 2}


def estimate_memory(ctx: KindContext) -> None:
    """Weights + a full KV cache per GPU against the declared GPU memory: a warning, as the real
    runtime sizes the KV cache to what is free instead of failing."""
    memory = ctx.toolchain.gpu_memory_gib
    facts = ctx.own_facts()
    model = ctx.facts_of("checkpoint")["model"]
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
        ctx.warn(f"weights + a full KV cache need about {per_gpu:.1f} GiB per GPU "
                    f"(max_batch_size {build['max_batch_size']} x max_seq_len {build['max_seq_len']}) but "
                    f"[tool.llmbuild.host] gpu_memory_gib = {memory}; the runtime will hold fewer sequences")
