"""CPU-lane stand-in for ``trtllm-serve``: an OpenAI-compatible HTTP server on llmbuild's PyTorch
runtime. Not TensorRT-LLM.

    python -m llmbuild.toolchains.cpu.openai_server MODEL --config config.yaml --host H --port P

Takes trtllm-serve's argv (the model positional, ``--config`` the LLM-API YAML whose limits it
applies) and answers ``/health``, ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``
(greedy, not streamed) with the Hugging Face checkpoint run in float32. Every answer carries the
header ``Server: llmbuild-cpu-lane-stand-in`` and ``"system_fingerprint": "llmbuild CPU lane"``.

`OpenAIStandIn` starts it for a smoke: the serve.json argv of a repository, on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LABEL = "llmbuild CPU lane"
SERVER_HEADER = "llmbuild-cpu-lane-stand-in"
READY_TIMEOUT = 300.0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trtllm-serve (llmbuild CPU-lane stand-in)")
    parser.add_argument("model")
    parser.add_argument("--config", "--extra_llm_api_options", dest="config")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served_model_name")
    return parser.parse_args(argv)


class Model:
    def __init__(self, model: str, options: dict):
        from transformers import AutoTokenizer

        from . import runtime

        self.runtime = runtime
        self.engine = runtime.CpuEngine.from_hf(model, max_batch_size=int(options.get("max_batch_size") or 2048),
                                                max_seq_len=options.get("max_seq_len"),
                                                max_input_len=options.get("max_input_len"))
        self.tokenizer = AutoTokenizer.from_pretrained(options.get("tokenizer") or model)

    def complete(self, prompt: str, max_tokens: int) -> tuple[str, str, int, int]:
        """(text, finish reason, prompt tokens, completion tokens)."""
        ids = self.tokenizer.encode(prompt)
        limit, _ = self.engine.check_lengths(ids, max_tokens)
        tokens = self.engine.generate([ids], [limit], end_id=self.tokenizer.eos_token_id)[0]
        reason = "length" if len(tokens) >= limit else "stop"
        return self.tokenizer.decode(tokens, skip_special_tokens=True), reason, len(ids), len(tokens)

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def handler(model: Model, name: str):
    class Handler(BaseHTTPRequestHandler):
        server_version = SERVER_HEADER
        sys_version = ""

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            print(f"[{LABEL} trtllm-serve stand-in] {format % args}", file=sys.stderr, flush=True)

        def do_GET(self):  # noqa: N802
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": LABEL}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):  # noqa: N802
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            except ValueError as err:
                self._send(400, {"error": {"message": f"body is not JSON: {err}"}})
                return
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if request.get("stream"):
                self._send(400, {"error": {"message": f"stream is not served by the {LABEL} stand-in"}})
                return
            chat = self.path == "/v1/chat/completions"
            try:
                prompt = model.chat_prompt(request["messages"]) if chat else request["prompt"]
                text, reason, used, made = model.complete(prompt, int(request.get("max_tokens") or 16))
            except (KeyError, TypeError, ValueError) as err:
                self._send(400, {"error": {"message": f"{type(err).__name__}: {err}"}})
                return
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
                      if chat else {"index": 0, "text": text, "finish_reason": reason})
            self._send(200, {"id": f"cmpl-{time.time_ns()}", "object": "chat.completion" if chat else "text_completion",
                             "created": int(time.time()), "model": name, "system_fingerprint": LABEL,
                             "choices": [choice],
                             "usage": {"prompt_tokens": used, "completion_tokens": made, "total_tokens": used + made}})

    return Handler


def main(argv: list[str]) -> int:
    args = parse(argv)
    import yaml

    options = {}
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            options = yaml.safe_load(handle) or {}
    model = Model(args.model, options)
    server = ThreadingHTTPServer((args.host, args.port), handler(model, args.served_model_name or args.model))
    print(f"[{LABEL}] trtllm-serve stand-in (not TensorRT-LLM) serving {args.model} on "
          f"http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


class OpenAIStandIn:
    """The stand-in started on a repository's serve.json argv (cwd: the repository), on this host."""

    def __init__(self, repository: Path, *, log_path: Path, environment: dict[str, str] | None = None):
        from .server import free_ports

        serve = json.loads((repository / "serve.json").read_text())
        argv = list(serve["argv"][1:])
        self.port = free_ports(1)[0]
        for flag, value in (("--host", "127.0.0.1"), ("--port", str(self.port))):
            argv[argv.index(flag) + 1] = value
        self.argv = [sys.executable, "-m", __name__, *argv]
        self.repository, self.log_path = repository, log_path
        root = str(Path(__file__).resolve().parents[3])
        self.env = {**os.environ, **(environment or {}),
                    "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "OpenAIStandIn":
        from .install import pdeathsig_preexec

        with open(self.log_path, "ab") as log:
            log.write(("$ " + " ".join(self.argv) + "\n").encode())
            self.process = subprocess.Popen(self.argv, cwd=self.repository, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=pdeathsig_preexec())
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {LABEL} trtllm-serve stand-in exited with {self.process.returncode} "
                                   f"(log: {self.log_path})")
            try:
                with urllib.request.urlopen(f"{self.http_url}/health", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the {LABEL} trtllm-serve stand-in was not ready in {READY_TIMEOUT:.0f} s "
                           f"(log: {self.log_path})")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
