"""doit's task names on the command line, read as llmbuild specs: relative to the directory doit
was started in (`doit -k :engine` from a model directory), `//` from the workspace root,
`tag:<name>`, and a did-you-mean for a name that matches nothing.

doit gives task creators no access to the command line, so the loader's `load_tasks` is wrapped:
once the tasks exist, the selected names are rewritten in place (the same list is doit's
selection for every command) into the task names they stand for.
"""

from __future__ import annotations

from doit.cmd_base import NamespaceTaskLoader
from doit.exceptions import InvalidCommand

from ..core.addresses import parse_spec
from ..core.errors import LLMBuildError
from ..core.workspace import Workspace
from . import state

#: doit commands whose positional arguments are task names, and those of them that fall back to
#: default_tasks ("::", read from where doit was started) without any.
TASK_COMMANDS = frozenset({"run", "list", "info", "clean", "forget", "ignore", "strace", "reset-dep"})
DEFAULT_COMMANDS = frozenset({"run", "clean", "forget"})


def resolve_names(names: list[str], task_names: set[str], ws: Workspace) -> None:
    """Rewrite `names` in place: each spec becomes the task that stands for it (a target, or the
    group of a directory, subtree or tag), or the targets it matches when no group does.
    doit's own `*` patterns are left to doit."""
    resolved: list[str] = []
    for text in names:
        if "*" in text:
            resolved.append(text)
            continue
        try:
            matched = ws.select([text])
            name = str(parse_spec(text, ws.cwd))
        except LLMBuildError as err:
            raise InvalidCommand(str(err)) from None
        resolved.extend([name] if name in task_names else [str(t.address) for t in matched])
    names[:] = resolved


def read_specs_on_command_line() -> None:
    """Wrap doit's task loading (once) so an llmbuild workspace's task names are read as specs."""
    load_tasks = NamespaceTaskLoader.load_tasks
    if getattr(load_tasks, "reads_specs", False):
        return

    def load_tasks_reading_specs(self, cmd, pos_args):
        tasks = load_tasks(self, cmd, pos_args)
        ws = state.loaded()
        names = pos_args if pos_args or cmd.name not in DEFAULT_COMMANDS else cmd.sel_tasks
        if ws is not None and "task_llmbuild" in self.namespace and cmd.name in TASK_COMMANDS and names:
            resolve_names(names, {task.name for task in tasks}, ws)
        return tasks

    load_tasks_reading_specs.reads_specs = True
    NamespaceTaskLoader.load_tasks = load_tasks_reading_specs
