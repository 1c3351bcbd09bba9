"""Bring one target up to date: restore a known key (from the local cache, else from the remote
one), or build, commit, publish and link it."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .cache import LOG, OUT, Staging
from .context import KindContext
from .digests import digest_of_listing
from .disk import disk_full
from .errors import BuildFailed, LLMBuildError
from .faults import reach
from .keys import KeyDocument
from .progress import Progress
from .processes import running
from .protocols import Builder, Executor, RemoteCache, Server
from .redact import redact
from .slots import SlotPool
from .steps import PathArg, Plan, Step
from .target import Target

if TYPE_CHECKING:
    from .workspace import Workspace

BUILT, RESTORED, UP_TO_DATE, FAILED, SKIPPED = "built", "restored", "up-to-date", "failed", "skipped"
#: Where a restored output came from (the `from` of its row in dist/run.json).
LOCAL, REMOTE = "local", "remote"


class RunContext(KindContext):
    """What a kind's action sees while it builds into `out`: its narrow context, the plan
    and key, the staging directory, its dependencies' outputs, the step runner, and the
    GPU IDs it holds (its steps and server see exactly those)."""

    def __init__(self, ws: Workspace, target: Target, plan: Plan, key: str, staging: Staging,
                 gpus: tuple[int, ...] = ()):
        super().__init__(ws, target)
        self.plan = plan
        self.key = key
        self.staging = staging
        self.gpus = gpus
        #: phases of this build, shown live with elapsed time (see core/progress.py)
        self.progress = Progress(str(target.address))

    @property
    def out(self) -> Path:
        return self.staging.out

    @property
    def log(self) -> Path:
        return self.staging.log

    @property
    def work(self) -> Path:
        """Scratch working directory for tools (e.g. trtllm-build's model.cache)."""
        path = self.staging.path / "work"
        path.mkdir(exist_ok=True)
        return path

    @property
    def executor(self) -> Executor:
        return self._ws.executor_for(self._target)

    def paths(self) -> dict[PathArg, Path]:
        return self._ws.paths(self._target, self.out)

    def dep_out(self, field: str) -> Path:
        return self._ws.cache.out(self._ws.key(self._target.deps[field])[0])

    def run_step(self, step: Step) -> None:
        invocation = self.toolchain.invocation(step, self.paths(), self.work, gpus=self.gpus)
        self.executor.run(invocation, log_path=self.log, label=str(self.address))

    def serve(self, repository: Path, *, log_path: Path, world_size: int) -> AbstractContextManager[Server]:
        """The toolchain's server on `repository`, run by this target's executor."""
        return self.toolchain.serve(repository, executor=self.executor, log_path=log_path,
                                    progress=self.progress, world_size=world_size, gpus=self.gpus)


@dataclass(frozen=True)
class Result:
    """`started`: Unix time the target began running (once it held its GPUs); `gpus`: their IDs;
    `origin`: for a restored output, the cache it came from (LOCAL or REMOTE)."""

    outcome: str
    key: str | None
    seconds: float
    message: str = ""
    started: float = 0.0
    gpus: tuple[int, ...] = ()
    origin: str | None = None
    executor: str | None = None  # of a build: "local", "docker" or "ray"
    node: str | None = None  # the Ray node ID that built it

    def as_values(self) -> dict[str, Any]:
        values = {"outcome": self.outcome, "key": self.key, "seconds": round(self.seconds, 3),
                  "started": round(self.started, 3), "gpus": list(self.gpus)}
        if self.executor:
            values.update(executor=self.executor, node=self.node)
        return {**values, "from": self.origin} if self.origin else values


def unlink_dist(ws: Workspace, target: Target) -> bool:
    """Remove the target's dist link (never anything else): it no longer names a current output."""
    link = ws.dist_link(target)
    if not link.is_symlink():
        return False
    link.unlink()
    return True


def link_dist(ws: Workspace, target: Target, key: str) -> None:
    link = ws.dist_link(target)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() and not link.is_symlink():
        raise LLMBuildError(f"{link} exists and is not a link made by llmbuild; move it away")
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    for stale in link.parent.glob(f".{link.name}.*.tmp"):  # ours, or left by a killed process
        pid = stale.name.rsplit(".", 2)[1]
        if stale == tmp or pid.isdigit() and not running(int(pid)):
            stale.unlink(missing_ok=True)
    os.symlink(ws.cache.out(key), tmp)
    reach("dist-link")
    os.replace(tmp, link)
    ws.cache.stamp_used(key)
    ws.cache.register_dist(ws.dist)


def bring_up_to_date(ws: Workspace, target: Target) -> Result:
    try:
        return _bring_up_to_date(ws, target)
    except BaseException:
        unlink_dist(ws, target)  # a failed target never looks current; its last output stays cached
        raise


def _bring_up_to_date(ws: Workspace, target: Target) -> Result:
    started, clock = time.time(), time.monotonic()
    if target.unavailable:
        return Result(SKIPPED, None, 0.0, target.unavailable, started=started)
    if target.failure:
        raise LLMBuildError(target.failure)
    key, document = ws.key(target)
    if ws.is_up_to_date(target):
        return Result(UP_TO_DATE, key, time.monotonic() - clock, started=started)
    # Linked only under the key's lock: `llmbuild cache gc` never evicts a locked key, and
    # re-checks under the lock that an entry it evicts was not linked meanwhile.
    with ws.cache.lock(key, who=str(target.address)):
        if _restorable(ws, target, key):
            link_dist(ws, target, key)
            return Result(RESTORED, key, time.monotonic() - clock, started=started, origin=LOCAL)
        unlink_dist(ws, target)  # before building: even a killed build leaves no stale link
        ws.cache.evict(key)  # an entry whose output no longer stands (e.g. image deleted)
        remote = remote_for(ws, target)
        if remote is not None and restore_from_remote(ws, remote, target, key):
            link_dist(ws, target, key)
            return Result(RESTORED, key, time.monotonic() - clock, started=started, origin=REMOTE)
        built = _build_and_publish(ws, remote, target, key, document, started, clock)
        link_dist(ws, target, key)
        return built


def _restorable(ws: Workspace, target: Target, key: str) -> bool:
    """Committed, still standing, and intact (by stat, or by digest with verify_on_restore =
    "digest"); a corrupt entry is quarantined, said in one line, and rebuilt."""
    if not ws.is_committed(target, key):
        return False
    problem = ws.cache.problem(key, rehash=ws.settings.verify_on_restore == "digest")
    if problem is None:
        return True
    moved = ws.cache.quarantine(key, problem)
    print(f"llmbuild: {target.address}: the cached output of key {key[:12]} is corrupt ({problem}): "
          f"moved to {moved}; rebuilding", file=sys.stderr, flush=True)
    return False


def remote_for(ws: Workspace, target: Target) -> RemoteCache | None:
    """The workspace's remote cache, for a target whose output another machine can use."""
    return ws.plugins.remote_cache(ws) if target.kind.portable else None


def restore_from_remote(ws: Workspace, remote: RemoteCache, target: Target, key: str) -> bool:
    """Download the key's entry into staging, verify every file against the manifest, commit it
    locally; False (nothing committed) on a miss or an entry that fails verification. Call with
    the key's lock held."""
    staging = ws.cache.stage(key)
    try:
        manifest = remote.fetch(key, staging, label=str(target.address))
        problem = _unverified(ws, staging, key, manifest) if manifest is not None else None
    except BaseException:
        ws.cache.drop(staging)
        raise
    if manifest is not None and problem is None:
        reach("restore-staged")
        ws.cache.commit(staging, manifest)
        return True
    ws.cache.drop(staging)
    if problem is not None:
        print(f"llmbuild: {target.address}: the entry of key {key[:12]} in {remote.url} is corrupt "
              f"({problem}): not used", file=sys.stderr, flush=True)
        remote.discard(key)
    return False


def _unverified(ws: Workspace, staging: Staging, key: str, manifest: dict[str, Any]) -> str | None:
    """What is wrong with a fetched entry (None: it is the key's, whole, every file as listed)."""
    listed = manifest.get("outputs")
    if manifest.get("key") != key or KeyDocument.from_dict(manifest.get("document") or {}).key != key:
        return "its manifest is for another key"
    if not isinstance(listed, dict) or manifest.get("output_digest") != digest_of_listing(listed):
        return "its file list does not match its output digest"
    found = ws.digests.tree_files(staging.out)
    for name in sorted(set(listed) | set(found)):
        if name not in found:
            return f"out/{name} is missing"
        if name not in listed:
            return f"out/{name} is not in its manifest"
        if found[name] != listed[name]:
            return f"out/{name} does not match its digest"
    return None


def publish_to_remote(ws: Workspace, remote: RemoteCache, target: Target, key: str) -> bool:
    """Upload a committed entry whose files still match its manifest; False when they do not."""
    manifest = ws.cache.manifest(key)
    if manifest is None or ws.digests.tree_files(ws.cache.out(key)) != manifest.get("outputs"):
        print(f"llmbuild: {target.address}: the local entry of key {key[:12]} no longer matches its "
              f"manifest: not uploaded to {remote.url}", file=sys.stderr, flush=True)
        return False
    remote.publish(key, ws.cache.entry(key), manifest, label=str(target.address))
    return True


def _build_and_publish(ws: Workspace, remote: RemoteCache | None, target: Target, key: str,
                       document: KeyDocument, started: float, clock: float) -> Result:
    """Build; with a remote that may be written, holding its claim on the key (an entry published
    elsewhere meanwhile is restored instead), then publish the entry."""
    if remote is None or not remote.writes:
        return _build(ws, target, key, document)
    with remote.claim(key, label=str(target.address)):
        if restore_from_remote(ws, remote, target, key):  # built elsewhere while we waited
            return Result(RESTORED, key, time.monotonic() - clock, started=started, origin=REMOTE)
        built = _build(ws, target, key, document)
        if built.node is None:  # a build elsewhere published its entry itself
            publish_to_remote(ws, remote, target, key)
    return built


@contextmanager
def _holding_gpus(ws: Workspace, target: Target, plan: Plan) -> Iterator[tuple[int, ...]]:
    """Hold the GPUs the plan asks for, from this host's pool (shared by every process using
    this cache); none when the pool is empty (nothing declared: demand is not managed)."""
    pool = ws.toolchain_for(target).gpus_offered if plan.gpus else 0
    if not pool:
        yield ()
        return
    want = plan.gpus

    def waiting(holders: dict[int, str]) -> None:
        what = f"GPUs {', '.join(map(str, want))}" if isinstance(want, tuple) else f"{want} GPU(s)"
        busy = "".join(f"; {slot} held by {who}" for slot, who in sorted(holders.items()))
        print(f"llmbuild: {target.address}: waiting for {what} (a pool of {pool}{busy})",
              file=sys.stderr, flush=True)

    slots = SlotPool(ws.cache.root / "locks" / "gpus" / socket.gethostname(), pool)
    with slots.hold(want, who=str(target.address), on_wait=waiting) as held:
        yield held


def _build(ws: Workspace, target: Target, key: str, document: KeyDocument) -> Result:
    builder = ws.plugins.builder_for(ws, target)
    if builder is not None:
        return _build_elsewhere(ws, builder, target, key, document)
    plan = ws.plan(target)
    with _holding_gpus(ws, target, plan) as gpus:  # waiting for GPUs is not running: the clock starts after
        return _run(ws, target, plan, key, document, gpus)


def _build_elsewhere(ws: Workspace, builder: Builder, target: Target, key: str, document: KeyDocument) -> Result:
    """Built on another machine, which published the entry; restored here like any remote hit."""
    ran = builder.build(ws, target, key, document)
    remote = ws.plugins.remote_cache(ws)
    if remote is None or not restore_from_remote(ws, remote, target, key):
        raise BuildFailed(f"{target.address} was built on {builder.name} node {ran.node} but its entry "
                          f"could not be restored from the remote cache")
    return Result(BUILT, key, ran.seconds, started=ran.started, gpus=tuple(ran.gpus), executor=builder.name,
                  node=ran.node)


def _run(ws: Workspace, target: Target, plan: Plan, key: str, document: KeyDocument,
         gpus: tuple[int, ...]) -> Result:
    started, clock = time.time(), time.monotonic()
    staging = ws.cache.stage(key)
    ctx = RunContext(ws, target, plan, key, staging, gpus)
    try:
        target.kind.run(ctx)
    except (Exception, KeyboardInterrupt) as err:
        reason = ("interrupted" if isinstance(err, KeyboardInterrupt) else
                  str(err) if isinstance(err, LLMBuildError) else f"{type(err).__name__}: {err}")
        full = disk_full(err, ws.cache.root, staging.log)
        if full:  # what the attempt wrote goes first: the log line below, and other builds, need the room
            shutil.rmtree(staging.out, ignore_errors=True)
            reason = f"{full}: {reason}"
        _log_failure(staging.log, target, err, reason)
        failed = ws.cache.keep_failed(staging)
        _name_kept_paths(failed / LOG, staging.path, failed)
        if isinstance(err, KeyboardInterrupt):
            raise
        reason = reason.replace(str(staging.path), str(failed))  # paths in the attempt: where it is kept
        kept = "removed to free the disk" if full else failed / OUT
        raise BuildFailed(f"{target.address} failed: {reason}; log: {failed / LOG}; "
                          f"output so far: {kept}", log=failed / LOG,
                          started=started, gpus=gpus) from err
    reach("output-written")
    outputs = ws.digests.tree_files(staging.out)
    ws.cache.commit(staging, {
        "key": key,
        "document": document.as_dict(),
        "output_digest": digest_of_listing(outputs),
        "outputs": outputs,
        "source_files": ws.source_files(target),  # lets `llmbuild explain` name the changed files
        "log": "log.txt",
        "built_by": {"address": str(target.address), "llmbuild": __version__},
        "started": started,
        "seconds": round(time.time() - started - ctx.progress.aside_seconds, 3),
        "executor": ctx.executor.name,
        "gpus": list(gpus),
    })
    return Result(BUILT, key, time.monotonic() - clock - ctx.progress.aside_seconds, started=started, gpus=gpus,
                  executor=ctx.executor.name)


def _name_kept_paths(log: Path, staging: Path, kept: Path) -> None:
    """A kept attempt's log names where its files are now, not the staging directory that is gone."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return
    log.write_text(text.replace(str(staging), str(kept)))


def _log_failure(log: Path, target: Target, err: BaseException, reason: str) -> None:
    """End the attempt's log with why it failed, so the log a failure names exists for every kind
    (a traceback too when the failure is not one llmbuild explains). A disk too full for even
    that leaves the log as the tool left it."""
    try:
        with open(log, "a") as handle:
            if not isinstance(err, (LLMBuildError, KeyboardInterrupt)):
                handle.write(redact("".join(traceback.format_exception(err))))
            handle.write(redact(f"llmbuild: {target.address} failed: {reason}\n"))
    except OSError:
        pass
