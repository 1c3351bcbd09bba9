"""`checkpoint`: a Hugging Face model converted to a TensorRT-LLM checkpoint.

Runs the family's `convert_checkpoint.py`, or `quantize.py` when a
`quantization` recipe is given. Field names are the tools' flag names, and argv
is generated from the fields' `Flag` markers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, model_validator

from ..core.errors import LLMBuildError
from ..core.steps import OUT, PathArg, Plan, Step
from ..core.context import KindContext
from ..core.target import FieldGroup, Flag, Kind, Source, flag_values, register
from ..toolchains.llmapi import lane as llmapi
from ..toolchains.subsystem import ToolFields
from ..toolchains.trtllm import flags
from ..toolchains.trtllm.command import flag_args
from ._shared import check_pool, flag_field, gpu_demand

#: Converter script per model family (TensorRT-LLM's examples/<family>/convert_checkpoint.py).
CONVERTERS = {"llama": "convert_checkpoint.py:llama"}
QUANTIZE = "quantize.py"
#: Every converter: fields marked with it are the converters' flags, not quantize.py's.
CONVERT = tuple(CONVERTERS.values())
#: HF architectures each family's converter takes.
ARCHITECTURES = {"llama": {"LlamaForCausalLM", "MixtralForCausalLM", "MistralForCausalLM"}}

Dtype = Literal["auto", "float16", "bfloat16", "float32"]


class Quantization(FieldGroup):
    """A ModelOpt recipe: run quantize.py instead of the converter."""

    # Declaration order is argv order (it enters keys).
    qformat: Annotated[Literal["full_prec", "fp8", "fp8_pc_pt", "int8_sq", "int4_awq", "w4a8_awq",
                               "int8_wo", "int4_wo", "nvfp4"], Flag("qformat", (QUANTIZE,))] = Field(
        description="--qformat: the quantization format (fp8_pc_pt and nvfp4 in 1.x; full_prec: none).")
    kv_cache_dtype: Annotated[Literal["int8", "fp8"] | None, Flag("kv_cache_dtype", (QUANTIZE,))] = Field(
        None, description="--kv_cache_dtype: quantize the KV cache too (default: the model's dtype).")
    calib_size: Annotated[PositiveInt | None, Flag("calib_size", (QUANTIZE,))] = Field(
        None, description="--calib_size: calibration samples (default 512).")
    calib_dataset: Annotated[str | None, Flag("calib_dataset", (QUANTIZE,))] = Field(
        None, description="--calib_dataset: Hugging Face dataset name or local directory the calibration "
        "samples come from (default cnn_dailymail).")
    calib_max_seq_length: Annotated[PositiveInt | None, Flag("calib_max_seq_length", (QUANTIZE,))] = Field(
        None, description="--calib_max_seq_length: tokens per calibration sample (default 512).")
    batch_size: Annotated[PositiveInt | None, Flag("batch_size", (QUANTIZE,))] = Field(
        None, description="--batch_size: calibration samples per forward pass (default 1).")
    awq_block_size: Annotated[PositiveInt | None, Flag("awq_block_size", (QUANTIZE,))] = Field(
        None, description="--awq_block_size: weights per AWQ scaling group, for int4_awq and w4a8_awq "
        "(default 128).")
    seed: Annotated[int | None, Flag("seed", (QUANTIZE,))] = Field(
        None, description="--seed: random seed of the calibration sampling (default 1234).")


class CheckpointFields(ToolFields):
    # Declaration order is argv order (it enters keys): quantize.py takes the recipe between
    # --dtype and --tp_size.
    source: Annotated[str, Source()] = Field(
        description="Hugging Face model directory (--model_dir): relative, //workspace, or under a data root.")
    family: Literal["llama"] = Field(
        "llama", description="Which converter runs (examples/<family>/convert_checkpoint.py; quantize.py's "
        "--decoder_type). llama, the default and so far the only family, covers Llama, Mistral and Mixtral.")
    dtype: Annotated[Dtype | None, Flag("dtype")] = Field(
        None, description="--dtype: dtype of the checkpoint's weights (default auto: the model's; "
        "float16 before 0.15).")
    quantization: Quantization | None = Field(
        None, description="Run quantize.py with this recipe instead of the converter (default: convert "
        "without ModelOpt).")
    tp_size: Annotated[PositiveInt, Flag("tp_size")] = Field(
        1, description="--tp_size: tensor-parallel ranks (default 1).")
    pp_size: Annotated[PositiveInt, Flag("pp_size")] = Field(
        1, description="--pp_size: pipeline-parallel ranks (default 1).")
    moe_tp_size: Annotated[PositiveInt | None, Flag("moe_tp_size", CONVERT)] = Field(
        None, description="--moe_tp_size: tensor-parallel ranks within each expert, MoE models (default: "
        "tp_size, or tp_size / moe_ep_size).")
    moe_ep_size: Annotated[PositiveInt | None, Flag("moe_ep_size", CONVERT)] = Field(
        None, description="--moe_ep_size: expert-parallel ranks, MoE models (default: 1, or tp_size / "
        "moe_tp_size); moe_tp_size x moe_ep_size = tp_size.")
    use_weight_only: Annotated[bool, Flag("use_weight_only", CONVERT)] = Field(
        False, description="--use_weight_only: quantize the weights only, to weight_only_precision "
        "(default off).")
    weight_only_precision: Annotated[Literal["int8", "int4", "int8_gptq", "int4_gptq", "int4_awq"] | None,
                                     Flag("weight_only_precision", CONVERT)] = Field(
        None, description="--weight_only_precision: with use_weight_only (default int8; int4_awq from "
        "0.13, int8_gptq from 0.15).")
    int8_kv_cache: Annotated[bool, Flag("int8_kv_cache", CONVERT)] = Field(
        False, description="--int8_kv_cache: an INT8 KV cache, calibrated on calib data (default off).")
    fp8_kv_cache: Annotated[bool, Flag("fp8_kv_cache", CONVERT)] = Field(
        False, description="--fp8_kv_cache: an FP8 KV cache (default off).")
    smoothquant: Annotated[float | None, Flag("smoothquant", CONVERT)] = Field(
        None, gt=0, le=1, description="--smoothquant: SmoothQuant INT8 with this alpha in (0, 1] "
        "(default: off).")
    per_channel: Annotated[bool, Flag("per_channel", CONVERT)] = Field(
        False, description="--per_channel: SmoothQuant with per-channel weight scales (default: one "
        "per tensor).")
    per_token: Annotated[bool, Flag("per_token", CONVERT)] = Field(
        False, description="--per_token: SmoothQuant with per-token activation scales (default: one "
        "per tensor).")
    use_parallel_embedding: Annotated[bool, Flag("use_parallel_embedding", CONVERT)] = Field(
        False, description="--use_parallel_embedding: split the embedding table across tensor-parallel "
        "ranks (default: every rank holds it whole).")
    # Not Literal[0, 1]: a Literal takes `true` for 1, which the JSON Schema (and TOML) does not.
    embedding_sharding_dim: Annotated[int | None, Field(ge=0, le=1), Flag("embedding_sharding_dim", CONVERT)] = Field(
        None, description="--embedding_sharding_dim: with use_parallel_embedding, split along 0 (vocab) "
        "or 1 (hidden) (default 0).")
    load_by_shard: Annotated[bool, Flag("load_by_shard", CONVERT)] = Field(
        False, description="--load_by_shard: read the Hugging Face weights one shard at a time, for models "
        "larger than host memory (default off); not with smoothquant or int8_kv_cache.")
    workers: Annotated[PositiveInt | None, Flag("workers", CONVERT)] = Field(
        None, description="--workers: ranks converted in parallel (default 1).")

    @model_validator(mode="after")
    def _consistent(self):
        if self.quantization and (self.use_weight_only or self.int8_kv_cache or self.smoothquant):
            raise ValueError("quantization (quantize.py) cannot be combined with the converter's "
                             "use_weight_only / int8_kv_cache / smoothquant")
        if self.weight_only_precision and not self.use_weight_only:
            raise ValueError("weight_only_precision needs use_weight_only = true")
        if self.load_by_shard and (self.smoothquant or self.int8_kv_cache):
            raise ValueError("load_by_shard cannot be combined with smoothquant or int8_kv_cache")
        return self


def read_model_config(ctx: KindContext) -> dict[str, Any]:
    path = ctx.sources["source"] / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ctx.error(f"{path} is missing: source must be a Hugging Face model directory",
                        key="source") from None
    except json.JSONDecodeError as err:
        raise ctx.error(f"{path} is not valid JSON: {err}", key="source") from None


@register
class Checkpoint(Kind):
    name = "checkpoint"
    Fields = CheckpointFields
    help = "Hugging Face weights -> TensorRT-LLM checkpoint (convert_checkpoint.py or quantize.py)."

    def facts(self, ctx):
        f: CheckpointFields = ctx.fields
        present = ctx.unavailable is None and ctx.sources["source"].exists()
        model = read_model_config(ctx) if present else {}
        return {"dtype": f.dtype or model.get("torch_dtype") or model.get("dtype") or "auto", "tp_size": f.tp_size,
                "pp_size": f.pp_size, "world_size": f.tp_size * f.pp_size, "model": model,
                "source_dir": ctx.sources["source"], "declared_dtype": f.dtype, "moe_tp_size": f.moe_tp_size,
                "moe_ep_size": f.moe_ep_size,
                # engine-free lane: where the served weights are (a passthrough's source, else the output)
                "weights": ctx.sources["source"] if f.quantization is None else None}

    def check(self, ctx):
        f: CheckpointFields = ctx.fields
        if f.gpus is not None:
            check_pool(ctx, len(f.gpus), "listed in gpus")
        if ctx.toolchain.engine_free:
            llmapi.check_checkpoint(ctx)
        model = ctx.own_facts()["model"]
        if not model:  # source not present (plan/render without data): nothing to check against
            return
        arch = (model.get("architectures") or ["?"])[0]
        if arch not in ARCHITECTURES[f.family]:
            raise ctx.error(f"{arch} is not a {f.family}-family model (the {f.family} converter "
                               f"takes {', '.join(sorted(ARCHITECTURES[f.family]))})", key="family")
        heads = model.get("num_attention_heads")
        kv_heads = model.get("num_key_value_heads") or heads
        layers = model.get("num_hidden_layers")
        config = f"{ctx.sources['source'].name}/config.json"
        if heads and heads % f.tp_size:
            raise ctx.error(f"tp_size {f.tp_size} does not divide the model's {heads} attention "
                               f"heads ({config})", key="tp_size")
        if kv_heads and kv_heads % f.tp_size and f.tp_size % kv_heads:
            raise ctx.error(f"tp_size {f.tp_size} and the model's {kv_heads} KV heads: one must "
                               f"divide the other ({config})", key="tp_size")
        if layers and f.pp_size > layers:
            raise ctx.error(f"pp_size {f.pp_size} exceeds the model's {layers} layers ({config})",
                               key="pp_size")
        if f.moe_tp_size or f.moe_ep_size:
            if not model.get("num_local_experts"):
                raise ctx.error("moe_tp_size / moe_ep_size need a mixture-of-experts model",
                                   key="moe_tp_size" if f.moe_tp_size else "moe_ep_size")
            moe_tp = f.moe_tp_size or f.tp_size // (f.moe_ep_size or 1)
            moe_ep = f.moe_ep_size or f.tp_size // moe_tp
            if moe_tp * moe_ep != f.tp_size:
                raise ctx.error(f"moe_tp_size x moe_ep_size ({moe_tp} x {moe_ep}) must equal "
                                   f"tp_size ({f.tp_size})", key="moe_tp_size")

    def plan(self, ctx):
        f: CheckpointFields = ctx.fields
        if ctx.toolchain.engine_free:  # no converter: pass through, or ModelOpt's hf_ptq.py
            return llmapi.checkpoint_plan(ctx, gpu_demand(ctx, 1 if f.quantization else 0))
        version = ctx.toolchain.trtllm_version
        io = ["--model_dir", PathArg("source", "source"), "--output_dir", OUT]
        tool = CONVERTERS[f.family] if f.quantization is None else QUANTIZE
        derived = {"decoder_type": f.family} if tool == QUANTIZE else {}
        values = {**derived, **flag_values(f, tool)}
        try:
            args, passed = flag_args(tool, version, values)
            step = Step(tool, tuple(io + args))
            flags.parse_argv(tool, version, [a if isinstance(a, str) else "PATH" for a in step.argv])
        except flags.FlagError as err:
            raise ctx.error(str(err), key=flag_field(ctx, str(err))) from None
        except LLMBuildError as err:
            raise ctx.error(err.message) from None
        return Plan(params={"tool": tool, **passed}, steps=(step,), gpus=gpu_demand(ctx, 0))

    def run(self, ctx):
        if ctx.toolchain.engine_free and ctx.fields.quantization is None:
            llmapi.write_passthrough(ctx)
        else:
            super().run(ctx)

    def builds_by_steps(self, ctx):
        return not (ctx.toolchain.engine_free and ctx.fields.quantization is None)
