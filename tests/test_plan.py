"""`llmbuild plan`: the exact commands, on either lane, without running anything."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

from llmbuild.toolchains.trtllm import flags

SEED_CONVERT = ["--model_dir", "/data/hf/mixtral-8x7b-instruct-v01", "--output_dir", "OUT",
                "--dtype", "float16", "--tp_size", "2", "--moe_tp_size", "2"]
SEED_BUILD = ["--checkpoint_dir", "CKPT", "--output_dir", "OUT", "--gemm_plugin", "float16",
              "--max_batch_size", "128", "--max_num_tokens", "13000", "--use_paged_context_fmha", "enable"]


def _plan(*args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "llmbuild", "plan", "--json", *args], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def _flag_pairs(argv: list[str]) -> dict[str, str]:
    """{--flag: value} for every flag, with the path-valued flags' values ignored."""
    pairs, i = {}, 0
    while i < len(argv):
        flag = argv[i]
        assert flag.startswith("--"), argv
        value = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else ""
        pairs[flag] = "PATH" if flag in ("--model_dir", "--output_dir", "--checkpoint_dir") else value
        i += 2 if value else 1
    return pairs


def test_mixtral_plan_is_the_seed_commands_plus_lora():
    plan = {entry["address"]: entry for entry in _plan("models/mixtral-8x7b")}
    ckpt, engine = plan["models/mixtral-8x7b:ckpt"], plan["models/mixtral-8x7b:tp2"]
    assert ckpt["lane"] == engine["lane"] == "gpu"
    convert = ckpt["steps"][0]["argv"]
    assert convert[:2] == ["python3", "/app/tensorrt_llm/examples/llama/convert_checkpoint.py"]
    assert _flag_pairs(convert[2:]) == _flag_pairs(SEED_CONVERT)
    # Steps run in the toolchain image; the source is mounted read-only where the argv says.
    assert ckpt["steps"][0]["container"] == "toolchains/trtllm:trtllm"
    model_dir = convert[convert.index("--model_dir") + 1]
    assert {"host": "/data/hf/mixtral-8x7b-instruct-v01", "container": model_dir,
            "read_only": True} in ckpt["steps"][0]["mounts"]
    build = engine["steps"][0]["argv"]
    assert build[0] == "trtllm-build"
    expected = _flag_pairs(SEED_BUILD) | {"--lora_plugin": "float16", "--max_lora_rank": "32"}
    assert _flag_pairs(build[1:]) == expected
    assert engine["steps"][0]["gpus"] == 2
    # The checkpoint the engine reads is the checkpoint target's output (as dist links them).
    engine_mounts = {m["container"]: m["host"] for m in engine["steps"][0]["mounts"]}
    ckpt_mounts = {m["container"]: m["host"] for m in ckpt["steps"][0]["mounts"]}
    assert engine_mounts[build[build.index("--checkpoint_dir") + 1]] == \
        ckpt_mounts[convert[convert.index("--output_dir") + 1]]
    docker_run = engine["steps"][0]["docker_run"]
    assert docker_run[:2] == ["docker", "run"] and "--gpus" in docker_run
    assert docker_run[-len(build):] == build
    version = engine["trtllm_version"]
    flags.parse_argv("convert_checkpoint.py:llama", version, convert[2:])
    flags.parse_argv("trtllm-build", version, build[1:])


def test_cpu_lane_plan_runs_the_stand_ins_with_the_same_argv():
    cpu = {e["address"]: e for e in _plan("models/tiny-llama")}
    gpu = {e["address"]: e for e in _plan("--lane", "gpu", "models/tiny-llama")}
    for address in ("models/tiny-llama:checkpoint", "models/tiny-llama:engine"):
        cpu_step, gpu_step = cpu[address]["steps"][0], gpu[address]["steps"][0]
        assert cpu[address]["lane"] == "cpu" and gpu[address]["lane"] == "gpu"
        assert cpu_step["program"][1:3] == ["-m", cpu_step["program"][2]]
        assert cpu_step["program"][2].startswith("llmbuild.toolchains.cpu.")
        n_cpu, n_gpu = len(cpu_step["program"]), len(gpu_step["program"])
        assert cpu_step["argv"][n_cpu:] == gpu_step["argv"][n_gpu:]


def test_plan_of_a_skipped_target_says_so():
    proc = subprocess.run([sys.executable, "-m", "llmbuild", "plan", "models/mixtral-8x7b:ckpt"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    assert "skipped on the active lane" in proc.stdout
    assert "-v /data/hf/mixtral-8x7b-instruct-v01:/llmbuild/src/source:ro" in proc.stdout
    assert "convert_checkpoint.py --model_dir /llmbuild/src/source" in proc.stdout


def test_plan_shows_the_server_a_smoke_starts_on_either_lane():
    cpu = {e["address"]: e for e in _plan("models/tiny-llama:smoke")}["models/tiny-llama:smoke"]
    assert cpu["steps"] == []
    (server,) = cpu["commands"]
    argv = server["argv"]
    assert server["tool"] == "tritonserver" and argv[0].endswith("/pytriton/tritonserver/bin/tritonserver")
    assert argv[argv.index("--model-repository") + 1] == str(REPO / "dist/models/tiny-llama/repository")
    assert argv[argv.index("--http-port") + 1] == "8000" and "--disable-auto-complete-config" in argv
    assert argv[argv.index("--backend-directory") + 1].endswith("/backends")
    assert "free ports" in server["note"]

    # the GPU lane: tritonserver under mpirun (world size 2) in the serving image, through docker run
    gpu = {e["address"]: e for e in _plan("models/mixtral-8x7b:generate")}["models/mixtral-8x7b:generate"]
    (server,) = gpu["commands"]
    assert server["argv"][:3] == ["mpirun", "--allow-run-as-root", "-n"]
    assert server["argv"].count("tritonserver") == 2
    docker_run = server["docker_run"]
    assert docker_run[:2] == ["docker", "run"] and docker_run[-len(server["argv"]):] == server["argv"]
    assert f"{REPO}/dist/models/mixtral-8x7b/serve:/models:ro" in docker_run
    assert docker_run[docker_run.index("--gpus") + 1] == "2"
    text = subprocess.run([sys.executable, "-m", "llmbuild", "plan", "models/mixtral-8x7b:generate"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    assert "$ docker run " in text and " mpirun --allow-run-as-root -n 1 tritonserver " in text
    assert "no external program" not in text


def test_plan_shows_the_docker_build_of_a_container():
    plan = {e["address"]: e for e in _plan("toolchains/trtllm::")}
    (build,) = plan["toolchains/trtllm:trtllm"]["commands"]
    assert build["argv"] == [
        "docker", "build", "-t", "llmbuild-key:<action key>", "-f", str(REPO / "toolchains/trtllm/Dockerfile"),
        "--build-arg", "BASE_IMAGE=nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3",
        "--build-arg", "TRTLLM_VERSION=0.16.0", str(REPO / "toolchains/trtllm")]
    (pull,) = plan["toolchains/trtllm:ngc"]["commands"]
    assert pull["argv"] == ["docker", "pull", "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"]


def test_render_mixtral_repository_for_two_gpus(tmp_path):
    """The repository a user would deploy, from the engine's declared settings, nothing built."""
    from google.protobuf import text_format

    from llmbuild.triton.build import ModelConfig

    out = tmp_path / "review"
    subprocess.run([sys.executable, "-m", "llmbuild", "render", "models/mixtral-8x7b:serve", "--out", str(out),
                    "--lane", "gpu"], cwd=REPO, capture_output=True, text=True, check=True)
    configs = {m: text_format.Parse((out / m / "config.pbtxt").read_text(), ModelConfig())
               for m in ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")}
    llm = configs["tensorrt_llm"]
    assert llm.backend == "tensorrtllm"
    assert llm.parameters["gpt_model_path"].string_value == "/models/tensorrt_llm/1/engine"
    assert llm.parameters["kv_cache_free_gpu_mem_fraction"].string_value == "0.9"
    assert all(c.max_batch_size == 128 for c in configs.values())
    assert not (out / "tensorrt_llm" / "1" / "engine").exists()  # nothing was built or copied
    refused = subprocess.run([sys.executable, "-m", "llmbuild", "render", "models/mixtral-8x7b:serve", "--out",
                              str(tmp_path / "cpu")], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "--lane gpu" in refused.stderr
