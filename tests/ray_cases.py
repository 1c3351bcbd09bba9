"""The Ray executor on a real Ray cluster and a real S3 server, in a network namespace with only
loopback (tests/test_ray.py runs this module under `unshare -n`: Ray advertises the machine's
eth0 address otherwise, and these tests must stay on loopback).

The cluster, shared by the module: a head with no GPUs (it takes CPU-only steps such as
checkpoint conversion) and two worker nodes, `nodeB` and `nodeC`, each with 2 simulated GPUs
(`--num-gpus=2`) and a custom resource naming it; every node keeps its own local cache
(LLMBUILD_CACHE_DIR in its environment), so nothing reaches a worker but through the blob store.
Builds are the CPU lane's real stand-ins on tiny-llama; the trtllm-build stand-in waits
LLMBUILD_TEST_BUILD_SECONDS (a test-only variable) so every engine build takes a known time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, TINY_HF, Workspace
from s3_fixtures import free_ports

#: Seconds every engine build's stand-in waits (the build "wave" length).
BUILD_SECONDS = 4.0
GPUS_PER_NODE = 2


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    cache: Path


@dataclass
class Cluster:
    address: str
    nodes: dict[str, Node]
    env: dict[str, str]  # what a driver needs (no S3 credentials: the test adds them)


def ray_cli() -> str:
    return str(Path(sys.executable).parent / "ray")


def _in_loopback_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.fixture(scope="module")
def cluster(s3_server) -> Cluster:
    if not _in_loopback_namespace():
        pytest.fail("run the Ray tests through tests/test_ray.py (under unshare -n: loopback only)", pytrace=False)
    temp = Path(tempfile.mkdtemp(prefix="llmray", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    base = {**os.environ, **s3_server.env, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO),
            "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
            "RAY_health_check_failure_threshold": "3"}
    common = ["--block", "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats",
              "--object-store-memory=100000000", "--node-ip-address=127.0.0.1"]
    nodes: dict[str, Node] = {}

    def start(name: str, argv: list[str]) -> None:
        cache = temp / f"{name}-cache"
        log = open(temp / f"{name}.log", "wb")
        process = subprocess.Popen([ray_cli(), "start", *argv, *common], stdout=log, stderr=subprocess.STDOUT,
                                   env={**base, "LLMBUILD_CACHE_DIR": str(cache)}, start_new_session=True)
        nodes[name] = Node(name, process, cache)

    try:
        start("head", ["--head", f"--port={port}", "--num-gpus=0", "--include-dashboard=false",
                       '--resources={"head": 1}'])
        _wait_for_nodes(address, base, 1)
        for count, name in enumerate(("nodeB", "nodeC"), start=2):  # one at a time: two at once time out here
            start(name, [f"--address={address}", f"--num-gpus={GPUS_PER_NODE}", f'--resources={{"{name}": 1}}'])
            _wait_for_nodes(address, base, count)
        yield Cluster(address, nodes, {"RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled"})
    finally:
        for node in reversed(list(nodes.values())):  # SIGTERM the `ray start` process, then SIGKILL its group
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in nodes.values():
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.process.wait()


def _wait_for_nodes(address: str, env: dict[str, str], count: int) -> None:
    script = ("import ray, sys, time\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
              "end = time.time() + 60\nwhile sum(n['Alive'] for n in ray.nodes()) < int(sys.argv[2]):\n"
              "    assert time.time() < end, ray.nodes()\n    time.sleep(0.3)\n")
    subprocess.run([sys.executable, "-c", script, address, str(count)], env=env, check=True, timeout=120,
                   capture_output=True)


def kill_node(node: Node) -> None:
    """SIGKILL every process of the node, as if its machine died: they all carry its cache
    variable (the raylet and its workers leave the `ray start` process group)."""
    mark = f"LLMBUILD_CACHE_DIR={node.cache}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if mark in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def engines_toml(count: int, tp_size: int) -> str:
    text = f'[checkpoint.checkpoint]\nsource = "hf"\ntp_size = {tp_size}\n'
    for index in range(1, count + 1):
        text += (f'\n[engine.e{index}]\ncheckpoint = ":checkpoint"\nmax_batch_size = {index}\n'
                 'max_input_len = 64\nmax_seq_len = 96\n')
    return text


def workspace(tmp_path: Path, remote_url: str, engines: int, tp_size: int) -> Workspace:
    ws = Workspace(tmp_path / "ws", tmp_path / "driver-cache")
    ws.add_model("m", TINY_HF, engines_toml(engines, tp_size))
    return ws


def driver_env(ws: Workspace, cluster: Cluster, s3_server, remote_url: str, seconds: float) -> dict[str, str]:
    return ws.env(**s3_server.env, **cluster.env, LLMBUILD_EXECUTOR="ray", LLMBUILD_REMOTE_CACHE=remote_url,
                  LLMBUILD_TEST_BUILD_SECONDS=str(seconds))


def node_of_cache(cluster: Cluster, key: str) -> set[str]:
    """The nodes whose own cache holds a committed entry of `key`."""
    return {n.name for n in cluster.nodes.values() if (n.cache / "entries" / key[:2] / key / "manifest.json").is_file()}


def test_eight_tp2_engines_on_two_nodes_of_two_gpus_take_four_waves(cluster, s3_server, remote_url, tmp_path):
    ws = workspace(tmp_path, remote_url, 8, 2)
    run = ws.doit("-n", "4", env=driver_env(ws, cluster, s3_server, remote_url, BUILD_SECONDS))
    rows = {r["address"].split(":")[1]: r for r in run.records}
    engines = [rows[f"e{i}"] for i in range(1, 9)]
    assert {r["outcome"] for r in rows.values()} == {"built"}
    assert {r["executor"] for r in rows.values()} == {"ray"}
    assert all(len(r["gpus"]) == 2 for r in engines)  # each asked for tp x pp = 2 GPUs
    assert rows["checkpoint"]["gpus"] == []
    # which node built each engine: the row's node ID, and the one node cache holding its entry
    built_on = {r["node"]: node_of_cache(cluster, r["key"]) for r in engines}
    assert all(len(names) == 1 and names <= {"nodeB", "nodeC"} for names in built_on.values()), built_on
    assert len(built_on) == 2  # both GPU nodes used
    # no node ever runs two 2-GPU builds at once; the cluster runs two at a time
    spans = sorted((r["started"], r["started"] + r["seconds"], r["node"]) for r in engines)
    for i, (start, end, node) in enumerate(spans):
        for other_start, _, other_node in spans[i + 1:]:
            if other_node == node:
                assert other_start >= end - 0.05, (spans, node)
    assert all(r["seconds"] >= BUILD_SECONDS for r in engines)
    makespan = spans[-1][1] - spans[0][0]
    mean = sum(r["seconds"] for r in engines) / len(engines)
    # four waves of two (serial would be eight); slack for the drivers' and Ray's gaps between waves
    assert 3.5 * mean <= makespan <= 5.5 * mean, (makespan, mean)
    # the driver restored each entry, verified, from what the node published
    manifest = json.loads((ws.cache / "entries" / engines[0]["key"][:2] / engines[0]["key"] / "manifest.json").read_text())
    assert (manifest["executor"], manifest["node"], len(manifest["gpus"])) == ("ray", engines[0]["node"], 2)
    print(f"\n8 TP=2 engines, 2 nodes x 2 GPUs, {BUILD_SECONDS} s stand-in: makespan {makespan:.1f} s, "
          f"mean build {mean:.1f} s")


def test_a_step_no_node_can_hold_fails_before_submission(cluster, s3_server, remote_url, tmp_path):
    ws = workspace(tmp_path, remote_url, 1, 4)
    run = ws.doit(check=False, env=driver_env(ws, cluster, s3_server, remote_url, 0))
    assert run.returncode != 0
    rows = {r["address"]: r for r in run.records}
    assert rows["models/m:checkpoint"]["outcome"] == "built"
    engine = rows["models/m:e1"]
    assert engine["outcome"] == "failed" and "node" not in engine
    assert engine["note"] == (
        f"models/m/BUILD.toml: [engine.e1]: gpus: needs 4 GPU(s) but no node of the Ray cluster at "
        f"{cluster.address} offers that (the largest offers 2 among 3 live node(s))")
    # nothing was submitted for the engine: no node staged its inputs or kept a failed attempt
    assert not [path for n in cluster.nodes.values() for path in (n.cache / "staging").glob("*/inputs/dep-checkpoint")]
    assert not [path for n in cluster.nodes.values() for path in (n.cache / "failed").glob("*")]


def test_a_node_killed_mid_build_reruns_the_step_on_the_other_node(cluster, s3_server, remote_url, tmp_path):
    """Last in the module: it kills one of the two GPU nodes."""
    ws = workspace(tmp_path, remote_url, 1, 2)
    env = driver_env(ws, cluster, s3_server, remote_url, 12)
    doit = subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    victim = None
    while victim is None and doit.poll() is None and time.monotonic() < deadline:
        victim = next((n for n in cluster.nodes.values() if n.name != "head"
                       and list((n.cache / "staging").glob("*/inputs/dep-checkpoint"))), None)
        time.sleep(0.2)
    assert victim is not None, doit.communicate()[0] if doit.poll() is not None else "no node started the engine"
    time.sleep(1)  # mid-build: the stand-in waits 12 s
    kill_node(victim)
    output, _ = doit.communicate(timeout=180)
    assert doit.returncode == 0, output
    row = {r["address"]: r for r in json.loads((ws.root / "dist" / "run.json").read_text())["targets"]}["models/m:e1"]
    assert row["outcome"] == "built" and row["executor"] == "ray"
    assert victim.process.poll() is not None  # its `ray start` is gone
    # nothing partial: every entry of the key committed on any node is whole, the one the driver has
    driver = json.loads((ws.cache / "entries" / row["key"][:2] / row["key"] / "manifest.json").read_text())
    for name in node_of_cache(cluster, row["key"]):
        node = cluster.nodes[name].cache / "entries" / row["key"][:2] / row["key"] / "manifest.json"
        assert json.loads(node.read_text())["output_digest"] == driver["output_digest"]
    print(f"\nkilled {victim.name} mid-build; the engine was built by node {row['node']} "
          f"(entries on {sorted(node_of_cache(cluster, row['key']))})")
    assert (ws.root / "dist" / "models" / "m" / "e1" / "config.json").is_file()
