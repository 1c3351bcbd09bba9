"""The five ``config.pbtxt`` of a TensorRT-LLM Triton model repository, built as protobuf.

The repository is the one of the TensorRT-LLM backend's ``inflight_batcher_llm``
(tensorrtllm_backend v0.16.0, which pairs with TensorRT-LLM 0.16.0): models
``preprocessing``, ``tensorrt_llm``, ``postprocessing``, ``ensemble`` and
``tensorrt_llm_bls``, with the backend's own model, tensor and parameter names,
dtypes and dims (text-only, but the multimodal and optional tensors and the
parameter keys the stock model.py files index are kept, so a user can swap in
the stock preprocessing/postprocessing/BLS or their own). Those come from the
backend's table (:mod:`llmbuild.triton.backend`), the knobs from
:class:`~llmbuild.triton.options.ServingOptions`, the limits from the engine's
``config.json`` read through :func:`~llmbuild.toolchains.trtllm.build_config.engine_limits`.

Every config is a ``tritonclient.grpc.model_config_pb2.ModelConfig``; nothing
is a template, so there is no placeholder to leave unfilled. Unset knobs are
left out (the backends then use their defaults) instead of being written as
``${x}``. :func:`~llmbuild.triton.wiring.check_wiring` checks the contract
between the files before anything is written.

Paths in parameters are relative to the repository root (``tokenizer_dir``,
the preprocessing ``gpt_model_path``, the CPU lane's engine); our model.py
files resolve them against the root, so the same repository works at any host
path and mounted at ``serve_root`` in a container. Only the GPU lane's
``tensorrt_llm`` (the C++ backend, which does not resolve relative paths)
gets an absolute ``<serve_root>/tensorrt_llm/1/engine``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc.model_config_pb2 import ModelConfig

from ..toolchains.trtllm.build_config import BuildConfigError, EngineLimits, engine_limits
from . import backend
from .backend import BACKEND_VERSION
from .options import ServingOptions, bool_str
from .wiring import RepositoryError, check_wiring

#: Where the repository keeps the tokenizer and the engine, relative to its root.
TOKENIZER_DIR = "preprocessing/1/tokenizer"
ENGINE_DIR = "tensorrt_llm/1/engine"

Lane = Literal["cpu", "gpu"]


def _fill(value: Any, fills: Mapping[str, Any]) -> Any:
    """A template's ``${name}`` replaced by ``fills[name]``; anything else as is."""
    if isinstance(value, str) and value.startswith("${"):
        return fills[value[2:-1]]
    return value


def _model(name: str, *, max_batch_size: int, fills: Mapping[str, Any]) -> ModelConfig:
    """Model `name` as the backend declares it: backend or platform, instance group and tensors."""
    table = backend.model(name)
    cfg = ModelConfig(name=name, max_batch_size=max_batch_size)
    if "backend" in table:
        cfg.backend = _fill(table["backend"], fills)
    if "platform" in table:
        cfg.platform = table["platform"]
    for group in table.get("instance_group", ()):
        cfg.instance_group.add(count=_fill(group["count"], fills), kind=mc.ModelInstanceGroup.Kind.Value(group["kind"]))
    for field, cls in (("input", mc.ModelInput), ("output", mc.ModelOutput)):
        for tensor in table[field]:
            entry = dict(tensor, data_type=_fill(tensor["data_type"], fills))
            getattr(cfg, field).append(json_format.ParseDict(entry, cls()))
    return cfg


def _params(cfg: ModelConfig, values: Mapping[str, str]) -> None:
    """`values`, and the parameters the backend ships with a fixed value."""
    shipped = {k: v for k, v in backend.parameters(cfg.name).items() if "${" not in v}
    for key, value in {**shipped, **values}.items():
        cfg.parameters[key].string_value = value


def _tensorrt_llm_parameters(options: ServingOptions, engine: EngineLimits, *, lane: str) -> dict[str, str]:
    if lane == "gpu":
        engine_path = options.serve_root.rstrip("/") + "/" + ENGINE_DIR
    else:
        engine_path = ENGINE_DIR
    params: dict[str, str] = {
        "gpt_model_type": options.batching_strategy,
        "gpt_model_path": engine_path,
        "max_beam_width": str(engine.max_beam_width),
    }
    if options.batching_strategy != "V1":
        if engine.paged_kv_cache is False:
            raise RepositoryError(
                f"tensorrt_llm parameter 'gpt_model_type': {options.batching_strategy} needs an engine built with a "
                f"paged KV cache; this engine was not (rebuild with --kv_cache_type paged, or use batching_strategy "
                f"V1)", key="batching_strategy")
        for needed, flag in ((engine.gpt_attention_plugin, "--gpt_attention_plugin <dtype>"),
                             (engine.remove_input_padding, "--remove_input_padding enable")):
            if needed is False:
                raise RepositoryError(
                    f"tensorrt_llm parameter 'gpt_model_type': {options.batching_strategy} needs an engine built "
                    f"with {flag}; this engine was not (rebuild it so, or use batching_strategy V1)",
                    key="batching_strategy")
    if options.batch_scheduler_policy is not None:
        params["batch_scheduler_policy"] = options.batch_scheduler_policy
    if options.kv_cache_free_gpu_mem_fraction is not None:
        params["kv_cache_free_gpu_mem_fraction"] = repr(float(options.kv_cache_free_gpu_mem_fraction))
    if options.max_tokens_in_paged_kv_cache is not None:
        params["max_tokens_in_paged_kv_cache"] = str(options.max_tokens_in_paged_kv_cache)
    window = options.max_attention_window_size
    if window is not None:
        if engine.max_seq_len is not None and window > engine.max_seq_len:
            raise RepositoryError(
                f"tensorrt_llm parameter 'max_attention_window_size': {window} is larger than the engine's "
                f"max_seq_len; the engine was built with max_seq_len={engine.max_seq_len}",
                key="max_attention_window_size")
        params["max_attention_window_size"] = str(window)
    elif engine.max_seq_len is not None:
        params["max_attention_window_size"] = str(engine.max_seq_len)
    for key in ("enable_kv_cache_reuse", "enable_chunked_context"):
        value = getattr(options, key)
        if value is None:
            continue
        if value and engine.paged_context_fmha is False:
            raise RepositoryError(
                f"tensorrt_llm parameter '{key}': needs an engine built with --use_paged_context_fmha enable; "
                f"this engine was built without it", key=key)
        params[key] = bool_str(value)
    if options.exclude_input_in_output is not None:
        params["exclude_input_in_output"] = bool_str(options.exclude_input_in_output)
    if options.gpu_device_ids is not None:
        for group in options.gpu_device_ids.split(";"):
            if len(group.split(",")) != engine.world_size:
                raise RepositoryError(
                    f"tensorrt_llm parameter 'gpu_device_ids': group {group!r} has {len(group.split(','))} GPU(s) "
                    f"but the engine was built for world_size={engine.world_size}", key="gpu_device_ids")
        params["gpu_device_ids"] = options.gpu_device_ids
    params.update(sorted(options.extra_parameters.items()))
    return params


def build_configs(options: ServingOptions, engine_config: Mapping, *, lane: Lane) -> dict[str, ModelConfig]:
    """The five ModelConfigs for the engine whose ``config.json`` is ``engine_config``.

    Engine limits come from ``build_config`` (max_batch_size, max_beam_width,
    max_seq_len); ``options`` only choose within them. The lanes differ only in
    the ``tensorrt_llm`` model: ``gpu`` runs the C++ ``tensorrtllm`` backend on
    ``<serve_root>/tensorrt_llm/1/engine``, ``cpu`` runs our Python model on
    ``tensorrt_llm/1/engine`` (relative to the repository root). Raises
    :class:`RepositoryError` on anything inconsistent (with the option as its
    ``key`` when an option is what does not fit the engine); the result has
    passed :func:`check_wiring`.
    """
    if lane not in ("cpu", "gpu"):
        raise RepositoryError(f"lane must be 'cpu' or 'gpu', got {lane!r}")
    try:
        engine = engine_limits(engine_config)
    except BuildConfigError as err:
        raise RepositoryError(str(err)) from None

    batch = options.triton_max_batch_size
    if batch is None:
        batch = engine.max_batch_size
    elif batch > engine.max_batch_size:
        raise RepositoryError(
            f"model 'tensorrt_llm': triton_max_batch_size {batch} is larger than the engine's max_batch_size; "
            f"the engine was built with max_batch_size={engine.max_batch_size}", key="triton_max_batch_size")

    fills = {
        "triton_backend": "tensorrtllm" if lane == "gpu" else "python",
        "preprocessing_instance_count": options.preprocessing_instance_count,
        "postprocessing_instance_count": options.postprocessing_instance_count,
        "bls_instance_count": options.bls_instance_count,
        "encoder_input_features_data_type": backend.default("encoder_input_features_data_type"),
    }
    configs = {name: _model(name, max_batch_size=batch, fills=fills) for name in backend.MODEL_NAMES}
    pre, llm, post, ens, bls = (configs[name] for name in backend.MODEL_NAMES)

    _params(pre, {
        "tokenizer_dir": TOKENIZER_DIR,
        "add_special_tokens": bool_str(options.add_special_tokens),
        # Read only for multimodal models; the stock model.py indexes both keys.
        "visual_model_path": "",
        "gpt_model_path": ENGINE_DIR,
    })

    llm.model_transaction_policy.decoupled = options.decoupled
    llm.model_transaction_policy.SetInParent()
    llm.dynamic_batching.preferred_batch_size.append(batch)
    llm.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_microseconds
    llm.dynamic_batching.default_queue_policy.max_queue_size = options.max_queue_size
    llm.dynamic_batching.default_queue_policy.SetInParent()
    _params(llm, _tensorrt_llm_parameters(options, engine, lane=lane))

    post.dynamic_batching.SetInParent()
    _params(post, {"tokenizer_dir": TOKENIZER_DIR, "skip_special_tokens": bool_str(options.skip_special_tokens)})

    for step in backend.ensemble_steps():
        added = ens.ensemble_scheduling.step.add(model_name=step["model_name"], model_version=step["model_version"])
        added.input_map.update(step["input_map"])
        added.output_map.update(step["output_map"])

    bls.model_transaction_policy.decoupled = options.decoupled
    bls.model_transaction_policy.SetInParent()
    _params(bls, {"accumulate_tokens": bool_str(options.accumulate_tokens),
                  "tensorrt_llm_model_name": "tensorrt_llm"})

    check_wiring(configs)
    return configs


def to_pbtxt(config: ModelConfig) -> str:
    """``config.pbtxt`` text: protobuf text format (maps sorted by key) under a one-line header."""
    body = text_format.MessageToString(config, as_utf8=True)
    return f"# Generated by llmbuild for tensorrtllm_backend v{BACKEND_VERSION}; edit the build, not this file.\n{body}"
