"""The GPU lane's TensorRT-LLM toolchain on a host, run for real with recording stand-ins.

TensorRT-LLM cannot run here, so `convert_checkpoint.py` (under a fake `trtllm_root`) and
`trtllm-build` (on PATH) are one small program that records its argv and environment and
writes the layout the real tool writes. Everything around them is llmbuild's real path:
the toolchain picks the programs, the local executor runs them, the cache commits.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_HF

RECORDER = textwrap.dedent('''\
    #!{python}
    """Stand-in for a TensorRT-LLM program (records argv; writes the expected layout)."""
    import json, os, sys
    from pathlib import Path
    argv = sys.argv
    with open({record!r}, "a") as log:
        log.write(json.dumps({{"argv": argv, "hf_token": os.environ.get("HF_TOKEN"),
                              "version": os.environ.get("LLMBUILD_TRTLLM_VERSION"),
                              "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
    out = Path(argv[argv.index("--output_dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    if Path(argv[0]).name == "trtllm-build":
        (out / "config.json").write_text(json.dumps({{"recorded": True}}))
        (out / "rank0.engine").write_bytes(b"not an engine: recorded by a test stand-in")
    else:
        (out / "config.json").write_text(json.dumps({{"architecture": "LlamaForCausalLM", "dtype": "float16"}}))
        (out / "rank0.safetensors").write_bytes(b"recorded")
    ''')


def host_workspace(ws, tmp_path: Path, program: str, settings: str = "", **env: str):
    """Make `ws` a GPU-lane workspace whose host 'has TensorRT-LLM': `program` (a script) stands in
    for convert_checkpoint.py (under a fake `trtllm_root`) and trtllm-build (on PATH). Returns the
    environment to run it with and the converter's path."""
    root = tmp_path / "trtllm"
    bin_dir = tmp_path / "bin"
    converter = root / "examples" / "llama" / "convert_checkpoint.py"
    for path in (converter, bin_dir / "trtllm-build"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(program)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    ws.write_pyproject(extra=f'gpus = 2\n{settings}\n[tool.llmbuild.host]\npython = "{sys.executable}"\n'
                             f'trtllm_root = "{root}"\n')
    text = (ws.root / "pyproject.toml").read_text().replace('lane = "cpu"\n', 'lane = "gpu"\n', 1)
    (ws.root / "pyproject.toml").write_text(text)
    environment = ws.env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env)
    environment.pop("CUDA_VISIBLE_DEVICES", None)  # what a step sees comes from its GPU slots only
    return environment, converter


@pytest.fixture
def gpu_host(make_workspace, tmp_path):
    """A GPU-lane workspace whose host 'has TensorRT-LLM': recording stand-ins for its programs."""
    ws = make_workspace()
    record = tmp_path / "record.jsonl"
    env, converter = host_workspace(ws, tmp_path, RECORDER.format(python=sys.executable, record=str(record)),
                                    HF_TOKEN="hf_secret_marker_123")
    ws.add_model("m", TINY_HF)
    return ws, env, record, converter


def test_host_toolchain_runs_the_real_programs_with_the_planned_argv(gpu_host):
    ws, env, record, converter = gpu_host
    run = ws.doit("models/m:engine", env=env)
    assert run.outcomes == {"models/m:checkpoint": "built", "models/m:engine": "built"}
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [Path(c["argv"][0]).name for c in calls] == ["convert_checkpoint.py", "trtllm-build"]
    convert, build = calls
    assert convert["argv"][0] == str(converter)  # `python <trtllm_root>/examples/llama/convert_checkpoint.py`
    assert convert["argv"][1:3] == ["--model_dir", str((ws.root / "models/m/hf").resolve())]
    assert build["argv"][1] == "--checkpoint_dir"
    assert {"--max_batch_size", "--max_input_len", "--max_seq_len"} <= set(build["argv"])
    # What `llmbuild plan` shows is what ran (paths aside: the plan shows dist/, the build the cache).
    plan = json.loads(ws.llmbuild("plan", "--json", "models/m:engine").stdout)[0]["steps"][0]
    assert [a for a in plan["argv"] if a.startswith("--")] == [a for a in build["argv"] if a.startswith("--")]
    # The tools get the secret from the environment; it is in no key, manifest or run.json.
    assert {c["hf_token"] for c in calls} == {"hf_secret_marker_123"}
    assert {c["version"] for c in calls} == {"0.16.0"}
    # The engine build holds one GPU of the host's two and sees exactly it; the conversion holds none.
    assert [c["devices"] for c in calls] == [None, "0"]
    assert [(r["address"], r["gpus"]) for r in run.records] == [("models/m:checkpoint", []),
                                                                ("models/m:engine", [0])]
    for path in [ws.root / "dist/run.json", *ws.cache.rglob("manifest.json")]:
        assert "hf_secret_marker_123" not in path.read_text()
    # The engine is committed where dist points, and a second run runs nothing.
    assert json.loads((ws.root / "dist/models/m/engine/config.json").read_text()) == {"recorded": True}
    again = ws.doit("models/m:engine", env=env)
    assert set(again.outcomes.values()) == {"up-to-date"}
    assert len(record.read_text().splitlines()) == 2


def test_a_failing_host_tool_fails_its_target_and_keeps_its_log(gpu_host):
    ws, env, record, converter = gpu_host
    converter.write_text(f"#!{sys.executable}\nimport sys\nprint('converter exploded')\nsys.exit(3)\n")
    run = ws.doit("models/m:engine", env=env, check=False)
    assert run.returncode != 0
    assert run.outcomes["models/m:checkpoint"] == "failed"
    message = run.stdout + run.stderr
    assert "exited with status 3" in message and "converter exploded" in message
