"""doit's own commands, said in llmbuild's words. doit loads the dodo file after it has chosen
its command classes, so these are small patches applied when the dodo is loaded, each keeping
doit's behaviour for tasks that are not llmbuild's (an unknown name, `doit info nosuch:thing`
included, is refused in one line by `specs.py`):

- `doit info`: an uptodate object's reason without doit's `(args=[], kwargs={})`;
- `doit clean`: what was removed, not "executing 'Python: function clean_target'" per target;
- Ctrl-C outside a run (while loading, in `doit info`): one line, not a traceback.
"""

from __future__ import annotations

import sys

from doit import cmd_info, task as doit_task
from doit.action import PythonAction

_patched = False


def quiet_doit() -> None:
    global _patched
    if _patched:
        return
    _patched = True
    cmd_info.Info.get_reasons = staticmethod(_reasons(cmd_info.Info.get_reasons))
    doit_task.Task.clean = _clean(doit_task.Task.clean)
    sys.excepthook = _excepthook(sys.excepthook)


def _reasons(get_reasons):
    def reasons(reasons):
        text = get_reasons(reasons)
        for _, args, kwargs in reasons.get("uptodate_false") or ():
            if not args and not kwargs:
                text = text.replace(" (args=[], kwargs={})", "")
        return text
    return reasons


def _clean(clean):
    def quiet_clean(self, outstream, dryrun):
        ours = [a for a in self.clean_actions if isinstance(a, PythonAction)
                and getattr(a.py_callable, "llmbuild_clean", False)]
        if not ours or len(ours) != len(self.clean_actions) or self._remove_targets is True:
            return clean(self, outstream, dryrun)
        self.init_options()
        for action in ours:
            action.kwargs["dryrun"] = dryrun
            failure = action.execute(out=outstream)
            if failure is not None:
                sys.stderr.write(f"{self.name}: {failure.message}\n")
    return quiet_clean


def _excepthook(hook):
    def excepthook(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return
        hook(kind, value, traceback)
    return excepthook
