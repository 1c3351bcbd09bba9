"""How a doit run shows its running targets.

On a terminal, one live line per running target (its latest phase and elapsed time), drawn by
rich, with the run's own lines printed above it; otherwise (CI logs, pipes) one timestamped
line per phase. Phases come from llmbuild.core.progress. With `doit -n N` the actions run in
forked worker processes: their phases travel to this process through a pipe (one short JSON
line per write, so writes never interleave), and only this process draws, so the display stays
coherent. A worker's own stdout/stderr go straight to the terminal (a stray line may cross the
live lines; the next refresh redraws them)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.table import Column
from rich.text import Text

from ..core import progress as core_progress

_MAX_TEXT = 1000  # a pipe write up to PIPE_BUF (4096 bytes) is atomic

_current: Display | None = None


class _Elapsed(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.elapsed or 0.0:5.1f}s", style="progress.elapsed")


class Display:
    def __init__(self, stream: TextIO):
        self.stream = stream
        self.live = _isatty(stream)
        self._lock = threading.Lock()
        self._began: dict[str, float] = {}
        self._rows: dict[str, int] = {}
        self._ended: set[str] = set()
        self._pid = os.getpid()
        self._pipe: int | None = None
        self._reader: threading.Thread | None = None
        self._bar: Progress | None = None

    # -- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        global _current
        if self.live:
            console = Console(file=self.stream, highlight=False)
            self._bar = Progress(SpinnerColumn(),
                                 TextColumn("{task.fields[target]}", style="bold", table_column=Column(no_wrap=True)),
                                 TextColumn("{task.description}",
                                            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
                                 _Elapsed(), console=console, expand=True,
                                 transient=True, redirect_stdout=True, redirect_stderr=True)
            self._bar.start()
        read, self._pipe = os.pipe()
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True, name="llmbuild-progress")
        self._reader.start()
        _current = self
        _register_fork_handler()
        core_progress.set_sink(self._sink)

    def stop(self) -> None:
        """Everything reported so far is shown; the live lines are gone."""
        global _current
        if _current is not self:
            return
        core_progress.set_sink(None)
        _current = None
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self._reader is not None:
            self._reader.join(timeout=5)  # a worker killed mid-write holds the pipe no longer
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    # -- what the reporter says -----------------------------------------------------------------

    def write(self, text: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
            else:
                self.stream.write(text)
                self.stream.flush()

    def began(self, label: str) -> None:
        with self._lock:
            self._began.setdefault(label, time.monotonic())
            if label not in self._rows:  # a -n worker's first phase may have come first
                self._row(label, "")

    def ended(self, label: str) -> None:
        with self._lock:
            self._ended.add(label)  # a -n worker's last phase may still be in the pipe: no new row
            row = self._rows.pop(label, None)
            if row is not None and self._bar is not None:
                self._bar.remove_task(row)
                self._bar.refresh()  # lines printed next must not bring the finished row back

    # -- phases -----------------------------------------------------------------------------------

    def _sink(self, label: str, text: str, keep: bool) -> None:
        if os.getpid() == self._pid:
            self._show(label, text, keep)
        elif self._pipe is not None:  # a doit -n worker: the main process shows it
            line = json.dumps({"label": label, "text": text[:_MAX_TEXT], "keep": keep}) + "\n"
            os.write(self._pipe, line.encode())

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                self._show(message["label"], message["text"], message["keep"])

    def _show(self, label: str, text: str, keep: bool) -> None:
        with self._lock:
            began = self._began.setdefault(label, time.monotonic())
            if self._bar is None:
                stamp = time.strftime("%H:%M:%S")
                self.stream.write(f"{stamp} {label}  {time.monotonic() - began:5.1f}s  {text}\n")
                self.stream.flush()
            elif keep:
                self._bar.console.print(f"   {label}  {text}", markup=False, highlight=False, soft_wrap=True)
            else:
                self._row(label, text)

    def _row(self, label: str, phase: str) -> None:
        if self._bar is None or label in self._ended:
            return
        row = self._rows.get(label)
        if row is None:
            self._rows[label] = self._bar.add_task(phase, target=label, total=None)
        else:
            self._bar.update(row, description=phase, refresh=True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_fork_handler_registered = False


def _register_fork_handler() -> None:
    """In a forked worker, the main process's display is not this process's to draw: its phases
    go through the pipe, its own output straight to the terminal."""
    global _fork_handler_registered
    if not _fork_handler_registered:
        os.register_at_fork(after_in_child=_in_child)
        _fork_handler_registered = True


def _in_child() -> None:
    if _current is not None and _current._bar is not None:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
