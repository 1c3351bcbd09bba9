"""Record each target's outcome of a doit run into dist/run.json, whatever happens.

Each row: address, kind, outcome, key, seconds, `started` (Unix time the target began
running, once it held its GPUs; else when it was processed) and `gpus` (the IDs it held); a
restored target's row says `from` which cache: "local" or "remote"; a built one's says which
`executor` ran it ("local", "docker" or "ray") and on which Ray `node` (its ID; null off Ray)."""

from __future__ import annotations

import sys
import time

from pathlib import Path

from doit.exceptions import TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter, JsonReporter

from ..core.build import BUILT, FAILED, SKIPPED, UP_TO_DATE, unlink_dist
from ..core.cache import write_json_atomic
from ..core.errors import LLMBuildError
from ..core.units import human_size
from ..core.workspace import NotReady
from . import state
from .display import Display


class RunRecord:
    """Mixin for any doit reporter: collects outcomes and writes dist/run.json at the end."""

    def __init__(self, outstream, options=None):
        super().__init__(outstream, options)
        self._records: dict[str, dict] = {}
        self._started: dict[str, float] = {}  # monotonic, for seconds
        self._began: dict[str, float] = {}  # Unix time, for started

    def initialize(self, tasks, selected_tasks):
        """A run starts: containers a killed earlier run left behind go first."""
        ws = state.loaded()
        if ws is not None:
            executors = {type(e): e for e in (ws.executor_for(t) for t in ws.order if t.unavailable is None)}
            for executor in executors.values():
                for line in executor.recover():
                    print(f"llmbuild: {line}", file=sys.stderr)
        if hasattr(super(), "initialize"):
            super().initialize(tasks, selected_tasks)

    def _target(self, task):
        ws = state.loaded()
        return None if ws is None else ws.targets_by_name.get(task.name)

    def _record(self, task, outcome: str, seconds: float | None = None, key: str | None = None,
                note: str | None = None, log: str | None = None, started: float | None = None,
                gpus: list[int] | tuple[int, ...] = (), origin: str | None = None,
                ran: dict | None = None) -> None:
        target = self._target(task)
        if target is None:
            return
        if key is None and target.unavailable is None:
            try:
                key = state.loaded().key(target)[0]
            except (NotReady, LLMBuildError):  # a key that cannot be computed is reported as none
                key = None
        if seconds is None:
            seconds = time.monotonic() - self._started.get(task.name, time.monotonic())
        if started is None:
            started = self._began.get(task.name, time.time())
        record = {"address": task.name, "kind": target.kind.name, "outcome": outcome,
                  "key": key, "seconds": round(seconds, 3), "started": round(started, 3), "gpus": list(gpus)}
        record.update(ran or {})  # a build's executor and node
        if origin:
            record["from"] = origin
        if note:
            record["note"] = note
        if log:
            record["log"] = log
        self._records[task.name] = record

    def execute_task(self, task):
        self._started[task.name] = time.monotonic()
        self._began[task.name] = time.time()
        super().execute_task(task)

    def add_success(self, task):
        values = getattr(task, "values", None) or {}
        if "outcome" in values:
            self._record(task, values["outcome"], values.get("seconds"), values.get("key"),
                         started=values.get("started"), gpus=values.get("gpus", ()), origin=values.get("from"),
                         ran={k: values[k] for k in ("executor", "node") if k in values})
        super().add_success(task)

    def add_failure(self, task, fail_info):
        self._record_failure(task, fail_info)
        super().add_failure(task, fail_info)

    def _record_failure(self, task, fail_info):
        if isinstance(fail_info, UnmetDependency):  # not run because something it needs failed
            self._record(task, SKIPPED, 0.0, note=f"needs {fail_info.message.strip()}, which failed")
            target = self._target(task)
            if target is not None:  # its link would name an output built from what failed
                unlink_dist(state.loaded(), target)
        else:
            log = getattr(fail_info, "log", None)
            self._record(task, FAILED, note=fail_info.message.strip().splitlines()[0],
                         log=log and str(log), started=getattr(fail_info, "started", None),
                         gpus=getattr(fail_info, "gpus", ()))

    def skip_uptodate(self, task):
        target = self._target(task)
        if target is not None and target.unavailable:
            self._record(task, SKIPPED, 0.0, note=target.unavailable)
        else:
            self._record(task, UP_TO_DATE, 0.0)
        super().skip_uptodate(task)

    def skip_ignore(self, task):
        self._record(task, SKIPPED, 0.0, note="ignored")
        super().skip_ignore(task)

    def complete_run(self):
        super().complete_run()
        self._write_run()

    def _write_run(self) -> None:
        ws = state.loaded()
        if ws is None or not (self._records or self._started):
            return
        for name in self._started:  # started but never finished: interrupted
            if name not in self._records and self._target_name(name):
                self._records[name] = {"address": name, "kind": ws.targets_by_name[name].kind.name,
                                       "outcome": FAILED, "key": None,
                                       "seconds": round(time.monotonic() - self._started[name], 3),
                                       "started": round(self._began[name], 3), "gpus": [],
                                       "note": "interrupted"}
        targets = self._ordered()
        hashed = ws.digests.hashed  # this process's: a `doit -n` worker's output digests are not in it
        write_json_atomic(ws.dist / "run.json", {"lane": ws.lane, "targets": targets, "hashed": {
            "files": hashed["files"], "bytes": hashed["bytes"], "seconds": round(hashed["seconds"], 3)}})

    def _target_name(self, name: str) -> bool:
        ws = state.loaded()
        return ws is not None and name in ws.targets_by_name

    def _ordered(self) -> list[dict]:
        """The records in the graph's order (not completion order, which `doit -n` varies)."""
        ws = state.loaded()
        order = {str(t.address): i for i, t in enumerate(ws.order)} if ws is not None else {}
        return sorted(self._records.values(), key=lambda r: order.get(r["address"], 0))

    def summary_lines(self) -> list[str]:
        counts = {o: 0 for o in (BUILT, "restored", UP_TO_DATE, SKIPPED, FAILED)}
        lines = []
        for record in self._ordered():
            counts[record["outcome"]] = counts.get(record["outcome"], 0) + 1
            if record["outcome"] != UP_TO_DATE:
                note = (record.get("log") and f"log: {record['log']}" or record.get("note")
                        or record.get("from") and f"from {record['from']}")
                note = f"  ({note})" if note else ""
                seconds = f"{record['seconds']:.1f}s" if record["outcome"] in (BUILT, FAILED, "restored") else ""
                lines.append(f"  {record['outcome']:<10} {record['address']:<40} {seconds}{note}")
        total = sum(counts.values())
        lines.append(f"{total} targets: " + ", ".join(f"{n} {o}" for o, n in counts.items()))
        hashed = state.loaded().digests.hashed
        if hashed["files"]:
            lines.append(f"hashed {hashed['files']} file{'s' * (hashed['files'] != 1)}, "
                         f"{human_size(hashed['bytes'])} in {hashed['seconds']:.1f} s")
        return lines


class RunReporter(RunRecord, ConsoleReporter):
    """doit's console output without its internals (no tracebacks, no empty output blocks), the
    running targets' progress (llmbuild.doit.display), a summary, and dist/run.json."""

    desc = "console output plus llmbuild's progress, run summary and dist/run.json"

    def __init__(self, outstream, options=None):
        super().__init__(outstream, options or {})
        self.display = Display(outstream)

    def write(self, text):
        self.display.write(text)

    def initialize(self, tasks, selected_tasks):
        self.display.start()
        super().initialize(tasks, selected_tasks)

    def execute_task(self, task):
        super().execute_task(task)
        if self._target(task) is not None:
            self.display.began(task.name)

    def add_success(self, task):
        self.display.ended(task.name)
        super().add_success(task)

    def add_failure(self, task, fail_info):
        """One line (and a failed tool's last lines), not doit's exception report."""
        self.display.ended(task.name)
        self._record_failure(task, fail_info)  # doit's own report is replaced by what follows
        if self._target(task) is None:
            return  # a directory or `::` group: its targets say what happened
        if isinstance(fail_info, UnmetDependency):
            needed = fail_info.message.split()
            why = "failed" if all(self._records.get(n, {}).get("outcome") == FAILED for n in needed) \
                else "was not built"
            self.write(f"not built: {task.name}: depends on {', '.join(needed)}, which {why}\n")
            return
        message = fail_info.message.strip() if isinstance(fail_info, TaskFailed) else \
            f"{task.name} failed: " + (fail_info.get_msg().strip().splitlines() or [fail_info.message])[-1]
        self.write(f"{message}\n")
        log = getattr(fail_info, "log", None)
        for line in _tail(log):
            self.write(f"   | {line}\n")

    def skip_uptodate(self, task):
        target = self._target(task)
        if target is not None and target.unavailable:  # said once, in the summary
            self._record(task, SKIPPED, 0.0, note=target.unavailable)
        else:
            super().skip_uptodate(task)

    def complete_run(self):
        """The summary, also after Ctrl-C, which then ends the run with status 130 and no traceback."""
        interrupted = isinstance(sys.exc_info()[1], KeyboardInterrupt)
        self.display.stop()
        for error in self.runtime_errors:
            self.write(f"doit: {error.strip()}\n")
        self._write_run()
        ws = state.loaded()
        if ws is not None and self._records:
            self.write(f"\nllmbuild ({ws.lane} lane) -> {ws.dist / 'run.json'}\n")
            self.write("\n".join(self.summary_lines()) + "\n")
        if interrupted:
            self.write("interrupted\n")
            raise SystemExit(130)


#: A failed tool's last lines shown under its failure (the whole output is in the kept log).
TAIL_LINES = 8


def _tail(log) -> list[str]:
    """The last lines of a kept log, without llmbuild's own closing line (the failure says it)."""
    if not log:
        return []
    try:
        lines = Path(log).read_text(errors="replace").splitlines()
    except OSError:
        return []
    lines = [line for line in lines if line.strip() and not line.startswith("llmbuild: ")]
    return lines[-TAIL_LINES:]


class JsonRunReporter(RunRecord, JsonReporter):
    """doit's json reporter that also writes dist/run.json (registered as `--reporter json`)."""
