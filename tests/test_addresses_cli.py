"""Addresses as a Pants user types them, for `llmbuild` and `doit`, from the workspace root and
from a model directory: relative specs, `//`, `tag:<name>`, did-you-mean, `--lane`, `--version`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

import llmbuild
from conftest import MODEL_TOML, TINY_HF, Workspace
from llmbuild.core.addresses import Spec, parse_spec
from llmbuild.core.errors import LLMBuildError

#: models/a: checkpoint (tagged fp8) and engine; models/a/sub: an engine on a's checkpoint;
#: models/b: checkpoint and engine (the engine tagged fp8).
SUB_TOML = """\
[engine.small]
checkpoint = "//models/a:checkpoint"
max_batch_size = 2
max_input_len = 32
max_seq_len = 48
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("addresses")
    workspace = Workspace(root / "ws", root / "cache")
    workspace.add_model("a", TINY_HF, MODEL_TOML.replace('source = "hf"\n', 'source = "hf"\ntags = ["fp8"]\n'))
    workspace.write("models/a/sub/BUILD.toml", SUB_TOML)
    workspace.add_model("b", TINY_HF, MODEL_TOML + 'tags = ["fp8", "nightly"]\n')
    return workspace


def run(ws, tool: str, *args: str, cwd: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ws.root / cwd, capture_output=True,
                          text=True, env=env or ws.env(), timeout=600)


def planned(ws, *specs: str, cwd: str = "") -> list[str]:
    proc = run(ws, "llmbuild", "plan", "--json", *specs, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return [entry["address"] for entry in json.loads(proc.stdout)]


def doit_run(ws, *args: str, cwd: str = "", env: dict | None = None) -> list[str]:
    """The addresses `doit ARGS` (from `cwd`) brought up to date, as dist/run.json records them."""
    proc = run(ws, "doit", *args, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return sorted(r["address"] for r in json.loads((ws.root / "dist/run.json").read_text())["targets"])


@pytest.mark.parametrize("text, cwd, spec", [
    (":engine", "models/a", Spec("models/a", "engine")),
    (".", "models/a", Spec("models/a")),
    (":", "models/a", Spec("models/a")),
    ("::", "models/a", Spec("models/a", recursive=True)),
    ("./sub::", "models/a", Spec("models/a/sub", recursive=True)),
    ("sub:small", "models/a", Spec("models/a/sub", "small")),
    ("../b:engine", "models/a", Spec("models/b", "engine")),
    ("//models/b:engine", "models/a", Spec("models/b", "engine")),
    ("models/b:engine", "models/a", Spec("models/a/models/b", "engine")),  # relative, as in Pants
    ("models/b:engine", "", Spec("models/b", "engine")),
    ("models/b/", "", Spec("models/b")),
    ("//", "models/a", Spec("")),
    ("tag:fp8", "models/a", Spec("", tag="fp8")),
])
def test_parse_spec_relative_to_cwd(text, cwd, spec):
    assert parse_spec(text, cwd) == spec


@pytest.mark.parametrize("text, message", [
    ("../../..", "'../../..' is outside the workspace"),
    ("/models/a", "'/models/a': write a path relative to the current directory, or from the workspace root as //dir"),
    ("tag:", "'tag:': name a tag, e.g. tag:fp8"),
])
def test_parse_spec_errors(text, message):
    with pytest.raises(LLMBuildError) as err:
        parse_spec(text, "models/a")
    assert str(err.value) == message


def test_llmbuild_specs_from_the_root_and_from_a_model_directory(ws):
    assert planned(ws, "models/a:engine") == ["models/a:engine"]
    assert planned(ws, "//models/a:engine") == ["models/a:engine"]
    assert planned(ws, "models/a") == ["models/a:checkpoint", "models/a:engine"]
    assert planned(ws, "models/a::") == ["models/a:checkpoint", "models/a:engine", "models/a/sub:small"]
    assert planned(ws, "tag:fp8") == ["models/a:checkpoint", "models/b:engine"]
    assert len(planned(ws)) == 5

    here = "models/a"
    assert planned(ws, ":engine", cwd=here) == ["models/a:engine"]
    assert planned(ws, ".", cwd=here) == ["models/a:checkpoint", "models/a:engine"]
    assert planned(ws, "./sub::", cwd=here) == ["models/a/sub:small"]
    assert planned(ws, "sub:small", cwd=here) == ["models/a/sub:small"]
    assert planned(ws, "//models/b:engine", "../b:checkpoint", cwd=here) == ["models/b:engine", "models/b:checkpoint"]
    assert planned(ws, "tag:nightly", cwd=here) == ["models/b:engine"]
    assert planned(ws, cwd=here) == ["models/a:checkpoint", "models/a:engine", "models/a/sub:small"]
    assert planned(ws, cwd="models/a/sub") == ["models/a/sub:small"]
    started_in_b = run(ws, "llmbuild", "-C", "models/b", "plan", ":engine")  # -C: as if started there
    assert started_in_b.stdout.startswith("models/b:engine  (engine, cpu lane")

    explained = run(ws, "llmbuild", "explain", ":engine", cwd=here)
    assert explained.returncode == 0 and explained.stdout.startswith("models/a:engine: would build")


@pytest.mark.parametrize("tool, args, cwd, expected", [
    ("llmbuild", ["explain", "models/a:engin"], "",
     "llmbuild: error: no target matches 'models/a:engin' (did you mean 'models/a:engine'?)"),
    ("llmbuild", ["plan", "models/bb"], "", "llmbuild: error: no target matches 'models/bb' (did you mean 'models/b'?)"),
    ("llmbuild", ["graph", ":engin"], "models/a",
     "llmbuild: error: no target matches ':engin' from models/a (did you mean ':engine'?)"),
    ("llmbuild", ["plan", "models/b:engine"], "models/a",
     "llmbuild: error: no target matches 'models/b:engine' from models/a (did you mean '//models/b:engine'?)"),
    ("llmbuild", ["plan", "tag:fp9"], "", "llmbuild: error: no target matches 'tag:fp9' (did you mean 'tag:fp8'?)"),
    ("doit", ["models/bb"], "", "ERROR: no target matches 'models/bb' (did you mean 'models/b'?)"),
    ("doit", ["info", "models/a:engin"], "", "ERROR: no target matches 'models/a:engin' (did you mean 'models/a:engine'?)"),
    ("doit", ["-k", "sub:smal"], "models/a",
     "ERROR: no target matches 'sub:smal' from models/a (did you mean 'sub:small'?)"),
    ("doit", ["-k", "tag:nigthly"], "models/a", "ERROR: no target matches 'tag:nigthly' (did you mean 'tag:nightly'?)"),
    ("doit", ["-k", "nosuch:thing"], "models/a", "ERROR: no target matches 'nosuch:thing' from models/a"),
])
def test_did_you_mean_for_addresses(ws, tool, args, cwd, expected):
    proc = run(ws, tool, *args, cwd=cwd)
    assert proc.returncode != 0
    assert proc.stderr.strip() == expected
    assert proc.stdout == ""


def test_doit_from_a_model_directory_and_by_tag(ws):
    # doit -k: the dodo.py is found above; the default is every target at or below here
    assert doit_run(ws, "-k", ":checkpoint", cwd="models/a") == ["models/a:checkpoint"]
    assert doit_run(ws, "-k", cwd="models/a/sub") == ["models/a/sub:small", "models/a:checkpoint"]
    assert doit_run(ws, "-k", "//models/b:checkpoint", cwd="models/a") == ["models/b:checkpoint"]
    # DOIT_SEEK_FILE (doit's own variable for -k) makes a plain `doit` work anywhere in the workspace
    assert doit_run(ws, ":engine", cwd="models/a", env=ws.env(DOIT_SEEK_FILE="1")) == [
        "models/a:checkpoint", "models/a:engine"]
    # tag:<name>: the tagged targets and what they need, nothing else
    assert doit_run(ws, "tag:fp8") == ["models/a:checkpoint", "models/b:checkpoint", "models/b:engine"]
    assert doit_run(ws, "-k", "tag:nightly", cwd="models/a") == ["models/b:checkpoint", "models/b:engine"]
    listed = run(ws, "doit", "list").stdout
    assert re.search(r"^tag:fp8 +every target tagged fp8$", listed, re.M)
    # from the root, the workspace-relative forms are unchanged
    assert doit_run(ws, "models/a:engine", "//models/a/sub:small") == [
        "models/a/sub:small", "models/a:checkpoint", "models/a:engine"]
    info = run(ws, "doit", "-k", "info", ":engine", cwd="models/a")
    assert info.returncode == 0 and "models/a:engine" in info.stdout and "up-to-date" in info.stdout


@pytest.mark.parametrize("command, shown", [
    (["plan"], "(engine, gpu lane"),
    (["explain", ":checkpoint"], "toolchain lane: cpu -> gpu"),  # against the CPU lane's build
    (["graph"], "llmbuild targets (gpu lane)"),
])
def test_lane_option_everywhere_it_matters(ws, command, shown):
    doit_run(ws, "models/a:checkpoint")
    proc = run(ws, "llmbuild", command[0], "--lane", "gpu", *command[1:], cwd="models/a")
    assert proc.returncode == 0, proc.stderr
    assert shown in proc.stdout


def test_version(ws):
    proc = run(ws, "llmbuild", "--version", cwd="models/a")
    assert proc.returncode == 0
    assert re.fullmatch(rf"llmbuild {re.escape(llmbuild.__version__)} \(doit \d+\.\d+\.\d+, Python 3\.\d+\.\d+\)\n",
                        proc.stdout)
