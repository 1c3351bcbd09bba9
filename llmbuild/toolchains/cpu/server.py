"""Start and stop a real tritonserver (the CPU lane) and wait until it is ready.

    with TritonServer(repo, ensure_cpu_triton(root), log_path=log) as server:
        with server.client() as client:        # closed before shutdown
            client.infer(...)

Lifetime rules, each learnt the hard way (see FACTS.md "Triton Inference Server
on CPU"):

- argv list, never a shell; its own session/process group; the working
  directory is a fresh empty temp dir (a ``triton`` folder in the working
  directory shadows the ``triton`` package torch imports inside the stub);
- readiness always has a deadline (a stub that cannot load its libraries
  leaves the server ``loading`` forever); a dead process is noticed at once;
- every HTTP connection we opened is closed before SIGTERM (an open
  keep-alive connection holds shutdown until ``--exit-timeout-secs``);
- SIGTERM to the server, up to ``stop_timeout`` s, then SIGKILL to the
  whole group (server and its Python stubs);
- the server gets ``PR_SET_PDEATHSIG`` so it is signalled when the thread
  that started it dies, even by SIGKILL; SIGTERM to our process is turned into
  ``SystemExit`` while a server runs (main thread, default handler only) so
  the normal shutdown path runs;
- the Python backend's shared-memory regions get a per-server prefix
  (``--backend-config=python,shm-region-prefix-name=...``), so the ones this
  server leaves in /dev/shm can be told from other servers' and removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from llmbuild.core.processes import running
from llmbuild.toolchains.client import TritonStartError, wait_until_ready
from llmbuild.toolchains.cpu.install import TritonEnv, pdeathsig_preexec

SHM_DIR = Path("/dev/shm")
SHM_DEFAULT_PREFIX = "triton_python_backend_shm_region_"
#: HTTP, gRPC and metrics ports a plan shows (a server takes free ones when it starts).
PLANNED_PORTS = (8000, 8001, 8002)
LOG_TAIL_LINES = 40
_PORT_IN_USE_MARKERS = ("address already in use", "address in use", "already in use", "failed to bind")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free right now (another process may still take one: retry on conflict)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _read_log(path: Path, offset: int = 0) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()
    except OSError as e:
        return [f"(cannot read {path}: {e})"]


# Triton logs "E<date> ..." for errors; this one is printed on every CPU-only start.
_HARMLESS_ERRORS = ("CudaDriverHelper has not been initialized",)


def _error_lines(lines: list[str], limit: int = 20) -> list[str]:
    errors = [
        line for line in lines
        if (line[:1] == "E" and line[1:5].isdigit()) or line.startswith("error:")
        if not any(h in line for h in _HARMLESS_ERRORS)
    ]
    return errors[-limit:]


_WORKDIR_PREFIX = "llmbuild-tritonserver-"


def _sweep_stale_workdirs() -> None:
    """Remove empty working directories left by owners that were SIGKILLed."""
    for d in Path(tempfile.gettempdir()).glob(_WORKDIR_PREFIX + "*-*"):
        pid = d.name[len(_WORKDIR_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if not running(int(pid)):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty


class TritonServer:
    """A running tritonserver serving ``repository``; use as a context manager."""

    def __init__(
        self,
        repository: Path,
        env: TritonEnv,
        *,
        log_path: Path,
        model_control: str = "none",
        load_models: Sequence[str] = (),
        ready_timeout: float = 120.0,
        workdir: Path | None = None,
        stop_timeout: float = 10.0,
        exit_timeout_secs: int = 3,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        environment: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ):
        if model_control not in ("none", "explicit"):
            raise ValueError(f"model_control must be 'none' or 'explicit', not {model_control!r}")
        if load_models and model_control != "explicit":
            raise ValueError("load_models needs model_control='explicit'")
        self.repository = Path(repository).resolve()
        self.env = env
        self.log_path = Path(log_path).resolve()
        self.model_control = model_control
        self.load_models = tuple(load_models)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.exit_timeout_secs = exit_timeout_secs
        self.extra_args = tuple(extra_args)
        self.host = host
        self.environment = dict(environment or {})  # on top of the install's (e.g. CUDA_VISIBLE_DEVICES)
        self.progress = progress or (lambda phase: None)  # "starting Triton on :port", "loading models 1/5"
        self._workdir_arg = Path(workdir).resolve() if workdir is not None else None
        self._workdir: Path | None = None
        self._own_workdir = False
        self._proc: subprocess.Popen | None = None
        self._group_gone = False
        self._ports: tuple[int, int, int] | None = None
        self._shm_prefix = ""
        self._log_offset = 0
        self._clients: list = []
        self._clients_lock = threading.Lock()
        self._our_sigterm = None
        self.ready_seconds: float | None = None
        self.stop_seconds: float | None = None

    # -- properties -------------------------------------------------------------------------

    def _need_ports(self) -> tuple[int, int, int]:
        if self._ports is None:
            raise RuntimeError("the server is not started")
        return self._ports

    @property
    def http_port(self) -> int:
        return self._need_ports()[0]

    @property
    def grpc_port(self) -> int:
        return self._need_ports()[1]

    @property
    def metrics_port(self) -> int:
        return self._need_ports()[2]

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def shm_prefix(self) -> str:
        """Prefix of this server's Python-backend regions in /dev/shm."""
        return self._shm_prefix

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- clients ----------------------------------------------------------------------------

    def _new_client(self, *, connection_timeout: float = 5.0, network_timeout: float = 60.0):
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(
            self.http_url, connection_timeout=connection_timeout, network_timeout=network_timeout
        )
        with self._clients_lock:
            self._clients.append(client)
        return client

    def _close_client(self, client) -> None:
        with contextlib.suppress(Exception):
            client.close()
        with self._clients_lock:
            with contextlib.suppress(ValueError):
                self._clients.remove(client)

    @contextlib.contextmanager
    def client(self, *, network_timeout: float = 60.0) -> Iterator:
        """A ``tritonclient.http.InferenceServerClient``, closed on exit (and at shutdown at the latest)."""
        c = self._new_client(network_timeout=network_timeout)
        try:
            yield c
        finally:
            self._close_client(c)

    def close_clients(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for c in clients:
            with contextlib.suppress(Exception):
                c.close()

    def repository_index(self) -> list[dict]:
        """``POST /v2/repository/index``: one dict (name, version, state, reason) per model version."""
        with self.client(network_timeout=10.0) as c:
            return list(c.get_model_repository_index())

    def model_ready(self, name: str, version: str = "") -> bool:
        with self.client(network_timeout=10.0) as c:
            return bool(c.is_model_ready(name, version))

    # -- start ------------------------------------------------------------------------------

    def argv(self, ports: tuple[int, int, int] | None = None, shm_prefix: str | None = None) -> list[str]:
        """The tritonserver argv (ports and shared-memory prefix: this server's, or those given)."""
        http, grpc, metrics = ports or self._need_ports()
        shm_prefix = self._shm_prefix if shm_prefix is None else shm_prefix
        argv = [
            str(self.env.tritonserver),
            "--model-repository", str(self.repository),
            "--backend-directory", str(self.env.backend_dir),
            "--http-address", self.host, "--http-port", str(http),
            "--grpc-address", self.host, "--grpc-port", str(grpc),
            "--metrics-address", self.host, "--metrics-port", str(metrics),
            "--exit-timeout-secs", str(self.exit_timeout_secs),
            "--allow-gpu-metrics", "false",
            "--pinned-memory-pool-byte-size", "0",
            "--disable-auto-complete-config",
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        ]
        if self.model_control == "explicit":
            argv += ["--model-control-mode", "explicit"]
            for name in self.load_models:
                argv += ["--load-model", name]
        argv += list(self.extra_args)
        return argv

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError("TritonServer already started")
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository {self.repository} is not a directory")
        self._prepare_workdir()
        self._install_sigterm_handler()
        try:
            for attempt in (1, 2):
                try:
                    self._start_once(append_log=attempt > 1)
                    return
                except TritonStartError as e:
                    self._kill_and_clean()
                    if attempt == 1 and e.port_conflict:
                        continue
                    raise
        except BaseException:
            self._kill_and_clean()
            self._cleanup_workdir()
            self._restore_sigterm_handler()
            raise

    def _prepare_workdir(self) -> None:
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            if (self._workdir_arg / "triton").exists():
                raise ValueError(
                    f"{self._workdir_arg} contains 'triton': the stub puts its working directory "
                    "first on sys.path and torch would import it"
                )
            self._workdir, self._own_workdir = self._workdir_arg, False
        else:
            _sweep_stale_workdirs()
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-"))
            self._own_workdir = True

    def _start_once(self, *, append_log: bool) -> None:
        self._ports = tuple(free_ports(3, self.host))  # type: ignore[assignment]
        self._shm_prefix = f"{SHM_DEFAULT_PREFIX}llmbuild_{os.getpid()}_{secrets.token_hex(4)}_"
        argv = self.argv()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab" if append_log else "wb") as log:
            if append_log:
                log.write(b"\n---- llmbuild: port taken, retrying with new ports ----\n")
                log.flush()
            self._log_offset = log.tell()
            started = time.monotonic()
            self._group_gone = False
            self._proc = subprocess.Popen(
                argv,
                cwd=self._workdir,
                env={**self.env.env(), **self.environment},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=pdeathsig_preexec(signal.SIGKILL),
            )
        self.progress(f"starting Triton on :{self.http_port}")
        self._wait_ready(started)
        self.ready_seconds = time.monotonic() - started

    def _fail(self, what: str) -> TritonStartError:
        lines = _read_log(self.log_path, self._log_offset)
        errors = _error_lines(lines)
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        conflict = any(m in line.lower() for line in errors for m in _PORT_IN_USE_MARKERS)
        message = f"tritonserver {what} (log: {self.log_path})"
        if errors:
            message += "\nerrors in the log:\n" + "\n".join(errors)
        message += f"\nlast {LOG_TAIL_LINES} lines of {self.log_path}:\n{tail}"
        return TritonStartError(message, log_path=self.log_path, port_conflict=conflict)

    def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        wait_until_ready(self.http_url, deadline=started + self.ready_timeout, exited=self._proc.poll,
                         fail=self._fail, timeout=self.ready_timeout,
                         explicit_models=self.load_models if self.model_control == "explicit" else (),
                         progress=self.progress, status=self._loading)

    def _loading(self) -> str | None:
        """'loading models 3/5', counted in the server's log (models: the repository's directories
        with a config.pbtxt, or the explicit ones)."""
        wanted = len(self.load_models) if self.model_control == "explicit" else \
            sum(1 for p in self.repository.glob("*/config.pbtxt"))
        loaded = sum(1 for line in _read_log(self.log_path, self._log_offset) if "successfully loaded '" in line)
        return f"loading models {min(loaded, wanted)}/{wanted}" if wanted else None

    # -- stop -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Close our clients, SIGTERM, wait, SIGKILL the group, remove our shm regions. Idempotent."""
        started = time.monotonic()
        try:
            self.close_clients()
            proc = self._proc
            if proc is not None and proc.poll() is None:
                self.progress("stopping Triton")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            # also runs on a KeyboardInterrupt raised while waiting above
            self._kill_and_clean()
            self._cleanup_workdir()
            self._restore_sigterm_handler()
            self.stop_seconds = time.monotonic() - started

    def _kill_and_clean(self) -> None:
        self.close_clients()
        proc = self._proc
        if proc is not None and not self._group_gone:
            # The stubs of a server that is gone (or killed now) are in its process
            # group; the group id cannot be reused while a member lives. Once the
            # group is seen empty it is never signalled again.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
            self._group_gone = self._wait_group_gone(proc.pid, timeout=5.0)
        self._remove_shm()

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _remove_shm(self) -> None:
        if not self._shm_prefix or not SHM_DIR.is_dir():
            return
        for p in SHM_DIR.glob(self._shm_prefix + "*"):
            with contextlib.suppress(OSError):
                p.unlink()

    def _cleanup_workdir(self) -> None:
        if self._own_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- SIGTERM to us ----------------------------------------------------------------------

    def _install_sigterm_handler(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum, frame):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        self._our_sigterm = on_sigterm

    def _restore_sigterm_handler(self) -> None:
        if self._our_sigterm is None:
            return
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is self._our_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        self._our_sigterm = None
