"""Synthetic monorepos for benchmarks/run.py: one tree of N models, three build tools over it.

Every model is the same tiny Llama (models/tiny-llama/hf) plus identical padding files up to
`source_bytes`, with checkpoint, engine, repository and smoke targets. Identical models have
identical action keys (keys depend on neither paths nor target names), so bringing the
workspace up to date builds one pipeline and restores the rest.

Beside llmbuild's own files the same root holds the two peers, over the same source files:

  * plain.py: a hand-written plain-doit dodo of the same graph, `doit -f plain.py`: one task
    per target, `file_dep` on the model's source files or the upstream target's output,
    `config_changed` on the target's BUILD.toml table, `targets`, doit's sqlite3 backend;
  * dvc.yaml: one DVC stage per target, deps = the source directory or the upstream stage's
    out, params = the target's BUILD.toml table, outs; its cmd a trivial copy.

The peers' "build" is a copy of a small file: their no-op cost is pure bookkeeping.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HF = REPO / "models" / "tiny-llama" / "hf"
KINDS = ("checkpoint", "engine", "repository", "smoke")
#: Each model's directory below the workspace root.
MODELS = "models"
PLAIN_OUT = "plain-out"
DVC_OUT = "dvc-out"

BUILD_TOML = """\
[checkpoint.checkpoint]
source = "hf"
dtype = "float16"

[engine.engine]
checkpoint = ":checkpoint"
max_batch_size = 8
max_input_len = 96
max_seq_len = 128
max_num_tokens = 1024

[repository.repository]
engine = ":engine"
max_queue_delay_microseconds = 0

[smoke.smoke]
repository = ":repository"
prompt = "What is machine learning?"
max_tokens = 20
"""

PLAIN_DODO = '''\
"""Plain doit, the usual hand-written way: the same four targets per model as llmbuild."""
import os
import tomllib

from doit.tools import config_changed

DOIT_CONFIG = {"backend": "sqlite3", "dep_file": ".plain-doit.sqlite3", "verbosity": 0}
UPSTREAM = {"engine": "checkpoint", "repository": "engine", "smoke": "repository"}


def copy(source, target):
    """The stand-in build step: a trivial copy."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())


def task_model():
    for name in sorted(os.listdir("models")):
        model = "models/" + name
        with open(model + "/BUILD.toml", "rb") as handle:
            build = tomllib.load(handle)
        sources = sorted(os.path.join(d, f) for d, _, files in os.walk(model + "/hf") for f in files)
        for kind in ("checkpoint", "engine", "repository", "smoke"):
            upstream = UPSTREAM.get(kind)
            deps = ["plain-out/%s/%s" % (name, upstream)] if upstream else sources
            target = "plain-out/%s/%s" % (name, kind)
            yield {"name": "%s:%s" % (model, kind), "file_dep": deps, "targets": [target],
                   "uptodate": [config_changed(build[kind][kind])], "actions": [(copy, [deps[0], target])]}
'''


def make(root: Path, models: int, source_bytes: int, pad_file_bytes: int) -> int:
    """Write the workspace (llmbuild, plain doit and DVC files) of `models` models under `root`,
    with its own llmbuild cache beside it (<root>-cache). Returns the number of source files per model."""
    root.mkdir(parents=True)
    (root / "dodo.py").write_text((REPO / "dodo.py").read_text())
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [tool.llmbuild]
        build_roots = ["{MODELS}"]
        cache = "{root.parent / (root.name + '-cache')}"
        lane = "cpu"
        """))
    (root / "plain.py").write_text(PLAIN_DODO)
    pad = padding(source_bytes - sum(p.stat().st_size for p in HF.iterdir()), pad_file_bytes)
    stages = []
    for i in range(models):
        name = model_name(i)
        model = root / MODELS / name
        shutil.copytree(HF, model / "hf")
        for j, chunk in enumerate(pad):
            (model / "hf" / "assets").mkdir(exist_ok=True)
            (model / "hf" / "assets" / f"pad-{j:03d}.dat").write_bytes(chunk)
        (model / "BUILD.toml").write_text(BUILD_TOML)
        (root / DVC_OUT / name).mkdir(parents=True)
        stages.append(dvc_stages(name))
    (root / "dvc.yaml").write_text("stages:\n" + "".join(stages))
    # What a DVC user would ignore: the other tools' state (DVC walks the tree for dvc.yaml files).
    (root / ".dvcignore").write_text("/dist\n/plain-out\n/.plain-doit.sqlite3\n")
    return sum(1 for p in (root / MODELS / model_name(0) / "hf").rglob("*") if p.is_file())


def model_name(i: int) -> str:
    return f"m{i:05d}"


def padding(total: int, file_bytes: int) -> list[bytes]:
    """Identical pseudo-random bytes in every model (same content, same keys), in files of file_bytes."""
    rng = random.Random(0)
    data = rng.randbytes(max(total, 0))
    return [data[i:i + file_bytes] for i in range(0, len(data), file_bytes)]


def dvc_stages(name: str) -> str:
    """One model's four stages; each copies a small file, like the plain dodo's actions."""
    out = f"{DVC_OUT}/{name}"
    lines = []
    upstream = None
    for kind in KINDS:
        dep = f"{out}/{upstream}" if upstream else f"{MODELS}/{name}/hf"
        source = f"{MODELS}/{name}/hf/config.json" if upstream is None else dep
        lines.append(f"  {name}-{kind}:\n"
                     f"    cmd: cp {source} {out}/{kind}\n"
                     f"    deps: [{dep}]\n"
                     f"    params:\n      - {MODELS}/{name}/BUILD.toml: [{kind}.{kind}]\n"
                     f"    outs: [{out}/{kind}]\n")
        upstream = kind
    return "".join(lines)


def touch_sources(root: Path) -> int:
    """A fresh clone: every file under models/ gets a new mtime, its bytes stay. Returns the count."""
    later = os.stat(root).st_mtime + 3600
    count = 0
    for directory, _, files in os.walk(root / MODELS):
        for name in files:
            os.utime(Path(directory) / name, (later, later))
            count += 1
    return count


#: The GPU lane's stand-in for trtllm-build and convert_checkpoint.py: records when it ran
#: and with which CUDA_VISIBLE_DEVICES, sleeps (trtllm-build only), writes the layout.
STAND_IN = '''\
#!{python}
"""Stand-in for a TensorRT-LLM program: a build step of fixed duration (benchmarks/run.py)."""
import json, os, sys, time
from pathlib import Path
started = time.time()
argv = sys.argv
out = Path(argv[argv.index("--output_dir") + 1])
out.mkdir(parents=True, exist_ok=True)
if Path(argv[0]).name == "trtllm-build":
    time.sleep({seconds})
    (out / "config.json").write_text(json.dumps({{"stand_in": True}}))
    (out / "rank0.engine").write_bytes(b"not an engine: a benchmark stand-in")
else:
    (out / "config.json").write_text(json.dumps({{"architecture": "LlamaForCausalLM", "dtype": "float16"}}))
    (out / "rank0.safetensors").write_bytes(b"stand-in")
with open({record!r}, "a") as log:
    log.write(json.dumps({{"tool": Path(argv[0]).name, "started": started, "ended": time.time(),
                          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
'''


def make_gpu_host(root: Path, builds: int, gpus_per_build: int, seconds: float) -> tuple[Path, Path]:
    """A GPU-lane workspace of `builds` checkpoint + engine pairs on a host whose TensorRT-LLM
    programs are stand-ins (trtllm-build sleeps `seconds`). Engines differ (max_batch_size),
    so each is its own build; checkpoints are identical. Returns (bin dir for PATH, record)."""
    root.mkdir(parents=True)
    trtllm, bin_dir, record = root / "trtllm", root / "bin", root / "record.jsonl"
    for program in (trtllm / "examples" / "llama" / "convert_checkpoint.py", bin_dir / "trtllm-build"):
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text(STAND_IN.format(python=sys.executable, record=str(record), seconds=seconds))
        program.chmod(program.stat().st_mode | stat.S_IEXEC)
    (root / "dodo.py").write_text((REPO / "dodo.py").read_text())
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [tool.llmbuild]
        build_roots = ["{MODELS}"]
        cache = "{root / 'cache'}"
        lane = "gpu"
        [tool.llmbuild.host]
        python = "{sys.executable}"
        trtllm_root = "{trtllm}"
        """))
    for i in range(builds):
        model = root / MODELS / model_name(i)
        shutil.copytree(HF, model / "hf")
        (model / "BUILD.toml").write_text(textwrap.dedent(f"""\
            [checkpoint.checkpoint]
            source = "hf"
            tp_size = {gpus_per_build}

            [engine.engine]
            checkpoint = ":checkpoint"
            max_batch_size = {i + 1}
            """))
    return bin_dir, record
