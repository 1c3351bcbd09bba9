"""Run a tool on this host: argv list (never a shell), output teed to a log, killed with us."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..core.errors import BuildFailed
from ..core.faults import reach
from ..core.protocols import Invocation

#: What a step on this host inherits from our environment (besides the secrets it names).
PASSTHROUGH_ENV = ("HF_HOME", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "PATH", "HOME", "LANG",
                   "LC_ALL", "TMPDIR", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV")


class LocalExecutor:
    """Steps run as child processes of this one; llmbuild's own modules with this interpreter."""

    name = "local"

    @staticmethod
    def program(invocation: Invocation) -> list[str]:
        program = invocation.program
        return [sys.executable, "-m", program.python_module] if program.python_module else list(program.argv)

    def argv(self, invocation: Invocation) -> list[str]:
        return self.program(invocation) + invocation.resolved_args()

    def environment(self, invocation: Invocation) -> dict[str, str]:
        names = (*PASSTHROUGH_ENV, *invocation.secret_env)
        return {**{k: os.environ[k] for k in names if k in os.environ}, **invocation.env}

    def run(self, invocation: Invocation, *, log_path: Path, label: str) -> None:
        run_logged(self.argv(invocation), cwd=invocation.work, log_path=log_path,
                   env=self.environment(invocation), label=label)

    def describe(self, invocation: Invocation) -> dict[str, Any]:
        return {"executor": self.name, "program": self.program(invocation), "argv": self.argv(invocation),
                "gpus": invocation.gpus}

    def recover(self) -> list[str]:
        return []  # our children die with us (PR_SET_PDEATHSIG)


def run_logged(argv: list[str], *, cwd: Path, log_path: Path, env: dict[str, str],
               label: str) -> None:
    """Run argv; stream its output to stderr (prefixed by label) and to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(argv) + "\n").encode())
        log.flush()
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=die_with_parent)
        try:
            reach("tool-run")
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                sys.stderr.write(f"[{label}] {line.decode(errors='replace')}")
                sys.stderr.flush()
            returncode = process.wait()
        except BaseException:
            _kill_group(process)
            raise
    if returncode != 0:
        raise BuildFailed(f"{Path(argv[0]).name if len(argv) == 1 else ' '.join(argv[:3])} "
                          f"exited with status {returncode}")


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child: get SIGKILL when the process that started us dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the process-group kill on exit still applies
        pass


def _kill_group(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
