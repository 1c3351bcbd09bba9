"""One exception type for everything a user can fix, printed as one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from .redact import redact


class LLMBuildError(Exception):
    """A problem in the user's input or environment: shown without a traceback, and without
    the value of any secret variable (a tool's message may quote its environment)."""

    def __init__(self, message: str, *, file: str | None = None,
                 target: str | None = None, key: str | None = None):
        self.message = message
        self.file = file
        self.target = target
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.target:
            where.append(self.target)
        if self.key:
            where.append(self.key)
        prefix = ": ".join(where)
        return redact(f"{prefix}: {self.message}" if prefix else self.message)


class BuildFailed(LLMBuildError):
    """A tool ran and failed; its log is kept where the message says (and `log` names it).
    `started` and `gpus`: when the failed run began and the GPU IDs it held (for dist/run.json)."""

    def __init__(self, message: str, *, log: Path | None = None, started: float | None = None,
                 gpus: tuple[int, ...] = (), **where: str | None):
        super().__init__(message, **where)
        self.log = log
        self.started = started
        self.gpus = gpus


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word`, if any is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    close = closest(word, choices)
    return f" (did you mean '{close}'?)" if close else ""


def a_or_an(word: str) -> str:
    """'a checkpoint', 'an engine': for messages that name a kind."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
