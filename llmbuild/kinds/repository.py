"""`repository`: the Triton model repository that serves an engine.

Five models (preprocessing, tensorrt_llm, postprocessing, ensemble,
tensorrt_llm_bls) generated as ModelConfig protobufs from the engine's build
config, wiring checked, engine and tokenizer placed inside. Only the Triton
knobs enter the key besides the engine's output, so a Triton-only change
regenerates the repository in seconds and never touches checkpoint or engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from ..core.digests import code_digest
from ..core.steps import Plan
from ..core.target import Kind, Ref, Source, register
from ..toolchains.llmapi import lane as llmapi
from ..toolchains.subsystem import VersionFields
from ..triton.options import ServingOptions

# Generating a repository needs tritonclient's protobufs (a slow import): imported when a target
# is checked, planned or built, not when a workspace whose verdicts are remembered loads.

TRITON_CODE = Path(__file__).resolve().parent.parent / "triton"
#: The generator is that code, the backend's tables it reads, and how it reads the engine's config.json.
GENERATOR = (TRITON_CODE, *sorted((TRITON_CODE / "backend").glob("*.json")),
             TRITON_CODE.parent / "toolchains" / "trtllm" / "build_config.py")


class RepositoryFields(VersionFields, ServingOptions):
    """A Triton model repository for an engine; the other fields are the Triton knobs."""

    engine: Annotated[str, Ref("engine")] = Field(description="The engine target to serve.")
    tokenizer: Annotated[str | None, Source()] = Field(
        None, description="Tokenizer directory (default: the checkpoint's source).")
    exclude_input_in_output: bool | None = Field(
        True, description="tensorrt_llm exclude_input_in_output: answers hold only the new tokens "
                          "(llama.md's choice).")
    format: Literal["triton", "trtllm-serve", "dynamo"] = Field(
        "triton", description="Engine-free lane (TensorRT-LLM >= 1.3.0rc21): triton (the llmapi model: "
        "tensorrt_llm/config.pbtxt + 1/model.yaml + our model.py), trtllm-serve (config.yaml + serve.json with "
        "the trtllm-serve argv) or dynamo (engine_args.yaml + serve.json with the dynamo.trtllm argv). The "
        "engine lane writes the five-model Triton repository (triton only).")


def check_tokenizer(ctx) -> None:
    """The tokenizer is copied into the repository (so it holds on the host and in a container):
    it must be there and load."""
    path = ctx.sources["tokenizer"]
    if not ctx.verify_sources and not path.exists():
        return
    key = "tokenizer" if ctx.fields.tokenizer else "engine"
    where = "" if ctx.fields.tokenizer else " (the checkpoint's source, the default tokenizer)"
    from ..triton.repository import checked_tokenizer_files
    from ..triton.wiring import RepositoryError

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
        engine = ctx.facts_of("engine")
        derived = {"tokenizer": engine["tokenizer_dir"]} if ctx.fields.tokenizer is None else {}
        if engine.get("weights"):  # engine-free lane: the Hugging Face weights served as they are
            derived["weights"] = engine["weights"]
        return derived

    def facts(self, ctx):
        if ctx.facts_of("engine").get("engine_free"):
            return llmapi.repository_facts(ctx)
        f = ctx.fields
        engine = ctx.dep("engine")
        build = engine.facts["config"]["build_config"]
        return {"decoupled": f.decoupled, "entrypoint": f.entrypoint, "world_size": engine.facts["world_size"],
                "max_seq_len": build["max_seq_len"], "max_input_len": build["max_input_len"],
                "engine": str(engine.address), "engine_built_with": engine.facts["built_with"]}

    def _configs(self, ctx, engine_config: dict):
        from ..triton.build import build_configs
        from ..triton.wiring import RepositoryError

        try:
            return build_configs(ctx.fields, engine_config, lane=ctx.lane)
        except RepositoryError as err:
            raise ctx.error(f"{err.message} (engine {ctx.dep('engine').address})", key=err.key) from None

    def check(self, ctx):
        if ctx.facts_of("engine").get("engine_free"):
            llmapi.check_repository(ctx)
            llmapi.repository_files(ctx, ctx.lane)
        elif ctx.fields.format != "triton":
            raise ctx.error(f"format {ctx.fields.format!r} needs the engine-free lane (TensorRT-LLM >= "
                            f"{llmapi.ENGINE_FREE_SINCE}); {ctx.dep('engine').address} is a TensorRT engine",
                            key="format")
        else:
            self._configs(ctx, ctx.facts_of("engine")["config"])
        check_tokenizer(ctx)

    def plan(self, ctx):
        if ctx.facts_of("engine").get("engine_free"):
            return self._llmapi_plan(ctx)
        options = ctx.fields.model_dump(include=set(ServingOptions.model_fields))
        from ..triton.repository import CPU_RUNTIME_SOURCE

        code = GENERATOR + ((CPU_RUNTIME_SOURCE,) if ctx.lane == "cpu" else ())
        return Plan(params={"lane": ctx.lane, "serving": options},
                    extra_identity={"generator": code_digest(*code)})

    def _llmapi_plan(self, ctx):
        f = ctx.fields
        knobs = {name: getattr(f, name) for name in ("decoupled", "triton_max_batch_size",
                                                       "kv_cache_free_gpu_mem_fraction")}
        files = llmapi.repository_files(ctx, ctx.lane)
        code = (llmapi.LLMAPI_MODEL, Path(llmapi.__file__)) + ((llmapi.CPU_RUNTIME,) if ctx.lane == "cpu" else ())
        return Plan(params={"lane": ctx.lane, "format": f.format, "serving": knobs},
                    extra_identity={"generator": code_digest(*code)},
                    files={k: v for k, v in files.items() if not k.endswith(".py")})

    def run(self, ctx):
        if ctx.facts_of("engine").get("engine_free"):
            llmapi.write_repository(ctx)
            return
        engine_dir = ctx.dep_out("engine")
        engine_config = json.loads((engine_dir / "config.json").read_text())
        configs = self._configs(ctx, engine_config)
        from ..triton.repository import write_repository

        write_repository(ctx.out, configs, engine_dir=engine_dir,
                         tokenizer_dir=ctx.sources["tokenizer"], lane=ctx.lane)

    def render(self, ctx, out):
        if ctx.facts_of("engine").get("engine_free"):
            llmapi.write_files(out, llmapi.repository_files(ctx, ctx.lane))
            return
        configs = self._configs(ctx, ctx.facts_of("engine")["config"])
        from ..triton.repository import write_repository

        write_repository(out, configs, engine_dir=None, tokenizer_dir=None, lane=ctx.lane)
