"""Hung tools and full disks: a tool past its kind's timeout is stopped with every process it
started (or its container), its log kept, and only its target fails; a build that fills the
cache's disk fails saying so, keeps little, and leaves committed entries whole and restorable.

The GPU lane's programs are stand-ins (test_gpu_host.py's approach) whose behaviour depends on
the model they are given: `hangs` hangs (with a child that ignores SIGTERM), `big` writes more
than the disk holds, the others write a small checkpoint or engine.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_HF
from test_docker_executor import BB, containers_of
from test_gpu_host import host_workspace

STAND_IN = textwrap.dedent('''\
    #!{python}
    """A TensorRT-LLM program: hangs on model `hangs`, overfills the disk on model `big`."""
    import json, os, signal, subprocess, sys, time
    from pathlib import Path
    argv = sys.argv
    out = Path(argv[argv.index("--output_dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    if "/hangs/" in " ".join(argv):
        child = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                  "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])
        Path({pids!r}, "tool.pid").write_text(str(os.getpid()))
        Path({pids!r}, "child.pid").write_text(str(child.pid))
        print("converting (and never finishing)", flush=True)
        time.sleep(3600)
    if "/big/" in " ".join(argv):
        print("writing 4 MiB", flush=True)
        with open(out / "rank0.safetensors", "wb") as weights:
            for _ in range(64):
                weights.write(os.urandom(65536))
    (out / "config.json").write_text(json.dumps({{"architecture": "LlamaForCausalLM", "dtype": "float16"}}))
    (out / "rank0.bin").write_bytes(b"written by a stand-in")
    ''')


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return re.search(r"^State:\s+Z", status, re.M) is None


def host(make_workspace, tmp_path, *models: str, settings: str = "", cache: Path | None = None):
    ws = make_workspace(cache=cache)
    pids = tmp_path / "pids"
    pids.mkdir()
    env, _ = host_workspace(ws, tmp_path, STAND_IN.format(python=sys.executable, pids=str(pids)), settings)
    for model in models:
        (ws.add_model(model, TINY_HF) / "hf" / "which.txt").write_text(model)  # keys differ by content
    return ws, env, pids


def test_a_hung_tool_and_its_child_are_stopped_and_only_its_target_fails(make_workspace, tmp_path):
    ws, env, pids = host(make_workspace, tmp_path, "hangs", "fine", settings='timeouts = { checkpoint = "2s" }')
    run = ws.doit(env=env, check=False)
    assert run.returncode != 0
    assert run.outcomes == {"models/hangs:checkpoint": "failed", "models/hangs:engine": "skipped",
                            "models/fine:checkpoint": "built", "models/fine:engine": "built"}
    # The tool and the child it started (which ignores SIGTERM) are both gone.
    tool, child = (int((pids / f"{name}.pid").read_text()) for name in ("tool", "child"))
    assert not alive(tool) and not alive(child)
    # One line says what happened and names the kept log, which ends saying so.
    record = {r["address"]: r for r in run.records}["models/hangs:checkpoint"]
    log = Path(record["log"])
    assert re.search(rf"models/hangs:checkpoint failed: convert_checkpoint.py was stopped after "
                     rf"the timeout of 2 s \(timeouts in \[tool.llmbuild\]\); log: {re.escape(str(log))}", run.stdout)
    assert log.parent.parent == ws.cache / "failed"
    lines = log.read_text().splitlines()
    assert "converting (and never finishing)" in lines
    assert lines[-1].endswith("was stopped after the timeout of 2 s (timeouts in [tool.llmbuild])")
    assert {r["address"]: r.get("note") for r in run.records}["models/hangs:engine"] == \
        "needs models/hangs:checkpoint, which failed"
    assert list((ws.cache / "staging").iterdir()) == []


def test_a_docker_step_past_its_timeout_is_stopped_and_its_container_removed(docker_client, busybox_image,
                                                                              tmp_path):
    from llmbuild.core.errors import BuildFailed
    from llmbuild.core.protocols import Invocation, Program
    from llmbuild.core.steps import PathArg
    from llmbuild.executors.docker import DockerExecutor

    (tmp_path / "out").mkdir()
    executor = DockerExecutor(lambda built: busybox_image, "toolchains/x:image", timeout=1)
    script = "echo started; /bin/busybox sleep 600 & exec /bin/busybox sleep 600"
    invocation = Invocation(Program((BB, "sh", "-c", script)), args=(), paths={PathArg("out"): tmp_path / "out"},
                            work=tmp_path)
    log = tmp_path / "log.txt"
    with pytest.raises(BuildFailed, match=rf"was stopped after the timeout of 1 s and removed; log: {log}$"):
        executor.run(invocation, log_path=log, label="hung")
    assert containers_of(docker_client, os.getpid()) == []
    lines = log.read_text().splitlines()
    assert lines[1] == "started" and "was stopped after the timeout of 1 s" in lines[-1]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root may mount one: CI runs as root). Failing, not skipping, without it."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"the full-disk test mounts a 2 MiB tmpfs for its cache and could not "
                    f"(`mount -t tmpfs` needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_full_disk_fails_the_build_cleanly_and_keeps_committed_entries(make_workspace, tmp_path, small_disk):
    cache = small_disk / "cache"
    ws, env, _ = host(make_workspace, tmp_path, "small", "big", cache=cache)
    ws.doit("models/small:engine", env=env)
    committed = tree_digests(cache / "entries")
    assert len([name for name in committed if name.endswith("manifest.json")]) == 2

    run = ws.doit(env=env, check=False)
    assert run.returncode != 0
    assert run.outcomes["models/big:checkpoint"] == "failed"
    assert run.outcomes["models/small:engine"] == "up-to-date"
    message = next(line for line in run.stdout.splitlines() if line.startswith("models/big:checkpoint failed"))
    assert re.search(rf"failed: the disk holding {re.escape(str(cache))} is full \(\d+(\.\d)? (B|KiB) free of "
                     rf"2\.0 MiB\): .+; log: \S+/log\.txt; output so far: removed to "
                     rf"free the disk$", message), message
    # The attempt keeps its log only; nothing is left staged; the disk has room again.
    attempt, = (cache / "failed").iterdir()
    assert [p.name for p in attempt.rglob("*") if p.is_file()] == ["log.txt"]
    assert "writing 4 MiB" in (attempt / "log.txt").read_text()
    assert "No space left on device" in (attempt / "log.txt").read_text()
    assert list((cache / "staging").iterdir()) == []
    assert shutil.disk_usage(small_disk).free > 1024 * 1024
    # Every committed entry is byte for byte what it was, and restores into another workspace.
    assert tree_digests(cache / "entries") == committed
    other = make_workspace("other", cache=cache)
    host_workspace(other, tmp_path, STAND_IN.format(python=sys.executable, pids=str(tmp_path / "pids")))
    (other.add_model("small", TINY_HF) / "hf" / "which.txt").write_text("small")
    again = other.doit("models/small:engine", env=env)
    assert set(again.outcomes.values()) == {"restored"}


def test_a_full_disk_is_recognised_from_llmbuilds_own_write_or_the_tools_log(tmp_path):
    from llmbuild.core.disk import disk_full
    from llmbuild.core.errors import BuildFailed

    log = tmp_path / "log.txt"
    log.write_text("converting\n")
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as own:
            raise BuildFailed("the step's log could not be written") from own
    except BuildFailed as err:
        wrapped = err
    said = disk_full(wrapped, tmp_path, log)
    assert re.fullmatch(rf"the disk holding {re.escape(str(tmp_path))} is full \(\S+ \S+ free of \S+ \S+\)", said)
    assert disk_full(BuildFailed("trtllm-build exited with status 1"), tmp_path, log) is None
    log.write_text("converting\nOSError: [Errno 28] No space left on device\n")
    assert disk_full(BuildFailed("trtllm-build exited with status 1"), tmp_path, log).startswith(
        f"the disk holding {tmp_path} is full (")


def test_a_smoke_whose_server_is_not_ready_within_its_timeout_fails_alone(make_workspace):
    from test_failures import PIPELINE

    ws = make_workspace()
    ws.add_model("tiny", TINY_HF, PIPELINE)
    run = ws.doit(env=ws.env(LLMBUILD_TIMEOUTS="smoke=1s"), check=False)
    assert run.returncode != 0
    assert run.outcomes == {"models/tiny:checkpoint": "built", "models/tiny:engine": "built",
                            "models/tiny:repository": "built", "models/tiny:smoke": "failed"}
    assert re.search(r"models/tiny:smoke failed: TritonStartError: tritonserver not ready after 1 s \(", run.stdout)
    # The server is gone: no process serves anything from this cache.
    serving = [cmdline for cmdline in (p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline")
                                       if p.exists()) if str(ws.cache).encode() in cmdline]
    assert serving == []
