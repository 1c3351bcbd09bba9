"""A Triton client: waiting until a server and its models are ready, and the generate extension
(`/v2/models/<m>/generate[_stream]`) over plain HTTP."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


class TritonStartError(RuntimeError):
    """tritonserver died or did not become ready in time."""

    def __init__(self, message: str, *, log_path: Path | None = None, port_conflict: bool = False):
        super().__init__(message)
        self.log_path = log_path
        self.port_conflict = port_conflict


def wait_until_ready(http_url: str, *, deadline: float, exited: Callable[[], int | None],
                     fail: Callable[[str], Exception], timeout: float,
                     explicit_models: Sequence[str] = (),
                     progress: Callable[[str], None] | None = None,
                     status: Callable[[], str | None] | None = None) -> None:
    """Poll until the server is ready and every wanted model is READY; `fail(what)` makes the
    error when the server exits (exited() returns its code), a model fails, or time runs out.
    `progress` hears what `status()` says (e.g. "loading models 3/5", from the server's log:
    Triton answers HTTP only once its models are loaded) whenever that changes."""
    import tritonclient.http as httpclient

    def new_client():
        return httpclient.InferenceServerClient(http_url, connection_timeout=2.0, network_timeout=5.0)

    client = new_client()
    last_state = "no answer yet"
    shown = ""
    try:
        while True:
            rc = exited()
            if rc is not None:
                raise fail(f"exited with code {rc} before it was ready")
            try:
                if client.is_server_ready():
                    pending = _pending_models(client, explicit_models, fail)
                    if not pending:
                        return
                    last_state = "waiting for " + ", ".join(pending)
                else:
                    last_state = "server not ready"
            except TritonStartError:
                raise
            except Exception as e:  # connection refused while starting, timeouts, ...
                last_state = f"{type(e).__name__}: {e}"
                with contextlib.suppress(Exception):  # a broken connection gets a fresh client
                    client.close()
                client = new_client()
            now = status() if status is not None else None
            if progress is not None and now and now != shown:
                progress(now)
                shown = now
            if time.monotonic() > deadline:
                raise fail(f"not ready after {timeout:.0f} s ({last_state})")
            time.sleep(0.1)
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _pending_models(client, explicit_models: Sequence[str], fail) -> list[str]:
    """Models still to wait for; raises for a model that failed to load."""
    index = client.get_model_repository_index()
    wanted = set(explicit_models) if explicit_models else {m["name"] for m in index}
    states: dict[str, list[dict]] = {}
    for m in index:
        if m.get("name") in wanted:
            states.setdefault(m["name"], []).append(m)
    pending = []
    for name in sorted(wanted):
        entries = states.get(name)
        if not entries:
            if explicit_models:
                raise fail(f"has no model {name!r} in its repository index")
            pending.append(name)
            continue
        for m in entries:
            state, reason = m.get("state", ""), m.get("reason", "")
            if state == "READY":
                continue
            if state == "UNAVAILABLE" and reason and reason != "unloaded":
                raise fail(f"failed to load model {name!r}: {reason}")
            pending.append(f"{name} ({state or 'unknown'})")
    return pending
