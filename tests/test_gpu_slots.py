"""GPU slots: a target that needs GPUs holds that many of the host's pool while it runs, through
file locks every `doit` process on the host shares; its tools see exactly those IDs.

On the CPU lane the pool is simulated (LLMBUILD_GPUS=2 on a machine without GPUs), so the
scheduling is tested here for real: concurrent `doit` processes, `-n 2`, SIGKILLed holders.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llmbuild.core.errors import LLMBuildError
from llmbuild.core.settings import load_settings
from llmbuild.core.slots import SlotPool
from llmbuild.core.steps import OUT, Step
from llmbuild.executors.docker import DockerExecutor, docker_run_command
from llmbuild.plugins import DefaultPlugins, load_workspace
from llmbuild.toolchains.cpu.toolchain import CpuToolchain
from llmbuild.toolchains.subsystem import GpuPool, HostSettings, ToolchainSettings, gpu_pool, nvidia_smi_gpus
from llmbuild.toolchains.trtllm.toolchain import TrtllmToolchain

from conftest import REPO, TOOLCHAINS

#: A process taking `want` slots of a pool `rounds` times, holding them `seconds` each time
#: (forever when negative): prints the slots once held, appends {who, slots, start, end} to
#: `record` after each release.
HOLDER = """\
import json, sys, time
from pathlib import Path
from llmbuild.core.slots import SlotPool
directory, size, want, seconds, rounds, record, who = sys.argv[1:]
for _ in range(int(rounds)):
    with SlotPool(Path(directory), int(size)).hold(int(want), who=who) as slots:
        start = time.time()
        print(" ".join(map(str, slots)), flush=True)
        time.sleep(float(seconds) if float(seconds) >= 0 else 3600)
        end = time.time()
    with open(record, "a") as handle:
        handle.write(json.dumps({"who": who, "slots": slots, "start": start, "end": end}) + "\\n")
"""


def holder(tmp_path: Path, *, size: int, want: int, who: str, seconds: float = -1,
           rounds: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "slots"), str(size), str(want), str(seconds),
         str(rounds), str(tmp_path / "record.jsonl"), who],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def never_overlap(intervals: list[tuple[float, float, set[int]]], slack: float = 0.0) -> None:
    """Intervals (start, end, slots) that share a slot never overlap."""
    for (s1, e1, a), (s2, e2, b) in itertools.combinations(intervals, 2):
        if a & b:
            assert e1 <= s2 + slack or e2 <= s1 + slack, ((s1, e1, a), (s2, e2, b))


class Taker(threading.Thread):
    """Holds `want` slots of `pool` in a thread, records what it got and when, and whether it
    waited; releases when `release` is set."""

    def __init__(self, pool: SlotPool, want):
        super().__init__(daemon=True)
        self.pool, self.want = pool, want
        self.waited: list[dict[int, str]] = []
        self.got: tuple[int, ...] | None = None
        self.when = 0.0
        self.release = threading.Event()
        self.start()

    def run(self) -> None:
        with self.pool.hold(self.want, who="taker", on_wait=self.waited.append) as slots:
            self.got, self.when = slots, time.time()
            self.release.wait(timeout=60)


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -------------------------------------------------------------------------- the pool


def test_a_waiter_holds_nothing_and_takes_all_it_needs_once_another_process_releases(tmp_path):
    """Pool of 3, another process holds 2: a target needing 2 waits, leaving the free slot to
    others, and gets two as soon as that process is gone."""
    other = holder(tmp_path, size=3, want=2, who="models/a:engine")
    assert other.stdout.readline().split() == ["0", "1"]
    pool = SlotPool(tmp_path / "slots", 3)
    waiter = Taker(pool, 2)
    wait_until(lambda: waiter.waited)
    assert waiter.waited == [{0: f"models/a:engine (pid {other.pid})", 1: f"models/a:engine (pid {other.pid})"}]
    third = Taker(pool, [2])  # the free slot is not held by the waiter
    wait_until(lambda: third.got is not None, timeout=5)
    assert third.got == (2,) and waiter.got is None
    third.release.set()
    third.join()
    released = time.time()
    other.send_signal(signal.SIGTERM)
    other.wait()
    wait_until(lambda: waiter.got is not None)
    assert len(waiter.got) == 2 and waiter.when >= released
    waiter.release.set()


def test_a_sigkilled_holder_releases_its_slots(tmp_path):
    victim = holder(tmp_path, size=2, want=2, who="models/a:engine")
    assert victim.stdout.readline().split() == ["0", "1"]
    pool = SlotPool(tmp_path / "slots", 2)
    assert set(pool.holders()) == {0, 1}
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    def must_not_wait(holders):
        raise AssertionError(f"slots still held after SIGKILL: {holders}")

    with pool.hold(2, on_wait=must_not_wait) as slots:
        assert slots == (0, 1)
    assert pool.holders() == {}


def test_listed_ids_wait_only_for_those(tmp_path):
    pool = SlotPool(tmp_path / "slots", 3)
    with pool.hold(1, who="first") as first:
        assert first == (0,)
        with pool.hold([2, 1], on_wait=lambda holders: pytest.fail("1 and 2 are free")) as listed:
            assert listed == (1, 2)
        zero = Taker(pool, [0])
        wait_until(lambda: zero.waited)
        assert zero.waited == [{0: f"first (pid {os.getpid()})"}] and zero.got is None
    wait_until(lambda: zero.got is not None)
    assert zero.got == (0,)
    zero.release.set()
    with pytest.raises(ValueError, match="pool of 3"):
        with pool.hold([3]):
            pass


def test_processes_needing_two_of_three_never_deadlock_or_share_a_slot(tmp_path):
    """Four processes each take 2 of 3 slots, five times over: holding one while waiting for
    another, three of them could each sit on one slot forever; all-or-nothing always finishes."""
    procs = [holder(tmp_path, size=3, want=2, who=f"p{i}", seconds=0.05, rounds=5) for i in range(4)]
    for proc in procs:
        proc.stdout.read()
        assert proc.wait(timeout=120) == 0
    held = [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert len(held) == 20 and {len(r["slots"]) for r in held} == {2}
    never_overlap([(r["start"], r["end"], set(r["slots"])) for r in held])


# -------------------------------------------------------------------------- doit, end to end

TP2 = """\
[checkpoint.checkpoint]
source = "hf"
tp_size = 2

[engine.e1]
checkpoint = ":checkpoint"
max_batch_size = 2

[engine.e2]
checkpoint = ":checkpoint"
max_batch_size = 3
"""
TP1 = TP2.replace("tp_size = 2", "tp_size = 1") + """
[repository.repository]
engine = ":e1"

[smoke.smoke]
repository = ":repository"
prompt = "What is machine learning?"
max_tokens = 8
"""
SEEN = re.compile(r"on CUDA_VISIBLE_DEVICES=([\d,]*)")


def entry_log(ws, key: str) -> str:
    return (ws.cache / "entries" / key[:2] / key / "log.txt").read_text()


@pytest.mark.slow
def test_two_doit_processes_share_the_pool_and_concurrent_steps_never_share_a_gpu(make_workspace, tiny_models,
                                                                                 tmp_path):
    """LLMBUILD_GPUS=2 on the CPU lane; two workspaces on one cache, each `doit -n 2`: a builds
    two tp=2 engines, b two tp=1 engines and a smoke of one of them."""
    cache = tmp_path / "shared-cache"
    a, b = make_workspace("a", cache), make_workspace("b", cache)
    a.add_model("m", tiny_models[1], TP2)
    b.add_model("m", tiny_models[2], TP1)
    env = a.env(LLMBUILD_GPUS="2")
    env.pop("CUDA_VISIBLE_DEVICES", None)  # what a step sees comes from its GPU slots only
    procs = {ws: subprocess.Popen([sys.executable, "-m", "doit", "-n", "2"], cwd=ws.root, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for ws in (a, b)}
    outputs = {ws: proc.communicate(timeout=900)[0] for ws, proc in procs.items()}
    assert [proc.returncode for proc in procs.values()] == [0, 0], outputs
    rows = {}
    for ws in (a, b):
        for row in json.loads((ws.root / "dist/run.json").read_text())["targets"]:
            assert row["outcome"] == "built", row
            rows[(ws, row["address"])] = row
    assert {address: row["gpus"] for (ws, address), row in rows.items() if ws is a} == {
        "models/m:checkpoint": [], "models/m:e1": [0, 1], "models/m:e2": [0, 1]}
    held_by_b = {address: len(row["gpus"]) for (ws, address), row in rows.items() if ws is b}
    assert held_by_b == {"models/m:checkpoint": 0, "models/m:e1": 1, "models/m:e2": 1,
                         "models/m:repository": 0, "models/m:smoke": 1}
    # What each engine's trtllm-build saw is what its row says it held; conversions saw none.
    seen = {}
    for (ws, address), row in rows.items():
        found = SEEN.findall(entry_log(ws, row["key"])) if row["kind"] in ("checkpoint", "engine") else None
        if row["kind"] == "engine":
            assert found == [",".join(map(str, row["gpus"]))], (address, found)
        elif found is not None:
            assert found == [], address
        seen[(ws, address)] = (row["started"], row["started"] + row["seconds"], set(row["gpus"]))
    # Steps holding the same GPU ran one after the other, across both processes (run.json rounds
    # to the millisecond).
    never_overlap(list(seen.values()), slack=0.002)
    # a's second tp=2 engine had to wait for the first (the console says for what).
    assert "models/m:e2: waiting for 2 GPU(s) (a pool of 2" in outputs[a] \
        or "models/m:e1: waiting for 2 GPU(s) (a pool of 2" in outputs[a]


def test_a_pool_smaller_than_a_target_fails_before_anything_runs_and_no_pool_builds(make_workspace,
                                                                                  tiny_models):
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], TP2)
    env = ws.env()
    env.pop("CUDA_VISIBLE_DEVICES", None)  # what a step sees comes from its GPU slots only
    short = ws.doit(env={**env, "LLMBUILD_GPUS": "1"}, check=False)
    assert short.returncode != 0 and "Traceback" not in short.stdout + short.stderr
    assert ("models/m/BUILD.toml: [engine.e1]: gpus: needs 2 GPUs (tp_size x pp_size, from "
            "models/m:checkpoint) but the pool has 1 (gpus in [tool.llmbuild])") in short.stdout + short.stderr
    assert not list(ws.cache.glob("entries/*/*")) and not (ws.root / "dist/run.json").exists()
    # Without a pool (a laptop: no gpus declared on the CPU lane) the same targets build, holding none.
    run = ws.doit("-n", "2", env=env)
    assert set(run.outcomes.values()) == {"built"}
    assert {r["address"]: r["gpus"] for r in run.records} == {a: [] for a in run.outcomes}
    for row in run.records:
        assert "CUDA_VISIBLE_DEVICES" not in entry_log(ws, row["key"])
        assert isinstance(row["started"], float) and row["started"] <= time.time()
    # Up-to-date rows: started is when they were processed, gpus none.
    again = ws.doit(env={**env, "LLMBUILD_GPUS": "2"})
    assert {(r["outcome"], tuple(r["gpus"])) for r in again.records} == {("up-to-date", ())}
    assert min(r["started"] for r in again.records) > max(r["started"] for r in run.records)


@pytest.mark.parametrize("pyproject, expect", [
    ("gpus = 2\n", "models/m/BUILD.toml: [engine.e1]: gpus: gpus lists device 2 but the pool has 2 "
                   "(IDs 0 to 1; gpus in [tool.llmbuild])"),
    ("gpus = 1\n", "models/m/BUILD.toml: [checkpoint.checkpoint]: gpus: needs 2 GPUs (listed in gpus) "
                   "but the pool has 1 (gpus in [tool.llmbuild])"),
])
def test_listed_gpu_ids_must_be_in_the_pool(make_workspace, tiny_models, pyproject, expect):
    ws = make_workspace()
    ws.write_pyproject(pyproject)
    ws.add_model("m", tiny_models[0], TP2.replace("tp_size = 2", "tp_size = 2\ngpus = [0, 1]")
                 .replace("max_batch_size = 2", "max_batch_size = 2\ngpus = [1, 2]"))
    with pytest.raises(LLMBuildError) as caught:
        load_workspace(ws.root, ws.env())
    assert str(caught.value) == expect


def test_listed_ids_are_what_the_target_holds(make_workspace, tiny_models):
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], TP2.replace("tp_size = 2", "tp_size = 2\ngpus = [3]")
                 .replace("max_batch_size = 2", "max_batch_size = 2\ngpus = [2, 0]"))
    env = ws.env(LLMBUILD_GPUS="4")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    run = ws.doit(env=env)
    held = {r["address"]: r["gpus"] for r in run.records}
    assert held["models/m:checkpoint"] == [3] and held["models/m:e1"] == [0, 2]
    assert len(held["models/m:e2"]) == 2  # any two
    assert SEEN.findall(entry_log(ws, run.keys["models/m:e1"])) == ["0,2"]


def test_the_pool_size_comes_from_the_setting_the_environment_or_nvidia_smi(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.llmbuild]\ngpus = 2\n")

    def pool(**environ: str) -> GpuPool:
        return gpu_pool(load_settings(tmp_path, environ, DefaultPlugins.subsystems).option(ToolchainSettings))

    assert pool() == GpuPool(2, "gpus in [tool.llmbuild]")
    assert pool(LLMBUILD_GPUS="3").size == 3
    with pytest.raises(LLMBuildError, match=r"^environment: LLMBUILD_GPUS: gpus: expected a whole number \(got 'two'\)$"):
        pool(LLMBUILD_GPUS="two")
    (tmp_path / "pyproject.toml").write_text("[tool.llmbuild]\n")
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H100 (UUID: GPU-b)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    nvidia_smi_gpus.cache_clear()
    try:
        assert pool(LLMBUILD_LANE="gpu") == GpuPool(2, "the GPUs nvidia-smi -L lists")
        assert pool().size == 0  # the CPU lane simulates GPUs only when a pool is declared
    finally:
        nvidia_smi_gpus.cache_clear()


# -------------------------------------------------------------------------- what the tools see


def test_a_step_sees_exactly_its_gpus_locally_and_the_docker_request_names_them(tmp_path):
    step = Step("trtllm-build", ("--output_dir", OUT), gpus=2)
    gpu = TrtllmToolchain(trtllm_version="0.16.0", host=HostSettings(), pool=GpuPool(4, "test"))
    invocation = gpu.invocation(step, {OUT: tmp_path}, tmp_path, gpus=(1, 3))
    assert invocation.env["CUDA_VISIBLE_DEVICES"] == "1,3" and invocation.devices == (1, 3)
    docker = DockerExecutor(lambda built: "img", "toolchains/x:x")
    run = docker._container_run(invocation, "img")
    assert run.gpus == ("1", "3")  # exactly the held devices; inside they are numbered from 0
    assert "CUDA_VISIBLE_DEVICES" not in run.env
    assert '"device=1,3"' in docker_run_command(run)
    # Without a pool the request is a count, as before; on the CPU lane no device is requested
    # and the simulated IDs reach the program as they are.
    assert docker._container_run(gpu.invocation(step, {OUT: tmp_path}, tmp_path), "img").gpus == 2
    cpu = CpuToolchain(toolchains_dir=TOOLCHAINS, trtllm_version="0.16.0", host=HostSettings(),
                       pool=GpuPool(2, "test"))
    simulated = docker._container_run(cpu.invocation(step, {OUT: tmp_path}, tmp_path, gpus=(0, 1)), "img")
    assert simulated.gpus is None and simulated.env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_the_cpu_triton_server_sees_the_smokes_gpus(tmp_path):
    cpu = CpuToolchain(toolchains_dir=TOOLCHAINS, trtllm_version="0.16.0", host=HostSettings(),
                       pool=GpuPool(2, "test"))
    server = cpu.serve(tmp_path, executor=None, log_path=tmp_path / "log.txt", progress=print,
                       world_size=1, gpus=(1,))
    assert server.environment["CUDA_VISIBLE_DEVICES"] == "1"
