"""The engine-free lane (TensorRT-LLM >= 1.3.0rc21) on the CPU lane: models/tiny-llama-llmapi built
and served by a real Triton (the llmapi model) and by the trtllm-serve stand-in, what edits rebuild,
the generated files against each version's table, and the Mixtral variant's configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_HF, Workspace
from llmbuild.toolchains.llmapi.tables import SUPPORTED, table_for

pytestmark = pytest.mark.slow

VARIANT = "models/tiny-llama-llmapi"
TARGETS = ("checkpoint", "engine", "triton", "serve", "triton_smoke", "serve_smoke")


def addresses(*names: str) -> set[str]:
    return {f"{VARIANT}:{n}" for n in names}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, triton_env) -> Workspace:
    """A workspace holding the committed tiny-llama-llmapi variant and the tiny model it reads."""
    root = tmp_path_factory.mktemp("llmapi")
    workspace = Workspace(root / "ws", root / "cache")
    shutil.copytree(TINY_HF, workspace.root / "models/tiny-llama/hf")
    shutil.copytree(REPO / VARIANT, workspace.root / VARIANT)
    return workspace


def edit(ws: Workspace, old: str, new: str) -> None:
    path = ws.root / VARIANT / "BUILD.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def dist(ws: Workspace, name: str) -> Path:
    return ws.root / "dist" / VARIANT / name


def test_builds_and_smoke_tests_through_triton_and_the_trtllm_serve_stand_in(ws):
    run = ws.doit()
    assert run.built() == addresses(*TARGETS), run.stdout + run.stderr
    triton = json.loads((dist(ws, "triton_smoke") / "report.json").read_text())
    assert triton["passed"] and triton["format"] == "triton" and triton["lane"] == "cpu"
    plain, streamed = triton["requests"]
    assert plain["endpoint"] == streamed["endpoint"] == "tensorrt_llm"
    assert plain["status"] == 200 and plain["text"] and not plain["stream"]
    assert streamed["stream"] and streamed["text"] and plain["text"].startswith(streamed["text"])  # greedy
    serve = json.loads((dist(ws, "serve_smoke") / "report.json").read_text())
    assert serve["passed"] and serve["format"] == "trtllm-serve"
    completions, chat = serve["requests"]
    assert completions["endpoint"] == "v1/completions" and chat["endpoint"] == "v1/chat/completions"
    assert completions["text"] == plain["text"]  # same runtime, same prompt, same greedy answer
    assert 0 < completions["tokens"] <= 20 and 0 < chat["tokens"] <= 20
    assert "trtllm-serve stand-in" in run.stdout  # labelled as the CPU lane's stand-in


def test_checkpoint_passes_the_weights_through_without_copying(ws):
    out = dist(ws, "checkpoint")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json"]
    record = json.loads((out / "checkpoint.json").read_text())
    hf = ws.root / "models/tiny-llama/hf"
    assert record["passthrough"] and record["path"] == str(hf)
    assert sorted(p.name for p in dist(ws, "engine").iterdir()) == ["engine.json", "llm_args.yaml"]
    # the repositories hold the weights as hard links to the source, named relatively
    model_yaml = yaml.safe_load((dist(ws, "triton") / "tensorrt_llm/1/model.yaml").read_text())
    serve = json.loads((dist(ws, "serve") / "serve.json").read_text())
    assert model_yaml["model"] == serve["argv"][1] == "weights"
    source = (hf / "model.safetensors").stat()
    for served in (dist(ws, "triton") / "tensorrt_llm/1/weights", dist(ws, "serve") / "weights"):
        linked = (served / "model.safetensors").stat()
        assert (linked.st_ino, linked.st_dev) == (source.st_ino, source.st_dev)


def test_serving_only_knobs_rebuild_only_repository_and_smoke(ws):
    edit(ws, "triton_max_batch_size = 4", "triton_max_batch_size = 2")
    edit(ws, "kv_cache_free_gpu_mem_fraction = 0.5", "kv_cache_free_gpu_mem_fraction = 0.4")
    run = ws.doit()
    assert run.built() == addresses("triton", "triton_smoke")
    assert run.with_outcome("up-to-date") == addresses("checkpoint", "engine", "serve", "serve_smoke")
    assert "max_batch_size: 2\n" in (dist(ws, "triton") / "tensorrt_llm/config.pbtxt").read_text()
    model_yaml = yaml.safe_load((dist(ws, "triton") / "tensorrt_llm/1/model.yaml").read_text())
    assert model_yaml["triton_config"] == {"max_batch_size": 2, "decoupled": True}
    assert model_yaml["kv_cache_config"] == {"free_gpu_memory_fraction": 0.4}


def test_engine_field_rebuilds_engine_repositories_and_smokes_not_the_checkpoint(ws):
    edit(ws, "max_num_tokens = 1024", "max_num_tokens = 512")
    run = ws.doit()
    assert run.built() == addresses("engine", "triton", "serve", "triton_smoke", "serve_smoke")
    assert run.outcomes[f"{VARIANT}:checkpoint"] == "up-to-date"
    assert yaml.safe_load((dist(ws, "serve") / "config.yaml").read_text())["max_num_tokens"] == 512


def test_version_change_rebuilds_every_target_built_with_it(ws):
    edit(ws, 'trtllm_version = "1.3.0rc29"', 'trtllm_version = "1.3.0rc21"')
    run = ws.doit()
    assert run.built() == addresses(*TARGETS)
    assert json.loads((dist(ws, "serve") / "serve.json").read_text())["trtllm_version"] == "1.3.0rc21"
    assert json.loads((dist(ws, "engine") / "engine.json").read_text())["trtllm_version"] == "1.3.0rc21"


def plan(ws_root: Path, *args: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBUILD_")}
    proc = subprocess.run([sys.executable, "-m", "llmbuild", "plan", "--json", *args], cwd=ws_root,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def files_of(document: list[dict], address: str) -> dict[str, str]:
    return next(e for e in document if e["address"] == address)["files"]


@pytest.mark.parametrize("version", SUPPORTED)
def test_generated_files_match_each_versions_table(ws, version):
    from google.protobuf import text_format

    from llmbuild.triton.build import ModelConfig

    document = plan(ws.root, "--trtllm-version", version, VARIANT)
    table = table_for(version)
    triton, serve = files_of(document, f"{VARIANT}:triton"), files_of(document, f"{VARIANT}:serve")
    config = text_format.Parse(triton["tensorrt_llm/config.pbtxt"], ModelConfig())
    assert config.name == "tensorrt_llm" and config.backend == "python"

    def tensors(entries, with_optional):
        return [(t.name, ModelConfig.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"]
                 .enum_type.values_by_number[t.data_type].name, list(t.dims)) + ((t.optional,) if with_optional else ())
                for t in entries]

    assert tensors(config.input, True) == [(t["name"], t["data_type"], t["dims"], t["optional"])
                                           for t in table.llmapi_inputs]
    assert tensors(config.output, False) == [(t["name"], t["data_type"], t["dims"]) for t in table.llmapi_outputs]
    model_yaml = yaml.safe_load(triton["tensorrt_llm/1/model.yaml"])
    assert set(model_yaml.pop("triton_config")) <= set(table.llmapi_triton_config)
    assert table.validate_llm_args(model_yaml) == []
    assert table.validate_llm_args(yaml.safe_load(serve["config.yaml"])) == []
    argv = json.loads(serve["serve.json"])["argv"]
    assert argv[0] == "trtllm-serve" and all(table.serve_option(a) for a in argv if a.startswith("--"))


def test_mixtral_variant_sets_only_keys_its_version_knows():
    document = plan(REPO, "models/mixtral-8x7b-llmapi")
    table = table_for("1.3.0rc29")
    engine = yaml.safe_load(files_of(document, "models/mixtral-8x7b-llmapi:tp2")["llm_args.yaml"])
    assert engine == {"tensor_parallel_size": 2, "pipeline_parallel_size": 1, "moe_tensor_parallel_size": 2,
                      "dtype": "float16", "max_batch_size": 128, "max_num_tokens": 13000, "enable_lora": True,
                      "lora_config": {"max_lora_rank": 32}}
    serve = files_of(document, "models/mixtral-8x7b-llmapi:openai")
    config = yaml.safe_load(serve["config.yaml"])
    assert config == {**engine, "kv_cache_config": {"free_gpu_memory_fraction": 0.9}}
    assert table.validate_llm_args(config) == []
    assert json.loads(serve["serve.json"])["argv"] == [
        "trtllm-serve", "weights", "--config", "config.yaml", "--host", "0.0.0.0",
        "--port", "8000"]
    model_yaml = yaml.safe_load(files_of(document, "models/mixtral-8x7b-llmapi:serve")["tensorrt_llm/1/model.yaml"])
    assert model_yaml.pop("triton_config") == {"max_batch_size": 128, "decoupled": False}
    assert table.validate_llm_args(model_yaml) == []


ENGINE = """\
[checkpoint.checkpoint]
source = "hf"
trtllm_version = "1.3.0rc29"

[engine.engine]
checkpoint = ":checkpoint"
trtllm_version = "1.3.0rc29"
max_batch_size = 4
{extra}
"""


@pytest.mark.parametrize("extra, key, named", [
    ('llm_args = { kv_cache_dtype = "fp8" }', "llm_args", "use `kv_cache_config.dtype`"),
    ("llm_args = { use_cuda_graph = true }", "llm_args", "use `cuda_graph_config`"),
    ("llm_args = { enable_overlap_scheduler = true }", "llm_args", "use `disable_overlap_scheduler`"),
    ("llm_args = { kv_cache_config = { free_gpu_memory_fraction = 0.5 } }",
     "llm_args.kv_cache_config.free_gpu_memory_fraction", "set it on the repository (kv_cache_free_gpu_mem_fraction)"),
    ("use_paged_context_fmha = true", "use_paged_context_fmha", "gone since TensorRT-LLM 1.3.0rc21"),
    ('gemm_plugin = "float16"', "gemm_plugin", "gone since TensorRT-LLM 1.3.0rc21"),
])
def test_moved_and_engine_only_keys_are_refused_naming_the_right_key(make_workspace, extra, key, named):
    ws = make_workspace()
    ws.add_model("tiny", TINY_HF, ENGINE.format(extra=extra))
    proc = ws.llmbuild("plan", check=False)
    assert proc.returncode != 0
    [line] = [x for x in proc.stderr.splitlines() if "error" in x]
    assert line.startswith(f"llmbuild: error: models/tiny/BUILD.toml: [engine.engine]: {key}: ")
    assert named in line
    assert "1.3.0rc29" in line or key.startswith("llm_args.")  # a serving knob is one in every version


def test_plan_trtllm_version_shows_the_engine_lane_model_in_the_new_lane(make_workspace):
    ws = make_workspace()
    ws.add_model("tiny", TINY_HF)  # checkpoint + engine of the engine lane
    before = plan(ws.root)
    assert [s["tool"] for e in before for s in e["steps"]] == ["convert_checkpoint.py:llama", "trtllm-build"]
    after = plan(ws.root, "--trtllm-version", "1.3.0rc29")
    assert [e["steps"] for e in after] == [[], []] and {e["trtllm_version"] for e in after} == {"1.3.0rc29"}
    assert yaml.safe_load(files_of(after, "models/tiny:engine")["llm_args.yaml"]) == {
        "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_batch_size": 4, "max_input_len": 64,
        "max_seq_len": 96}
    # a target that cannot move shows why, and the others are still planned
    ws.add_model("fused", TINY_HF, ENGINE.format(extra='gemm_plugin = "float16"').replace(
        'trtllm_version = "1.3.0rc29"\n', ""))
    assert [e["steps"] for e in plan(ws.root) if e["address"] == "models/fused:engine"][0][0]["tool"] == "trtllm-build"
    after = {e["address"]: e for e in plan(ws.root, "--trtllm-version", "1.3.0rc29")}
    assert after["models/fused:engine"]["error"].startswith(
        "models/fused/BUILD.toml: [engine.engine]: gemm_plugin: `gemm_plugin` is a TensorRT engine setting, gone "
        "since TensorRT-LLM 1.3.0rc21")
    assert "llm_args.yaml" in after["models/tiny:engine"]["files"]


def test_quantized_checkpoint_runs_the_modelopt_stand_in_full_precision_only(make_workspace):
    ws = make_workspace()
    ws.add_model("tiny", TINY_HF, ENGINE.format(extra="").replace(
        'source = "hf"', 'source = "hf"\nquantization = { qformat = "full_prec", calib_size = 16 }'))
    [step] = plan(ws.root, "models/tiny:checkpoint")[0]["steps"]
    assert step["tool"] == "hf_ptq.py"
    argv = " ".join(step["argv"])
    assert "llmbuild.toolchains.cpu.hf_ptq --pyt_ckpt_path " in argv
    assert argv.endswith("--qformat full_prec --kv_cache_qformat none --calib_size 16")
    run = ws.doit()
    out = ws.root / "dist/models/tiny/checkpoint"
    assert json.loads((out / "hf_quant_config.json").read_text())["quantization"]["quant_algo"] is None
    assert run.built() == {"models/tiny:checkpoint", "models/tiny:engine"}
    # the engine carries ModelOpt's checkpoint on to the repository as hard links into the cache
    exported, carried = (out / "model.safetensors").stat(), \
        (ws.root / "dist/models/tiny/engine/weights/model.safetensors").stat()
    assert (exported.st_ino, exported.st_dev) == (carried.st_ino, carried.st_dev)
    build = ws.root / "models/tiny/BUILD.toml"
    build.write_text(build.read_text().replace('"full_prec"', '"fp8"'))
    failed = ws.doit("models/tiny:checkpoint", check=False)
    assert failed.returncode != 0
    assert "hf_ptq.py: error: --qformat fp8 is not supported on the CPU lane" in failed.stdout + failed.stderr


def test_dynamo_format_writes_engine_args_and_the_dynamo_argv(make_workspace):
    ws = make_workspace()
    ws.add_model("tiny", TINY_HF, ENGINE.format(extra="") + """
[repository.dynamo]
engine = ":engine"
format = "dynamo"
kv_cache_free_gpu_mem_fraction = 0.5

[smoke.smoke]
repository = ":dynamo"
prompt = "hello"
""")
    document = plan(ws.root)
    files = files_of(document, "models/tiny:dynamo")
    assert yaml.safe_load(files["engine_args.yaml"]) == {
        "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "max_batch_size": 4,
        "kv_cache_config": {"free_gpu_memory_fraction": 0.5}}
    assert json.loads(files["serve.json"])["argv"] == [
        "python3", "-m", "dynamo.trtllm", "--model", "weights", "--extra-engine-args", "engine_args.yaml"]
    run = ws.doit()
    assert run.outcomes["models/tiny:smoke"] == "skipped" and run.built() == {
        "models/tiny:checkpoint", "models/tiny:engine", "models/tiny:dynamo"}
    out = ws.root / "dist/models/tiny/dynamo"
    assert sorted(p.name for p in out.iterdir()) == ["engine_args.yaml", "serve.json", "weights"]
    assert (out / "weights/config.json").read_text() == (ws.root / "models/tiny/hf/config.json").read_text()


def test_smoke_names_a_triton_config_the_launcher_dropped():
    """What the read-back says when Triton loaded the llmapi model without model.yaml's
    triton_config (as --disable-auto-complete-config does without it in config.pbtxt)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from llmbuild.toolchains.llmapi.serving import config_problems

    class Triton(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps({"name": "tensorrt_llm", "max_batch_size": 0}).encode()
            self.send_response(200 if self.path == "/v2/models/tensorrt_llm/config" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Triton)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert config_problems(url, {"max_batch_size": 0, "decoupled": False}) == []
        problems = config_problems(url, {"max_batch_size": 4, "decoupled": True})
    finally:
        server.shutdown()
    assert [p.split(" (")[0] for p in problems] == [
        "Triton loaded tensorrt_llm with max_batch_size 0 but model.yaml's triton_config says 4",
        "Triton loaded tensorrt_llm with decoupled False but model.yaml's triton_config says True"]
    assert all("--disable-auto-complete-config" in p for p in problems)


@pytest.mark.parametrize("knob", ['entrypoint = "tensorrt_llm_bls"', "exclude_input_in_output = false",
                                  'tokenizer = "hf"'])
def test_engine_lane_repository_knobs_are_refused(make_workspace, knob):
    ws = make_workspace()
    ws.add_model("tiny", TINY_HF, ENGINE.format(extra="") + f'\n[repository.repository]\nengine = ":engine"\n{knob}\n')
    proc = ws.llmbuild("plan", check=False)
    name = knob.split(" ")[0]
    assert proc.returncode != 0
    assert (f"llmbuild: error: models/tiny/BUILD.toml: [repository.repository]: {name}: {name} is a knob of the "
            f"engine lane's five-model repository") in proc.stderr
