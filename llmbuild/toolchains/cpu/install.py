"""Install and locate the CPU Triton environment (a real Triton 2.51.0 from nvidia-pytriton).

Layout of one environment, under ``<root>/triton-cpu-<hash>/``::

    venv/                        made by /usr/bin/python3.11 -m venv, at its final path
    backends/                    copy of <site-packages>/pytriton/tritonserver/backends
    backends/python/triton_python_backend_stub   the 3.11 stub
    COMPLETE                     JSON written last; without it the directory does not count

``<hash>`` covers the interpreter, the pinned package list and RECIPE_VERSION.
A venv embeds its absolute path (``pyvenv.cfg``, script shebangs), so it is
built in place under a file lock and the marker is written last; an
incomplete directory found under the lock is removed and rebuilt.

``LLMBUILD_TRITON_ENV=<dir>`` points at an existing environment with this
layout and skips installing.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from filelock import FileLock, Timeout

#: Bump when the layout or the way the environment is built changes.
RECIPE_VERSION = 1
BASE_PYTHON = "/usr/bin/python3.11"
PYTHON_TAG = "3.11"
TRITON_VERSION = "2.51.0"
#: Pinned exactly as verified: torch==2.13.0 is the local CPU wheel (an
#: unpinned torch pulls a 2.7 GB CUDA build); the Python backend needs numpy<2.
PACKAGES: tuple[str, ...] = (
    "nvidia-pytriton==0.7.0",
    "torch==2.13.0",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy<2",
)
ENV_VAR = "LLMBUILD_TRITON_ENV"
MARKER = "COMPLETE"
LOCK_TIMEOUT_S = 1800.0

# Variables that would make the stub's embedded interpreter pick up packages
# from somewhere other than the Triton venv.
_DROP_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "CONDA_PREFIX")


class TritonEnvError(RuntimeError):
    """The CPU Triton environment cannot be installed or is not usable."""


@dataclass(frozen=True)
class TritonEnv:
    """A usable CPU Triton install."""

    root: Path
    venv: Path
    python: Path
    site_packages: Path
    tritonserver: Path
    backend_dir: Path
    version: str = TRITON_VERSION

    @property
    def lib_dir(self) -> Path:
        """Libraries the copied stub needs (libcudart & co. shipped by the wheel)."""
        return self.site_packages / "nvidia_pytriton.libs"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment to launch ``tritonserver`` with.

        Starts from ``base`` (default ``os.environ``), puts the venv's ``bin``
        first on PATH (the stub takes the first ``python3`` on PATH), prepends
        the wheel's libs to LD_LIBRARY_PATH and drops PYTHONPATH-like
        variables. Adds nothing else.
        """
        env = dict(os.environ if base is None else base)
        for var in _DROP_VARS:
            env.pop(var, None)
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = _prepend(str(self.venv / "bin"), env.get("PATH") or os.defpath)
        env["LD_LIBRARY_PATH"] = _prepend(str(self.lib_dir), env.get("LD_LIBRARY_PATH", ""))
        env["PYTHONNOUSERSITE"] = "1"
        return env


def _prepend(item: str, path_list: str) -> str:
    parts = [p for p in path_list.split(os.pathsep) if p and p != item]
    return os.pathsep.join([item, *parts])


def recipe(base_python: str = BASE_PYTHON) -> dict:
    return {
        "python": base_python,
        "python_tag": PYTHON_TAG,
        "packages": list(PACKAGES),
        "recipe_version": RECIPE_VERSION,
    }


def recipe_hash(base_python: str = BASE_PYTHON) -> str:
    blob = json.dumps(recipe(base_python), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def layout(root: Path) -> TritonEnv:
    """The TritonEnv our layout puts under ``root`` (whether or not it is installed there)."""
    venv = root / "venv"
    site = venv / "lib" / f"python{PYTHON_TAG}" / "site-packages"
    return TritonEnv(
        root=root,
        venv=venv,
        python=venv / "bin" / "python",
        site_packages=site,
        tritonserver=site / "pytriton" / "tritonserver" / "bin" / "tritonserver",
        backend_dir=root / "backends",
    )


def _install_dir(root: Path, base_python: str) -> Path:
    return Path(root).expanduser().resolve() / f"triton-cpu-{recipe_hash(base_python)}"


def planned_cpu_triton(root: Path, *, base_python: str = BASE_PYTHON) -> TritonEnv:
    """Where ensure_cpu_triton's environment is (or will be) for ``root``: for plans."""
    override = os.environ.get(ENV_VAR)
    if override:
        return layout(Path(override).expanduser().resolve())
    return layout(_install_dir(root, base_python))


def _locate(root: Path) -> TritonEnv:
    """Build a TritonEnv for ``root`` (our layout) and check its files exist."""
    env = layout(root)
    python = env.python
    missing = [
        p
        for p in (
            python,
            env.tritonserver,
            env.backend_dir / "python" / "libtriton_python.so",
            env.backend_dir / "python" / "triton_python_backend_stub",
            env.lib_dir,
        )
        if not p.exists()
    ]
    if missing:
        raise TritonEnvError(
            f"{root} is not a CPU Triton environment: missing {', '.join(map(str, missing))}"
        )
    return env


def _is_complete(target: Path) -> bool:
    return (target / MARKER).is_file()


def find_cpu_triton(root: Path, *, base_python: str = BASE_PYTHON) -> TritonEnv | None:
    """The environment, when it is installed and complete (None: ensure_cpu_triton installs it)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return _locate(Path(override).expanduser().resolve())
    target = _install_dir(root, base_python)
    if _is_complete(target):
        try:
            return _locate(target)
        except TritonEnvError:
            pass  # files removed behind our back: rebuild under the lock
    return None


def install_log(target: Path) -> Path:
    """Where an install's pip output goes (beside the environment: it outlives a failed attempt)."""
    return target.with_name(target.name + ".install.log")


def ensure_cpu_triton(
    root: Path,
    *,
    progress: Callable[[str], object] | None = None,
    base_python: str = BASE_PYTHON,
) -> TritonEnv:
    """Return the CPU Triton environment under ``root``, installing it if needed; what it does
    goes to ``progress`` (default: stderr, leaving stdout to the caller).

    Idempotent and safe to call from concurrent processes: one builds while
    the others wait on the lock, then all reuse the same directory.
    """
    progress = progress or _to_stderr
    found = find_cpu_triton(root, base_python=base_python)
    if found is not None:
        return found
    target = _install_dir(root, base_python)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress(f"waiting for another process installing {target} ...")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise TritonEnvError(
                f"gave up after {LOCK_TIMEOUT_S:.0f} s waiting for the lock {lock.lock_file}"
            ) from None
    try:
        if _is_complete(target):
            try:
                return _locate(target)
            except TritonEnvError as e:
                progress(f"{e}; reinstalling")
        if target.exists():  # left by a killed or failed build: never counts
            progress(f"removing incomplete {target}")
            shutil.rmtree(target)
        _build(target, base_python=base_python, progress=progress)
        return _locate(target)
    finally:
        lock.release()


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _build(target: Path, *, base_python: str, progress: Callable[[str], object]) -> None:
    if not os.path.exists(base_python):
        raise TritonEnvError(
            f"{base_python} not found: the CPU Triton lane needs Debian's Python {PYTHON_TAG} "
            f"(the Python backend stub links its libpython): "
            f"apt-get install python{PYTHON_TAG} python{PYTHON_TAG}-venv libpython{PYTHON_TAG}"
        )
    started = time.monotonic()
    target.mkdir(parents=True)
    venv = target / "venv"

    progress(f"creating venv {venv} with {base_python}")
    proc = subprocess.run(
        [base_python, "-m", "venv", str(venv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
    )
    if proc.returncode != 0:
        last = (proc.stdout.strip().splitlines() or [""])[-1]
        raise TritonEnvError(
            f"{base_python} -m venv failed ({last}): "
            f"apt-get install python{PYTHON_TAG}-venv"
        )

    python = venv / "bin" / "python"
    argv = [
        str(python), "-m", "pip", "install",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        *PACKAGES,
    ]
    log = install_log(target)
    progress(f"pip install {' '.join(PACKAGES)} (about a minute; log: {log})")
    _pip(argv, log=log, progress=progress, env=_clean_env())

    site = venv / "lib" / f"python{PYTHON_TAG}" / "site-packages"
    src_backends = site / "pytriton" / "tritonserver" / "backends"
    stub = site / "pytriton" / "tritonserver" / "python_backend_stubs" / PYTHON_TAG / "triton_python_backend_stub"
    for p in (src_backends, stub):
        if not p.exists():
            raise TritonEnvError(f"nvidia-pytriton did not install {p}")
    backends = target / "backends"
    shutil.copytree(src_backends, backends, symlinks=True)
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")

    _check(_locate(target))

    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True, text=True, env=_clean_env(),
    ).stdout.split()
    info = {
        **recipe(base_python),
        "triton_version": TRITON_VERSION,
        "installed": freeze,
        "seconds": round(time.monotonic() - started, 1),
    }
    tmp = target / (MARKER + ".tmp")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, target / MARKER)
    progress(f"CPU Triton {TRITON_VERSION} ready in {target} ({info['seconds']} s)")


def _check(env: TritonEnv) -> None:
    """Fail at install time on what would otherwise hang the server later."""
    proc = subprocess.run(
        [str(env.python), "-c", "import numpy, torch; print(numpy.__version__, torch.__version__)"],
        capture_output=True, text=True, env=env.env(),
    )
    if proc.returncode != 0:
        raise TritonEnvError(f"the Triton venv cannot import numpy/torch: {proc.stderr.strip()[-500:]}")
    numpy_version = proc.stdout.split()[0]
    if int(numpy_version.split(".")[0]) >= 2:
        raise TritonEnvError(f"the Triton venv has numpy {numpy_version}; the Python backend needs numpy<2")
    ldd = shutil.which("ldd")
    if ldd:
        stub = env.backend_dir / "python" / "triton_python_backend_stub"
        out = subprocess.run([ldd, str(stub)], capture_output=True, text=True, env=env.env()).stdout
        missing = [line.split()[0] for line in out.splitlines() if "not found" in line]
        if missing:
            hint = f" (apt-get install libpython{PYTHON_TAG})" if any("libpython" in m for m in missing) else ""
            raise TritonEnvError(f"the Python backend stub cannot load {', '.join(missing)}{hint}")


def pdeathsig_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` making the kernel send ``sig`` to the child when the thread that
    started it dies (even by SIGKILL). Linux only; the child is signalled when the
    *thread* that forked it exits, so start long-lived children from a thread that
    outlives them."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in (*_DROP_VARS, "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV", "PIP_USER", "PIP_TARGET", "PIP_PREFIX"):
        env.pop(var, None)
    return env


def _pip(argv: list[str], *, log: Path, progress: Callable[[str], object], env: dict[str, str]) -> None:
    """Run pip with its output in `log`; progress hears what it is collecting, not every line."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=env, bufsize=1,
            preexec_fn=pdeathsig_preexec(),  # no pip left writing into the venv if we are killed
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                if line.startswith(("Collecting ", "Installing collected packages")):
                    progress("pip: " + line.strip().split(":")[0].lower())
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        raise TritonEnvError(f"pip install of the CPU Triton environment failed (exit {rc}); log: {log}")


if __name__ == "__main__":  # pragma: no cover - manual use: python -m llmbuild.toolchains.cpu.install ROOT
    e = ensure_cpu_triton(Path(sys.argv[1] if len(sys.argv) > 1 else "cache/toolchains"))
    print(e)
