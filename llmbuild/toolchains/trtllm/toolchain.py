"""The GPU lane: the real TensorRT-LLM programs of one version (trtllm-build, convert_checkpoint.py,
quantize.py) and Triton's TensorRT-LLM backend, wherever an executor runs them."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ...core.errors import LLMBuildError
from ...core.protocols import Executor, Program
from ..base import BaseToolchain
from ..llmapi.lane import PTQ, SERVE_FILE, SERVE_PORT
from . import flags

TRITON_HTTP_PORT = 8000
READY_TIMEOUT = 600.0  # a large engine takes minutes to load (the smoke's timeout, when set, instead)


class TrtllmToolchain(BaseToolchain):
    lane = "gpu"
    uses_devices = True
    tensorrt_llm_runtime = True

    def program(self, tool: str) -> Program:
        if tool == PTQ:  # ModelOpt's, not TensorRT-LLM's
            return Program((self.host.python, f"{self.host.modelopt_root.rstrip('/')}/examples/llm_ptq/{PTQ}"))
        try:
            script = flags.script_path(tool, self.trtllm_version)
        except flags.FlagError as err:
            raise LLMBuildError(str(err)) from None
        if script is None:  # a console script such as trtllm-build
            return Program((tool,))
        return Program((self.host.python, f"{self.host.trtllm_root.rstrip('/')}/{script}"))

    def device_identity(self) -> dict[str, Any]:
        return {"tensorrt_version": self.tensorrt_version, "gpu_arch": self.gpu_arch}

    def serving_unavailable(self, executor: Executor) -> str | None:
        if not hasattr(executor, "running"):
            return f"serving on the {self.lane} lane needs a container target (Triton's TensorRT-LLM image)"
        return None

    def server_identity(self) -> dict[str, Any]:
        return {"tritonserver": "container"}

    def serving_command(self, repository: Path, *, executor: Executor, world_size: int) -> dict[str, Any]:
        argv = triton_launch_argv(world_size)
        if not hasattr(executor, "describe_server"):  # serving_unavailable says why it cannot run
            return {"tool": "tritonserver", "argv": argv}
        return {"tool": "tritonserver", **executor.describe_server(argv, repository=repository, gpus=world_size,
                                                                  port=TRITON_HTTP_PORT),
                "note": f"its port {TRITON_HTTP_PORT} published on a free loopback port"}

    @contextmanager
    def serve(self, repository: Path, *, executor: Executor, log_path: Path, progress,
              world_size: int, gpus: tuple[int, ...] = ()) -> Iterator[Any]:
        """tritonserver (under mpirun for more than one rank) in the executor's container, on the
        GPUs the smoke holds (else any world_size ones). The engine-free lane: trtllm-serve on the
        repository's serve.json argv, or one tritonserver for the llmapi model (its ranks are the
        LLM API's own)."""
        from ..client import TritonStartError, wait_until_ready

        if (repository / SERVE_FILE).is_file():
            yield from self._trtllm_serve(repository, executor=executor, log_path=log_path,
                                          gpus=gpus or world_size)
            return
        ranks = 1 if (repository / "tensorrt_llm" / "1" / "model.yaml").is_file() else world_size
        with executor.running(triton_launch_argv(ranks), repository=repository, gpus=gpus or world_size,
                              port=TRITON_HTTP_PORT, log_path=log_path, label="tritonserver") as server:
            ready_timeout = self.serve_timeout or READY_TIMEOUT
            progress(f"starting Triton on :{server.http_url.rpartition(':')[2]} ({world_size} rank(s))")
            wait_until_ready(server.http_url, deadline=time.monotonic() + ready_timeout,
                             exited=server.exit_code, timeout=ready_timeout, progress=progress,
                             fail=lambda what: TritonStartError(f"tritonserver {what} (log: {log_path})",
                                                                log_path=log_path))
            try:
                yield server
            finally:
                progress("stopping Triton")

    def _trtllm_serve(self, repository: Path, *, executor: Executor, log_path: Path, gpus) -> Iterator[Any]:
        """serve.json's argv in the container, its files at /models."""
        from ..llmapi.serving import wait_for_health

        argv = [f"/models/{a}" if (repository / a).exists() else a
                for a in json.loads((repository / SERVE_FILE).read_text())["argv"]]
        with executor.running(argv, repository=repository, gpus=gpus, port=SERVE_PORT, log_path=log_path,
                              label=argv[0]) as server:
            wait_for_health(server.http_url, deadline=time.monotonic() + READY_TIMEOUT, exited=server.exit_code,
                            fail=lambda what: LLMBuildError(f"{argv[0]} {what} (log: {log_path})"))
            yield server


def triton_launch_argv(world_size: int, repository: str = "/models") -> list[str]:
    """tritonserver under mpirun, one rank per GPU, as the backend's launch script does it."""
    if world_size == 1:
        return ["tritonserver", f"--model-repository={repository}", "--disable-auto-complete-config",
                f"--http-port={TRITON_HTTP_PORT}"]
    argv = ["mpirun", "--allow-run-as-root"]
    for rank in range(world_size):
        argv += ["-n", "1", "tritonserver", f"--model-repository={repository}",
                 "--disable-auto-complete-config", f"--backend-config=python,shm-region-prefix-name=prefix{rank}_"]
        argv += [f"--http-port={TRITON_HTTP_PORT}"] if rank == 0 else \
            ["--model-control-mode=explicit", "--load-model=tensorrt_llm"]
        argv.append(":")
    return argv[:-1]
