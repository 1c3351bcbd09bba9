"""`checkpoint`: a Hugging Face model converted to a TensorRT-LLM checkpoint.

Runs the family's `convert_checkpoint.py`, or `quantize.py` when a
`quantization` recipe is given. Field names are the tools' flag names.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, model_validator

from ..core.errors import LLMBuildError
from ..core.steps import OUT, PathArg, Plan, Step
from ..core.context import KindContext
from ..core.target import FieldGroup, Kind, Source, register
from ..toolchains.subsystem import ToolFields
from ..toolchains.trtllm import flags
from ..toolchains.trtllm.command import flag_args

#: Converter script per model family (TensorRT-LLM's examples/<family>/convert_checkpoint.py).
CONVERTERS = {"llama": "convert_checkpoint.py:llama"}
#: HF architectures each family's converter takes.
ARCHITECTURES = {"llama": {"LlamaForCausalLM", "MixtralForCausalLM", "MistralForCausalLM"}}

Dtype = Literal["auto", "float16", "bfloat16", "float32"]


class Quantization(FieldGroup):
    """A ModelOpt recipe: run quantize.py instead of the converter."""

    qformat: Literal["full_prec", "fp8", "fp8_pc_pt", "int8_sq", "int4_awq", "w4a8_awq",
                     "int8_wo", "int4_wo", "nvfp4"] = Field(description="--qformat")
    kv_cache_dtype: Literal["int8", "fp8"] | None = Field(None, description="--kv_cache_dtype")
    calib_size: PositiveInt | None = Field(None, description="--calib_size: calibration samples")
    calib_dataset: str | None = Field(None, description="--calib_dataset")
    calib_max_seq_length: PositiveInt | None = None
    batch_size: PositiveInt | None = Field(None, description="--batch_size during calibration")
    awq_block_size: PositiveInt | None = None
    seed: int | None = None


class CheckpointFields(ToolFields):
    source: Annotated[str, Source()] = Field(
        description="Hugging Face model directory (--model_dir): relative, //workspace, or under a data root.")
    family: Literal["llama"] = Field("llama", description="Which converter (examples/<family>/convert_checkpoint.py).")
    dtype: Dtype | None = Field(None, description="--dtype")
    tp_size: PositiveInt = Field(1, description="--tp_size: tensor-parallel ranks")
    pp_size: PositiveInt = Field(1, description="--pp_size: pipeline-parallel ranks")
    moe_tp_size: PositiveInt | None = Field(None, description="--moe_tp_size (MoE models)")
    moe_ep_size: PositiveInt | None = Field(None, description="--moe_ep_size (MoE models)")
    use_weight_only: bool = Field(False, description="--use_weight_only")
    weight_only_precision: Literal["int8", "int4", "int8_gptq", "int4_gptq", "int4_awq"] | None = None
    int8_kv_cache: bool = Field(False, description="--int8_kv_cache")
    fp8_kv_cache: bool = False
    smoothquant: float | None = Field(None, gt=0, le=1, description="--smoothquant alpha")
    per_channel: bool = False
    per_token: bool = False
    use_parallel_embedding: bool = False
    # Not Literal[0, 1]: a Literal takes `true` for 1, which the JSON Schema (and TOML) does not.
    embedding_sharding_dim: Annotated[int, Field(ge=0, le=1)] | None = None
    load_by_shard: bool = False
    workers: PositiveInt | None = Field(None, description="--workers: parallel conversion processes")
    quantization: Quantization | None = Field(None, description="Run quantize.py with this recipe.")

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
                "source_dir": ctx.sources["source"]}

    def check(self, ctx):
        f: CheckpointFields = ctx.fields
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
        version = ctx.toolchain.trtllm_version
        io = ["--model_dir", PathArg("source", "source"), "--output_dir", OUT]
        if f.quantization is None:
            tool = CONVERTERS[f.family]
            values = {"dtype": f.dtype, "tp_size": f.tp_size, "pp_size": f.pp_size,
                      "moe_tp_size": f.moe_tp_size, "moe_ep_size": f.moe_ep_size,
                      "use_weight_only": f.use_weight_only,
                      "weight_only_precision": f.weight_only_precision,
                      "int8_kv_cache": f.int8_kv_cache, "fp8_kv_cache": f.fp8_kv_cache,
                      "smoothquant": f.smoothquant, "per_channel": f.per_channel,
                      "per_token": f.per_token, "use_parallel_embedding": f.use_parallel_embedding,
                      "embedding_sharding_dim": f.embedding_sharding_dim,
                      "load_by_shard": f.load_by_shard, "workers": f.workers}
        else:
            tool = "quantize.py"
            q = f.quantization
            values = {"decoder_type": f.family, "dtype": f.dtype, "qformat": q.qformat,
                      "kv_cache_dtype": q.kv_cache_dtype, "calib_size": q.calib_size,
                      "calib_dataset": q.calib_dataset, "calib_max_seq_length": q.calib_max_seq_length,
                      "batch_size": q.batch_size, "awq_block_size": q.awq_block_size, "seed": q.seed,
                      "tp_size": f.tp_size, "pp_size": f.pp_size}
        try:
            args, passed = flag_args(tool, version, values)
            step = Step(tool, tuple(io + args))
            flags.parse_argv(tool, version, [a if isinstance(a, str) else "PATH" for a in step.argv])
        except flags.FlagError as err:
            raise ctx.error(str(err)) from None
        except LLMBuildError as err:
            raise ctx.error(err.message) from None
        return Plan(params={"tool": tool, **passed}, steps=(step,))
