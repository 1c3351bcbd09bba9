"""docs/recipes.md stays true: every recipe's files, written into a scratch workspace, load and
plan on both lanes, and the commands the text promises are in the plan."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, TINY_HF, Workspace

RECIPES = REPO / "docs" / "recipes.md"


def recipes() -> dict[str, dict[str, str]]:
    """{recipe heading: {file: text}} from the ```toml blocks, each naming its file on its first line."""
    found: dict[str, dict[str, str]] = {}
    for section in re.split(r"^## ", RECIPES.read_text(), flags=re.M)[1:]:
        heading, _, body = section.partition("\n")
        for block in re.findall(r"^```toml\n(.*?)^```", body, flags=re.M | re.S):
            first, _, text = block.partition("\n")
            assert first.startswith("# "), f"{heading}: a toml block must start with '# <file>'"
            found.setdefault(heading, {})[first[2:].strip()] = text
    return found


def test_every_recipe_is_there_with_files():
    assert list(recipes()) == ["Add a model", "Add a quantized variant", "LoRA", "TP=2 on two GPUs",
                               "CI with a remote cache"]


def scratch(tmp_path: Path, files: dict[str, str]) -> tuple[Workspace, list[str]]:
    """A workspace holding the recipe's files (its [tool.llmbuild] keys added to the test's), and
    the addresses its BUILD.toml files declare."""
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    addresses = []
    for name, text in files.items():
        if name == "pyproject.toml":
            keys = [line for line in text.splitlines()
                    if line.strip() and not line.startswith(("[tool.llmbuild]", "build_roots"))]
            ws.write_pyproject("\n".join(keys))
            continue
        path = ws.write(name, text)
        if 'source = "hf"' in text:
            shutil.copytree(TINY_HF, path.parent / "hf", dirs_exist_ok=True)
        directory = str(Path(name).parent)
        addresses += [f"{directory}:{target}" for kind, targets in tomllib.loads(text).items()
                      if kind != "defaults" for target in targets]
    return ws, addresses


def plan(ws: Workspace, *args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "llmbuild", "plan", "--json", *args], cwd=ws.root,
                          capture_output=True, text=True, env=ws.env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def argv_lines(document: list[dict]) -> str:
    return "\n".join(" ".join(step.get("argv", [])) for entry in document for step in entry["steps"])


@pytest.mark.parametrize("heading", list(recipes()))
def test_recipe_loads_and_plans_on_both_lanes(tmp_path, heading):
    ws, addresses = scratch(tmp_path, recipes()[heading])
    if not addresses:  # a settings-only recipe: the tiny model is what it plans
        ws.add_model("tiny", TINY_HF)
        addresses = ["models/tiny:checkpoint", "models/tiny:engine"]
    for lane in ("cpu", "gpu"):
        document = plan(ws, "--lane", lane)
        assert sorted(entry["address"] for entry in document) == sorted(addresses)
    gpu = argv_lines(plan(ws, "--lane", "gpu"))
    promised = {
        "Add a quantized variant": ["--qformat fp8", "--kv_cache_dtype fp8", "--calib_size 256"],
        "LoRA": ["--lora_plugin", "--max_lora_rank 16", "--lora_target_modules attn_q attn_k attn_v"],
        "TP=2 on two GPUs": ["--tp_size 2"],
    }.get(heading, [])
    for text in promised:
        assert text in gpu, f"{heading}: '{text}' not in\n{gpu}"
    if heading == "Add a quantized variant":
        assert sorted(e["address"] for e in plan(ws, "tag:fp8")) == ["models/my-llama:fp8",
                                                                     "models/my-llama:fp8-engine"]
