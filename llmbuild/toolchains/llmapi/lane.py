"""The engine-free lane (TensorRT-LLM 1.3.0rc21 and later): what the same targets become there.

There is no trtllm-build, convert_checkpoint.py, quantize.py or C++ Triton backend any more; a
Hugging Face (or ModelOpt-quantized) checkpoint is served on the PyTorch backend, configured by one
`TorchLlmArgs` YAML. So:

- checkpoint: without quantization no step (the Hugging Face directory passes through by digest:
  the output is `checkpoint.json` naming it); with quantization ModelOpt's `hf_ptq.py` exports a
  unified Hugging Face checkpoint (hf_quant_config.json + safetensors).
- engine: no build; its output is the LLM-API options YAML (`llm_args.yaml`) its fields stand for,
  checked against the version's table (toolchains/llmapi/tables.py), and `engine.json`; a
  quantized checkpoint's files are hard-linked into its `weights/`.
- repository: the serving files of one `format` (FORMAT_FILES), the serving-only knobs merged in,
  and the weights hard-linked in (WEIGHTS, copied only across devices, as the engine lane places
  engines), named by relative paths: the directory can be mounted or restored anywhere.

The kinds dispatch here when their toolchain says `engine_free`; everything version-specific comes
from the version's table, nothing from a hand-kept list of keys.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from ...core.errors import LLMBuildError
from ...core.steps import OUT, PathArg, Plan, Step

ENGINE_FREE_SINCE = "1.3.0rc21"
#: ModelOpt's post-training quantization to a unified Hugging Face checkpoint (its flags: PTQ_SOURCE).
PTQ = "hf_ptq.py"
PTQ_SOURCE = "NVIDIA/Model-Optimizer@003e0fba3d937b1789dcdca8c97521df053516ac:examples/llm_ptq/hf_ptq.py"
CHECKPOINT_FILE = "checkpoint.json"
ENGINE_YAML = "llm_args.yaml"
ENGINE_FILE = "engine.json"
#: The interface: each repository format and the files it writes.
FORMAT_FILES = {
    "triton": ("tensorrt_llm/config.pbtxt", "tensorrt_llm/1/model.yaml", "tensorrt_llm/1/model.py"),
    "trtllm-serve": ("config.yaml", "serve.json"),
    "dynamo": ("engine_args.yaml", "serve.json"),
}
SERVE_FILE = "serve.json"
#: Where a repository holds its weights, per format (relative to its root); what model.yaml's
#: `model` (relative to model.yaml) and serve.json's argv (run in the repository) name.
WEIGHTS = {"triton": "tensorrt_llm/1/weights", "trtllm-serve": "weights", "dynamo": "weights"}
SERVE_PORT = 8000
LLMAPI_MODEL = Path(__file__).resolve().parent.parent.parent / "triton" / "models" / "llmapi.py"
CPU_RUNTIME = Path(__file__).resolve().parent.parent / "cpu" / "runtime.py"
CPU_RUNTIME_NAME = "llmbuild_cpu_runtime.py"

#: checkpoint fields that are convert_checkpoint.py flags: gone with it.
CONVERTER_ONLY = ("use_weight_only", "weight_only_precision", "int8_kv_cache", "fp8_kv_cache", "smoothquant",
                  "per_channel", "per_token", "use_parallel_embedding", "embedding_sharding_dim", "load_by_shard",
                  "workers")
#: engine field -> the TorchLlmArgs key (dotted) it sets; every other engine field set is an
#: engine-only field, refused with what the version's table says about it.
LLM_ARGS_OF_FIELDS = {
    "max_batch_size": "max_batch_size", "max_input_len": "max_input_len", "max_seq_len": "max_seq_len",
    "max_num_tokens": "max_num_tokens", "max_beam_width": "max_beam_width",
    "tokens_per_block": "kv_cache_config.tokens_per_block",
    "gather_generation_logits": "gather_generation_logits",
}
#: engine fields that are not about the engine itself.
NOT_ENGINE_SETTINGS = {"description", "tags", "lanes", "container", "gpus", "checkpoint", "trtllm_version",
                       "llm_args", "lora"}
#: LLM-API keys that only serving uses: set on the repository, so changing them rebuilds only it.
SERVING_KEYS = {"kv_cache_config.free_gpu_memory_fraction": "kv_cache_free_gpu_mem_fraction",
                "triton_config": "decoupled / triton_max_batch_size"}
#: repository fields that mean something for the llmapi lane; the others must stay at their defaults.
LLMAPI_REPOSITORY_KNOBS = {"decoupled", "triton_max_batch_size", "kv_cache_free_gpu_mem_fraction", "format",
                           "engine", "trtllm_version", "description", "tags", "lanes"}


def engine_free_version(name: str) -> str | None:
    """The canonical engine-free version `name` stands for; None for an older one (the flag tables'
    business); an error for an engine-free version no table describes."""
    from .tables import is_engine_free, table_for

    key = str(name).strip()
    key = key[1:] if key[:1] in "vV" else key
    if not is_engine_free(key):
        return None
    table_for(key)  # one clear error when no table covers it
    return key


def _field(item: Any, name: str, default: Any = None) -> Any:
    return item.get(name, default) if isinstance(item, dict) else getattr(item, name, default)


def dotted_put(doc: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value


def dotted_items(doc: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every leaf; a nested table is walked, a list is a leaf."""
    items = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            items += dotted_items(value, f"{prefix}{key}.")
        else:
            items.append((prefix + key, value))
    return items


def check_llm_args(ctx, table, doc: dict, where: str, key: str | None = None) -> None:
    problems = table.validate_llm_args(doc, where=where)
    if problems:
        raise ctx.error("; ".join(problems), key=key)


# ------------------------------------------------------------------ checkpoint

def check_checkpoint(ctx) -> None:
    f = ctx.fields
    version = ctx.toolchain.trtllm_version
    for name in CONVERTER_ONLY:
        if getattr(f, name) not in (None, False):
            raise ctx.error(f"{name} is a convert_checkpoint.py flag, and TensorRT-LLM {version} has no "
                            f"convert_checkpoint.py (gone since {ENGINE_FREE_SINCE}): the Hugging Face weights are "
                            f"served as they are, or quantized by ModelOpt (quantization = {{ qformat = ... }})",
                            key=name)
    q = f.quantization
    if q is not None and q.seed is not None:
        raise ctx.error(f"ModelOpt's {PTQ} has no --seed (it calibrates with its own fixed seed)",
                        key="quantization.seed")
    if q is not None and q.kv_cache_dtype == "int8":
        raise ctx.error(f"ModelOpt's {PTQ} quantizes the KV cache to fp8 or nvfp4 (--kv_cache_qformat), not int8",
                        key="quantization.kv_cache_dtype")


def ptq_flags(f) -> dict[str, Any]:
    """hf_ptq.py's flags from the checkpoint's fields, in argv order (it enters keys). The KV cache
    stays unquantized unless asked (hf_ptq.py's own default is fp8_cast)."""
    q = f.quantization
    values = {"qformat": q.qformat, "kv_cache_qformat": q.kv_cache_dtype or "none",
              "calib_size": q.calib_size, "dataset": q.calib_dataset, "calib_seq": q.calib_max_seq_length,
              "batch_size": q.batch_size, "awq_block_size": q.awq_block_size,
              "inference_tensor_parallel": f.tp_size if f.tp_size != 1 else None,
              "inference_pipeline_parallel": f.pp_size if f.pp_size != 1 else None}
    return {k: v for k, v in values.items() if v is not None}


def checkpoint_plan(ctx, gpus) -> Plan:
    f = ctx.fields
    if f.quantization is None:
        return Plan(params={"passthrough": "huggingface"})
    values = ptq_flags(f)
    argv: list = ["--pyt_ckpt_path", PathArg("source", "source"), "--export_path", OUT]
    for flag, value in values.items():
        argv += [f"--{flag}", str(value)]
    return Plan(params={"tool": PTQ, **values}, steps=(Step(PTQ, tuple(argv), gpus=1),), gpus=gpus)


def write_passthrough(ctx) -> None:
    """The checkpoint is the Hugging Face directory itself: record where it is, copy nothing. Its
    content is in the key (the source digest), so a changed directory is a new checkpoint."""
    record = {"format": "huggingface", "passthrough": True, "source": ctx.fields.source,
              "path": str(ctx.sources["source"]), "key": ctx.key}
    (ctx.out / CHECKPOINT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")




# ------------------------------------------------------------------ engine

def engine_llm_args(ctx) -> dict[str, Any]:
    """The LLM-API options the engine's fields stand for, `llm_args` passed through; checked
    against the version's table."""
    f = ctx.fields
    toolchain = ctx.toolchain
    table, version = toolchain.llmapi_table, toolchain.trtllm_version
    checkpoint = ctx.facts_of("checkpoint")
    doc: dict[str, Any] = {"tensor_parallel_size": checkpoint["tp_size"],
                           "pipeline_parallel_size": checkpoint["pp_size"]}
    for fact, key in (("moe_tp_size", "moe_tensor_parallel_size"), ("moe_ep_size", "moe_expert_parallel_size")):
        if checkpoint.get(fact):
            doc[key] = checkpoint[fact]
    if checkpoint.get("declared_dtype"):
        doc["dtype"] = checkpoint["declared_dtype"]
    for name, info in type(f).model_fields.items():
        value = getattr(f, name)
        if name in NOT_ENGINE_SETTINGS or value == info.get_default(call_default_factory=True):
            continue
        if name in LLM_ARGS_OF_FIELDS:
            dotted_put(doc, LLM_ARGS_OF_FIELDS[name], value)
        else:
            raise ctx.error(engine_only(table, name, version), key=name)
    if f.lora is not None:
        if f.lora.plugin is not None:
            raise ctx.error(engine_only(table, "lora_plugin", version), key="lora.plugin")
        if f.lora.dirs is not None:
            raise ctx.error("lora.dirs builds adapters into an engine; the engine-free lane loads them at run "
                            "time: name them per request (lora_path) or in llm_args.lora_config.lora_dir",
                            key="lora.dirs")
        doc["enable_lora"] = True
        dotted_put(doc, "lora_config.max_lora_rank", f.lora.max_rank)
        if f.lora.target_modules:
            dotted_put(doc, "lora_config.lora_target_modules", list(f.lora.target_modules))
        if f.lora.ckpt_source:
            dotted_put(doc, "lora_config.lora_ckpt_source", f.lora.ckpt_source)
    check_llm_args(ctx, table, doc, f"engine fields for TensorRT-LLM {version}")
    for path, value in dotted_items(f.llm_args or {}):
        top = path.split(".")[0]
        serving = SERVING_KEYS.get(path) or SERVING_KEYS.get(top)
        if serving:
            raise ctx.error(f"{path} is a serving knob: set it on the repository ({serving}), so changing it "
                            f"rebuilds only the repository", key=f"llm_args.{path}")
        setter = next((n for n, k in LLM_ARGS_OF_FIELDS.items() if k == path), None)
        if setter or path in dict(dotted_items(doc)):
            raise ctx.error(f"{path} is set by the engine's {setter or 'parallelism/LoRA fields'}; set it there, "
                            f"not in llm_args", key=f"llm_args.{path}")
        dotted_put(doc, path, copy.deepcopy(value))
    check_llm_args(ctx, table, doc, f"llm_args (TensorRT-LLM {version} TorchLlmArgs)", key="llm_args")
    return doc


def engine_only(table, name: str, version: str) -> str:
    return table.engine_field_problem(name) or (
        f"{name} has no meaning without a TensorRT engine: TensorRT-LLM {version} builds none "
        f"(gone since {ENGINE_FREE_SINCE}); drop it, or pass a TorchLlmArgs key in llm_args")


def engine_facts(ctx) -> dict[str, Any]:
    toolchain = ctx.toolchain
    checkpoint = ctx.facts_of("checkpoint")
    doc = engine_llm_args(ctx)
    return {
        "engine_free": True,
        "trtllm_version": toolchain.trtllm_version,
        "llm_args": doc,
        "weights": checkpoint["weights"],  # the HF directory passed through; None: in our output
        "tokenizer_dir": checkpoint["source_dir"],
        "world_size": checkpoint["world_size"],
        "max_seq_len": doc.get("max_seq_len"),
        "built_with": {"trtllm_version": toolchain.trtllm_version, "tensorrt_version": None,
                       "container": str(ctx.dep("container").address) if ctx.has_dep("container") else None},
    }


def engine_plan(ctx) -> Plan:
    facts = ctx.own_facts()
    return Plan(params={"llm_args": facts["llm_args"]}, files={ENGINE_YAML: dump_yaml(facts["llm_args"])})


def write_engine(ctx) -> None:
    facts = ctx.own_facts()
    (ctx.out / ENGINE_YAML).write_text(dump_yaml(facts["llm_args"]))
    record = {"trtllm_version": facts["trtllm_version"], "weights": "source" if facts["weights"] else "weights"}
    (ctx.out / ENGINE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    if facts["weights"] is None:  # ModelOpt's checkpoint, from the cache: links, never a copy
        place_weights(ctx.dep_out("checkpoint"), ctx.out / "weights")


def place_weights(source: Path, destination: Path) -> None:
    from ...triton.repository import _place_tree

    _place_tree(source, destination, link=True)


def weights_dir(ctx) -> Path:
    """The weights a repository serves: the Hugging Face directory passed through (a derived
    source of the repository, so its content is in the key), else the engine's weights/."""
    return ctx.sources["weights"] if "weights" in ctx.sources else ctx.dep_out("engine") / "weights"


def write_repository(ctx) -> None:
    write_files(ctx.out, repository_files(ctx, ctx.lane))
    place_weights(weights_dir(ctx), ctx.out / WEIGHTS[ctx.fields.format])


def dump_yaml(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------ repository

def check_repository(ctx) -> None:
    f = ctx.fields
    for name, info in type(f).model_fields.items():
        if name not in LLMAPI_REPOSITORY_KNOBS and getattr(f, name) != info.get_default(call_default_factory=True):
            raise ctx.error(f"{name} is a knob of the engine lane's five-model repository; the engine-free lane "
                            f"(TensorRT-LLM >= {ENGINE_FREE_SINCE}) serves the checkpoint's own tokenizer with one "
                            f"llmapi model, trtllm-serve or Dynamo and has no such setting", key=name)
    if f.format != "triton" and (f.decoupled or f.triton_max_batch_size is not None):
        raise ctx.error(f"decoupled / triton_max_batch_size are the Triton llmapi model's triton_config; "
                        f"format {f.format!r} has none", key="decoupled" if f.decoupled else "triton_max_batch_size")


def triton_config(ctx, table) -> dict[str, Any]:
    f = ctx.fields
    default = dict(table.llmapi_default_model_yaml.get("triton_config") or {})  # upstream's model.yaml
    return {"max_batch_size": f.triton_max_batch_size if f.triton_max_batch_size is not None
            else int(default.get("max_batch_size", 0)), "decoupled": bool(f.decoupled)}


def serving_llm_args(ctx, engine: dict) -> dict[str, Any]:
    doc = copy.deepcopy(engine["llm_args"])
    if ctx.fields.kv_cache_free_gpu_mem_fraction is not None:
        dotted_put(doc, "kv_cache_config.free_gpu_memory_fraction", ctx.fields.kv_cache_free_gpu_mem_fraction)
    return doc


def repository_facts(ctx) -> dict[str, Any]:
    f = ctx.fields
    engine = ctx.dep("engine")
    table = _table(engine.facts)
    config = triton_config(ctx, table) if f.format == "triton" else {"max_batch_size": 0, "decoupled": False}
    return {"engine_free": True, "format": f.format, "trtllm_version": engine.facts["trtllm_version"],
            "decoupled": config["decoupled"], "triton_config": config,
            "entrypoint": "tensorrt_llm" if f.format == "triton" else "v1",
            "world_size": engine.facts["world_size"], "max_seq_len": engine.facts["max_seq_len"],
            "engine": str(engine.address), "engine_built_with": engine.facts["built_with"]}


def _table(engine_facts: dict):
    from .tables import table_for

    return table_for(engine_facts["trtllm_version"])


def repository_files(ctx, lane: str) -> dict[str, str]:
    """{relative path: text} of the repository (its weights placed apart, at WEIGHTS)."""
    f = ctx.fields
    model = "weights"  # relative to model.yaml, or to the repository for serve.json's argv
    engine = ctx.facts_of("engine")
    version = engine["trtllm_version"]
    table = _table(engine)
    args = serving_llm_args(ctx, engine)
    if f.format == "triton":
        default = table.llmapi_default_model_yaml
        head = {"model": model, **({"backend": default["backend"]} if "backend" in default else {})}
        llm = {**head, **args}
        check_llm_args(ctx, table, llm, f"tensorrt_llm/1/model.yaml (TensorRT-LLM {version})")
        model_yaml = {**llm, "triton_config": triton_config(ctx, table)}
        files = {"tensorrt_llm/config.pbtxt": llmapi_pbtxt(table, model_yaml["triton_config"]),
                 "tensorrt_llm/1/model.yaml": dump_yaml(model_yaml),
                 "tensorrt_llm/1/model.py": LLMAPI_MODEL.read_text()}
        if lane == "cpu":
            files[f"tensorrt_llm/1/{CPU_RUNTIME_NAME}"] = CPU_RUNTIME.read_text()
        return files
    name = "config.yaml" if f.format == "trtllm-serve" else "engine_args.yaml"
    check_llm_args(ctx, table, args, f"{name} (TensorRT-LLM {version})")
    argv = serve_argv(ctx, table, f.format, model, name, version)
    serve = {"format": f.format, "trtllm_version": version, "argv": argv,
             "cwd": "this directory (weights/ is the model)"}
    if lane == "cpu" and f.format == "trtllm-serve":
        serve["cpu_lane"] = ("a smoke serves this argv with llmbuild's OpenAI-compatible stand-in "
                             "(python -m llmbuild.toolchains.cpu.openai_server), not TensorRT-LLM")
    return {name: dump_yaml(args), SERVE_FILE: json.dumps(serve, indent=2) + "\n"}


def serve_argv(ctx, table, fmt: str, model: str, config: str, version: str) -> list[str]:
    """The serving command, every flag checked against the version's table."""
    if fmt == "dynamo":
        known = {flag["flag"] for flag in table.dynamo["flags"]}
        missing = [f for f in ("--model", "--extra-engine-args") if f not in known]
        if missing:
            raise ctx.error(f"{table.dynamo['module']} of TensorRT-LLM {version} has no {missing[0]}", key="format")
        return ["python3", "-m", table.dynamo["module"], "--model", model, "--extra-engine-args", config]
    argv = ["trtllm-serve", model]
    for option, value in (("config", config), ("host", "0.0.0.0"), ("port", str(SERVE_PORT))):
        try:
            argv += [table.serve_option(option).flags[0], value]
        except LLMBuildError as err:
            raise ctx.error(err.message, key="format") from None
    return argv


def llmapi_pbtxt(table, config: dict[str, Any]) -> str:
    """The llmapi model's config.pbtxt: exactly the version's tensors; max_batch_size and decoupled
    written from model.yaml's triton_config too, since launchers pass --disable-auto-complete-config
    (which would drop what the model's auto_complete_config sets)."""
    lines = ['name: "tensorrt_llm"', 'backend: "python"']
    if config["max_batch_size"]:
        lines.append(f"max_batch_size: {config['max_batch_size']}")
    lines.append(f"model_transaction_policy {{\n  decoupled: {'true' if config['decoupled'] else 'false'}\n}}")
    for section, tensors in (("input", table.llmapi_inputs), ("output", table.llmapi_outputs)):
        entries = []
        for tensor in tensors:
            data_type = str(_field(tensor, "data_type"))
            data_type = data_type if data_type.startswith("TYPE_") else f"TYPE_{data_type}"
            dims = ", ".join(str(d) for d in _field(tensor, "dims"))
            body = [f'    name: "{_field(tensor, "name")}"', f"    data_type: {data_type}", f"    dims: [ {dims} ]"]
            if section == "input" and _field(tensor, "optional", False):
                body.append("    optional: true")
            entries.append("  {\n" + "\n".join(body) + "\n  }")
        lines.append(f"{section} [\n" + ",\n".join(entries) + "\n]")
    lines.append("instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]")
    return "\n".join(lines) + "\n"


def write_files(out: Path, files: dict[str, str]) -> None:
    for relative, text in sorted(files.items()):
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
