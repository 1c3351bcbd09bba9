"""Build targets on a Ray cluster (`executor = "ray"`), inputs and outputs carried by the remote cache.

The driver (the `doit` process) never ships files through Ray: it makes sure the target's inputs
(its source files and its dependencies' outputs) are blobs of the remote cache, then submits one
Ray task per target build asking for the GPUs its steps need (tp x pp for an engine; num_cpus=0
when it needs GPUs) and, when the toolchain declares a GPU architecture, a node offering that
custom resource. The task, on whichever node Ray picks, downloads the blobs into that node's own
local cache, runs the steps there with the local executor, commits the entry in that cache and
publishes it to the remote cache; the driver then restores it (every file verified) like any
remote hit. A node dying mid-build publishes nothing: Ray retries the task elsewhere
(`ray_retries`). A demand no live node can meet is an error before submission (Ray would wait
forever).

Only kinds whose build is their steps (checkpoint, engine) go to the cluster; the others
(repository, smoke, container) run on the driver's machine.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..core.cache import LOG, Cache
from ..core.digests import DigestCache, digest_of_listing
from ..core.errors import BuildFailed, LLMBuildError
from ..core.protocols import Invocation, Subsystem
from ..core.steps import PathArg
from .local import LocalExecutor

if TYPE_CHECKING:
    from ..core.keys import KeyDocument
    from ..core.target import Target
    from ..core.workspace import Workspace
    from ..remote.s3 import S3RemoteCache

#: Of a node's custom resource naming its GPU architecture, what one task asks for (many fit).
ARCH_SHARE = 0.001


class ExecutorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    executor: Literal["local", "ray"] = Field(
        "local", description="local: steps run on this machine (or in Docker when a target names a "
        "container); ray: checkpoint and engine builds run as tasks on a Ray cluster, their inputs and "
        "outputs carried by the remote cache (remote_cache is then required); other kinds stay local.")
    ray_address: str | None = Field(
        None, description="The Ray cluster to submit to, e.g. '10.0.0.5:6379' (RAY_ADDRESS overrides it).")
    ray_retries: int = Field(
        3, ge=0, le=20, description="Times a build whose Ray node died is retried on another node.")


SUBSYSTEM = Subsystem(ExecutorSettings, env={"LLMBUILD_EXECUTOR": "executor"})


@dataclass(frozen=True)
class Input:
    """A placeholder's content: {relative file: digest} ('' for a single file named `name`)."""

    name: str
    files: dict[str, str]


@dataclass(frozen=True)
class Job:
    """What a Ray task gets: everything by value or by digest, nothing on the driver's disk."""

    key: str
    label: str
    manifest: dict[str, Any]  # the entry's manifest but for what the node adds
    invocations: tuple[Invocation, ...]
    inputs: dict[PathArg, Input]
    remote: dict[str, Any]  # S3RemoteCache's arguments (no credential: the node's AWS_* give them)
    timeout: float | None = None  # seconds each step may run there (the kind's timeout)


@dataclass(frozen=True)
class Ran:
    node: str
    started: float
    seconds: float
    gpus: tuple[int, ...]


class StepFailed(Exception):
    """A step failed on the node: the message and the attempt's log, for the driver."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log

    def __reduce__(self):
        return StepFailed, (str(self), self.log)


def gpu_count(plan) -> int:
    given = plan.gpus if isinstance(plan.gpus, int) else len(plan.gpus)
    return max([given, *(step.gpus for step in plan.steps)])


class RayBuilder:
    """The driver's side: check, send inputs, submit, wait."""

    name = "ray"

    def __init__(self, address: str, retries: int, remote: S3RemoteCache):
        self.address = address
        self.retries = retries
        self.remote = remote

    def _connect(self) -> Any:
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, logging_level="WARNING", log_to_driver=False,
                         configure_logging=False)
            except Exception as err:  # ConnectionError and Ray's own: one line either way
                raise LLMBuildError(f"cannot connect to the Ray cluster at {self.address}: "
                                    f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
        return ray

    def build(self, ws: Workspace, target: Target, key: str, document: KeyDocument) -> Ran:
        plan = ws.plan(target)
        toolchain = ws.toolchain_for(target)
        gpus = gpu_count(plan)
        resources = {toolchain.gpu_arch: ARCH_SHARE} if toolchain.gpu_arch else {}
        ray = self._connect()
        self._check_feasible(ray, target, gpus, resources)
        job = self._job(ws, target, key, document)
        task = ray.remote(build_on_node).options(
            num_gpus=gpus, num_cpus=0 if gpus else 1, resources=resources, max_retries=self.retries,
            retry_exceptions=False, name=f"llmbuild {target.address}")
        try:
            return ray.get(task.remote(job))
        except ray.exceptions.RayTaskError as err:
            cause = err.cause if isinstance(getattr(err, "cause", None), StepFailed) else None
            if cause is None:
                raise BuildFailed(f"{target.address} failed on the Ray cluster: "
                                  f"{str(err).strip().splitlines()[-1]}") from None
            staging = ws.cache.stage(key)
            staging.log.write_text(cause.log)
            failed = ws.cache.keep_failed(staging)
            raise BuildFailed(f"{target.address} failed: {cause}; log: {failed / LOG}",
                              log=failed / LOG) from None
        except ray.exceptions.RayError as err:  # the node died more often than ray_retries allows
            raise BuildFailed(f"{target.address}: its Ray task was lost ({type(err).__name__}) after "
                              f"{self.retries} retries (ray_retries)") from None

    def _check_feasible(self, ray: Any, target: Target, gpus: int, resources: dict[str, float]) -> None:
        """Some live node offers the demand whole; else a one-line error naming the largest."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if any(n["Resources"].get("GPU", 0) >= gpus and all(n["Resources"].get(r, 0) >= a for r, a in
                                                                resources.items()) for n in nodes):
            return
        arch = "".join(f" on a node with resource {r}" for r in resources)
        largest = max((int(n["Resources"].get("GPU", 0)) for n in nodes
                       if all(r in n["Resources"] for r in resources)), default=0)
        raise target.error(f"needs {gpus} GPU(s){arch} but no node of the Ray cluster at {self.address} "
                           f"offers that (the largest offers {largest} among {len(nodes)} live node(s))",
                           key="gpus")

    def _job(self, ws: Workspace, target: Target, key: str, document: KeyDocument) -> Job:
        """The inputs sent to the blob store (once per digest) and the task's description."""
        inputs: dict[PathArg, Input] = {}
        blobs: dict[str, Path] = {}
        for field, path in target.sources.items():
            files = ws.source_files(target)[field]
            inputs[PathArg("source", field)] = Input(path.name, files)
            blobs.update({digest: path / name if name else path for name, digest in files.items()})
        for field, dep in target.deps.items():
            dep_key = ws.key(dep)[0]
            files = ws.cache.manifest(dep_key)["outputs"]
            inputs[PathArg("dep", field)] = Input(field, files)
            blobs.update({digest: ws.cache.out(dep_key) / name for name, digest in files.items()})
        self.remote.send_blobs(blobs, label=str(target.address))
        placeholder = Path("/placeholder")  # the node maps every placeholder to its own paths
        paths = {arg: placeholder for arg in inputs} | {PathArg("out"): placeholder}
        toolchain = ws.toolchain_for(target)
        invocations = tuple(toolchain.invocation(step, paths, placeholder) for step in ws.plan(target).steps)
        manifest = {"key": key, "document": document.as_dict(), "source_files": ws.source_files(target),
                    "log": LOG, "built_by": {"address": str(target.address), "llmbuild": __version__}}
        return Job(key, str(target.address), manifest, invocations, inputs, self.remote.arguments(),
                   getattr(ws.executor_for(target), "timeout", None))


def build_on_node(job: Job) -> Ran:
    """The Ray task: inputs from the blob store into this node's cache, the steps, the entry
    committed here and published; nothing is published unless every step succeeded."""
    import ray

    from ..remote.s3 import S3RemoteCache

    node = ray.get_runtime_context().get_node_id()
    gpus = tuple(int(g) for g in ray.get_gpu_ids())
    root = Path(os.environ.get("LLMBUILD_CACHE_DIR") or Path.home() / ".cache" / "llmbuild")
    cache, remote = Cache(root), S3RemoteCache(**job.remote)
    with cache.lock(job.key, who=job.label):
        started = time.time()
        staging = cache.stage(job.key)
        paths = {arg: _materialise(cache, remote, staging.path / "inputs" / f"{arg.role}-{arg.field}", given)
                 for arg, given in job.inputs.items()}
        paths[PathArg("out")] = staging.out
        work = staging.path / "work"
        work.mkdir()
        try:
            for invocation in job.invocations:
                LocalExecutor(job.timeout).run(replace(invocation, paths=paths, work=work), log_path=staging.log,
                                    label=job.label)
        except LLMBuildError as err:
            log = staging.log.read_text(errors="replace") if staging.log.exists() else ""
            failed = cache.keep_failed(staging)
            raise StepFailed(f"{err} (on Ray node {node}, attempt kept in {failed})", log) from None
        _remove(staging.path / "inputs")
        _remove(work)
        outputs = DigestCache(root / "digests.sqlite3").tree_files(staging.out)
        seconds = round(time.time() - started, 3)
        manifest = {**job.manifest, "output_digest": digest_of_listing(outputs), "outputs": outputs,
                    "started": started, "seconds": seconds, "executor": "ray", "node": node, "gpus": list(gpus)}
        cache.evict(job.key)  # an entry a killed earlier attempt left here: replaced
        entry = cache.commit(staging, manifest)
        remote.publish(job.key, entry, manifest, label=job.label)
    return Ran(node, started, seconds, gpus)


def _materialise(cache: Cache, remote: S3RemoteCache, where: Path, given: Input) -> Path:
    """The input's files under `where` (hard links into the node's blob directory)."""
    for name, digest in given.files.items():
        blob = cache.root / "blobs" / digest[:2] / digest
        if not blob.is_file():
            blob.parent.mkdir(parents=True, exist_ok=True)
            remote.get_blob(digest, blob)
        path = where / given.name / name if name else where / given.name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blob, path)
        except OSError:  # the cache on another filesystem
            shutil.copyfile(blob, path)
    return where / given.name


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def ray_builder(ws: Workspace, options: ExecutorSettings, remote: Any) -> RayBuilder:
    """The cluster the settings name, with the remote cache it needs (one line when it is missing)."""
    from ..remote.s3 import S3RemoteCache

    if not isinstance(remote, S3RemoteCache) or not remote.writes:
        raise LLMBuildError('executor = "ray" needs a remote cache it can write: set remote_cache = '
                            '"s3://<bucket>/<prefix>" in [tool.llmbuild] (or LLMBUILD_REMOTE_CACHE) with '
                            'remote_cache_mode = "readwrite"')
    address = os.environ.get("RAY_ADDRESS") or options.ray_address
    if not address:
        raise LLMBuildError('executor = "ray" needs a cluster: set RAY_ADDRESS or ray_address in [tool.llmbuild]')
    return RayBuilder(address, options.ray_retries, remote)
