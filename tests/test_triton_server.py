"""A real tritonserver (CPU, from nvidia-pytriton) serving real Python-backend models.

The CPU Triton install is shared by all tests and kept across runs under
``$LLMBUILD_TEST_CACHE/toolchains`` (default: ``<repo>/cache/toolchains``):
the first run installs it (about 40 s), later runs reuse it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TOOLCHAINS

from llmbuild.toolchains.cpu import install
from llmbuild.toolchains.cpu.install import TritonEnv, TritonEnvError, ensure_cpu_triton
from llmbuild.toolchains.cpu.server import SHM_DIR, TritonServer, TritonStartError, port_is_free

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow



# --- models written by hand -------------------------------------------------------------------

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

ECHO_MODEL = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", x.copy())]))
        return responses
"""

TORCH_MODEL = """\
import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.layer = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.layer.weight.fill_(3.0)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = torch.from_numpy(pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy())
            with torch.no_grad():
                y = self.layer(x.reshape(-1, 1)).reshape(-1) + torch.cumsum(x, 0)
            out = y.numpy().astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", out)]))
        return responses
"""

BROKEN_MODEL = """\
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests:
        return []
"""


def write_model(repo: Path, name: str, source: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name))
    (repo / name / "1" / "model.py").write_text(source)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repository"
    write_model(r, "echo", ECHO_MODEL)
    write_model(r, "torch_affine", TORCH_MODEL)
    return r


def infer(server: TritonServer, model: str, values: list[float]) -> np.ndarray:
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("INPUT", [len(values)], "FP32")
    inp.set_data_from_numpy(np.array(values, dtype=np.float32))
    with server.client() as client:
        return client.infer(model, [inp]).as_numpy("OUTPUT")


def tritonservers_serving(repo: Path) -> list[int]:
    """pids of live processes (server or stubs) whose command line names ``repo``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                (line.split()[1] for line in (d / "status").read_text().splitlines() if line.startswith("State:")),
                "",
            )
        except OSError:
            continue
        if str(repo) in cmdline and "triton" in cmdline and state != "Z":
            pids.append(int(d.name))
    return pids


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- the environment ---------------------------------------------------------------------------


def test_env_layout_and_launch_environment(triton_env: TritonEnv, monkeypatch):
    assert triton_env.version == "2.51.0"
    assert triton_env.tritonserver.is_file() and os.access(triton_env.tritonserver, os.X_OK)
    assert (triton_env.backend_dir / "python" / "triton_python_backend_stub").is_file()
    assert (triton_env.root / install.MARKER).is_file()
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/other")
    env = triton_env.env()
    assert env["PATH"].split(os.pathsep)[0] == str(triton_env.venv / "bin")
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [str(triton_env.lib_dir), "/opt/other"]
    assert "PYTHONPATH" not in env
    # numpy<2 and the pinned CPU torch, as the Python backend needs
    out = subprocess.run(
        [str(triton_env.python), "-c", "import numpy, torch; print(numpy.__version__, torch.__version__)"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.split()
    assert int(out[0].split(".")[0]) < 2
    assert out[1].startswith("2.13.0")


def test_ensure_reuses_a_complete_install(triton_env: TritonEnv):
    lines: list[str] = []
    started = time.monotonic()
    again = ensure_cpu_triton(TOOLCHAINS, progress=lines.append)
    assert time.monotonic() - started < 2.0
    assert again == triton_env
    assert lines == []


def test_env_override_skips_installing(triton_env: TritonEnv, monkeypatch, tmp_path: Path):
    monkeypatch.setenv(install.ENV_VAR, str(triton_env.root))
    assert ensure_cpu_triton(tmp_path / "unused").tritonserver == triton_env.tritonserver
    assert not (tmp_path / "unused").exists()
    monkeypatch.setenv(install.ENV_VAR, str(tmp_path))
    with pytest.raises(TritonEnvError, match="not a CPU Triton environment"):
        ensure_cpu_triton(tmp_path / "unused")


def test_missing_interpreter_fails_with_one_clear_line(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(install.ENV_VAR, raising=False)
    with pytest.raises(TritonEnvError) as err:
        ensure_cpu_triton(tmp_path, base_python="/nonexistent/python3.11", progress=lambda _: None)
    assert "apt-get install" in str(err.value) and "python3.11-venv" in str(err.value)
    assert "\n" not in str(err.value)


def test_concurrent_callers_build_once_and_incomplete_dirs_are_rebuilt(tmp_path: Path, monkeypatch):
    """The locking logic, with the slow pip install replaced by a fake build."""
    monkeypatch.delenv(install.ENV_VAR, raising=False)
    builds: list[Path] = []

    def fake_build(target: Path, *, base_python: str, progress) -> None:
        assert not target.exists(), "an incomplete directory must be removed before building"
        target.mkdir(parents=True)
        builds.append(target)
        time.sleep(0.5)
        (target / install.MARKER).write_text("{}")

    monkeypatch.setattr(install, "_build", fake_build)
    monkeypatch.setattr(install, "_locate", lambda root: root)

    # a half-built directory (no marker) from a killed run
    half = tmp_path / f"triton-cpu-{install.recipe_hash()}"
    (half / "venv").mkdir(parents=True)

    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_cpu_triton(tmp_path, progress=lambda _: None)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [half] * 3
    assert builds == [half]
    assert not (half / "venv").exists()


# --- the server --------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_serves_real_models_then_stops_cleanly(triton_env: TritonEnv, repo: Path, tmp_path: Path):
    log = tmp_path / "logs" / "tritonserver.log"
    started = time.monotonic()
    with TritonServer(repo, triton_env, log_path=log, ready_timeout=120) as server:
        ready_s = time.monotonic() - started
        pid, ports = server.pid, (server.http_port, server.grpc_port, server.metrics_port)
        assert server.http_url == f"127.0.0.1:{server.http_port}"
        assert len(set(ports)) == 3

        index = server.repository_index()
        assert {(m["name"], m["state"]) for m in index} == {("echo", "READY"), ("torch_affine", "READY")}
        assert server.model_ready("echo") and server.model_ready("torch_affine")

        np.testing.assert_allclose(infer(server, "echo", [1.5, -2.0, 3.0]), [1.5, -2.0, 3.0])
        # 3*x + cumsum(x), computed by torch inside the stub
        np.testing.assert_allclose(infer(server, "torch_affine", [1.0, 2.0, 3.0]), [4.0, 9.0, 15.0])

        # the stubs are in the server's process group and use this server's shm prefix
        assert len(tritonservers_serving(repo)) >= 3
        assert any(SHM_DIR.glob(server.shm_prefix + "*"))
        stop_started = time.monotonic()
    stop_s = time.monotonic() - stop_started
    print(f"\nstart-to-ready {ready_s:.1f} s, shutdown {stop_s:.1f} s")

    assert ready_s < 60
    assert stop_s < 12
    assert not group_alive(pid)
    assert tritonservers_serving(repo) == []
    assert all(port_is_free(p) for p in ports)
    assert not list(SHM_DIR.glob(server.shm_prefix + "*"))
    assert "Started HTTPService" in log.read_text()


@pytest.mark.timeout(120)
def test_explicit_model_control_loads_only_what_is_asked(triton_env: TritonEnv, repo: Path, tmp_path: Path):
    with TritonServer(
        repo, triton_env, log_path=tmp_path / "explicit.log", model_control="explicit", load_models=["echo"]
    ) as server:
        states = {m["name"]: m.get("state", "") for m in server.repository_index()}
        assert states["echo"] == "READY"
        assert states["torch_affine"] != "READY"
        assert not server.model_ready("torch_affine")
        np.testing.assert_allclose(infer(server, "echo", [7.0]), [7.0])
    assert tritonservers_serving(repo) == []


@pytest.mark.timeout(120)
def test_broken_model_fails_fast_naming_the_log(triton_env: TritonEnv, tmp_path: Path):
    repo = tmp_path / "repository"
    write_model(repo, "echo", ECHO_MODEL)
    write_model(repo, "broken", BROKEN_MODEL)
    log = tmp_path / "broken.log"
    started = time.monotonic()
    with pytest.raises(TritonStartError) as err:
        with TritonServer(repo, triton_env, log_path=log, ready_timeout=90):
            pytest.fail("a repository with a broken model must not become ready")
    took = time.monotonic() - started
    print(f"\nbroken model reported after {took:.1f} s")
    assert took < 30
    message = str(err.value)
    assert str(log) in message
    assert "SyntaxError" in message
    assert err.value.log_path == log
    assert tritonservers_serving(repo) == []


@pytest.mark.timeout(60)
def test_readiness_has_a_deadline(triton_env: TritonEnv, tmp_path: Path):
    """A model whose initialize hangs: TritonStartError at the deadline, nothing left running."""
    repo = tmp_path / "repository"
    write_model(repo, "slow", ECHO_MODEL.replace(
        "class TritonPythonModel:",
        "import time\n\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(600)\n",
    ))
    started = time.monotonic()
    with pytest.raises(TritonStartError, match="not ready after 4 s"):
        with TritonServer(repo, triton_env, log_path=tmp_path / "slow.log", ready_timeout=4):
            pass
    assert time.monotonic() - started < 25
    assert wait_until(lambda: tritonservers_serving(repo) == [], 10)


@pytest.mark.timeout(120)
def test_a_taken_port_is_retried_once_with_new_ports(triton_env: TritonEnv, tmp_path: Path, monkeypatch):
    """Another process takes a picked port before tritonserver binds it (the race)."""
    import socket

    from llmbuild.toolchains.cpu import server as server_mod

    repo = tmp_path / "repository"
    write_model(repo, "echo", ECHO_MODEL)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks: list[list[int]] = []
        real_free_ports = server_mod.free_ports

        def racy_free_ports(n, host="127.0.0.1"):
            ports = real_free_ports(n, host)
            if not picks:
                ports[1] = taken  # the gRPC port
            picks.append(ports)
            return ports

        monkeypatch.setattr(server_mod, "free_ports", racy_free_ports)
        log = tmp_path / "retry.log"
        with TritonServer(repo, triton_env, log_path=log) as server:
            assert len(picks) == 2 and server.grpc_port != taken
            np.testing.assert_allclose(infer(server, "echo", [1.0]), [1.0])
    text = log.read_text()
    assert "already in use" in text and "retrying with new ports" in text


OWNER_SCRIPT = """\
import sys
from pathlib import Path
from llmbuild.toolchains.cpu.install import ensure_cpu_triton
from llmbuild.toolchains.cpu.server import TritonServer

env = ensure_cpu_triton(Path(sys.argv[2]))
with TritonServer(Path(sys.argv[1]), env, log_path=Path(sys.argv[3])) as server:
    print(server.pid, server.http_port, server.shm_prefix, flush=True)
    import time
    time.sleep(300)
"""


def _start_owner(repo: Path, tmp_path: Path) -> tuple[subprocess.Popen, int, int, str]:
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with open(tmp_path / "owner.err", "wb") as err:
        owner = subprocess.Popen(
            [sys.executable, str(script), str(repo), str(TOOLCHAINS), str(tmp_path / "owner.log")],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=tmp_path,
        )
    line = owner.stdout.readline()  # type: ignore[union-attr]
    if not line:
        owner.kill()
        pytest.fail(f"the owner process did not start a server: {(tmp_path / 'owner.err').read_text()[-3000:]}")
    pid, port, prefix = line.split()
    return owner, int(pid), int(port), prefix


@pytest.mark.timeout(120)
def test_sigkill_of_the_owner_takes_the_server_down(triton_env: TritonEnv, repo: Path, tmp_path: Path):
    owner, pid, port, prefix = _start_owner(repo, tmp_path)
    assert group_alive(pid)
    owner.kill()  # SIGKILL: no Python cleanup at all; PR_SET_PDEATHSIG must do it
    owner.wait()
    assert wait_until(lambda: not group_alive(pid) and tritonservers_serving(repo) == [], 20), (
        f"left running: {tritonservers_serving(repo)}"
    )
    assert wait_until(lambda: port_is_free(port), 5)
    # the stubs notice their server is gone and remove their regions themselves
    assert wait_until(lambda: not list(SHM_DIR.glob(prefix + "*")), 10)


@pytest.mark.timeout(120)
def test_sigterm_of_the_owner_shuts_the_server_down_cleanly(triton_env: TritonEnv, repo: Path, tmp_path: Path):
    owner, pid, port, prefix = _start_owner(repo, tmp_path)
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=30) == 128 + signal.SIGTERM
    assert not group_alive(pid)
    assert tritonservers_serving(repo) == []
    assert port_is_free(port)
    assert not list(SHM_DIR.glob(prefix + "*"))


@pytest.mark.timeout(120)
def test_sigint_of_the_owner_shuts_the_server_down_cleanly(triton_env: TritonEnv, repo: Path, tmp_path: Path):
    owner, pid, port, prefix = _start_owner(repo, tmp_path)
    owner.send_signal(signal.SIGINT)  # KeyboardInterrupt through the with block
    owner.wait(timeout=30)
    assert not group_alive(pid)
    assert tritonservers_serving(repo) == []
    assert not list(SHM_DIR.glob(prefix + "*"))


def test_workdir_with_a_triton_folder_is_refused(triton_env: TritonEnv, repo: Path, tmp_path: Path):
    (tmp_path / "wd" / "triton").mkdir(parents=True)
    with pytest.raises(ValueError, match="triton"):
        TritonServer(repo, triton_env, log_path=tmp_path / "x.log", workdir=tmp_path / "wd").start()
