"""Steps that run inside a container target's image, through the Docker SDK.

The argv is the lane's own (the same program, the same flags); only paths change:
each placeholder maps to a stable container path, mounted read-only when it is an
input. On the CPU lane the stand-ins run with llmbuild and its Python packages
mounted read-only from this host (the image brings python3.11).
"""

from __future__ import annotations

import json
import sysconfig
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..core.steps import PathArg, Step
from .base import SECRET_ENV, Toolchain, resolve
from .cpu_lane import STAND_INS
from .trtllm import flags

if TYPE_CHECKING:
    from ..core.build import RunContext
    from ..core.target import Target
    from ..core.workspace import Workspace

IMAGE_FILE = "image.json"  # what a container target's output holds
PACKAGE_MOUNT = "/opt/llmbuild/python"
SITE_MOUNT = "/opt/llmbuild/site-packages"
#: What TensorRT-LLM's docs run containers with (shared memory for NCCL/MPI, pinned memory).
SHM_SIZE = "2g"
ULIMITS = {"memlock": (-1, -1), "stack": (67108864, 67108864)}
TRITON_HTTP_PORT = 8000
READY_TIMEOUT = 600.0  # a large engine takes minutes to load


def image_tag(key: str) -> str:
    """The tag that marks an image as the output of a container target's key."""
    return f"llmbuild-key:{key}"


def container_path(arg: PathArg) -> str:
    if arg.role == "out":
        return "/llmbuild/out"
    return f"/llmbuild/{'src' if arg.role == 'source' else 'dep'}/{arg.field}"


class ContainerToolchain(Toolchain):
    """The active lane's programs, run in a container target's image."""

    def __init__(self, ws: Workspace, container: Target):
        self.ws = ws
        self.base = ws.toolchain
        self.lane = self.base.lane
        self.container = container
        declared = ws.facts(container)
        self.trtllm_version = flags.resolve_version(declared["trtllm_version"] or self.base.trtllm_version)
        self.tensorrt_version = declared["tensorrt_version"]

    def _identity(self) -> dict[str, Any]:
        # The image itself enters every key through the container dependency's output digest.
        base = {k: v for k, v in self.base.identity.items() if k not in ("lane", "trtllm_version", "executor")}
        return {**base, "executor": "docker", "tensorrt_version": self.tensorrt_version}

    def program(self, tool: str) -> list[str]:
        if self.lane == "cpu":
            return ["python3", "-m", STAND_INS[tool]]
        return self.base.program(tool)

    # -- mapping paths --------------------------------------------------------------------------

    def _mounts(self, step: Step, paths: dict[PathArg, Path]) -> list:
        """The step's own paths (inputs read-only), and on the CPU lane llmbuild itself."""
        from ..executors.docker import Mount

        used = {PathArg(a.role, a.field) for a in step.argv if isinstance(a, PathArg)} | {PathArg("out")}
        mounts = [Mount(paths[arg], container_path(arg), read_only=arg.role != "out")
                  for arg in sorted(used, key=container_path)]
        if self.lane == "cpu":
            import llmbuild

            mounts.append(Mount(Path(llmbuild.__file__).parent, f"{PACKAGE_MOUNT}/llmbuild"))
            mounts.append(Mount(Path(sysconfig.get_paths()["purelib"]), SITE_MOUNT))
        return mounts

    def _container_run(self, step: Step, paths: dict[PathArg, Path], image: str):
        from ..executors.docker import ContainerRun

        inside = {arg: Path(container_path(arg)) for arg in paths}
        mounts = self._mounts(step, paths)
        env = {k: v for k, v in self.environment().items() if k in SECRET_ENV}
        if self.lane == "cpu":
            env.update(PYTHONPATH=f"{PACKAGE_MOUNT}:{SITE_MOUNT}", HOME="/tmp",
                       LLMBUILD_TRTLLM_VERSION=self.trtllm_version)
        return ContainerRun(
            image=image, argv=tuple(self.program(step.tool) + [resolve(a, inside) for a in step.argv]),
            mounts=tuple(mounts), workdir="/tmp", env=env,  # scratch (e.g. model.cache) stays inside
            gpus=step.gpus if self.lane == "gpu" and step.gpus else None,
            # TensorRT-LLM's shared memory and ulimits; the CPU lane needs neither (and an
            # unprivileged daemon cannot raise memlock)
            shm_size=SHM_SIZE if self.lane == "gpu" else None,
            ulimits=ULIMITS if self.lane == "gpu" else {}, network=False,
            labels={"llmbuild.target": "step"})

    def _image(self, built: bool = True) -> str:
        """The image ID once the container target is built; its tag for plans before that."""
        key, _ = self.ws.key(self.container)
        out = self.ws.cache.out(key) / IMAGE_FILE
        if built and out.is_file():
            return json.loads(out.read_text())["image_id"]
        return image_tag(key)

    # -- running ----------------------------------------------------------------------------------

    def run(self, step: Step, ctx: RunContext) -> None:
        from ..executors.docker import reap_orphans, run_in_container

        reap_orphans()
        run = self._container_run(step, ctx.paths(step), self._image())
        run_in_container(run, log_path=ctx.log, label=str(ctx.target.address))

    def describe(self, step: Step, paths: dict[PathArg, Path]) -> dict[str, Any]:
        from ..executors.docker import docker_run_command

        try:
            image = self._image(built=False)
        except Exception:  # sources of the container not present: show its address
            image = f"<image of {self.container.address}>"
        run = self._container_run(step, paths, image)
        return {"lane": self.lane, "tool": step.tool, "program": self.program(step.tool),
                "argv": list(run.argv), "image": image, "container": str(self.container.address),
                "mounts": [{"host": str(m.host), "container": m.container, "read_only": m.read_only}
                           for m in run.mounts],
                "gpus": step.gpus, "user": run.user, "docker_run": docker_run_command(run)}

    # -- serving ----------------------------------------------------------------------------------

    def serving_unavailable(self) -> str | None:
        return self.base.serving_unavailable() if self.lane == "cpu" else None

    def server_identity(self) -> dict[str, Any]:
        return self.base.server_identity() if self.lane == "cpu" else {"tritonserver": "container"}

    def serve(self, repository: Path, *, log_path: Path, progress=print, world_size: int = 1):
        if self.lane == "cpu":  # the CPU lane's Triton comes from the pytriton wheel on the host
            return self.base.serve(repository, log_path=log_path, progress=progress)
        return self._serve_in_container(repository, log_path, world_size)

    @contextmanager
    def _serve_in_container(self, repository: Path, log_path: Path, world_size: int) -> Iterator[Any]:
        import time

        from ..executors.docker import ContainerRun, Mount, running_container
        from .cpu.server import TritonStartError, free_ports, wait_until_ready

        port = free_ports(1)[0]
        run = ContainerRun(image=self._image(), argv=tuple(triton_launch_argv(world_size)),
                           mounts=(Mount(repository, "/models"),), gpus=world_size,
                           shm_size=SHM_SIZE, ulimits=ULIMITS, ports={TRITON_HTTP_PORT: port},
                           labels={"llmbuild.target": "serve"})
        with running_container(run, log_path=log_path, label="tritonserver") as container:
            server = _Endpoint(f"127.0.0.1:{port}")
            wait_until_ready(server.http_url, deadline=time.monotonic() + READY_TIMEOUT,
                             exited=lambda: _exit_code(container), timeout=READY_TIMEOUT,
                             fail=lambda what: TritonStartError(f"tritonserver in {run.image} {what} "
                                                                f"(log: {log_path})", log_path=log_path))
            yield server


def triton_launch_argv(world_size: int) -> list[str]:
    """tritonserver under mpirun, one rank per GPU, as the backend's launch script does it."""
    if world_size == 1:
        return ["tritonserver", "--model-repository=/models", "--disable-auto-complete-config",
                f"--http-port={TRITON_HTTP_PORT}"]
    argv = ["mpirun", "--allow-run-as-root"]
    for rank in range(world_size):
        argv += ["-n", "1", "tritonserver", "--model-repository=/models", "--disable-auto-complete-config",
                 f"--backend-config=python,shm-region-prefix-name=prefix{rank}_"]
        argv += [f"--http-port={TRITON_HTTP_PORT}"] if rank == 0 else \
            ["--model-control-mode=explicit", "--load-model=tensorrt_llm"]
        argv.append(":")
    return argv[:-1]


class _Endpoint:
    def __init__(self, http_url: str):
        self.http_url = http_url


def _exit_code(container) -> int | None:
    container.reload()
    return None if container.status in ("created", "running") else container.attrs["State"]["ExitCode"]
