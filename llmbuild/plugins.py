"""The composition root: which kinds, settings subsystems, toolchains and executors a
workspace is loaded with. The core defines the protocols; this module picks the
implementations, so the core never imports a kind, a toolchain or an executor.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .core.errors import LLMBuildError, did_you_mean
from .core.protocols import Builder, Executor, RemoteCache, Subsystem, Toolchain
from .core.redact import DEFAULT_SECRET_ENV, use_patterns
from .core.settings import resolve_dir
from .core.target import KINDS, Kind, Target
from .core.workspace import Workspace
from .executors.docker import IMAGE_FILE, DockerExecutor, image_tag
from .executors.local import LocalExecutor
from .executors.ray_cluster import SUBSYSTEM as EXECUTOR_SUBSYSTEM, ExecutorSettings, ray_builder
from .remote.settings import SUBSYSTEM as REMOTE_SUBSYSTEM, RemoteCacheSettings
from .toolchains.cpu.toolchain import CpuToolchain
from .toolchains.subsystem import CONTAINER_FIELD, SUBSYSTEM, ToolchainSettings, gpu_pool, resolve_version
from .toolchains.trtllm import flags
from .toolchains.trtllm.toolchain import TrtllmToolchain


def load_kinds() -> dict[str, Kind]:
    """Import every module of `llmbuild.kinds` (each registers itself)."""
    import llmbuild.kinds as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    return KINDS


class DefaultPlugins:
    """llmbuild's own kinds; the CPU-lane or TensorRT-LLM toolchain; local, Docker or Ray execution;
    a remote cache on S3."""

    subsystems: tuple[Subsystem, ...] = (SUBSYSTEM, REMOTE_SUBSYSTEM, EXECUTOR_SUBSYSTEM)

    def __init__(self) -> None:
        self._toolchains: dict[tuple, Toolchain] = {}
        self._remotes: dict[str, RemoteCache] = {}

    @property
    def kinds(self) -> Mapping[str, Kind]:
        return load_kinds()

    @staticmethod
    def options(ws: Workspace) -> ToolchainSettings:
        return ws.settings.option(ToolchainSettings)

    def lane(self, ws: Workspace) -> str:
        return self.options(ws).lane

    def field_defaults(self, ws: Workspace) -> dict[str, Any]:
        return {CONTAINER_FIELD: self.options(ws).container}

    def toolchain_for(self, ws: Workspace, target: Target) -> Toolchain:
        """The lane's programs, at the TensorRT-LLM version the target's container declares
        (else the workspace's)."""
        options = self.options(ws)
        container = target.deps.get(CONTAINER_FIELD)
        declared = ws.facts(container) if container is not None else {}
        own = getattr(target.fields, "trtllm_version", None)
        try:  # the workspace's version is checked with the settings; a target's or container's here
            version = resolve_version(options.trtllm_version_override or own or declared.get("trtllm_version")
                                      or options.trtllm_version or flags.DEFAULT_VERSION)
        except (flags.FlagError, LLMBuildError) as err:
            owner = target if own and not options.trtllm_version_override else container
            if owner is None:
                raise
            raise owner.error(getattr(err, "message", str(err)), key="trtllm_version") from None
        tensorrt = declared.get("tensorrt_version")
        cache_key = (ws.lane, version, tensorrt, options.model_dump_json())
        if cache_key not in self._toolchains:
            common = {"trtllm_version": version, "host": options.host, "pool": gpu_pool(options),
                      "tensorrt_version": tensorrt, "secret_env": (*DEFAULT_SECRET_ENV, *options.secret_env),
                      "serve_timeout": options.timeout("smoke")}
            if ws.lane == "cpu":
                toolchains_dir = (resolve_dir(ws.root, options.toolchains_dir) if options.toolchains_dir
                                  else ws.cache.root / "toolchains")
                self._toolchains[cache_key] = CpuToolchain(toolchains_dir=toolchains_dir, **common)
            else:
                self._toolchains[cache_key] = TrtllmToolchain(**common)
        return self._toolchains[cache_key]

    def executor_for(self, ws: Workspace, target: Target) -> Executor:
        container = target.deps.get(CONTAINER_FIELD)
        timeout = self.options(ws).timeout(target.kind.name)
        if container is None:
            return LocalExecutor(timeout)

        def image(built: bool) -> str:
            """The image ID once the container target is built; its key tag before that."""
            key, _ = ws.key(container)
            out = ws.cache.out(key) / IMAGE_FILE
            if built and out.is_file():
                return json.loads(out.read_text())["image_id"]
            return image_tag(key)

        return DockerExecutor(image, str(container.address), timeout)

    def remote_cache(self, ws: Workspace) -> RemoteCache | None:
        """An S3 remote cache when `remote_cache` names one and its mode is not off (boto3 is
        imported only then)."""
        options = ws.settings.option(RemoteCacheSettings)
        if options.remote_cache is None or options.remote_cache_mode == "off":
            return None
        key = options.model_dump_json()
        if key not in self._remotes:
            from .remote.s3 import S3RemoteCache

            self._remotes[key] = S3RemoteCache.from_settings(options)
        return self._remotes[key]

    def builder_for(self, ws: Workspace, target: Target) -> Builder | None:
        """With executor = "ray", a cluster for targets whose build is their steps and which run no
        container (the others stay here)."""
        options = ws.settings.option(ExecutorSettings)
        if options.executor != "ray" or target.deps.get(CONTAINER_FIELD) or \
                not target.kind.builds_by_steps(ws.context(target)):
            return None
        return ray_builder(ws, options, self.remote_cache(ws))


def load_workspace(start: Path | None = None, environ: Mapping[str, str] | None = None, *,
                   verify_sources: bool = True, cwd: Path | None = None, keep_going: bool = False) -> Workspace:
    """A workspace loaded with llmbuild's own plugins (what `doit` and `llmbuild` use)."""
    ws = Workspace.load(start, dict(environ) if environ is not None else None, plugins=DefaultPlugins(),
                        verify_sources=verify_sources, cwd=cwd, keep_going=keep_going)
    options = DefaultPlugins.options(ws)
    use_patterns(options.secret_env)
    for kind in options.timeouts:
        if kind not in ws.plugins.kinds:
            raise LLMBuildError(f"no kind {kind!r}{did_you_mean(kind, ws.plugins.kinds)}", file="pyproject.toml",
                                target="[tool.llmbuild]", key=f"timeouts.{kind}")
    return ws
