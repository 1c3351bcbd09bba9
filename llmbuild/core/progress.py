"""Progress of running targets: the phases kinds, toolchains and executors report ("starting
Triton on :8000", "loading models 3/5", "request 1/2", a tool's latest output line) and the lines
worth keeping (a smoke's answers). The core only routes them to a sink the front end installs
(llmbuild.doit's reporter draws them with elapsed time); with none, each is a `[label] text`
line on stderr, so library use and tests see them too."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: sink(label, text, keep): `keep` marks a line worth keeping (printed as is), else a phase.
Sink = Callable[[str, str, bool], None]
_sink: Sink | None = None


def set_sink(sink: Sink | None) -> None:
    global _sink
    _sink = sink


def report(label: str, text: str, keep: bool = False) -> None:
    if _sink is not None:
        _sink(label, text, keep)
    else:
        print(f"[{label}] {text}", file=sys.stderr, flush=True)


class Progress:
    """One target's progress: `progress("phase")`; `progress.keep("line")` for a line worth
    keeping; `with progress.aside("phase"):` for work the target waits on that is not its own
    (a one-time install), shown as its own phase and left out of the target's seconds."""

    def __init__(self, label: str):
        self.label = label
        self.aside_seconds = 0.0

    def __call__(self, phase: str) -> None:
        report(self.label, phase)

    def keep(self, line: str) -> None:
        report(self.label, line, keep=True)

    @contextmanager
    def aside(self, phase: str) -> Iterator[None]:
        self(phase)
        started = time.monotonic()
        try:
            yield
        finally:
            self.aside_seconds += time.monotonic() - started
