"""Shared caches and killed builds: nothing half-written ever counts as done."""

from __future__ import annotations

import filecmp
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BUILD = """\
[checkpoint.checkpoint]
source = "hf"
tp_size = 2

[engine.engine]
checkpoint = ":checkpoint"
max_batch_size = 2
"""


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def test_two_workspaces_at_different_paths_share_one_cache(tmp_path, tiny_models):
    """Started at once: both succeed, and each key is built by exactly one of them."""
    from conftest import Workspace

    cache = tmp_path / "shared-cache"
    workspaces = [Workspace(tmp_path / name, cache) for name in ("x", "elsewhere/y")]
    for ws in workspaces:
        ws.add_model("m", tiny_models[1], BUILD)
    procs = [subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env=ws.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for ws in workspaces]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    outcomes: dict[str, list[str]] = {}
    for ws in workspaces:
        for record in json.loads((ws.root / "dist/run.json").read_text())["targets"]:
            outcomes.setdefault(record["key"], []).append(record["outcome"])
    assert len(outcomes) == 2
    for key, seen in outcomes.items():
        assert sorted(seen) == ["built", "restored"], (key, seen, outputs)
    assert len(list(cache.glob("entries/*/*/manifest.json"))) == 2
    assert not list((cache / "staging").glob("*"))


def test_kill_9_mid_build_then_rebuild_equals_clean_build(tmp_path, tiny_models):
    from conftest import Workspace

    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.add_model("m", tiny_models[2], BUILD)
    proc = subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    # Wait until the engine step (the second build) has started writing, then SIGKILL doit.
    while time.monotonic() < deadline:
        stagings = list((ws.cache / "staging").glob("*/log.txt"))
        if list(ws.cache.glob("entries/*/*/manifest.json")) and stagings:
            break
        assert proc.poll() is None, "doit finished before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(ws.cache.glob("entries/*/*/manifest.json"))) == 1  # only the checkpoint

    run = ws.doit()
    assert run.outcomes == {"models/m:checkpoint": "up-to-date", "models/m:engine": "built"}
    assert not list((ws.cache / "staging").glob("*"))

    clean = Workspace(tmp_path / "clean", tmp_path / "clean-cache")
    clean.add_model("m", tiny_models[2], BUILD)
    clean.doit()
    assert _same_tree((ws.root / "dist/models/m/engine").resolve(),
                      (clean.root / "dist/models/m/engine").resolve())
