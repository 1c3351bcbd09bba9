"""Run a tool on this host: argv list (never a shell), output teed to a log (secrets redacted),
in a session of its own, which is killed whole with us or when the tool runs past its timeout."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..core.errors import BuildFailed
from ..core.faults import reach
from ..core.processes import raise_if_interrupted, watch_interrupts
from ..core.progress import report
from ..core.protocols import Invocation
from ..core.redact import Redactor, secret_names

#: What a step on this host inherits from our environment (besides the secrets it names).
PASSTHROUGH_ENV = ("HF_HOME", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "PATH", "HOME", "LANG",
                   "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV")


class LocalExecutor:
    """Steps run as child processes of this one; llmbuild's own modules with this interpreter."""

    name = "local"

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout  # seconds a step may run (None: no limit)

    @staticmethod
    def program(invocation: Invocation) -> list[str]:
        program = invocation.program
        return [sys.executable, "-m", program.python_module] if program.python_module else list(program.argv)

    def argv(self, invocation: Invocation) -> list[str]:
        return self.program(invocation) + invocation.resolved_args()

    def environment(self, invocation: Invocation) -> dict[str, str]:
        names = (*PASSTHROUGH_ENV, *secret_names(invocation.secret_env))
        return {**{k: os.environ[k] for k in names if k in os.environ}, **invocation.env}

    def run(self, invocation: Invocation, *, log_path: Path, label: str) -> None:
        run_logged(self.argv(invocation), cwd=invocation.work, log_path=log_path,
                   env=self.environment(invocation), label=label, timeout=self.timeout,
                   redactor=Redactor(invocation.secret_env))  # the invocation's: on a Ray node too

    def describe(self, invocation: Invocation) -> dict[str, Any]:
        return {"executor": self.name, "program": self.program(invocation), "argv": self.argv(invocation),
                "gpus": invocation.gpus}

    def recover(self) -> list[str]:
        return []  # our children die with us (PR_SET_PDEATHSIG)


def run_logged(argv: list[str], *, cwd: Path, log_path: Path, env: dict[str, str],
               label: str, redactor: Redactor, timeout: float | None = None) -> None:
    """Run argv; its output goes to log_path (secrets redacted), each line also to the progress of
    `label` (paths under the build's staging directory shown relative to it: that directory does
    not last). Past `timeout` seconds its process group (the tool and every child it started) is
    killed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    what = program_name(argv)
    staging = f"{cwd.parent}/"
    report(label, f"running {what}")
    with open(log_path, "ab") as log:
        log.write(redactor.bytes(("$ " + " ".join(argv) + "\n").encode()))
        log.flush()
        watch_interrupts()
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=die_with_parent)
        expired = threading.Event()
        timer = threading.Timer(timeout, _expire, (process, expired)) if timeout is not None else None
        try:
            raise_if_interrupted()
            if timer is not None:
                timer.daemon = True
                timer.start()
            reach("tool-run")
            assert process.stdout is not None
            for line in process.stdout:  # ends when every process holding the pipe is gone
                line = redactor.bytes(line)
                log.write(line)
                log.flush()
                text = line.decode(errors="replace").rstrip()
                if text:
                    report(label, text.replace(staging, ""))
            returncode = process.wait()
        except BaseException:
            _kill_group(process)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if expired.is_set():
            message = f"{what} was stopped after the timeout of {timeout:g} s (timeouts in [tool.llmbuild])"
            log.write(f"llmbuild: {message}\n".encode())
            raise BuildFailed(message)
    if returncode != 0:
        raise BuildFailed(f"{what} exited with status {returncode}")


def _expire(process: subprocess.Popen, expired: threading.Event) -> None:
    """The timer's end: the step's whole process group goes (its children hold our pipe)."""
    expired.set()
    _kill_group(process)


def program_name(argv: list[str]) -> str:
    """What a person calls the program: trtllm-build, convert_checkpoint.py, llmbuild's module."""
    if len(argv) > 2 and argv[1] == "-m":
        return argv[2].rsplit(".", 1)[-1]
    if len(argv) > 1 and Path(argv[0]).name.startswith("python"):
        return Path(argv[1]).name
    return Path(argv[0]).name


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child: get SIGKILL when the process that started us dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the process-group kill on exit still applies
        pass


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the tool's process group, then SIGKILL whatever of it is left: children that
    outlive the tool (or ignore SIGTERM) go too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
