"""Run a tool on this host: argv list (never a shell), output teed to a log, killed with us."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..core.errors import BuildFailed


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
