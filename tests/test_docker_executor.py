"""The container executor against a real Docker daemon (see tests/docker_fixtures.py).

Container runs are kept few: the busybox image costs ~0.2 s a run, the python image
several seconds (the vfs storage driver copies its layer for every container).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from llmbuild.core.errors import BuildFailed
from llmbuild.executors import docker as executor
from llmbuild.executors.docker import (
    ContainerRun,
    DockerUnavailable,
    Mount,
    docker_run_command,
    reap_orphans,
    run_in_container,
    running_container,
)

BB = "/bin/busybox"


def containers_of(client, pid: int) -> list:
    """All containers (any state) that llmbuild started for process `pid` on this host."""
    found = []
    for c in client.containers.list(all=True, filters={"label": executor.OWNER_LABEL}):
        owner = c.labels.get(executor.OWNER_LABEL, "")
        parts = owner.rsplit(":", 2)
        if len(parts) == 3 and parts[1] == str(pid):
            found.append(c)
    return found


def output_lines(log: Path) -> list[str]:
    """The log's lines after its first (the `docker run` command line)."""
    return log.read_text().splitlines()[1:]


def sh(image: str, script: str, **kwargs) -> ContainerRun:
    return ContainerRun(image=image, argv=(BB, "sh", "-c", script), **kwargs)


# --------------------------------------------------------------------------- basics


def test_run_streams_output_env_user_and_no_network(docker_client, busybox_image, tmp_path,
                                                    capfd):
    secret = "s3cr3t-value-never-logged"
    log = tmp_path / "logs" / "step.log"
    run = sh(busybox_image,
             textwrap.dedent("""\
                 echo out-line
                 echo err-line >&2
                 [ "$LLMBUILD_TEST_SECRET" = "$EXPECTED" ] && echo env-ok
                 echo "user=$(/bin/busybox id -u):$(/bin/busybox id -g)"
                 /bin/busybox tail -n +3 /proc/net/dev | /bin/busybox cut -d: -f1 |
                     /bin/busybox tr -d ' ' | /bin/busybox sed 's/^/iface=/'
                 echo "shm=$(/bin/busybox df -k /dev/shm | /bin/busybox tail -n 1 |
                     /bin/busybox tr -s ' ' | /bin/busybox cut -d' ' -f2)"
                 """),
             env={"LLMBUILD_TEST_SECRET": secret, "EXPECTED": secret},
             shm_size="64m", labels={"purpose": "test"})
    assert run.user == f"{os.getuid()}:{os.getgid()}"
    assert secret not in repr(run)

    run_in_container(run, log_path=log, label="stream")

    err = capfd.readouterr().err
    text = log.read_text()
    assert text.startswith("$ docker run ")
    first = text.splitlines()[0]
    assert "-e LLMBUILD_TEST_SECRET" in first and "--network none" in first
    lines = output_lines(log)
    for line in ("out-line", "err-line", "env-ok", f"user={os.getuid()}:{os.getgid()}",
                 "shm=65536"):
        assert f"[stream] {line}\n" in err
        assert line in lines
    ifaces = {line.split("=", 1)[1] for line in lines if line.startswith("iface=")}
    assert ifaces == {"lo"}
    assert secret not in text and secret not in err
    assert containers_of(docker_client, os.getpid()) == []


def test_nonzero_exit_is_build_failed_and_container_removed(docker_client, busybox_image,
                                                           tmp_path):
    log = tmp_path / "fail.log"
    with pytest.raises(BuildFailed, match="exited with status 3") as info:
        run_in_container(sh(busybox_image, "echo before-failing; exit 3"), log_path=log,
                         label="fails")
    assert str(log) in str(info.value)
    assert "before-failing" in output_lines(log)
    assert containers_of(docker_client, os.getpid()) == []


def test_mounts_read_only_and_owned_output(docker_client, busybox_image, tmp_path):
    inputs = tmp_path / "in"
    outputs = tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    (inputs / "weights.bin").write_text("w")
    # As root the default uid:gid is 0:0, which proves nothing: use another id then.
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() != 0 else (4321, 8765)
    outputs.chmod(0o777)
    run = sh(busybox_image,
             "cat /in/weights.bin; echo;"
             " if touch /in/new 2>/dev/null; then echo ro-WRITABLE; else echo ro-refused; fi;"
             " echo result > /out/result.txt",
             mounts=(Mount(inputs, "/in"), Mount(outputs, "/out", read_only=False)),
             user=f"{uid}:{gid}", workdir="/out")
    log = tmp_path / "mounts.log"
    run_in_container(run, log_path=log, label="mounts")
    assert output_lines(log) == ["w", "ro-refused"]
    assert not (inputs / "new").exists()
    result = outputs / "result.txt"
    assert result.read_text() == "result\n"
    assert (result.stat().st_uid, result.stat().st_gid) == (uid, gid)


def test_missing_mount_source_and_missing_image_are_clear(docker_client, busybox_image,
                                                          tmp_path):
    with pytest.raises(executor.LLMBuildError, match="does not exist"):
        run_in_container(sh(busybox_image, "true", mounts=(Mount(tmp_path / "nope", "/in"),)),
                         log_path=tmp_path / "a.log", label="m")
    with pytest.raises(BuildFailed, match="not in the Docker daemon"):
        run_in_container(ContainerRun("llmbuild-test/absent:0", ("true",)),
                         log_path=tmp_path / "b.log", label="m")


def test_timeout_kills_and_removes(docker_client, busybox_image, tmp_path):
    start = time.monotonic()
    with pytest.raises(BuildFailed, match=r"stopped after the timeout of 1 s and removed; log: .*t\.log"):
        run_in_container(sh(busybox_image, "echo started; /bin/busybox sleep 60 & exec /bin/busybox sleep 60"),
                         log_path=tmp_path / "t.log", label="slow", timeout=1)
    assert time.monotonic() - start < 20
    assert containers_of(docker_client, os.getpid()) == []
    # The log is kept: what the tool said, then why it stopped.
    assert output_lines(tmp_path / "t.log")[0] == "started"
    assert "was stopped after the timeout of 1 s" in output_lines(tmp_path / "t.log")[-1]


def test_running_container_for_servers(docker_client, busybox_image, tmp_path):
    log = tmp_path / "server.log"
    run = sh(busybox_image, "echo serving; exec /bin/busybox sleep 60")
    with running_container(run, log_path=log, label="server") as container:
        container.reload()
        assert container.status == "running"
        assert [c.id for c in containers_of(docker_client, os.getpid())] == [container.id]
    assert containers_of(docker_client, os.getpid()) == []
    assert log.read_text().startswith("$ docker run ") and output_lines(log) == ["serving"]


# --------------------------------------------------------------------------- interruption


CHILD = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from llmbuild.executors.docker import ContainerRun, run_in_container
    image, log = sys.argv[1], sys.argv[2]
    run_in_container(ContainerRun(image, ("/bin/busybox", "sh", "-c",
                                          "echo ready; exec /bin/busybox sleep 120")),
                     log_path=Path(log), label="child")
    """)


def start_child(image: str, tmp_path: Path, **env: str) -> subprocess.Popen:
    """A python process inside run_in_container, returned once its container printed 'ready'."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, image, str(tmp_path / "child.log")],
                             stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    killer = threading.Timer(60, child.kill)
    killer.start()
    seen = []
    try:
        assert child.stderr is not None
        for line in child.stderr:
            seen.append(line)
            if line.strip() == "[child] ready":
                return child
        raise AssertionError("the child never reported its container ready:\n" + "".join(seen))
    finally:
        killer.cancel()


def test_sigint_removes_the_container(docker_client, busybox_image, tmp_path):
    # The watchdog is off: the removal must come from run_in_container itself.
    child = start_child(busybox_image, tmp_path, **{executor.WATCHDOG_ENV: "0"})
    assert len(containers_of(docker_client, child.pid)) == 1
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=60)
    assert child.returncode != 0
    assert "KeyboardInterrupt" in rest
    assert containers_of(docker_client, child.pid) == []


def test_sigkill_leftover_is_reaped_by_the_next_process(docker_client, busybox_image,
                                                       tmp_path):
    # Without the watchdog, only reap_orphans() stands between a SIGKILL and a leak.
    child = start_child(busybox_image, tmp_path, **{executor.WATCHDOG_ENV: "0"})
    child.kill()
    child.communicate(timeout=30)
    left = containers_of(docker_client, child.pid)
    assert len(left) == 1 and left[0].status == "running"
    reaped = subprocess.run(
        [sys.executable, "-c",
         "from llmbuild.executors.docker import reap_orphans; print(*reap_orphans(), sep='\\n')"],
        capture_output=True, text=True, check=True, timeout=120)
    assert left[0].name in reaped.stdout.split()
    assert containers_of(docker_client, child.pid) == []
    # Our own (live) containers are never reaped.
    with running_container(sh(busybox_image, "exec /bin/busybox sleep 60"),
                           log_path=tmp_path / "mine.log", label="mine") as mine:
        assert mine.name not in reap_orphans()
        assert len(containers_of(docker_client, os.getpid())) == 1


def test_sigkill_watchdog_removes_the_container(docker_client, busybox_image, tmp_path):
    child = start_child(busybox_image, tmp_path)
    child.kill()
    child.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while containers_of(docker_client, child.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers_of(docker_client, child.pid) == []


# --------------------------------------------------------------------------- no container


def test_docker_run_command_round_trip(tmp_path):
    (tmp_path / "out").mkdir()
    run = ContainerRun(
        image="nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3",
        argv=("trtllm-build", "--checkpoint_dir", "/in/ckpt", "--output_dir", "/out",
              "a b; rm -rf / $(x)"),
        mounts=(Mount(tmp_path, "/in"), Mount(tmp_path / "out", "/out", read_only=False)),
        workdir="/out", env={"HF_TOKEN": "hf_very_secret"}, gpus=2, shm_size="2g",
        ulimits={"memlock": (-1, -1), "stack": (67108864, 67108864)})
    cmd = docker_run_command(run)
    assert shlex.split(shlex.join(cmd)) == cmd
    assert cmd[:2] == ["docker", "run"] and "--init" in cmd and "--rm" in cmd

    def follows(flag: str, value: str) -> bool:
        return any(cmd[i] == flag and cmd[i + 1] == value for i in range(len(cmd) - 1))

    assert follows("--gpus", "2")
    assert follows("-v", f"{tmp_path}:/in:ro")
    assert follows("-v", f"{tmp_path / 'out'}:/out")
    assert follows("--user", f"{os.getuid()}:{os.getgid()}")
    assert follows("--network", "none")
    assert follows("--shm-size", "2g")
    assert follows("--ulimit", "memlock=-1:-1")
    assert follows("--ulimit", "stack=67108864:67108864")
    assert follows("-w", "/out")
    assert follows("-e", "HF_TOKEN")
    assert "hf_very_secret" not in shlex.join(cmd)
    assert cmd[-len(run.argv) - 1:] == [run.image, *run.argv]

    ids = docker_run_command(ContainerRun("img", ("true",), gpus=("0", "3"), network=True))
    assert follows_in(ids, "--gpus", '"device=0,3"') and "--network" not in ids

    # What the SDK receives for the same requests.
    kwargs = executor._create_kwargs(run, "engine")
    assert kwargs["command"] == list(run.argv) and kwargs["init"] is True
    assert kwargs["network_mode"] == "none" and kwargs["user"] == run.user
    (request,) = kwargs["device_requests"]
    assert request["Count"] == 2 and request["Capabilities"] == [["gpu"]]
    (by_id,) = executor._create_kwargs(ContainerRun("img", ("true",), gpus=("0", "3")),
                                       "e")["device_requests"]
    assert by_id["DeviceIDs"] == ["0", "3"]
    assert {(u["Name"], u["Soft"], u["Hard"]) for u in kwargs["ulimits"]} == {
        ("memlock", -1, -1), ("stack", 67108864, 67108864)}
    assert kwargs["labels"][executor.OWNER_LABEL].split(":")[1] == str(os.getpid())
    assert "hf_very_secret" not in repr(kwargs["labels"])


def follows_in(cmd: list[str], flag: str, value: str) -> bool:
    return any(cmd[i] == flag and cmd[i + 1] == value for i in range(len(cmd) - 1))


def test_unreachable_daemon_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    with pytest.raises(DockerUnavailable) as info:
        executor.docker_client()
    message = str(info.value)
    assert "\n" not in message
    assert "unix:///nonexistent.sock" in message and "DOCKER_HOST" in message
    assert "does not exist" in message
    assert ".ci/start-dockerd" in message


def test_client_is_cached_per_process(docker_client):
    assert executor.docker_client() is executor.docker_client()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not reuse the parent's client (and its sockets)
        try:
            os.write(write, b"1" if executor.docker_client() is not docker_client else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


# --------------------------------------------------------------------------- python image


def test_python_image_runs_python_311(docker_client, python_image, tmp_path):
    log = tmp_path / "py.log"
    run_in_container(ContainerRun(python_image,
                                  ("python3", "-c", "import sys; print(sys.version)")),
                     log_path=log, label="py")
    assert output_lines(log)[0].startswith("3.11.")
