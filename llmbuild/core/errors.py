"""One exception type for everything a user can fix, printed as one line."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .redact import redact

#: Longest value a message echoes; a longer one is cut (a 1 MB string stays a one-line error).
SHOWN = 80


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
        where = [plain_or_quoted(part) for part in (self.file, self.target, self.key) if part]
        prefix = ": ".join(where)
        # One line whatever a value holds: a newline or a terminal escape in a path is shown escaped.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in self.message)
        return redact(f"{prefix}: {message}" if prefix else message)


class BuildFailed(LLMBuildError):
    """A tool ran and failed; its log is kept where the message says (and `log` names it).
    `started` and `gpus`: when the failed run began and the GPU IDs it held (for dist/run.json)."""

    def __init__(self, message: str, *, log: Path | None = None, started: float | None = None,
                 gpus: tuple[int, ...] = (), **where: str | None):
        super().__init__(message, **where)
        self.log = log
        self.started = started
        self.gpus = gpus


def shown(value: object) -> str:
    """repr(value) cut to SHOWN characters: invisible characters and newlines come out escaped."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def plain_or_quoted(text: str) -> str:
    """A file, target or key as is when it is printable ASCII, else quoted and escaped by
    `shown`, so a lookalike or an invisible character is seen and a newline cannot split the line."""
    return text if text.isascii() and text.isprintable() and len(text) <= SHOWN else shown(text)


def odd_character(word: str) -> str:
    """': <which character>' for the first character of `word` that is not printable ASCII (a
    Cyrillic lookalike, a fullwidth letter, a zero-width space), else ''."""
    for char in word:
        if not (char.isascii() and char.isprintable()):
            name = unicodedata.name(char, "unnamed")
            if not char.isprintable() or unicodedata.category(char) in ("Cf", "Mn", "Zs"):
                return f": U+{ord(char):04X} {name}, an invisible character"
            return f": '{char}' is U+{ord(char):04X} {name}, not ASCII"
    return ""


def _folded(word: str) -> str:
    """`word` as it looks: NFKC-normalized (fullwidth letters become ASCII), invisible characters dropped."""
    return "".join(c for c in unicodedata.normalize("NFKC", word) if c.isprintable())


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like `word` (or the one `word` only looks different from), if any is close."""
    choices = list(choices)
    folded = _folded(word)
    close = [folded] if folded in choices else difflib.get_close_matches(folded, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    close = closest(word, choices)
    return f" (did you mean '{close}'?)" if close else ""


def unknown(what: str, word: str, choices: Iterable[str]) -> str:
    """'unknown key' plus the lookalike or invisible character in it and the closest choice."""
    return f"unknown {what}{odd_character(word)}{did_you_mean(word, choices)}"


def a_or_an(word: str) -> str:
    """'a checkpoint', 'an engine': for messages that name a kind."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
