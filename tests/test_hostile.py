"""Hostile and broken input (tests/hostile/): every case is refused at load time with one line
naming file, target and key; `doit` and `llmbuild plan` exit non-zero, nothing is built or
linked, and a cache that already holds built entries is left byte for byte as it was.

Each case is a directory: the bad file(s) laid over a small valid workspace at the same relative
paths, and case.toml with what the error must say ([expect]) and what the files cannot express
([setup]: symlinks, a FIFO, a directory, an unreadable file, a giant value, environment). The
[inert] cases hold shell metacharacters in values that are allowed: `llmbuild plan --json` shows
each as one literal argv element, and no shell ever runs them (a marker file a shell would
create never appears).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Annotated

import pytest
from conftest import MODEL_TOML, REPO, TINY_HF, TOOLCHAINS

from llmbuild.core import buildfiles
from llmbuild.core.errors import LLMBuildError
from llmbuild.core.graph import resolve_references, topological_order
from llmbuild.core.target import Kind, Ref, TargetFields

CORPUS = Path(__file__).resolve().parent / "hostile"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.toml").is_file())
SETTINGS = '[tool.llmbuild]\nbuild_roots = ["models"]\nlane = "cpu"\n'


def spec(case: str) -> dict:
    return tomllib.loads((CORPUS / case / "case.toml").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A small CPU-lane workspace (checkpoint + engine of the tiny Llama) with its cache built."""
    root = tmp_path_factory.mktemp("hostile") / "template"
    (root / "models" / "m").mkdir(parents=True)
    shutil.copytree(TINY_HF, root / "models" / "m" / "hf")
    (root / "models" / "m" / "BUILD.toml").write_text(MODEL_TOML)
    (root / "pyproject.toml").write_text(SETTINGS)
    (root / "dodo.py").write_text((REPO / "dodo.py").read_text())
    proc = subprocess.run([sys.executable, "-m", "doit"], cwd=root, env=environment(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((root / "cache" / "entries").glob("*/*"))) == 2
    shutil.rmtree(root / "dist")
    return root


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBUILD_")}
    return {**env, "LLMBUILD_TOOLCHAINS_DIR": str(TOOLCHAINS), **extra}


def tree_digest(root: Path) -> dict[str, str]:
    """Every path below root with its type and content (symlinks by target), for before/after."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def lay_out(case: str, built: Path, tmp_path: Path) -> tuple[Path, dict, dict[str, str]]:
    """The template workspace (and its built cache) with the case's files laid over it."""
    ws = tmp_path / "ws"
    shutil.copytree(built, ws, symlinks=True)
    marker = tmp_path / "pwned"
    case_dir = CORPUS / case
    setup = spec(case).get("setup", {})
    words = {b"@MARKER@": str(marker).encode(), b"@WS@": str(ws).encode(),
             b"@BIG@": b"x" * setup.get("big", 0)}
    for path in sorted(case_dir.rglob("*")):
        if path.is_file() and path.name != "case.toml":
            data = path.read_bytes()
            for word, value in words.items():
                data = data.replace(word, value)
            target = ws / path.relative_to(case_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    for rel, points_to in setup.get("symlinks", {}).items():
        (ws / rel).unlink(missing_ok=True)
        (ws / rel).symlink_to(points_to)
    for rel in setup.get("directory", []):
        (ws / rel).unlink()
        (ws / rel / "targets").mkdir(parents=True)
    for rel in setup.get("fifo", []):
        (ws / rel).unlink()
        os.mkfifo(ws / rel)
    for rel in setup.get("unreadable", []):
        if os.geteuid() == 0:  # root reads a chmod 000 file: a symlink loop cannot be read by anyone
            (ws / rel).unlink()
            (ws / rel).symlink_to((ws / rel).name)
        else:
            (ws / rel).chmod(0)
    env = {k: v.replace("@MARKER@", str(marker)) for k, v in setup.get("env", {}).items()}
    return ws, words, environment(**env)


def run(ws: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def run_both(ws: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """`doit` and `llmbuild plan --json` side by side (both stop at load time; halves the wait)."""
    argvs = ([sys.executable, "-m", "doit"], [sys.executable, "-m", "llmbuild", "plan", "--json"])
    procs = [subprocess.Popen(argv, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    done = []
    for argv, proc in zip(argvs, procs):
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done[0], done[1]


def expected_line(expect: dict) -> tuple[str, str]:
    """(the location prefix 'file: target: key: ', the message fragment)."""
    where = [expect[part] for part in ("file", "target", "key") if part in expect]
    return "".join(f"{part}: " for part in where), expect["message"]


def assert_refused(proc: subprocess.CompletedProcess, lead: str, expect: dict) -> None:
    """Non-zero, no traceback, and stderr is exactly one line: lead + location + message."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Traceback" not in output and "Error:" not in output.replace("ERROR:", ""), output
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stdout == "", output
    prefix, message = expected_line(expect)
    assert lines[0].startswith(lead + prefix), f"expected {lead + prefix!r} at the start of:\n{lines[0]}"
    assert message in lines[0][len(lead + prefix):], f"{message!r} not in:\n{lines[0]}"
    assert len(lines[0]) < 1000, f"the line echoes a huge value ({len(lines[0])} characters)"


@pytest.mark.parametrize("case", [c for c in CASES if "expect" in spec(c)])
def test_hostile_input_is_refused_at_load(case, built, tmp_path):
    ws, words, env = lay_out(case, built, tmp_path)
    expect = {k: v.replace("@WS@", str(ws)) for k, v in spec(case)["expect"].items()}
    cache_before = tree_digest(ws / "cache")

    doit, plan = run_both(ws, env)
    if spec(case).get("setup", {}).get("doit_reads_it_first"):
        # doit parses pyproject.toml for [tool.doit] before it loads dodo.py: its own parser's
        # traceback comes first, out of llmbuild's reach (still nothing runs)
        assert doit.returncode != 0 and "load_config_toml" in doit.stderr, doit.stderr
    else:
        assert_refused(doit, "ERROR: ", expect)
    assert_refused(plan, "llmbuild: error: ", expect)

    assert tree_digest(ws / "cache") == cache_before, "the cache changed"
    dist = ws / "dist"
    assert not dist.exists() or {p.name for p in dist.iterdir()} <= {".doit.sqlite3"}, "something was linked"
    assert not Path(words[b"@MARKER@"].decode()).exists()


@pytest.mark.parametrize("case", [c for c in CASES if "inert" in spec(c)])
def test_shell_metacharacters_stay_one_argv_element(case, built, tmp_path):
    ws, words, env = lay_out(case, built, tmp_path)
    inert = spec(case)["inert"]
    literal = inert["argv"].replace("@MARKER@", words[b"@MARKER@"].decode()).replace("@WS@", str(ws))
    lane = inert.get("lane", "cpu")
    plan = run(ws, env, "-m", "llmbuild", "plan", "--json", "--lane", lane)
    assert plan.returncode == 0, plan.stderr
    argvs = [step["argv"] for target in json.loads(plan.stdout) for step in target["steps"]]
    assert any(literal in argv for argv in argvs), f"{literal!r} is not one element of {argvs}"
    assert not any(literal in element and literal != element for argv in argvs for element in argv)

    cache_before = tree_digest(ws / "cache" / "entries")
    doit = run(ws, environment(**{**env, "LLMBUILD_LANE": lane}), "-m", "doit")
    assert "Traceback" not in doit.stdout + doit.stderr, doit.stdout + doit.stderr
    if "doit" in inert:
        assert inert["doit"].replace("@WS@", str(ws)) in doit.stderr, doit.stderr
    assert not Path(words[b"@MARKER@"].decode()).exists(), "a shell ran a field's value"
    if doit.returncode != 0:
        assert tree_digest(ws / "cache" / "entries").items() >= cache_before.items()


def test_the_corpus_is_big_enough():
    refused = [c for c in CASES if "expect" in spec(c)]
    assert len(refused) >= 50, len(refused)


# -- every string field ------------------------------------------------------------------------

#: What a shell would run: ';', '$(...)', backticks, a pipe, '&' and a newline.
PAYLOAD = "x; touch PWNED $(touch PWNED) `touch PWNED` | cat & rm -rf /\ntouch PWNED"
#: The smallest valid target of each kind (a container built from a Dockerfile takes the
#: fields that only apply then).
MINIMAL = {"checkpoint": {"source": "hf"}, "engine": {"checkpoint": ":c"}, "repository": {"engine": ":e"},
           "smoke": {"repository": ":r", "prompt": "hi"}, "container": {"dockerfile": "Dockerfile"}}
NAMES = {"checkpoint": "c", "engine": "e", "repository": "r", "smoke": "s", "container": "img"}


def _string_fields(model, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted field, the TOML value that puts PAYLOAD there) for every field a string reaches:
    str, Literal strings, lists and dicts of them, inside nested tables and lists of tables."""
    import types
    import typing

    from pydantic import BaseModel

    def options(annotation) -> list:
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            return [o for arg in typing.get_args(annotation) for o in options(arg)]
        if typing.get_origin(annotation) is typing.Annotated:
            return options(typing.get_args(annotation)[0])
        return [annotation]

    found = []
    for name, info in model.model_fields.items():
        for option in options(info.annotation):
            origin, args = typing.get_origin(option), typing.get_args(option)
            if option is str or (origin is typing.Literal and all(isinstance(a, str) for a in args)):
                found.append((prefix + name, PAYLOAD))
            elif origin is list and args[0] is str:
                found.append((prefix + name, [PAYLOAD]))
            elif origin is dict and str in options(args[1]):
                found.append((prefix + name, {"A": PAYLOAD}))
                found.append((prefix + name + ".<key>", {PAYLOAD: "1"}))
            elif isinstance(option, type) and issubclass(option, BaseModel):
                found.extend((f"{prefix}{name}.{inner}", value)
                              for inner, value in _string_fields(option))
            elif origin is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
                found.extend((f"{prefix}{name}.0.{inner}", value)
                              for inner, value in _string_fields(args[0]))
    return found


def _nest(dotted: str, value, kind: str) -> dict:
    """The target's table with `value` at `dotted` (`requests.0.prompt`, `lora.dirs`)."""
    parts = dotted.removesuffix(".<key>").split(".")
    table = dict(MINIMAL[kind])
    if parts[0] == "image":
        table.pop("dockerfile")
    required = {"quantization": {"qformat": "fp8"}, "requests": {"prompt": "hi"}}
    inner = required.get(parts[0], {})
    if len(parts) == 1:
        table[parts[0]] = value
    elif parts[1] == "0":
        table[parts[0]] = [{**inner, parts[2]: value}]
    else:
        table[parts[0]] = {**inner, parts[1]: value}
    return table


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def _every_string_field() -> list[tuple[str, str]]:
    from llmbuild.plugins import load_kinds

    return [(kind, field) for kind, k in sorted(load_kinds().items())
            for field in sorted(dict(_string_fields(k.Fields)))]


@pytest.mark.parametrize("kind, field", _every_string_field())
def test_shell_metacharacters_in_every_string_field(kind, field, tmp_path):
    """Refused with one line naming the field, or kept whole: no argv element holds part of it."""
    from llmbuild.introspect.plan import plan_document
    from llmbuild.plugins import load_kinds, load_workspace

    table = _nest(field, dict(_string_fields(load_kinds()[kind].Fields))[field], kind)
    tables = {k: (table if k == kind else MINIMAL[k]) for k in MINIMAL}
    (tmp_path / "models" / "m").mkdir(parents=True)
    shutil.copytree(TINY_HF, tmp_path / "models" / "m" / "hf")
    (tmp_path / "models" / "m" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "pyproject.toml").write_text(SETTINGS)
    (tmp_path / "models" / "m" / "BUILD.toml").write_text("".join(
        f"[{k}.{NAMES[k]}]\n" + "".join(f"{key} = {_toml(v)}\n" for key, v in t.items()) + "\n"
        for k, t in tables.items()))
    environ = {"LLMBUILD_TOOLCHAINS_DIR": str(TOOLCHAINS)}

    def lane(name: str):
        return load_workspace(tmp_path, {**environ, "LLMBUILD_LANE": name}, verify_sources=False)

    try:
        ws = lane("cpu")
        argvs = [step.get("docker_run") or step["argv"]
                 for lane_name in ("cpu", "gpu") for target in plan_document(lane(lane_name), [], lane)
                 for step in target["steps"]]
    except LLMBuildError as err:
        top = field.split(".")[0]
        assert "\n" not in str(err) and "Traceback" not in str(err), str(err)
        assert err.target == f"[{kind}.{NAMES[kind]}]" and (err.key or "").split(".")[0] == top, str(err)
        return
    assert ws.targets, "the workspace loaded no targets"
    pieces = [element for argv in argvs for element in argv if "PWNED" in element]
    assert all(PAYLOAD in element for element in pieces), pieces


# -- cycles ------------------------------------------------------------------------------------
# llmbuild's own references are typed (an engine takes a checkpoint), so a cycle among them is a
# wrong-kind reference first (tests/hostile/cycle-*). A kind that refers to its own kind can close
# one: the loader names the first target and the field that closes it.

class _LoopFields(TargetFields):
    after: Annotated[str | None, Ref("loop")] = None


class _Loop(Kind):
    name = "loop"
    Fields = _LoopFields


@pytest.mark.parametrize("length", [1, 2, 3])
def test_a_dependency_cycle_names_file_target_and_field(length, tmp_path):
    names = [f"t{i}" for i in range(length)]
    path = tmp_path / "m" / "BUILD.toml"
    path.parent.mkdir()
    path.write_text("".join(f'[loop.{name}]\nafter = ":{names[(i + 1) % length]}"\n' for i, name in enumerate(names)))
    kinds = {"loop": _Loop()}  # not registered: other tests never see it
    targets = buildfiles.build_targets([buildfiles.parse(path, tmp_path, kinds)], kinds)
    resolve_references(targets)
    with pytest.raises(LLMBuildError) as caught:
        topological_order(targets)
    cycle = " -> ".join(f"m:{name}" for name in [*names, names[0]])
    assert str(caught.value) == f"m/BUILD.toml: [loop.t0]: after: dependency cycle: {cycle}"
