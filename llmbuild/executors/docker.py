"""Run a step's argv inside a container image through the Docker SDK.

A step becomes one container: its argv is the container's command (an argv list: never a
shell), inputs are bind-mounted read-only at stable container paths, outputs read-write,
it runs as the calling user's uid:gid, with no network unless asked, with the GPUs, shared
memory and ulimits the step needs. Its output goes, line by line, to the progress of its
label (core/progress.py: on stderr as "[label] line" when nothing draws it) and is appended
to the step's log, whose first line is the equivalent `docker run` command (with `-e NAME`
and never an environment value). The container is removed in every case: success, failure,
timeout, Ctrl-C, SystemExit.

Every container carries the label ``llmbuild.owner=<hostname>:<pid>:<start time>``. If the
owner dies without cleaning up (SIGKILL), a small watchdog process it started removes the
container as soon as the owner's pipe closes, and ``reap_orphans()`` (called when a run
starts) removes whatever is left whose owner on this host is gone.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import BuildFailed, LLMBuildError
from ..core.processes import running
from ..core.progress import report
from ..core.protocols import Invocation
from ..core.redact import Redactor, secret_names
from ..core.steps import PathArg

OWNER_LABEL = "llmbuild.owner"
STEP_LABEL = "llmbuild.step"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
START_HINT = "start dockerd, e.g. `.ci/start-dockerd` and export the DOCKER_HOST it prints"
# Set to "0" to run without the per-process watchdog (then only reap_orphans() cleans up
# after a SIGKILLed owner); the tests use it to prove reap_orphans() alone is enough.
WATCHDOG_ENV = "LLMBUILD_DOCKER_WATCHDOG"


def _current_user() -> str | None:
    if not hasattr(os, "getuid"):
        return None
    return f"{os.getuid()}:{os.getgid()}"


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted at a container path; inputs are read-only."""

    host: Path
    container: str
    read_only: bool = True


@dataclass(frozen=True)
class ContainerRun:
    """Everything needed to run one argv in one container.

    ``env`` values are secret-safe: they are passed to the container only, never printed,
    logged, put in labels, error messages or this object's repr.
    ``ports`` (container port -> host port) imply a network: a target that publishes a port
    asks for one.
    """

    image: str
    argv: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    user: str | None = field(default_factory=_current_user)
    gpus: int | tuple[str, ...] | None = None
    shm_size: str | None = None
    ulimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    network: bool = False
    ports: Mapping[int, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.argv, (str, bytes)):
            raise TypeError("ContainerRun.argv must be a sequence of strings, not one string")
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        if not self.argv:
            raise ValueError("ContainerRun.argv is empty")
        if isinstance(self.gpus, list):
            object.__setattr__(self, "gpus", tuple(self.gpus))
        for m in self.mounts:
            if not m.container.startswith("/"):
                raise ValueError(f"container path {m.container!r} of a mount must be absolute")

    @property
    def uses_network(self) -> bool:
        return self.network or bool(self.ports)


class DockerUnavailable(LLMBuildError):
    """No Docker daemon answers: one line saying where, why, and how to start one."""


# --------------------------------------------------------------------------- client


_clients: dict[tuple[int, str], Any] = {}
_clients_lock = threading.Lock()


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def _why(host: str, error: BaseException) -> str:
    if host.startswith("unix://"):
        path = host[len("unix://"):]
        if not os.path.exists(path):
            return "the socket does not exist"
        if not os.access(path, os.R_OK | os.W_OK):
            return "permission denied on the socket"
    text = str(error)
    for pattern, reason in ((r"Connection refused", "connection refused"),
                            (r"Permission denied", "permission denied"),
                            (r"No such file or directory", "the socket does not exist"),
                            (r"timed? ?out", "timed out")):
        if re.search(pattern, text, re.I):
            return reason
    return " ".join(text.split())[:200] or type(error).__name__


def docker_client():
    """A ping-checked ``docker.DockerClient`` for $DOCKER_HOST (or the default socket).

    Cached per process id and DOCKER_HOST: a client is never reused across fork.
    Raises DockerUnavailable when no daemon answers.
    """
    host = _docker_host()
    key = (os.getpid(), host)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            return client
        try:
            import docker
        except ImportError as e:  # pragma: no cover - docker is a dependency
            raise DockerUnavailable(f"the Python package 'docker' is missing ({e}); "
                                    "pip install 'docker>=7,<8'") from None
        source = "DOCKER_HOST" if os.environ.get("DOCKER_HOST") else "the default socket"
        if host.startswith("unix://") and not os.path.exists(host[len("unix://"):]):
            # Checked first: docker-py leaks a socket object when connect() fails.
            raise DockerUnavailable(f"no Docker daemon answers at {host} ({source}): "
                                    f"the socket does not exist; {START_HINT}")
        try:
            # Probe with a fixed API version (the constructor makes no request then), so a
            # failure leaves no half-made client with an open socket behind; then talk the
            # server's version, as version="auto" would.
            probe = docker.from_env(version=docker.constants.MINIMUM_DOCKER_API_VERSION,
                                    timeout=30)
            try:
                api_version = probe.api.version(api_version=False)["ApiVersion"]
            finally:
                probe.close()
            client = docker.from_env(version=api_version, timeout=60)
        except Exception as e:  # DockerException, requests errors, ...
            raise DockerUnavailable(f"no Docker daemon answers at {host} ({source}): "
                                    f"{_why(host, e)}; {START_HINT}") from None
        # Drop clients of other (forked-from) processes without closing their sockets.
        for k in [k for k in _clients if k[0] != key[0]]:
            del _clients[k]
        _clients[key] = client
        return client


# --------------------------------------------------------------------------- ownership


def _proc_start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None if it is gone/a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2:].split()
    # fields[0] is field 3 (state); starttime is field 22.
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else ""


def owner_id(pid: int | None = None) -> str:
    """``<hostname>:<pid>:<start time>`` of a process (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_proc_start_time(pid) or 0}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it is another host's (unknown)."""
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    now = _proc_start_time(pid)
    if now is None:
        return False
    if not sys.platform.startswith("linux"):
        return running(pid)
    return now == start or now == ""


def reap_orphans(client=None) -> list[str]:
    """Force-remove llmbuild containers whose owner process on this host is gone.

    Containers owned by live processes and by other hosts are left alone. Returns the
    names of the containers removed.
    """
    import docker

    client = client or docker_client()
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}, ignore_removed=True):
        owner = (container.labels or {}).get(OWNER_LABEL, "")
        if _owner_alive(owner) is not False:
            continue
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            continue  # someone else reaped it
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                sys.stderr.write(f"llmbuild: could not remove orphaned container "
                                 f"{container.name}: {_api_error(e)}\n")
            continue
        removed.append(container.name)
    return removed


class _Watchdog:
    """A helper process that force-removes this process's containers if it dies.

    It reads ``+name`` / ``-name`` lines from a pipe only this process writes; at end of file
    (the owner exited or died, even by SIGKILL) it removes every container still
    registered. It runs in its own session, so Ctrl-C does not reach it.
    """

    CODE = r"""
import sys, time
live = []
for line in sys.stdin:
    line = line.strip()
    if line.startswith("+"):
        live.append(line[1:])
    elif line.startswith("-") and line[1:] in live:
        live.remove(line[1:])
if live:
    try:
        import docker
        client = docker.from_env(timeout=60)
    except Exception:
        sys.exit(0)
    # A container whose creation was interrupted may appear a little later: retry a while.
    deadline = time.monotonic() + 30
    while live:
        for name in list(live):
            try:
                client.api.remove_container(name, force=True)
                live.remove(name)
            except docker.errors.NotFound:
                pass
            except Exception as e:
                if "already in progress" in str(e):
                    live.remove(name)
        if not live or time.monotonic() > deadline:
            break
        time.sleep(1)
"""

    _instance: _Watchdog | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        env = dict(os.environ)
        env["DOCKER_HOST"] = _docker_host()
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-c", self.CODE], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True, close_fds=True)
        self.write_lock = threading.Lock()

    @classmethod
    def get(cls) -> _Watchdog | None:
        if os.environ.get(WATCHDOG_ENV, "1") == "0":
            return None
        with cls._lock:
            inst = cls._instance
            if inst is None or inst.pid != os.getpid() or inst.process.poll() is not None:
                try:
                    inst = cls._instance = cls()
                except OSError:
                    return None
                if not getattr(cls, "_atexit", False):
                    atexit.register(cls._close)
                    cls._atexit = True
            return inst

    def send(self, line: str) -> None:
        with self.write_lock:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(f"{line}\n".encode())
                self.process.stdin.flush()
            except (OSError, ValueError):
                pass

    @classmethod
    def _forget_in_child(cls) -> None:
        """After fork: drop (without signalling) the parent's pipe, so that the parent's
        watchdog still sees end of file when the parent dies."""
        inst, cls._instance = cls._instance, None
        cls._lock = threading.Lock()
        if inst is not None:
            inst.process.returncode = 0  # not this process's child: never wait for it
            try:
                if inst.process.stdin is not None:
                    inst.process.stdin.close()
            except (OSError, ValueError):
                pass

    @classmethod
    def _close(cls) -> None:
        inst = cls._instance
        if inst is None or inst.pid != os.getpid():
            return
        try:
            assert inst.process.stdin is not None
            inst.process.stdin.close()
            inst.process.wait(timeout=2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Watchdog._forget_in_child)


# --------------------------------------------------------------------------- run


def _gpu_request(gpus: int | tuple[str, ...]):
    import docker

    if isinstance(gpus, int):
        return docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])
    return docker.types.DeviceRequest(device_ids=[str(g) for g in gpus],
                                      capabilities=[["gpu"]])


def _container_name(label: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", label).strip("-.")[:60] or "step"
    return f"llmbuild-{slug}-{os.getpid()}-{secrets.token_hex(3)}"


def _create_kwargs(run: ContainerRun, label: str, name: str | None = None) -> dict[str, Any]:
    import docker

    mounts = []
    for m in run.mounts:
        host = Path(m.host).resolve()
        if not host.exists():
            raise LLMBuildError(f"cannot mount {host} at {m.container}: it does not exist")
        mounts.append(docker.types.Mount(target=m.container, source=str(host), type="bind",
                                         read_only=m.read_only))
    labels = {str(k): str(v) for k, v in run.labels.items()}
    labels[OWNER_LABEL] = owner_id()
    labels[STEP_LABEL] = label
    kwargs: dict[str, Any] = dict(
        image=run.image,
        command=list(run.argv),
        mounts=mounts,
        working_dir=run.workdir,
        environment=dict(run.env) if run.env else None,
        user=run.user,
        labels=labels,
        name=name or _container_name(label),
        init=True,
        stdin_open=False,
        tty=False,
    )
    if run.gpus is not None and run.gpus != () and run.gpus != 0:
        kwargs["device_requests"] = [_gpu_request(run.gpus)]
    if run.shm_size:
        kwargs["shm_size"] = run.shm_size
    if run.ulimits:
        kwargs["ulimits"] = [docker.types.Ulimit(name=n, soft=s, hard=h)
                             for n, (s, h) in run.ulimits.items()]
    if not run.uses_network:
        kwargs["network_mode"] = "none"
    if run.ports:
        kwargs["ports"] = {f"{c}/tcp": h for c, h in run.ports.items()}
    return kwargs


def docker_run_command(run: ContainerRun) -> list[str]:
    """The `docker run` argv a user could paste (environment as `-e NAME`, no values)."""
    cmd = ["docker", "run", "--rm", "--init"]
    if run.user:
        cmd += ["--user", run.user]
    if not run.uses_network:
        cmd += ["--network", "none"]
    for c, h in run.ports.items():
        cmd += ["-p", f"{h}:{c}"]
    if run.gpus is not None and run.gpus != () and run.gpus != 0:
        if isinstance(run.gpus, int):
            cmd += ["--gpus", "all" if run.gpus < 0 else str(run.gpus)]
        else:
            cmd += ["--gpus", '"device=' + ",".join(str(g) for g in run.gpus) + '"']
    if run.shm_size:
        cmd += ["--shm-size", str(run.shm_size)]
    for name, (soft, hard) in run.ulimits.items():
        cmd += ["--ulimit", f"{name}={soft}:{hard}"]
    for m in run.mounts:
        host = str(Path(m.host).resolve())
        if ":" in host or "," in host or ":" in m.container:
            spec = f"type=bind,src={host},dst={m.container}" + (",readonly" if m.read_only else "")
            cmd += ["--mount", spec]
        else:
            cmd += ["-v", f"{host}:{m.container}" + (":ro" if m.read_only else "")]
    if run.workdir:
        cmd += ["-w", run.workdir]
    for name in run.env:
        cmd += ["-e", name]
    for k, v in run.labels.items():
        cmd += ["--label", f"{k}={v}"]
    cmd.append(run.image)
    cmd += list(run.argv)
    return cmd


def _describe(run: ContainerRun) -> str:
    return f"{Path(run.argv[0]).name} in container {run.image}"


def _create(client, run: ContainerRun, label: str, name: str):
    """Create (not start) the container; image/daemon problems become clear one-liners."""
    import docker

    try:
        return client.containers.create(**_create_kwargs(run, label, name))
    except docker.errors.ImageNotFound:
        raise BuildFailed(f"image {run.image} is not in the Docker daemon at {_docker_host()} "
                          "(nothing is pulled: build or load the container target first)"
                          ) from None
    except docker.errors.APIError as e:
        raise BuildFailed(f"cannot create a container from {run.image}: {_api_error(e)}"
                          ) from None


def _api_error(e: Exception) -> str:
    text = getattr(e, "explanation", None) or str(e)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = " ".join(str(text).split())
    if "could not select device driver" in text:
        text += " (GPUs were requested but this daemon has no NVIDIA runtime: " \
                "install nvidia-container-toolkit)"
    if "error setting rlimit" in text:
        text += " (a requested ulimit exceeds this host's hard limit and dockerd lacks " \
                "CAP_SYS_RESOURCE: raise the host limit or ask for less)"
    return text


def _start(container, run: ContainerRun) -> None:
    import docker

    try:
        container.start()
    except docker.errors.APIError as e:
        raise BuildFailed(f"cannot start {_describe(run)}: {_api_error(e)}") from None


@contextmanager
def _no_sigint():
    """Defer Ctrl-C while the container is removed (main thread only)."""
    pending: list[Any] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda s, f: pending.append(s))
    except ValueError:  # not the main thread: signals are not delivered here anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending and callable(previous):
            previous(signal.SIGINT, None)


def _remove(client, name: str) -> bool:
    """Force-remove by name; False if it is not there (yet). A daemon that cannot be reached
    is reported, never raised over the step's own outcome (the watchdog or the next
    reap_orphans() retries)."""
    import docker

    with _no_sigint():
        for attempt in range(3):
            try:
                client.api.remove_container(name, force=True)
                return True
            except docker.errors.NotFound:
                return False
            except docker.errors.APIError as e:
                if "already in progress" in str(e):
                    return True
                error: Exception = e
            except Exception as e:  # connection errors
                error = e
            if attempt < 2:
                time.sleep(0.5)
        sys.stderr.write(f"llmbuild: could not remove container {name}: "
                         f"{_api_error(error)} (the next run removes it)\n")
        return False


@contextmanager
def _container(client, run: ContainerRun, label: str) -> Iterator[Any]:
    """Create the container and yield it; remove it on every way out.

    Its name is chosen (and given to the watchdog) before it is created, so that even a
    Ctrl-C in the middle of `create` (seconds with the vfs driver) leaves nothing behind:
    if the daemon finishes creating it after we gave up, the watchdog removes it when this
    process exits, and reap_orphans() at the latest.
    """
    name = _container_name(label)
    watchdog = _Watchdog.get()
    if watchdog is not None:
        watchdog.send(f"+{name}")
    settled = False  # True once the container's existence is known (made, or refused)
    try:
        try:
            container = _create(client, run, label, name)
        except Exception:
            settled = True
            raise
        settled = True
        yield container
    finally:
        removed = _remove(client, name)
        if watchdog is not None and (removed or settled):
            watchdog.send(f"-{name}")


def _log_header(run: ContainerRun) -> bytes:
    return ("$ " + shlex.join(docker_run_command(run)) + "\n").encode()


def run_in_container(run: ContainerRun, *, log_path: Path, label: str,
                     timeout: float | None = None) -> None:
    """Run ``run.argv`` in ``run.image``; stream and log its output; always remove it.

    A non-zero exit raises BuildFailed("... exited with status N"); a timeout kills the
    container and raises BuildFailed naming the timeout. KeyboardInterrupt and SystemExit
    remove the container and propagate.
    """
    import docker
    import requests

    client = docker_client()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    timed_out = threading.Event()
    with open(log_path, "ab") as log:
        log.write(_log_header(run))
        log.flush()
        with _container(client, run, label) as container:
            timer = None
            if timeout is not None:
                def expire() -> None:
                    try:
                        container.kill()
                    except Exception:  # it has just exited by itself
                        return
                    timed_out.set()
                timer = threading.Timer(timeout, expire)
                timer.daemon = True
            try:
                _start(container, run)
                if timer is not None:
                    timer.start()
                try:
                    _stream(container, log, label)
                    status = container.wait().get("StatusCode", -1)
                except (docker.errors.APIError, requests.exceptions.RequestException) as e:
                    raise BuildFailed(f"lost the Docker daemon while running {_describe(run)}: "
                                      f"{_api_error(e)}; log: {log_path}") from None
            finally:
                if timer is not None:
                    timer.cancel()
    if timed_out.is_set():
        message = f"{_describe(run)} was stopped after the timeout of {timeout:g} s and removed"
        with open(log_path, "ab") as log:
            log.write(f"llmbuild: {message}\n".encode())
        raise BuildFailed(f"{message}; log: {log_path}")
    if status != 0:
        raise BuildFailed(f"{_describe(run)} exited with status {status}; log: {log_path}")


def _stream(container, log, label: str) -> None:
    """Copy the container's output, line by line, to log and to the progress of `label`, secrets
    redacted."""
    pending = b""
    redactor = Redactor()

    def emit(line: bytes) -> None:
        line = redactor.bytes(line)
        log.write(line)
        log.flush()
        text = line.decode(errors="replace").rstrip()
        if text:
            report(label, text)

    for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            emit(line + b"\n")
    if pending:
        emit(pending)


@contextmanager
def running_container(run: ContainerRun, *, log_path: Path, label: str) -> Iterator[Any]:
    """Start a detached container (a server); yield it; copy its logs and remove it on exit."""
    client = docker_client()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(_log_header(run))
        log.flush()
    with _container(client, run, label) as container:
        try:
            _start(container, run)
            yield container
        finally:
            try:
                output = container.logs(stdout=True, stderr=True)
            except Exception as e:  # the daemon went away: keep what we know
                output = f"(could not read the container's logs: {e})\n".encode()
            with open(log_path, "ab") as log:
                log.write(Redactor().bytes(output))


# --------------------------------------------------------------------------- executor

IMAGE_FILE = "image.json"  # what a container target's output holds
PACKAGE_MOUNT = "/opt/llmbuild/python"
SITE_MOUNT = "/opt/llmbuild/site-packages"
#: What TensorRT-LLM's docs run containers with (shared memory for NCCL/MPI, pinned memory).
SHM_SIZE = "2g"
ULIMITS = {"memlock": (-1, -1), "stack": (67108864, 67108864)}


def image_tag(key: str) -> str:
    """The tag that marks an image as the output of a container target's key."""
    return f"llmbuild-key:{key}"


def container_path(arg: PathArg) -> str:
    if arg.role == "out":
        return "/llmbuild/out"
    return f"/llmbuild/{'src' if arg.role == 'source' else 'dep'}/{arg.field}"


class DockerExecutor:
    """Steps run in a container target's image: the same argv, paths mapped to stable mounts
    (inputs read-only). llmbuild's own modules (the CPU lane's stand-ins) run with llmbuild and
    its Python packages mounted read-only from this host (the image brings python3.11)."""

    name = "docker"

    def __init__(self, image: Callable[[bool], str], container: str, timeout: float | None = None):
        self.image = image  # image(built) -> image ID once built, else its key tag (for plans)
        self.container = container  # the container target's address, for messages
        self.timeout = timeout  # seconds a step's container may run (None: no limit)

    def _container_run(self, invocation: Invocation, image: str) -> ContainerRun:
        used = sorted(invocation.placeholders(), key=container_path)
        mounts = [Mount(invocation.paths[arg], container_path(arg), read_only=arg.role != "out") for arg in used]
        env = {**{k: os.environ[k] for k in secret_names(invocation.secret_env)}, **invocation.env}
        gpus = _gpus(invocation.devices or invocation.gpus) if invocation.uses_devices else None
        if isinstance(gpus, tuple):  # inside, the requested devices are all there is, numbered from 0
            env.pop("CUDA_VISIBLE_DEVICES", None)
        program = invocation.program
        prefix = list(program.argv)
        if program.python_module:
            import sysconfig

            import llmbuild

            mounts.append(Mount(Path(llmbuild.__file__).parent, f"{PACKAGE_MOUNT}/llmbuild"))
            mounts.append(Mount(Path(sysconfig.get_paths()["purelib"]), SITE_MOUNT))
            env.update(PYTHONPATH=f"{PACKAGE_MOUNT}:{SITE_MOUNT}", HOME="/tmp")
            prefix = ["python3", "-m", program.python_module]
        runtime = invocation.tensorrt_llm_runtime  # an unprivileged daemon cannot raise memlock
        return ContainerRun(
            image=image, argv=tuple(prefix + invocation.resolved_args({a: container_path(a) for a in used})),
            mounts=tuple(mounts), workdir="/tmp", env=env,  # scratch (e.g. model.cache) stays inside
            gpus=gpus,
            shm_size=SHM_SIZE if runtime else None, ulimits=ULIMITS if runtime else {}, network=False,
            labels={"llmbuild.target": "step"})

    def run(self, invocation: Invocation, *, log_path: Path, label: str) -> None:
        reap_orphans()
        run_in_container(self._container_run(invocation, self.image(True)), log_path=log_path, label=label,
                         timeout=self.timeout)

    def recover(self) -> list[str]:
        try:
            return [f"removed container {name} left by a killed run" for name in reap_orphans()]
        except DockerUnavailable:
            return []  # the steps that need the daemon will say so

    def _planned_image(self) -> str:
        try:
            return self.image(False)
        except Exception:  # the container's own sources are not on this machine: show its address
            return f"<image of {self.container}>"

    def describe(self, invocation: Invocation) -> dict[str, Any]:
        image = self._planned_image()
        run = self._container_run(invocation, image)
        program = list(run.argv[:len(run.argv) - len(invocation.args)])
        return {"executor": self.name, "program": program, "argv": list(run.argv), "image": image,
                "container": self.container,
                "mounts": [{"host": str(m.host), "container": m.container, "read_only": m.read_only}
                           for m in run.mounts],
                "gpus": invocation.gpus, "user": run.user, "docker_run": docker_run_command(run)}

    def _server_run(self, argv: list[str], image: str, repository: Path, gpus: int | tuple[int, ...],
                    port: int, host_port: int) -> ContainerRun:
        return ContainerRun(image=image, argv=tuple(argv), mounts=(Mount(repository, "/models"),),
                            gpus=_gpus(gpus), shm_size=SHM_SIZE, ulimits=ULIMITS, ports={port: host_port},
                            labels={"llmbuild.target": "serve"})

    def describe_server(self, argv: list[str], *, repository: Path, gpus: int, port: int) -> dict[str, Any]:
        """What `llmbuild plan` shows for a server `running` would start (its host port is a free
        one at run time; the plan shows `port`)."""
        run = self._server_run(argv, self._planned_image(), repository, gpus, port, port)
        return {"executor": self.name, "argv": list(argv), "image": run.image, "container": self.container,
                "gpus": gpus, "docker_run": docker_run_command(run)}

    @contextmanager
    def running(self, argv: list[str], *, repository: Path, gpus: int | tuple[int, ...], port: int,
                log_path: Path, label: str) -> Iterator[RunningServer]:
        """A server in this image with `repository` at /models and its `port` published on a
        free loopback port, on `gpus` (these device IDs, or any that many)."""
        host_port = _free_port()
        run = self._server_run(argv, self.image(True), repository, gpus, port, host_port)
        with running_container(run, log_path=log_path, label=label) as container:
            yield RunningServer(f"127.0.0.1:{host_port}", container)


@dataclass
class RunningServer:
    http_url: str
    container: Any

    def exit_code(self) -> int | None:
        self.container.reload()
        if self.container.status in ("created", "running"):
            return None
        return self.container.attrs["State"]["ExitCode"]


def _gpus(gpus: int | tuple[int, ...]) -> int | tuple[str, ...]:
    """ContainerRun.gpus for GPUs a step holds (exactly those IDs) or needs (any that many)."""
    return tuple(map(str, gpus)) if isinstance(gpus, tuple) else gpus


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
