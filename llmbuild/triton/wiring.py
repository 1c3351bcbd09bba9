"""The cross-file contract of the five models of a TensorRT-LLM Triton repository.

:func:`check_wiring` runs on every generated set of configs before anything is
written (and again by ``write_repository``), so a repository whose ensemble
reads a tensor nobody produces, whose BLS calls an input that does not exist or
whose streaming halves disagree is never written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc.model_config_pb2 import ModelConfig

from ..core.errors import LLMBuildError, did_you_mean
from . import backend
from .backend import BACKEND_VERSION, MODEL_NAMES


class RepositoryError(LLMBuildError, ValueError):
    """An inconsistent or impossible repository: one line naming the model, and the option
    (``key``) when a repository field is what breaks it."""


#: What our BLS model.py (and the stock one) call: model -> (inputs it sends, outputs it asks for).
#: The BLS hard-codes the preprocessing/postprocessing names; the LLM's comes from a parameter.
BLS_CONTRACT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "preprocessing": (
        ("QUERY", "REQUEST_OUTPUT_LEN", "BAD_WORDS_DICT", "STOP_WORDS_DICT", "EMBEDDING_BIAS_WORDS",
         "EMBEDDING_BIAS_WEIGHTS", "END_ID", "PAD_ID", "DECODER_QUERY", "PROMPT_TABLE_EXTRA_ID"),
        ("INPUT_ID", "REQUEST_INPUT_LEN", "DECODER_INPUT_ID", "REQUEST_DECODER_INPUT_LEN", "BAD_WORDS_IDS",
         "STOP_WORDS_IDS", "EMBEDDING_BIAS", "OUT_END_ID", "OUT_PAD_ID", "OUT_PROMPT_TABLE_EXTRA_IDS"),
    ),
    "tensorrt_llm": (
        ("input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "bad_words_list",
         "stop_words_list", "embedding_bias", "streaming", "exclude_input_in_output",
         "return_context_logits", "return_generation_logits"),
        ("output_ids", "sequence_length"),
    ),
    "postprocessing": (("TOKENS_BATCH", "SEQUENCE_LENGTH"), ("OUTPUT",)),
}


def _dtype_name(value: int) -> str:
    return mc.DataType.Name(value)


def _strings(msg) -> Iterable[tuple[str, str]]:
    """(field path, value) of every string anywhere in a message."""
    for desc, value in msg.ListFields():
        if desc.message_type is not None and desc.message_type.GetOptions().map_entry:
            for k, v in value.items():
                if isinstance(v, str):
                    yield f"{desc.name}[{k}]", v
                elif hasattr(v, "ListFields"):
                    for path, s in _strings(v):
                        yield f"{desc.name}[{k}].{path}", s
        elif isinstance(value, str):
            yield desc.name, value
        elif hasattr(value, "ListFields"):
            yield from ((f"{desc.name}.{p}", s) for p, s in _strings(value))
        elif hasattr(value, "__len__"):  # a repeated field
            for item in value:
                if isinstance(item, str):
                    yield desc.name, item
                elif hasattr(item, "ListFields"):
                    yield from ((f"{desc.name}.{p}", s) for p, s in _strings(item))


def check_wiring(configs: Mapping[str, ModelConfig]) -> None:
    """Check the cross-file contract of the five models; raise :class:`RepositoryError` on the first break.

    * all five models are there, each named as its key, with max_batch_size >= 1,
      instance counts >= 1 and no unfilled ``${...}`` anywhere;
    * every ensemble step names a model of the repository; every input_map/output_map
      key is a real input/output of that step model; every required step input is
      mapped; every consumed tensor is an ensemble input or produced by exactly one
      step; every ensemble input is consumed and every ensemble output produced;
      tensors that meet agree in dtype;
    * the ensemble's max_batch_size is at most each member's, the BLS's at most each
      model it calls;
    * ``decoupled`` agrees between tensorrt_llm and tensorrt_llm_bls (streaming needs both);
    * the tensors the BLS sends and asks for exist in the models it calls, and its
      outputs match the LLM's in dtype;
    * every model's parameter keys are keys of that model in the backend's templates.
    """
    missing = [n for n in MODEL_NAMES if n not in configs]
    if missing:
        raise RepositoryError(f"repository: model '{missing[0]}' is missing (a TensorRT-LLM repository has "
                              f"{', '.join(MODEL_NAMES)})")
    for key, cfg in configs.items():
        if cfg.name != key:
            raise RepositoryError(f"model '{key}': config name is '{cfg.name}'; it must match the model directory")
        if cfg.max_batch_size < 1:
            raise RepositoryError(f"model '{key}': max_batch_size must be at least 1, got {cfg.max_batch_size}")
        for group in cfg.instance_group:
            if group.count < 1:
                raise RepositoryError(f"model '{key}': instance_group count must be at least 1, got {group.count}")
        for path, value in _strings(cfg):
            if "${" in value:
                raise RepositoryError(f"model '{key}': {path} holds an unfilled placeholder {value!r}")
        names = [t.name for t in cfg.input]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise RepositoryError(f"model '{key}': input '{sorted(dup)[0]}' is declared twice")
        names = [t.name for t in cfg.output]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise RepositoryError(f"model '{key}': output '{sorted(dup)[0]}' is declared twice")

    def inputs(name: str) -> dict[str, mc.ModelInput]:
        return {t.name: t for t in configs[name].input}

    def outputs(name: str) -> dict[str, mc.ModelOutput]:
        return {t.name: t for t in configs[name].output}

    llm_cfg, bls_cfg = configs["tensorrt_llm"], configs["tensorrt_llm_bls"]

    # decoupled: streaming needs the LLM and the BLS decoupled, and a non-decoupled BLS
    # cannot make a blocking call to a decoupled LLM.
    llm_dec = llm_cfg.model_transaction_policy.decoupled
    bls_dec = bls_cfg.model_transaction_policy.decoupled
    if llm_dec != bls_dec:
        raise RepositoryError(
            f"model 'tensorrt_llm_bls': decoupled is {str(bls_dec).lower()} but model 'tensorrt_llm' has "
            f"decoupled {str(llm_dec).lower()}; they must agree")
    for name in ("preprocessing", "postprocessing"):
        if configs[name].model_transaction_policy.decoupled:
            raise RepositoryError(f"model '{name}': must not be decoupled (the ensemble and BLS expect one response)")

    for name in MODEL_NAMES:
        known = backend.parameters(name)
        for key in configs[name].parameters:
            if key not in known:
                raise RepositoryError(
                    f"model '{name}': parameter '{key}' is not a tensorrtllm_backend {BACKEND_VERSION} parameter "
                    f"of {name}{did_you_mean(key, known)}")

    # ---- ensemble
    ens = configs["ensemble"]
    if ens.platform != "ensemble" or not ens.HasField("ensemble_scheduling"):
        raise RepositoryError("model 'ensemble': platform must be 'ensemble' with ensemble_scheduling steps")
    ens_inputs = {t.name: t for t in ens.input}
    ens_outputs = {t.name: t for t in ens.output}
    producers: dict[str, tuple[str, str, int]] = {}  # ensemble tensor -> (step model, step output, dtype)
    for t in ens.input:
        producers[t.name] = ("ensemble", t.name, t.data_type)
    for step in ens.ensemble_scheduling.step:
        model = step.model_name
        if model not in configs or model == "ensemble":
            raise RepositoryError(f"model 'ensemble': step model '{model}' is not a model of this repository")
        outs = outputs(model)
        for key, value in step.output_map.items():
            if key not in outs:
                raise RepositoryError(
                    f"model 'ensemble': step '{model}' output_map names '{key}', which is not an output of model "
                    f"'{model}'{did_you_mean(key, outs)}")
            if value in producers:
                who = producers[value][0]
                raise RepositoryError(
                    f"model 'ensemble': tensor '{value}' is produced twice (by '{who}' and by step '{model}')")
            producers[value] = (model, key, outs[key].data_type)
    consumed: set[str] = set()
    for step in ens.ensemble_scheduling.step:
        model = step.model_name
        ins = inputs(model)
        member = configs[model]
        if ens.max_batch_size > member.max_batch_size:
            raise RepositoryError(
                f"model 'ensemble': max_batch_size {ens.max_batch_size} is larger than member '{model}' "
                f"max_batch_size {member.max_batch_size}")
        for key, value in step.input_map.items():
            if key not in ins:
                raise RepositoryError(
                    f"model 'ensemble': step '{model}' input_map names '{key}', which is not an input of model "
                    f"'{model}'{did_you_mean(key, ins)}")
            if value not in producers:
                raise RepositoryError(
                    f"model 'ensemble': step '{model}' input '{key}' reads tensor '{value}', which no step produces "
                    f"and is not an ensemble input{did_you_mean(value, producers)}")
            src, src_name, dtype = producers[value]
            if dtype != ins[key].data_type:
                raise RepositoryError(
                    f"model 'ensemble': tensor '{value}' is {_dtype_name(dtype)} ({src} '{src_name}') but step "
                    f"'{model}' input '{key}' is {_dtype_name(ins[key].data_type)}")
            consumed.add(value)
        for name, t in ins.items():
            if not t.optional and name not in step.input_map:
                raise RepositoryError(
                    f"model 'ensemble': required input '{name}' of step '{model}' is not mapped")
    for name in ens_inputs:
        if name not in consumed:
            raise RepositoryError(f"model 'ensemble': input '{name}' is not consumed by any step")
    for name, t in ens_outputs.items():
        if name not in producers or producers[name][0] == "ensemble":
            raise RepositoryError(f"model 'ensemble': output '{name}' is not produced by any step")
        src, src_name, dtype = producers[name]
        if dtype != t.data_type:
            raise RepositoryError(
                f"model 'ensemble': output '{name}' is {_dtype_name(t.data_type)} but step '{src}' output "
                f"'{src_name}' is {_dtype_name(dtype)}")

    # ---- BLS
    llm_name = bls_cfg.parameters["tensorrt_llm_model_name"].string_value \
        if "tensorrt_llm_model_name" in bls_cfg.parameters else ""
    llm_name = llm_name or "tensorrt_llm"
    if llm_name not in configs:
        raise RepositoryError(
            f"model 'tensorrt_llm_bls': parameter 'tensorrt_llm_model_name' names '{llm_name}', "
            f"which is not a model of this repository")
    for called, (sent, wanted) in BLS_CONTRACT.items():
        target = llm_name if called == "tensorrt_llm" else called
        member = configs[target]
        if bls_cfg.max_batch_size > member.max_batch_size:
            raise RepositoryError(
                f"model 'tensorrt_llm_bls': max_batch_size {bls_cfg.max_batch_size} is larger than "
                f"'{target}' max_batch_size {member.max_batch_size}")
        ins, outs = inputs(target), outputs(target)
        for name in sent:
            if name not in ins:
                raise RepositoryError(
                    f"model 'tensorrt_llm_bls': sends '{name}' to model '{target}', which has no such input")
        for name in wanted:
            if name not in outs:
                raise RepositoryError(
                    f"model 'tensorrt_llm_bls': reads '{name}' from model '{target}', which has no such output")
    bls_ins = inputs("tensorrt_llm_bls")
    for name in ("text_input", "max_tokens"):
        if name not in bls_ins:
            raise RepositoryError(f"model 'tensorrt_llm_bls': input '{name}' is missing")
    llm_outs = outputs(llm_name)
    for name, t in outputs("tensorrt_llm_bls").items():
        if name == "text_output":
            continue
        if name not in llm_outs:
            raise RepositoryError(
                f"model 'tensorrt_llm_bls': output '{name}' is not an output of model '{llm_name}'")
        if llm_outs[name].data_type != t.data_type:
            raise RepositoryError(
                f"model 'tensorrt_llm_bls': output '{name}' is {_dtype_name(t.data_type)} but model '{llm_name}' "
                f"returns {_dtype_name(llm_outs[name].data_type)}")
    if "text_output" not in outputs("tensorrt_llm_bls"):
        raise RepositoryError("model 'tensorrt_llm_bls': output 'text_output' is missing")
