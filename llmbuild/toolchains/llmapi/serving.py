"""Talking to an engine-free deployment: the llmapi model's config read back from Triton, and
trtllm-serve's OpenAI-compatible endpoints (plain HTTP, loopback)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any


def _request(http_url: str, method: str, path: str, body: dict | None = None,
             timeout: float = 120) -> tuple[int, dict[str, Any], float]:
    host, _, port = http_url.removeprefix("http://").rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    started = time.monotonic()
    try:
        connection.request(method, path, body=None if body is None else json.dumps(body),
                           headers={"Content-Type": "application/json", "Connection": "close"})
        response = connection.getresponse()
        raw = response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {"error": raw}
    return response.status, answer if isinstance(answer, dict) else {"answer": answer}, time.monotonic() - started


def config_problems(http_url: str, triton_config: dict[str, Any]) -> list[str]:
    """How the loaded tensorrt_llm model's config differs from model.yaml's triton_config ([] when
    it does not): launchers pass --disable-auto-complete-config, which drops what only the model's
    auto_complete_config would set."""
    status, config, _ = _request(http_url, "GET", "/v2/models/tensorrt_llm/config")
    if status != 200:
        return [f"GET /v2/models/tensorrt_llm/config answered HTTP {status}: {config}"]
    loaded = {"max_batch_size": int(config.get("max_batch_size", 0)),
              "decoupled": bool((config.get("model_transaction_policy") or {}).get("decoupled", False))}
    return [f"Triton loaded tensorrt_llm with {key} {loaded[key]!r} but model.yaml's triton_config says "
            f"{triton_config[key]!r} (did the launcher drop it? --disable-auto-complete-config ignores what "
            f"auto_complete_config sets; config.pbtxt must carry it)"
            for key in ("max_batch_size", "decoupled") if loaded[key] != triton_config[key]]


def openai(http_url: str, route: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One request to /v1/completions or /v1/chat/completions: status, text, error, tokens, seconds."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if route == "chat/completions":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    status, answer, seconds = _request(http_url, "POST", f"/v1/{route}", body)
    choice = (answer.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") if route == "chat/completions" else choice.get("text")
    error = answer.get("error")
    return {"status": status, "text": text or "", "seconds": seconds,
            "error": (error.get("message") if isinstance(error, dict) else error),
            "tokens": (answer.get("usage") or {}).get("completion_tokens"),
            "fingerprint": answer.get("system_fingerprint")}


def wait_for_health(http_url: str, *, deadline: float, exited: Callable[[], int | None],
                    fail: Callable[[str], Exception]) -> None:
    """Poll trtllm-serve's /health until it answers 200."""
    while time.monotonic() < deadline:
        code = exited()
        if code is not None:
            raise fail(f"exited with code {code} before it was ready")
        try:
            if _request(http_url, "GET", "/health", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise fail("was not ready in time")
