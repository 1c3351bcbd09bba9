"""Task factory: targets become plain doit task dicts with module-level actions."""

from __future__ import annotations

import sys
from pathlib import Path

from doit.exceptions import InvalidDodoFile, TaskFailed

from ..core.addresses import TAG_PREFIX
from ..core.build import bring_up_to_date, unlink_dist
from ..core.errors import LLMBuildError
from ..core.settings import find_workspace_root, load_settings, resolve_dir
from ..introspect.explain import explain
from .commands import quiet_doit
from .dbfault import arm_doit_db_write
from .reporter import RunReporter
from . import state


def doit_config() -> dict:
    try:
        root = find_workspace_root(Path.cwd())
        dist = resolve_dir(root, load_settings(root).dist)
    except LLMBuildError as err:
        raise InvalidDodoFile(str(err)) from None
    dist.mkdir(parents=True, exist_ok=True)
    quiet_doit()
    # continue: an hour-long engine build elsewhere should not stop because one target failed;
    # dependents of a failed target are not run (reported skipped).
    # default_tasks: plain `doit` is "::": every target at or below where doit was started
    # (specs.py reads it from there); doit forget needs it set.
    return {"reporter": RunReporter, "backend": "sqlite3", "continue": True, "default_tasks": ["::"],
            "dep_file": str(dist / ".doit.sqlite3"), "verbosity": 1}



def run_target(address: str):
    """doit action: bring one target up to date (build, restore or skip)."""
    ws = state.workspace()
    try:
        result = bring_up_to_date(ws, ws.targets_by_name[address])
    except LLMBuildError as err:
        failure = TaskFailed(str(err))
        failure.log = getattr(err, "log", None)  # the kept attempt's log, for dist/run.json
        failure.started, failure.gpus = getattr(err, "started", None), getattr(err, "gpus", ())
        return failure
    return result.as_values()


class TargetIsCurrent:
    """doit uptodate: true when the committed key is linked, or the target is skipped on this lane.

    `doit info ADDRESS` prints this object when it is false: it then says why, like
    `llmbuild explain`."""

    def __init__(self, address: str):
        self.address = address

    def __call__(self) -> bool:
        ws = state.workspace()
        target = ws.targets_by_name[self.address]
        try:
            return target.unavailable is not None or ws.is_up_to_date(target)
        except LLMBuildError:  # e.g. an unreachable daemon: the action reports it
            return False

    def __str__(self) -> str:
        ws = state.workspace()
        try:
            return "\n      ".join(["llmbuild action key:"] + explain(ws, ws.targets_by_name[self.address]).lines())
        except LLMBuildError as err:
            return f"llmbuild action key: cannot be computed: {err}"


def clean_target(address: str, dryrun: bool = False) -> None:
    """doit clean: the target's dist link goes (its output stays in the cache)."""
    ws = state.workspace()
    target = ws.targets_by_name[address]
    link = ws.dist_link(target)
    if dryrun:
        if link.is_symlink():
            print(f"would remove {link}")
    elif unlink_dist(ws, target):
        print(f"removed {link}")


clean_target.llmbuild_clean = True  # doit clean runs it without saying "executing ..." (commands.py)


def task_llmbuild():
    """llmbuild targets"""
    try:
        ws = state.workspace()
    except LLMBuildError as err:
        raise InvalidDodoFile(str(err)) from None
    arm_doit_db_write()
    for warning in ws.warnings:
        print(f"llmbuild: {warning}", file=sys.stderr)
    groups: dict[str, list[str]] = {}
    for target in ws.order:
        name = str(target.address)
        doc = target.fields.description or f"{target.kind.name} target"
        if target.unavailable:
            doc += f" [skipped: {target.unavailable}]"
        if target.failure:
            doc += f" [fails here: {target.failure}]"
        yield {
            "basename": name,
            "doc": doc,
            "actions": [(run_target, [name])],
            "task_dep": [str(dep.address) for dep in target.deps.values()],
            "uptodate": [TargetIsCurrent(name)],
            "clean": [(clean_target, [name])],
        }
        directory = target.address.directory
        groups.setdefault(directory, []).append(name)
        parts = directory.split("/") if directory else []
        for depth in range(len(parts) + 1):
            groups.setdefault("/".join(parts[:depth] + [""]) + "::" if depth else "::", []).append(name)
        for tag in target.fields.tags:
            groups.setdefault(f"{TAG_PREFIX}{tag}", []).append(name)
    groups.pop("", None)  # root-level targets: "::" already selects everything
    groups.setdefault("::", [])
    for group, members in groups.items():
        yield {"basename": group, "doc": _group_doc(group), "actions": None, "task_dep": members}


def _group_doc(group: str) -> str:
    if group.startswith(TAG_PREFIX):
        return f"every target tagged {group.removeprefix(TAG_PREFIX)}"
    return (f"every target {'below' if group.endswith('::') else 'in'} "
            f"{group.removesuffix('::').rstrip('/') or 'the workspace'}")
