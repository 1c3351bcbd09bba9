"""The generate extension (`/v2/models/<m>/generate[_stream]`) over plain HTTP."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerateResult:
    status: int
    body: dict[str, Any]  # the JSON answer (the last event when streaming)
    events: list[dict[str, Any]] = field(default_factory=list)  # streaming: every event
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """The generated text (streamed pieces joined)."""
        if self.events:
            return "".join(str(e.get("text_output", "")) for e in self.events)
        return str(self.body.get("text_output", ""))

    @property
    def generated_tokens(self) -> int | None:
        """New tokens, counted from output_log_probs (one per token) when the server sent them.

        Every response carries the log probs of all tokens so far (also when streaming).
        """
        bodies = self.events or [self.body]
        counts = [_count(b["output_log_probs"]) for b in bodies if "output_log_probs" in b]
        return max(counts) if counts else None

    @property
    def error(self) -> str | None:
        return self.body.get("error")


def generate(http_url: str, model: str, payload: dict[str, Any], *, stream: bool = False,
             timeout: float = 120) -> GenerateResult:
    host, _, port = http_url.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    path = f"/v2/models/{model}/generate" + ("_stream" if stream else "")
    started = time.monotonic()
    try:
        connection.request("POST", path, body=json.dumps(payload),
                           headers={"Content-Type": "application/json", "Connection": "close"})
        response = connection.getresponse()
        raw = response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()  # an open connection would hold Triton's shutdown
    seconds = time.monotonic() - started
    if not stream or response.status != 200:
        return GenerateResult(response.status, _json(raw), seconds=seconds)
    events = [_json(line[len("data:"):].strip()) for line in raw.splitlines()
              if line.startswith("data:")]
    errors = [e for e in events if "error" in e]
    last = errors[0] if errors else (events[-1] if events else {})
    return GenerateResult(response.status, last, events, seconds)


def _count(value: Any) -> int:
    return sum(_count(v) for v in value) if isinstance(value, list) else 1


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"error": text.strip() or "empty response"}
    return value if isinstance(value, dict) else {"error": f"unexpected answer: {text[:200]}"}
