"""`repository`: the Triton model repository that serves an engine.

Five models (preprocessing, tensorrt_llm, postprocessing, ensemble,
tensorrt_llm_bls) generated as ModelConfig protobufs from the engine's build
config, wiring checked, engine and tokenizer placed inside. Only the Triton
knobs enter the key besides the engine's output, so a Triton-only change
regenerates the repository in seconds and never touches checkpoint or engine.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, create_model

from ..core.digests import code_digest
from ..core.steps import Plan
from ..core.target import Kind, Ref, Source, TargetFields, register
from ..triton.configs import RepositoryError, ServingOptions, build_configs
from ..triton.repository import CPU_RUNTIME_SOURCE, checked_tokenizer_files, write_repository

TRITON_CODE = Path(__file__).resolve().parent.parent / "triton"

# Every ServingOptions knob is a field of the same name (one source of truth for the knobs),
# with llama.md's choice of returning only new tokens.
_DEFAULTS = {"exclude_input_in_output": True}
_HINTS = typing.get_type_hints(ServingOptions)
_DESCRIPTIONS = {
    "decoupled": "Stream answers: tensorrt_llm and tensorrt_llm_bls are decoupled models, as "
    "/generate_stream and smoke `stream = true` need (default false).",
    "entrypoint": "The model clients call: ensemble (preprocessing -> tensorrt_llm -> postprocessing) "
    "or tensorrt_llm_bls (default ensemble).",
    "max_queue_delay_microseconds": "Dynamic batching: how long a request may wait for others to "
    "batch with (default 0).",
    "max_queue_size": "Requests queued before new ones are refused (default 0: no limit).",
    "batching_strategy": "tensorrt_llm gpt_model_type: inflight_fused_batching (default), "
    "inflight_batching or V1 (static batching). In-flight batching needs an engine with a paged KV "
    "cache, the attention plugin and remove_input_padding.",
    "batch_scheduler_policy": "guaranteed_no_evict (the backend's default: a started request keeps its "
    "KV cache) or max_utilization (more requests at once, some paused).",
    "kv_cache_free_gpu_mem_fraction": "Share of the free GPU memory the KV cache takes, in (0, 1] "
    "(default: the backend's 0.9).",
    "max_tokens_in_paged_kv_cache": "Cap on the KV cache, in tokens; with the fraction, the smaller "
    "wins (default: no cap).",
    "max_attention_window_size": "Tokens each sequence attends to (a sliding window), at most the "
    "engine's max_seq_len (default: max_seq_len).",
    "enable_kv_cache_reuse": "Reuse the KV cache of shared prompt prefixes; needs an engine built with "
    "use_paged_context_fmha (default: the backend's false).",
    "enable_chunked_context": "Process long prompts in chunks; needs an engine built with "
    "use_paged_context_fmha (default: the backend's false).",
    "exclude_input_in_output": "Answers hold only the new tokens, not the prompt (default true, as "
    "the backend's llama.md).",
    "preprocessing_instance_count": "Instances of the tokenizing preprocessing model (default 1).",
    "postprocessing_instance_count": "Instances of the detokenizing postprocessing model (default 1).",
    "bls_instance_count": "Instances of tensorrt_llm_bls; the backend's docs advise about the engine's "
    "max_batch_size (default 1).",
    "logits_datatype": "Data type of returned logits; TensorRT-LLM backend 0.16 returns TYPE_FP32 only "
    "(default TYPE_FP32).",
    "accumulate_tokens": "Streaming through tensorrt_llm_bls: re-decode all tokens so far for each "
    "answer (default false).",
    "triton_max_batch_size": "max_batch_size of the five Triton models (default: the engine's "
    "max_batch_size; larger is an error).",
    "add_special_tokens": "Preprocessing encodes with special tokens such as BOS (default true).",
    "skip_special_tokens": "Postprocessing leaves special tokens out of the text (default true).",
    "gpu_device_ids": "GPUs of each tensorrt_llm instance, ',' within an instance and ';' between "
    "instances, e.g. \"0,1;2,3\"; each group holds the engine's world size (GPU lane; default: the "
    "backend picks).",
    "serve_root": "Where the repository is mounted in the serving container on the GPU lane; the "
    "engine path in config.pbtxt lies below it (default /models).",
}


def _serving_field(option: dataclasses.Field) -> tuple[Any, Any]:
    if option.name == "extra_parameters":
        return (dict[str, str | int | float | bool],
                Field(default_factory=dict, description="Any other tensorrt_llm model parameter."))
    return _HINTS[option.name], Field(_DEFAULTS.get(option.name, option.default),
                                      description=_DESCRIPTIONS[option.name])


_SERVING_FIELDS = {option.name: _serving_field(option) for option in dataclasses.fields(ServingOptions)}

RepositoryFields = create_model(
    "RepositoryFields",
    __base__=TargetFields,
    __doc__="A Triton model repository for an engine; the other fields are the Triton knobs.",
    engine=(Annotated[str, Ref("engine")], Field(description="The engine target to serve.")),
    tokenizer=(Annotated[str | None, Source()],
               Field(None, description="Tokenizer directory (default: the checkpoint's source).")),
    **_SERVING_FIELDS,
)


def serving_options(fields) -> ServingOptions:
    values = {name: getattr(fields, name) for name in _SERVING_FIELDS}
    values["extra_parameters"] = {k: (str(v).lower() if isinstance(v, bool) else str(v))
                                  for k, v in fields.extra_parameters.items()}
    return ServingOptions(**values)


def check_tokenizer(ctx) -> None:
    """The tokenizer is copied into the repository (so it holds on the host and in a container):
    it must be there and load."""
    path = ctx.sources["tokenizer"]
    if not ctx.verify_sources and not path.exists():
        return
    key = "tokenizer" if ctx.fields.tokenizer else "engine"
    where = "" if ctx.fields.tokenizer else " (the checkpoint's source, the default tokenizer)"
    try:
        files = checked_tokenizer_files(path)
    except RepositoryError as err:
        raise ctx.error(err.message.split(": ", 1)[-1] + where, key=key) from None
    tokenizer_json = path / "tokenizer.json"
    if tokenizer_json in files:
        try:
            from tokenizers import Tokenizer
        except ImportError:  # not a CPU-lane install: the server will say
            return
        try:
            Tokenizer.from_file(str(tokenizer_json))
        except Exception as err:  # noqa: BLE001 - any parse failure means the server fails too
            raise ctx.error(f"{tokenizer_json} does not load: {err}{where}", key=key) from None


@register
class Repository(Kind):
    name = "repository"
    Fields = RepositoryFields
    help = "Engine -> Triton model repository (five config.pbtxt, generated and checked)."

    def derived_sources(self, ctx):
        if ctx.fields.tokenizer is None:
            return {"tokenizer": ctx.facts_of("engine")["tokenizer_dir"]}
        return {}

    def facts(self, ctx):
        f = ctx.fields
        engine = ctx.dep("engine")
        build = engine.facts["config"]["build_config"]
        return {"decoupled": f.decoupled, "entrypoint": f.entrypoint, "world_size": engine.facts["world_size"],
                "max_seq_len": build["max_seq_len"], "max_input_len": build["max_input_len"],
                "engine": str(engine.address), "engine_built_with": engine.facts["built_with"]}

    def _configs(self, ctx, engine_config: dict):
        try:
            return build_configs(serving_options(ctx.fields), engine_config, lane=ctx.lane)
        except RepositoryError as err:
            raise ctx.error(f"{err.message} (engine {ctx.dep('engine').address})") from None

    def check(self, ctx):
        self._configs(ctx, ctx.facts_of("engine")["config"])
        check_tokenizer(ctx)

    def plan(self, ctx):
        options = dataclasses.asdict(serving_options(ctx.fields))
        code = [TRITON_CODE] + ([CPU_RUNTIME_SOURCE] if ctx.lane == "cpu" else [])
        return Plan(params={"lane": ctx.lane, "serving": options},
                    extra_identity={"generator": code_digest(*code)})

    def run(self, ctx):
        engine_dir = ctx.dep_out("engine")
        engine_config = json.loads((engine_dir / "config.json").read_text())
        configs = self._configs(ctx, engine_config)
        write_repository(ctx.out, configs, engine_dir=engine_dir,
                         tokenizer_dir=ctx.sources["tokenizer"], lane=ctx.lane)

    def render(self, ctx, out):
        configs = self._configs(ctx, ctx.facts_of("engine")["config"])
        write_repository(out, configs, engine_dir=None, tokenizer_dir=None, lane=ctx.lane)
