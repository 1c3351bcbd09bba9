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
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import MODEL_TOML, REPO, TINY_HF, TOOLCHAINS

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
                          capture_output=True, text=True, timeout=600)
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
                          timeout=120)


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

    doit = run(ws, env, "-m", "doit")
    if spec(case)["setup"].get("doit_reads_it_first") if "setup" in spec(case) else False:
        # doit parses pyproject.toml for [tool.doit] before it loads dodo.py: its own parser's
        # traceback comes first, out of llmbuild's reach (still nothing runs)
        assert doit.returncode != 0 and "pyproject.toml" in doit.stderr + doit.stdout or "toml" in doit.stderr
    else:
        assert_refused(doit, "ERROR: ", expect)
    assert_refused(run(ws, env, "-m", "llmbuild", "plan", "--json"), "llmbuild: error: ", expect)

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
