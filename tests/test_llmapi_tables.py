"""The engine-free TensorRT-LLM tables: what a TorchLlmArgs YAML (model.yaml, trtllm-serve --config,
Dynamo --extra-engine-args) may say per version, and the exact refusals a user sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmbuild.core.errors import LLMBuildError
from llmbuild.toolchains.llmapi import SUPPORTED, is_engine_free, table_for

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "llmbuild" / "toolchains" / "llmapi" / "data"


def test_every_data_file_is_a_table_with_its_sources():
    assert SUPPORTED == ("1.3.0rc21", "1.3.0rc29", "1.4.0rc4")
    assert sorted(p.stem for p in DATA.glob("*.json")) == sorted(SUPPORTED)
    for version in SUPPORTED:
        t = table_for(version)
        assert t.version == version
        assert any(s.startswith("llm_args: NVIDIA/TensorRT-LLM@") for s in t.sources)
        assert any(s.startswith("trtllm_serve: ") and "trtllm_serve_cli.yaml" in s for s in t.sources)
        assert any(s.startswith("note: ") for s in t.sources)   # says which tag could not be read
        assert {"model", "max_batch_size", "max_num_tokens", "kv_cache_config", "cuda_graph_config",
                "lora_config", "scheduler_config"} <= set(t.llm_args)
        assert t.llm_args["max_batch_size"].default == 2048
        assert t.llm_args["kv_cache_config"].type == "config:KvCacheConfig"
        assert t.configs["KvCacheConfig"]["free_gpu_memory_fraction"].default == 0.9
        assert t.llm_args["disable_overlap_scheduler"].status == "beta"
        assert t.llm_args["tensor_parallel_size"].status == "stable"


def test_the_generated_tables_are_current():
    """tools/extract_llmapi_tables.py writes the committed JSON byte for byte."""
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "extract_llmapi_tables.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


SOURCE = '''
class StrictBaseModel: pass
class Mode(StrEnum):
    FAST = "fast"
class KvCacheConfig(StrictBaseModel):
    tokens_per_block: int = Field(default=64, description="changed")
    host_cache_size: int = 1024**3
class BaseLlmArgs(StrictBaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="required")
    max_batch_size: Optional[int] = Field(default=64, status="beta")
class TorchLlmArgs(BaseLlmArgs):
    _private: int = PrivateAttr(default=0)
    LIMIT: ClassVar[int] = 3
    mode: Mode = Field(default=Mode.FAST)
    brand_new_key: int = Field(default=1, status="prototype")
'''


def test_compare_reads_a_checkouts_llm_args_with_ast():
    """The maintainer's check of a table against a tag's llm_args.py (never imported)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from extract_llmapi_tables import compare, source_fields
    finally:
        sys.path.remove(str(ROOT / "tools"))
    fields = source_fields(SOURCE)
    assert set(fields["TorchLlmArgs"]) == {"model", "max_batch_size", "mode", "brand_new_key"}
    assert fields["TorchLlmArgs"]["max_batch_size"] == {"default": 64, "status": "beta"}
    assert fields["TorchLlmArgs"]["mode"]["default"] == "fast"
    assert fields["KvCacheConfig"]["host_cache_size"]["default"] == 1024 ** 3
    diffs = compare(SOURCE, "1.3.0rc29")
    assert "TorchLlmArgs.brand_new_key: in the source, not in the table" in diffs
    assert "TorchLlmArgs.kv_cache_config: in the table, not in the source" in diffs
    assert "TorchLlmArgs.max_batch_size: default 2048 in the table, 64 in the source" in diffs
    assert "TorchLlmArgs.max_batch_size: status 'stable' in the table, 'beta' in the source" in diffs
    assert "KvCacheConfig.tokens_per_block: default 32 in the table, 64 in the source" in diffs
    assert "SchedulerConfig: not in the source" in diffs
    assert not any(d.startswith("TorchLlmArgs.model:") for d in diffs)
    assert "KvCacheConfig.host_cache_size: default None in the table, 1073741824 in the source" in diffs


@pytest.mark.parametrize("version,free", [
    ("1.2.1", False), ("1.3.0rc20", False), ("1.3.0rc21", True), ("v1.3.0rc29", True), ("1.4.0rc1", True),
    ("1.3.0.dev-main-2026-07", False), ("seed", False),
])
def test_engine_free_starts_at_rc21(version, free):
    assert is_engine_free(version) is free


@pytest.mark.parametrize("asked,used", [
    ("1.3.0rc21", "1.3.0rc21"), ("1.3.0rc25", "1.3.0rc21"), ("1.3.0rc29", "1.3.0rc29"),
    ("1.3.0rc30", "1.3.0rc29"), ("1.4.0rc4", "1.4.0rc4"), ("1.4.0rc9", "1.4.0rc4"),
])
def test_table_for_takes_the_newest_table_of_the_same_release(asked, used):
    assert table_for(asked).version == used


@pytest.mark.parametrize("version,words", [
    ("1.3.0rc20", ["1.3.0rc20 is not an engine-free version", "1.3.0rc21"]),
    ("1.2.1", ["1.2.1 is not an engine-free version"]),
    ("1.4.0rc1", ["no LLM-API table for TensorRT-LLM 1.4.0rc1"]),
    ("1.5.0", ["no LLM-API table for TensorRT-LLM 1.5.0"]),
])
def test_table_for_a_version_without_one_names_the_tables(version, words):
    with pytest.raises(LLMBuildError) as err:
        table_for(version)
    for word in [*words, "1.3.0rc21, 1.3.0rc29, 1.4.0rc4"]:
        assert word in str(err.value)


# ------------------------------------------------------------------ the mistakes users make

MOVED = {
    "kv_cache_dtype at top level": ({"kv_cache_dtype": "fp8"}, "`kv_cache_dtype`", "use `kv_cache_config.dtype`"),
    "use_cuda_graph": ({"use_cuda_graph": True}, "`use_cuda_graph`", "use `cuda_graph_config`"),
    "enable_overlap_scheduler": ({"enable_overlap_scheduler": True}, "`enable_overlap_scheduler`",
                                 "use `disable_overlap_scheduler`"),
    "cuda_graph_batch_sizes": ({"cuda_graph_batch_sizes": [1, 2]}, "`cuda_graph_batch_sizes`",
                               "use `cuda_graph_config.batch_sizes`"),
    "cuda_graph_padding_enabled": ({"cuda_graph_padding_enabled": True}, "`cuda_graph_padding_enabled`",
                                   "use `cuda_graph_config.enable_padding`"),
    "free_gpu_memory_fraction at top level": ({"free_gpu_memory_fraction": 0.5}, "`free_gpu_memory_fraction`",
                                              "use `kv_cache_config.free_gpu_memory_fraction`"),
    "build_config": ({"build_config": {"max_batch_size": 8}}, "`build_config`",
                     "use top-level `max_batch_size` for `build_config.max_batch_size`"),
    "pytorch_backend_config": ({"pytorch_backend_config": {"enable_overlap_scheduler": True}},
                               "`pytorch_backend_config`", "use `disable_overlap_scheduler`"),
}


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("case", MOVED, ids=list(MOVED))
def test_moved_keys_are_refused_naming_the_right_key(version, case):
    doc, old, new = MOVED[case]
    problems = table_for(version).validate_llm_args({"model": "m", **doc}, where="model.yaml")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"model.yaml: {old} is not a TorchLlmArgs key in TensorRT-LLM {version}")
    assert new in problems[0]


def test_build_config_names_every_field_where_it_went():
    problems = table_for("1.3.0rc29").validate_llm_args(
        {"build_config": {"max_num_tokens": 4096, "max_seq_len": 2048, "gemm_plugin": "auto"}})
    assert "use top-level `max_num_tokens` for `build_config.max_num_tokens`" in problems[0]
    assert "use top-level `max_seq_len` for `build_config.max_seq_len`" in problems[1]
    assert "`gemm_plugin` is a TensorRT engine setting, gone since TensorRT-LLM 1.3.0rc21" in problems[2]
    assert len(problems) == 3


def test_a_typo_gets_a_did_you_mean():
    t = table_for("1.3.0rc29")
    assert t.validate_llm_args({"max_num_token": 8192}) == [
        "`max_num_token` is not a TorchLlmArgs key in TensorRT-LLM 1.3.0rc29; did you mean `max_num_tokens`?"]
    assert t.validate_llm_args({"kv_cache_config": {"free_gpu_mem_fraction": 0.5}}) == [
        "`kv_cache_config.free_gpu_mem_fraction` is not a KvCacheConfig key in TensorRT-LLM 1.3.0rc29; "
        "did you mean `free_gpu_memory_fraction`?"]
    assert t.validate_llm_args({"lora_config": {"max_lora_ranks": 32}}) == [
        "`lora_config.max_lora_ranks` is not a LoraConfig key in TensorRT-LLM 1.3.0rc29; "
        "did you mean `max_lora_rank`?"]
    assert t.validate_llm_args({"no_such_thing": 1}) == [
        "`no_such_thing` is not a TorchLlmArgs key in TensorRT-LLM 1.3.0rc29"]


@pytest.mark.parametrize("doc,message", [
    ({"max_batch_size": "128"}, "`max_batch_size` must be int or null in TensorRT-LLM 1.4.0rc4, not '128'"),
    ({"enable_chunked_prefill": "yes"}, "`enable_chunked_prefill` must be bool in TensorRT-LLM 1.4.0rc4, "
                                        "not 'yes'"),
    ({"tensor_parallel_size": True}, "`tensor_parallel_size` must be int in TensorRT-LLM 1.4.0rc4, not True"),
    ({"kv_cache_config": {"dtype": "fp9"}},
     "`kv_cache_config.dtype` must be one of 'auto', 'float16', 'bfloat16', 'float32', 'fp8', 'fp8_ds_mla', "
     "'nvfp4' in TensorRT-LLM 1.4.0rc4, not 'fp9'"),
    ({"cuda_graph_config": 16}, "`cuda_graph_config` must be a mapping (CudaGraphConfig) or null in "
                                "TensorRT-LLM 1.4.0rc4, not 16"),
    ({"cuda_graph_config": {"batch_sizes": [1, "2"]}},
     "`cuda_graph_config.batch_sizes` must be list[int] or null in TensorRT-LLM 1.4.0rc4, not [1, '2']"),
    ({"nvfp4_gemm_config": {"allowed_backends": ["cutlass", "tensorrt"]}},
     "`nvfp4_gemm_config.allowed_backends` must be a list of 'cutlass', 'cublaslt', 'cutedsl', 'cuda_core', "
     "'marlin' in TensorRT-LLM 1.4.0rc4, not ['cutlass', 'tensorrt']"),
    ({"scheduler_config": {"capacity_scheduler_policy": "max_utilization"}},
     "`scheduler_config.capacity_scheduler_policy` must be one of 'MAX_UTILIZATION', 'GUARANTEED_NO_EVICT', "
     "'STATIC_BATCH' in TensorRT-LLM 1.4.0rc4, not 'max_utilization'"),
])
def test_type_and_choice_errors_name_the_dotted_key(doc, message):
    assert table_for("1.4.0rc4").validate_llm_args(doc, where="config.yaml") == [f"config.yaml: {message}"]


def test_a_document_that_is_not_a_mapping():
    assert table_for("1.3.0rc21").validate_llm_args(["model"], where="x.yaml") == [
        "x.yaml: a TorchLlmArgs document is a mapping, not list"]


# ------------------------------------------------------------------ valid documents

def _model_yaml_llm_part(version):
    """The upstream default model.yaml without `triton_config` (which model.py keeps for itself)."""
    doc = dict(table_for(version).llmapi_default_model_yaml)
    doc.pop("triton_config")
    return doc


MIXTRAL = {   # the seed's Mixtral example on the engine-free lane (TP=2, MoE TP=2, LoRA rank 32)
    "model": "/models/Mixtral-8x7B-v0.1",
    "backend": "pytorch",
    "tensor_parallel_size": 2,
    "moe_tensor_parallel_size": 2,
    "max_batch_size": 128,
    "max_num_tokens": 13000,
    "max_seq_len": 4096,
    "kv_cache_config": {"free_gpu_memory_fraction": 0.85, "enable_block_reuse": True, "dtype": "auto",
                        "tokens_per_block": 64},
    "cuda_graph_config": {"max_batch_size": 128, "enable_padding": True},
    "lora_config": {"max_lora_rank": 32, "lora_target_modules": ["attn_q", "attn_k", "attn_v"],
                    "max_loras": 4, "max_cpu_loras": 8},
    "scheduler_config": {"capacity_scheduler_policy": "GUARANTEED_NO_EVICT"},
    "enable_chunked_prefill": True,
    "disable_overlap_scheduler": False,
    "moe_config": {"backend": "CUTLASS"},
    "trust_remote_code": False,
}


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_upstream_model_yaml_and_a_mixtral_config_validate(version):
    t = table_for(version)
    assert t.validate_llm_args(_model_yaml_llm_part(version), where="model.yaml") == []
    assert t.validate_llm_args(MIXTRAL, where="config.yaml") == []
    assert t.validate_llm_args({"model": "m", "cuda_graph_config": None, "kv_cache_config": {}}) == []


@pytest.mark.parametrize("version", SUPPORTED)
def test_model_yaml_checks_triton_config_and_passes_the_rest_to_llm_args(version):
    t = table_for(version)
    assert t.validate_model_yaml(t.llmapi_default_model_yaml) == []
    good = {**MIXTRAL, "triton_config": {"max_batch_size": 8, "decoupled": True,
                                         "cancellation_check_period_ms": 50}}
    assert t.validate_model_yaml(good) == []
    bad = {"model": "m", "kv_cache_dtype": "fp8",
           "triton_config": {"decoupled": "yes", "max_batch_sise": 8}}
    assert t.validate_model_yaml(bad) == [
        "model.yaml: `triton_config.max_batch_size` is missing: model.py reads it",
        f"model.yaml: `triton_config.decoupled` must be bool in TensorRT-LLM {version}, not 'yes'",
        f"model.yaml: `triton_config.max_batch_sise` is not a key model.py reads in TensorRT-LLM {version}; "
        "did you mean `max_batch_size`?",
        f"model.yaml: `kv_cache_dtype` is not a TorchLlmArgs key in TensorRT-LLM {version} (moved by 1.3.0rc21): "
        "use `kv_cache_config.dtype`; the KV-cache dtype lives in kv_cache_config (a top-level LLM argument "
        "in 1.0)"]
    assert t.validate_model_yaml({"model": "m"}) == [
        "model.yaml: `triton_config` must be a mapping with max_batch_size, decoupled, not None"]


def test_open_configs_catch_typos_but_not_fields_the_table_does_not_list():
    """KvConnectorConfig is known only in part: an unlisted key passes, a near-miss of a listed one
    does not."""
    t = table_for("1.3.0rc29")
    assert t.validate_llm_args({"kv_connector_config": {"connector_module": "my.connector",
                                                        "extra_config": {"port": 1}}}) == []
    assert t.validate_llm_args({"kv_connector_config": {"connectr": "lmcache"}}) == [
        "`kv_connector_config.connectr` is not a KvConnectorConfig key in TensorRT-LLM 1.3.0rc29; "
        "did you mean `connector`?"]
    assert t.validate_llm_args({"moe_config": {"load_balancer": "eplb.yaml", "backend": "CUTLASS"}}) == []
    assert t.validate_llm_args({"moe_config": {"num_slots": 8}}) == [
        "`moe_config.num_slots` is not a MoeConfig key in TensorRT-LLM 1.3.0rc29"]


@pytest.mark.parametrize("version", SUPPORTED)
def test_prefill_cuda_graphs_and_their_deprecated_aliases(version):
    t = table_for(version)
    assert t.validate_llm_args({"prefill_cuda_graph_backend": "piecewise", "prefill_capture_num_tokens": [1, 2],
                                "torch_compile_config": {"enable_piecewise_cuda_graph": True}}) == []
    assert t.configs["TorchCompileConfig"]["capture_num_tokens"].description == (
        "deprecated alias of prefill_capture_num_tokens")
    assert t.validate_llm_args({"prefill_cuda_graph_backend": "eager"}) == [
        f"`prefill_cuda_graph_backend` must be one of 'disabled', 'piecewise', 'breakable' in TensorRT-LLM "
        f"{version}, not 'eager'"]


def test_compile_only_piecewise_graphs_is_a_1_4_key():
    doc = {"torch_compile_config": {"compile_only_piecewise_graphs": True}}
    assert table_for("1.4.0rc4").validate_llm_args(doc) == []
    assert table_for("1.3.0rc29").validate_llm_args(doc) == [
        "`torch_compile_config.compile_only_piecewise_graphs` is not a TorchCompileConfig key in TensorRT-LLM "
        "1.3.0rc29"]


def test_renamed_block_reuse_policy_in_the_1_4_line():
    doc = {"kv_cache_config": {"block_reuse_config": {"block_reuse_policy": "per_request"}}}
    assert table_for("1.4.0rc4").validate_llm_args(doc) == [
        "`kv_cache_config.block_reuse_config.block_reuse_policy` is not a BlockReuseConfig key in TensorRT-LLM "
        "1.4.0rc4 (moved by 1.4.0rc4): use `kv_cache_config.block_reuse_config.policy`"]


# ------------------------------------------------------------------ engine fields

@pytest.mark.parametrize("field,tail", [
    ("gemm_plugin", "; no replacement (the PyTorch backend chooses GEMM kernels itself)"),
    ("use_paged_context_fmha", "; no replacement (paged context attention is always on)"),
    ("tokens_per_block", "; use `kv_cache_config.tokens_per_block`"),
    ("remove_input_padding", "; no replacement (inputs are always packed)"),
    ("moe_plugin", "; use `moe_config.backend`"),
])
def test_engine_fields_are_gone_since_rc21(field, tail):
    assert table_for("1.3.0rc29").engine_field_problem(field) == (
        f"`{field}` is a TensorRT engine setting, gone since TensorRT-LLM 1.3.0rc21 with the TensorRT "
        f"backend (this is 1.3.0rc29){tail}")


def test_fields_that_still_exist_are_not_engine_problems():
    t = table_for("1.4.0rc4")
    for field in ("max_batch_size", "max_num_tokens", "max_seq_len", "max_beam_width", "max_input_len"):
        assert t.engine_field_problem(field) is None
        assert field in t.llm_args


# ------------------------------------------------------------------ trtllm-serve, the llmapi model, Dynamo

def test_serve_options_by_name_and_by_any_flag():
    t = table_for("1.3.0rc29")
    tp = t.serve_option("--tp_size")
    assert (tp.name, tp.flags, tp.default, tp.status) == (
        "tensor_parallel_size", ("--tensor_parallel_size", "--tp_size"), 1, "beta")
    assert t.serve_option("max_batch_size").default == 2048
    assert t.serve_option("max_num_tokens").default == 8192
    assert t.serve_option("--config").name == "extra_llm_api_options"
    assert t.serve_option("free_gpu_memory_fraction").flags == (
        "--free_gpu_memory_fraction", "--kv_cache_free_gpu_memory_fraction")
    assert t.serve_option("kv_cache_dtype").choices == ("auto", "fp8", "nvfp4")
    assert t.serve_option("backend").status == "deprecated"
    assert not any(o.name == "model" for o in t.serve_options)   # the model is positional
    with pytest.raises(LLMBuildError, match=r"has no option '--max_batchsize'; did you mean `--max_batch_size`\?"):
        t.serve_option("--max_batchsize")


@pytest.mark.parametrize("version", SUPPORTED)
def test_the_llmapi_model_interface_is_upstreams(version):
    t = table_for(version)
    assert t.llmapi_backend == "python"
    inputs = {i["name"]: i for i in t.llmapi_inputs}
    outputs = {o["name"]: o for o in t.llmapi_outputs}
    assert inputs["text_input"] == {"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1],
                                    "optional": False}
    assert [i["name"] for i in t.llmapi_inputs if not i["optional"]] == ["text_input"]
    assert inputs["sampling_param_max_tokens"] == {"name": "sampling_param_max_tokens", "data_type": "TYPE_INT32",
                                                   "dims": [1], "optional": True}
    assert inputs["streaming"]["data_type"] == "TYPE_BOOL"
    assert inputs["lora_id"]["data_type"] == "TYPE_UINT64"
    assert outputs["text_output"] == {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1],
                                      "optional": False}
    assert outputs["arrival_time_ns"]["data_type"] == "TYPE_INT64"
    assert len(inputs) == 22 and len(outputs) == 16
    assert t.llmapi_default_model_yaml["triton_config"] == {"max_batch_size": 0, "decoupled": False}
    assert set(t.llmapi_triton_config) == {"max_batch_size", "decoupled", "cancellation_check_period_ms",
                                           "multimodal"}


def test_dynamo_pins():
    assert table_for("1.3.0rc29").dynamo["release"] == "v1.6.0"
    rc21 = table_for("1.3.0rc21").dynamo
    assert rc21["release"] is None and "no Dynamo release pins 1.3.0rc21" in rc21["note"]
    flags = {f["flag"]: f for f in table_for("1.4.0rc4").dynamo["flags"]}
    assert {"--model", "--served-model-name", "--extra-engine-args", "--tensor-parallel-size"} <= set(flags)
    assert flags["--free-gpu-memory-fraction"]["default"] == 0.9
