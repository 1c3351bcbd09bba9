"""Bring one target up to date: restore a known key, or build, commit and link it."""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .cache import LOG, OUT, Staging
from .digests import digest_of_listing
from .errors import BuildFailed, LLMBuildError
from .steps import PathArg, Plan, Step
from .target import Target

if TYPE_CHECKING:
    from .workspace import Workspace

BUILT, RESTORED, UP_TO_DATE, FAILED, SKIPPED = "built", "restored", "up-to-date", "failed", "skipped"


@dataclass
class RunContext:
    """What a kind's action sees while it builds into `out`."""

    ws: Workspace
    target: Target
    plan: Plan
    key: str
    staging: Staging

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

    def paths(self, step: Step | None = None) -> dict[PathArg, Path]:
        return self.ws.paths(self.target, self.out)

    def dep_out(self, field: str) -> Path:
        return self.ws.cache.out(self.ws.key(self.target.deps[field])[0])

    def run_step(self, step: Step) -> None:
        self.ws.toolchain_for(self.target).run(step, self)


@dataclass(frozen=True)
class Result:
    outcome: str
    key: str | None
    seconds: float
    message: str = ""

    def as_values(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "key": self.key, "seconds": round(self.seconds, 3)}


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
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(ws.cache.out(key), tmp)
    os.replace(tmp, link)


def bring_up_to_date(ws: Workspace, target: Target) -> Result:
    try:
        return _bring_up_to_date(ws, target)
    except BaseException:
        unlink_dist(ws, target)  # a failed target never looks current; its last output stays cached
        raise


def _bring_up_to_date(ws: Workspace, target: Target) -> Result:
    started = time.monotonic()
    if target.unavailable:
        return Result(SKIPPED, None, 0.0, target.unavailable)
    if target.failure:
        raise LLMBuildError(target.failure)
    key, document = ws.key(target)
    if ws.is_up_to_date(target):
        return Result(UP_TO_DATE, key, time.monotonic() - started)
    if not ws.is_committed(target, key):
        with ws.cache.lock(key, who=str(target.address)):
            if not ws.is_committed(target, key):
                unlink_dist(ws, target)  # before building: even a killed build leaves no stale link
                ws.cache.evict(key)  # an entry whose output no longer stands (e.g. image deleted)
                _build(ws, target, key, document)
                link_dist(ws, target, key)
                return Result(BUILT, key, time.monotonic() - started)
    link_dist(ws, target, key)
    return Result(RESTORED, key, time.monotonic() - started)


def _build(ws: Workspace, target: Target, key: str, document: dict[str, Any]) -> None:
    staging = ws.cache.stage(key)
    ctx = RunContext(ws, target, ws.plan(target), key, staging)
    started = time.time()
    try:
        target.kind.run(target, ctx)
    except (Exception, KeyboardInterrupt) as err:
        reason = ("interrupted" if isinstance(err, KeyboardInterrupt) else
                  str(err) if isinstance(err, LLMBuildError) else f"{type(err).__name__}: {err}")
        _log_failure(staging.log, target, err, reason)
        failed = ws.cache.keep_failed(staging)
        if isinstance(err, KeyboardInterrupt):
            raise
        reason = reason.replace(str(staging.path), str(failed))  # paths in the attempt: where it is kept
        raise BuildFailed(f"{target.address} failed: {reason}; log: {failed / LOG}; "
                          f"output so far: {failed / OUT}", log=failed / LOG) from err
    outputs = ws.digests.tree_files(staging.out)
    ws.cache.commit(staging, {
        "key": key,
        "document": document,
        "output_digest": digest_of_listing(outputs),
        "outputs": outputs,
        "source_files": ws.source_files(target),  # lets `llmbuild explain` name the changed files
        "log": "log.txt",
        "built_by": {"address": str(target.address), "llmbuild": __version__},
        "started": started,
        "seconds": round(time.time() - started, 3),
    })


def _log_failure(log: Path, target: Target, err: BaseException, reason: str) -> None:
    """End the attempt's log with why it failed, so the log a failure names exists for every kind
    (a traceback too when the failure is not one llmbuild explains)."""
    with open(log, "a") as handle:
        if not isinstance(err, (LLMBuildError, KeyboardInterrupt)):
            handle.write("".join(traceback.format_exception(err)))
        handle.write(f"llmbuild: {target.address} failed: {reason}\n")
