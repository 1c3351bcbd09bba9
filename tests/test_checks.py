"""Cross-stage checks: mismatches users find an hour into a GPU job, caught at load time."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from llmbuild.core.errors import LLMBuildError
from llmbuild.core.workspace import Workspace
from llmbuild.plugins import load_workspace
from llmbuild.toolchains.trtllm import flags

PIPELINE = """\
[checkpoint.checkpoint]
source = "hf"
{checkpoint}
[engine.engine]
checkpoint = ":checkpoint"
max_batch_size = 4
max_input_len = 48
max_seq_len = 96
{engine}
[repository.repository]
engine = ":engine"
{repository}
[smoke.smoke]
repository = ":repository"
prompt = "What is machine learning?"
max_tokens = 20
{smoke}
"""


def load(ws, lane: str = "cpu", **env: str) -> Workspace:
    environ = {**os.environ, "LLMBUILD_LANE": lane, **env}
    return load_workspace(ws.root, environ, verify_sources=lane == "cpu")


def workspace(make_workspace, tiny_models, *, pyproject: str = "", **parts: str):
    ws = make_workspace()
    ws.write_pyproject(pyproject)
    text = PIPELINE.format(**{k: parts.get(k, "") for k in ("checkpoint", "engine", "repository", "smoke")})
    ws.add_model("m", tiny_models[0], parts.get("whole", text))
    return ws


def adapter(directory, rank: int = 8, modules=("q_proj", "v_proj"), dtype=np.float16):
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text(json.dumps(
        {"r": rank, "lora_alpha": 16, "target_modules": list(modules), "peft_type": "LORA"}))
    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((rank, 64), dtype)},
              str(directory / "adapter_model.safetensors"))


CHECKS = {
    # runtime parameters that need build-time features
    "kv cache reuse needs paged context fmha": dict(
        engine="use_paged_context_fmha = false", repository="enable_kv_cache_reuse = true",
        expect=["models/m/BUILD.toml: [repository.repository]: enable_kv_cache_reuse: ", "use_paged_context_fmha",
                "models/m:engine"]),
    "chunked context needs paged context fmha": dict(
        engine="use_paged_context_fmha = false", repository="enable_chunked_context = true",
        expect=["[repository.repository]: enable_chunked_context: ", "use_paged_context_fmha"]),
    "in-flight batching needs a paged kv cache": dict(
        engine='kv_cache_type = "continuous"',
        expect=["[repository.repository]: batching_strategy: ", "inflight_fused_batching", "paged KV cache",
                "models/m:engine"]),
    "in-flight batching needs packed input": dict(
        engine="remove_input_padding = false", expect=["inflight_fused_batching", "--remove_input_padding"]),
    "in-flight batching needs the attention plugin": dict(
        engine='gpt_attention_plugin = "disable"', expect=["inflight_fused_batching", "--gpt_attention_plugin"]),
    # Triton limits against the engine's
    "triton batch above the engine's": dict(
        repository="triton_max_batch_size = 16",
        expect=["[repository.repository]: triton_max_batch_size: ", "triton_max_batch_size 16", "max_batch_size=4",
                "(engine models/m:engine)"]),
    "attention window above max_seq_len": dict(
        repository="max_attention_window_size = 200",
        expect=["[repository.repository]: max_attention_window_size: ", "max_seq_len=96"]),
    # Triton knobs out of their range: refused by the field itself, naming the repository
    "kv cache fraction above 1": dict(
        repository="kv_cache_free_gpu_mem_fraction = 1.5",
        expect=["models/m/BUILD.toml: [repository.repository]: kv_cache_free_gpu_mem_fraction: ",
                "less than or equal to 1", "1.5"], absent=["[engine.engine]", "models/m:engine"]),
    "negative queue delay": dict(
        repository="max_queue_delay_microseconds = -1",
        expect=["models/m/BUILD.toml: [repository.repository]: max_queue_delay_microseconds: ",
                "greater than or equal to 0"], absent=["[engine.engine]", "models/m:engine"]),
    "unknown tensorrt_llm parameter": dict(
        repository="extra_parameters = { kv_cache_onboard_block = true }",
        expect=["[repository.repository]: extra_parameters: ", "did you mean 'kv_cache_onboard_blocks'"]),
    "smoke max_tokens beyond max_seq_len": dict(
        whole=PIPELINE.format(checkpoint="", engine="", repository="", smoke="").replace(
            "max_tokens = 20", "max_tokens = 100"),
        expect=["[smoke.smoke]", "max_tokens 100", "max_seq_len 96"]),
    # streaming
    "streaming smoke against a non-decoupled repository": dict(
        smoke="stream = true", expect=["[smoke.smoke]", "stream", "decoupled = false", "models/m:repository"]),
    # tokenizer where the server will look
    "tokenizer without tokenizer files": dict(
        repository='tokenizer = "empty-tokenizer"', make={"empty-tokenizer/README": "nothing here"},
        expect=["[repository.repository]", "tokenizer", "holds no tokenizer files"]),
    "tokenizer that does not load": dict(
        repository='tokenizer = "broken-tokenizer"', make={"broken-tokenizer/tokenizer.json": "{not json"},
        expect=["[repository.repository]", "tokenizer", "does not load"]),
    # LoRA adapters against the engine's LoRA settings
    "lora adapter rank above max_rank": dict(
        engine='lora = { max_rank = 4, dirs = ["adapter"] }', adapter=dict(rank=8),
        expect=["[engine.engine]", "lora.max_rank", "rank 8", "max_rank 4"]),
    "lora adapter modules the engine lacks": dict(
        engine='lora = { max_rank = 8, target_modules = ["attn_q"], dirs = ["adapter"] }', adapter=dict(),
        expect=["[engine.engine]", "lora.target_modules", "v_proj"]),
    "lora adapter dtype against the plugin": dict(
        engine='lora = { max_rank = 8, dirs = ["adapter"] }', adapter=dict(dtype=np.float32),
        expect=["[engine.engine]", "lora.plugin", "float32", "float16"]),
    "lora target module of a newer version": dict(
        engine='lora = { target_modules = ["mlp_gate_up"] }',
        expect=["[engine.engine]", "mlp_gate_up", "1.2.0.dev-main-2025-10 and later"]),
}


@pytest.mark.parametrize("case", sorted(CHECKS))
def test_cpu_lane_check(case, make_workspace, tiny_models):
    spec = dict(CHECKS[case])
    expect = spec.pop("expect")
    absent = spec.pop("absent", [])
    files = spec.pop("make", {})
    adapter_spec = spec.pop("adapter", None)
    ws = workspace(make_workspace, tiny_models, **spec)
    for relative, text in files.items():
        ws.write(f"models/m/{relative}", text)
    if adapter_spec is not None:
        adapter(ws.root / "models/m/adapter", **adapter_spec)
    with pytest.raises(LLMBuildError) as caught:
        load(ws)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    for fragment in absent:
        assert fragment not in message, f"{fragment!r} in {message!r}"


# -- trtllm-build's configuration: one model for the engine kind and the CPU stand-in ----------------

SEQ512 = """\
[checkpoint.checkpoint]
source = "hf"

[engine.seq512]
checkpoint = ":checkpoint"
max_batch_size = 2
max_seq_len = 512

[repository.repository]
engine = ":seq512"
"""
ENGINES = SEQ512 + """
[engine.clipped]
checkpoint = ":checkpoint"
max_batch_size = 2
max_input_len = 4096
kv_cache_type = "continuous"
remove_input_padding = false

[engine.tokens]
checkpoint = ":checkpoint"
max_batch_size = 2
max_seq_len = 100
max_num_tokens = 16
"""
ROPE = """\
[checkpoint.checkpoint]
source = "hf"

[engine.rope]
checkpoint = ":checkpoint"
max_batch_size = 2
"""


def rope_model(tiny_models, tmp_path, scaling: dict):
    """The tiny Llama with `rope_scaling` in its config.json."""
    import shutil

    hf = tmp_path / "rope-hf"
    shutil.copytree(tiny_models[0], hf)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "rope_scaling": scaling}))
    return hf


def build_config_of(loaded, address: str) -> dict:
    return loaded.facts(loaded.target(address))["config"]["build_config"]


def test_max_seq_len_alone_clips_the_default_max_input_len(make_workspace, tiny_models):
    """trtllm-build clips max_input_len (default 1024) to a smaller max_seq_len instead of failing."""
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], SEQ512)
    loaded = load(ws)
    assert loaded.warnings == []  # the default max_input_len is clipped quietly
    build = build_config_of(loaded, "models/m:seq512")
    assert (build["max_seq_len"], build["max_input_len"]) == (512, 512)
    assert loaded.facts(loaded.target("models/m:repository"))["max_input_len"] == 512
    (step,) = loaded.plan(loaded.target("models/m:seq512")).steps
    assert "--max_seq_len" in step.argv and "--max_input_len" not in step.argv


def test_an_explicit_max_input_len_above_max_seq_len_is_clipped_with_a_warning(make_workspace, tiny_models):
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], ENGINES)
    loaded = load(ws)
    (warning,) = loaded.warnings
    assert "[engine.clipped]: max_input_len: " in warning and "max_input_len (4096)" in warning
    assert "max_seq_len (2048, from the model config)" in warning and "clips it to 2048" in warning
    assert build_config_of(loaded, "models/m:clipped")["max_input_len"] == 2048


@pytest.mark.parametrize("scaling, max_seq_len", [
    ({"type": "linear", "factor": 2.0}, 4096),
    ({"rope_type": "dynamic", "factor": 1.5}, 3072),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 2048}, 2048),  # llama3 scaling does not lengthen the sequence
])
def test_rope_scaling_enters_the_published_max_seq_len(scaling, max_seq_len, make_workspace, tiny_models,
                                                        tmp_path):
    ws = make_workspace()
    ws.add_model("r", rope_model(tiny_models, tmp_path, scaling), ROPE)
    build = build_config_of(load(ws), "models/r:rope")
    assert build["max_seq_len"] == max_seq_len and build["max_input_len"] == 1024


def test_published_build_config_is_what_the_stand_in_writes(make_workspace, tiny_models, tmp_path):
    """The engine kind's facts and the CPU trtllm-build run the same functions: equal build_config."""
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], ENGINES)
    ws.add_model("r", rope_model(tiny_models, tmp_path, {"type": "linear", "factor": 2.0}), ROPE)
    loaded = load(ws)
    ws.doit()
    for address in ("models/m:seq512", "models/m:clipped", "models/m:tokens", "models/r:rope"):
        directory, name = address.split(":")
        written = json.loads((ws.root / "dist" / directory / name / "config.json").read_text())["build_config"]
        assert written == build_config_of(loaded, address), address
    assert build_config_of(loaded, "models/r:rope")["max_seq_len"] == 4096
    assert build_config_of(loaded, "models/m:tokens")["max_num_tokens"] == 64  # raised to tokens_per_block


GPU = {
    "tp x pp above the host's GPUs": dict(
        checkpoint="tp_size = 2", pyproject="gpus = 1",
        expect=["[engine.engine]", "gpus", "needs 2 GPUs (tp_size x pp_size, from models/m:checkpoint) "
                "but the pool has 1 (gpus in [tool.llmbuild])"]),
    "device list against tp x pp": dict(
        checkpoint="tp_size = 2", engine="gpus = [0]", expect=["[engine.engine]", "gpus", "1 device"]),
    "smoke devices against the engine's world size": dict(
        checkpoint="tp_size = 2", smoke='gpus = [0, 1, 2]\ncontainer = "toolchains/a:a"',
        expect=["[smoke.smoke]", "gpus", "models/m:engine", "3 device"]),
    "serving container's TensorRT-LLM against the engine's": dict(
        engine='container = "toolchains/a:a"', smoke='container = "toolchains/b:b"',
        expect=["[smoke.smoke]", "container", "TensorRT-LLM 0.16.0", "TensorRT-LLM 0.15.0",
                "toolchains/a:a", "toolchains/b:b"]),
    "serving container's TensorRT against the engine's": dict(
        engine='container = "toolchains/a:a"', smoke='container = "toolchains/c:c"',
        expect=["[smoke.smoke]", "TensorRT 10.7.0", "TensorRT 10.6.0"]),
}
CONTAINERS = {
    "a": 'image = "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"\ntrtllm_version = "0.16.0"\n'
         'tensorrt_version = "10.7.0"',
    "b": 'image = "nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3"\ntrtllm_version = "0.15.0"\n'
         'tensorrt_version = "10.6.0"',
    "c": 'image = "example/other-trt:1"\ntrtllm_version = "0.16.0"\ntensorrt_version = "10.6.0"',
}


@pytest.mark.parametrize("case", sorted(GPU))
def test_gpu_lane_check(case, make_workspace, tiny_models):
    spec = dict(GPU[case])
    expect = spec.pop("expect")
    ws = workspace(make_workspace, tiny_models, **spec)
    ws.write_pyproject(spec.get("pyproject", ""), build_roots=("models", "toolchains"))
    for name, body in CONTAINERS.items():
        ws.write(f"toolchains/{name}/BUILD.toml", f"[container.{name}]\n{body}\n")
    with pytest.raises(LLMBuildError) as caught:
        load(ws, lane="gpu")
    message = str(caught.value)
    for fragment in expect:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_memory_estimate_is_a_warning(make_workspace, tiny_models):
    ws = workspace(make_workspace, tiny_models, pyproject="[tool.llmbuild.host]\ngpu_memory_gib = 0.0001")
    loaded = load(ws, lane="gpu")
    assert len(loaded.warnings) == 1
    assert "[engine.engine]" in loaded.warnings[0] and "GiB per GPU" in loaded.warnings[0]
    plan = ws.llmbuild("plan", "--lane", "gpu")
    assert "warning" in plan.stderr and "gpu_memory_gib = 0.0001" in plan.stderr


def test_the_tiny_llama_pipeline_passes_every_check():
    from conftest import REPO

    for lane in ("cpu", "gpu"):
        loaded = load_workspace(REPO, {**os.environ, "LLMBUILD_LANE": lane}, verify_sources=lane == "cpu")
        assert loaded.warnings == []
        assert {t.kind.name for t in loaded.order if t.address.directory == "models/tiny-llama"} == \
            {"checkpoint", "engine", "repository", "smoke"}


# -- every TensorRT-LLM version against the seed's example and its variants ----------------------

MIXTRAL = """\
[checkpoint.ckpt]
source = "/data/hf/mixtral-8x7b-instruct-v01"
dtype = "float16"
tp_size = 2
moe_tp_size = 2
{checkpoint}
[engine.tp2]
checkpoint = ":ckpt"
max_num_tokens = 13000
max_batch_size = 128
use_paged_context_fmha = true
gemm_plugin = "float16"
lora = {{ max_rank = 32 }}
{engine}
"""
VARIANTS = {
    "seed": {},
    "lora": {"engine": 'lora = { max_rank = 16, target_modules = ["attn_q", "attn_v", "mlp_gate_up"] }'},
    "fp8": {"checkpoint": 'quantization = { qformat = "fp8", kv_cache_dtype = "fp8", calib_size = 512 }',
            "engine": "workers = 2"},
    "int4-awq": {"checkpoint": 'use_weight_only = true\nweight_only_precision = "int4_awq"'},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", flags.VERSIONS)
def test_argv_parses_under_every_version_or_names_the_flag(variant, version, make_workspace):
    ws = make_workspace()
    ws.write_pyproject('data_roots = ["/data"]')
    text = MIXTRAL.format(**{"checkpoint": "", "engine": "", **VARIANTS[variant]})
    if "lora = {" in VARIANTS[variant].get("engine", ""):
        text = text.replace("lora = { max_rank = 32 }\n", "")
    ws.write("models/mixtral/BUILD.toml", text)
    try:
        loaded = load(ws, lane="gpu", LLMBUILD_TRTLLM_VERSION=version)
    except LLMBuildError as err:
        message = str(err)
        others = [v for v in flags.VERSIONS if v != version and v in message]
        assert version in message and (others or "has no trtllm-build" in message or
                                       "has no convert_checkpoint.py" in message or
                                       "has no quantize.py" in message), message
        return
    for target in loaded.order:
        for step in loaded.plan(target).steps:
            argv = [a if isinstance(a, str) else "PATH" for a in step.argv]
            flags.parse_argv(step.tool, version, argv)  # raises on anything the version refuses


# -- argv generated from the fields' Flag markers ---------------------------------------------------

def _argv(loaded: Workspace, address: str) -> list[str]:
    (step,) = loaded.plan(loaded.target(address)).steps
    return [a if isinstance(a, str) else a.placeholder() for a in step.argv]


def test_argv_follows_the_field_declarations_and_each_tool_gets_only_its_flags(make_workspace):
    """Flags come in the fields' declared order whatever the TOML order; quantize.py gets the
    recipe and the shared flags but not the converter's; an unset LoRA plugin takes the
    checkpoint's dtype; values equal to the version's default are left out."""
    ws = make_workspace()
    ws.write_pyproject('data_roots = ["/data"]')
    ws.write("models/m/BUILD.toml", """\
[checkpoint.convert]
source = "/data/hf/m"
workers = 4
per_channel = true
tp_size = 2
dtype = "bfloat16"
[checkpoint.quantize]
source = "/data/hf/m"
workers = 4
per_channel = true
tp_size = 2
quantization = { seed = 7, qformat = "fp8" }
dtype = "bfloat16"
[engine.engine]
checkpoint = ":convert"
lora = { max_rank = 16 }
use_paged_context_fmha = true
max_beam_width = 1
max_batch_size = 8
""")
    loaded = load(ws, lane="gpu", LLMBUILD_TRTLLM_VERSION="0.16.0")
    io = ["--model_dir", "${source:source}", "--output_dir", "${out}"]
    assert _argv(loaded, "models/m:convert") == io + [
        "--dtype", "bfloat16", "--tp_size", "2", "--per_channel", "--workers", "4"]
    assert _argv(loaded, "models/m:quantize") == io + [
        "--decoder_type", "llama", "--dtype", "bfloat16", "--qformat", "fp8", "--seed", "7", "--tp_size", "2"]
    assert _argv(loaded, "models/m:engine") == [
        "--checkpoint_dir", "${dep:checkpoint}", "--output_dir", "${out}", "--max_batch_size", "8",
        "--use_paged_context_fmha", "enable", "--lora_plugin", "bfloat16", "--max_lora_rank", "16"]
