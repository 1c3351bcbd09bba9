"""Secrets in the environment: which variables are secret, and their values kept out of text.

A variable is secret when its name matches one of the patterns (shell globs, case-sensitive):
the built-in ones below plus the workspace's `secret_env` setting. Tools get secret variables
by name from the environment of the process that runs them; nothing llmbuild writes (logs,
error messages, run.json, manifests, plan output) ever holds their values: `redact` replaces
each with `<NAME redacted>`. The values are read from this process's environment when text is
redacted, so a token set after start-up is covered too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from urllib.parse import quote

#: Always secret, whatever the settings add.
DEFAULT_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                      "*_TOKEN", "*_SECRET*", "*PASSWORD*", "*_API_KEY")
#: Shorter values are not redacted: "1" or "true" in a secret-looking variable would otherwise
#: be blanked out of every number and word in a log.
MIN_SECRET_LENGTH = 6

_patterns: tuple[str, ...] = DEFAULT_SECRET_ENV


def use_patterns(extra: Iterable[str]) -> None:
    """Add the workspace's patterns to the built-in ones for the rest of this process."""
    global _patterns
    _patterns = tuple(dict.fromkeys((*DEFAULT_SECRET_ENV, *extra)))


def secret_names(given: Iterable[str] | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The variables of `environ` (default: ours) whose names match `given` (default: the patterns)."""
    environ = os.environ if environ is None else environ
    globs = tuple(_patterns if given is None else given)
    return sorted(name for name in environ if any(fnmatchcase(name, glob) for glob in globs))


class Redactor:
    """The values of the variables of an environment (default: ours) whose names match the
    patterns (default: this process's), replaced in text and in bytes (longest first, so a value
    containing another is replaced whole)."""

    def __init__(self, given: Iterable[str] | None = None, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        found: dict[str, str] = {}
        for name in secret_names(given, environ):
            value = environ[name]
            if len(value) >= MIN_SECRET_LENGTH:
                for form in (value, quote(value, safe="")):  # as given, and inside a URL
                    found.setdefault(form, name)
        ordered = sorted(found, key=len, reverse=True)
        self._names = found
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._bytes = re.compile(b"|".join(re.escape(v.encode()) for v in ordered)) if ordered else None

    def text(self, text: str) -> str:
        if self._text is None:
            return text
        return self._text.sub(lambda m: f"<{self._names[m.group(0)]} redacted>", text)

    def bytes(self, data: bytes) -> bytes:
        if self._bytes is None:
            return data
        return self._bytes.sub(lambda m: f"<{self._names[m.group(0).decode()]} redacted>".encode(), data)


def redact(text: str) -> str:
    """`text` without the values of this process's secret variables."""
    return Redactor().text(text)


class RedactingStream:
    """A text stream (sys.stdout, sys.stderr) that redacts whatever is written to it."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
