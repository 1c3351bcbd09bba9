"""`smoke`: start Triton on a repository and check that generation works end to end.

Its output is a small JSON report; Triton's log and the answers go to the
entry's log.txt (the failed attempt's, when a check fails). It reruns whenever
the repository's output or the requests change; otherwise it is restored like
any other target.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from ..core.errors import LLMBuildError
from ..core.steps import Plan
from ..core.context import KindContext
from ..core.target import FieldGroup, Kind, Ref, register
from ..toolchains.subsystem import ToolFields
from ._shared import check_gpus, gpu_demand

Endpoint = Literal["ensemble", "tensorrt_llm_bls"]
#: Seconds one request may take (the smoke's timeout, when shorter).
REQUEST_TIMEOUT = 120.0


class RequestFields(FieldGroup):
    """One request to `/v2/models/<endpoint>/generate` and what its answer must satisfy."""

    prompt: str | None = Field(None, description="text_input: the prompt (a smoke target needs it, or requests).")
    max_tokens: PositiveInt = Field(20, description="max_tokens: the answer may not hold more tokens")
    bad_words: str = Field("", description="bad_words: comma-separated phrases never generated")
    stop_words: str = Field("", description="stop_words: comma-separated phrases that end generation")
    stream: bool = Field(False, description="Use /generate_stream (needs a decoupled repository).")
    endpoint: Endpoint | None = Field(None, description="Model to call (default: the repository's entrypoint).")
    expect_status: int = Field(200, description="HTTP status the answer must have.")
    expect_substring: str | None = Field(None, description="Text the answer must contain.")
    expect_text: str | None = Field(None, description="Exact answer text (deterministic models).")
    expect_error: str | None = Field(None, description="For a request that must be refused: text of the error.")


class Request(RequestFields):
    prompt: str = Field(description="text_input: the prompt.")


class SmokeFields(ToolFields, RequestFields):
    repository: Annotated[str, Ref("repository")] = Field(description="The repository target to serve.")
    requests: list[Request] = Field(default_factory=list, description="More requests, each a table.")

    @model_validator(mode="after")
    def _some_request(self):
        if self.prompt is None and not self.requests:
            raise ValueError("give a prompt (or a list of requests)")
        return self

    def all_requests(self) -> list[RequestFields]:
        return ([RequestFields.model_validate(self.model_dump(include=set(RequestFields.model_fields)))]
                if self.prompt is not None else []) + list(self.requests)


def _token_counter(tokenizer_dir: Path):
    """Counts tokens of an answer with the served tokenizer (tokenizers' fast path when possible)."""
    tokenizer_json = tokenizer_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return lambda text: len(auto.encode(text, add_special_tokens=False))


def check_answer(request: RequestFields, status: int, text: str, error: str | None,
                 tokens: int | None) -> list[str]:
    """The failed checks, as sentences ([] when the answer is what the target declares)."""
    failures = []
    if status != request.expect_status:
        failures.append(f"HTTP {status}, expected {request.expect_status}" + (f": {error}" if error else ""))
    if request.expect_error is not None:
        if request.expect_error not in (error or ""):
            failures.append(f"expected an error containing {request.expect_error!r}, got {error or text!r}")
        return failures
    if status == 200:
        if not text.strip():
            failures.append("empty text_output")
        if tokens is not None and tokens > request.max_tokens:
            failures.append(f"{tokens} tokens, more than max_tokens {request.max_tokens}")
        if request.expect_substring is not None and request.expect_substring not in text:
            failures.append(f"text does not contain {request.expect_substring!r}: {text!r}")
        if request.expect_text is not None and text != request.expect_text:
            failures.append(f"text is {text!r}, expected {request.expect_text!r}")
    return failures


@register
class Smoke(Kind):
    name = "smoke"
    Fields = SmokeFields
    help = "Serve a repository with Triton and check /generate answers."

    def unavailable(self, ctx):
        if ctx.facts_of("repository").get("format") == "dynamo":
            return ("a dynamo repository is not smoke-tested by llmbuild (run serve.json's argv where Dynamo "
                    "runs, or smoke the same engine with format = \"triton\" or \"trtllm-serve\")")
        return ctx.serving_unavailable()

    def check(self, ctx):
        repository_dep = ctx.dep("repository")
        repository = repository_dep.facts
        for index, request in enumerate(ctx.fields.all_requests()):
            prefix = "" if index == 0 and ctx.fields.prompt is not None else f"requests[{index}]."
            if repository.get("engine_free"):
                check_llmapi_request(ctx, request, repository, prefix)
            if request.stream and not repository["decoupled"]:
                raise ctx.error(
                    f"streaming needs a decoupled repository, but {repository_dep.address} "
                    f"has decoupled = false", key=prefix + "stream")
            limit = repository["max_seq_len"]
            if limit and request.max_tokens >= limit and request.expect_error is None:
                raise ctx.error(
                    f"max_tokens {request.max_tokens} leaves no room for a prompt: the engine behind "
                    f"{repository_dep.address} has max_seq_len {limit}", key=prefix + "max_tokens")
        check_gpus(ctx, repository["world_size"], repository["engine"])
        if ctx.lane == "gpu":
            check_serving_versions(ctx, repository)

    def plan(self, ctx):
        repository = ctx.facts_of("repository")
        requests = [r.model_dump() for r in ctx.fields.all_requests()]
        for request in requests:
            request["endpoint"] = request["endpoint"] or repository["entrypoint"]
        return Plan(params={"requests": requests}, extra_identity=ctx.toolchain.server_identity(),
                    gpus=gpu_demand(ctx, repository["world_size"]))

    def commands(self, ctx):
        return [ctx.serving_command(ctx.dep_link("repository"), ctx.facts_of("repository")["world_size"])]

    def run(self, ctx):
        if ctx.facts_of("repository").get("engine_free"):
            return run_llmapi(ctx)
        repository = ctx.dep_out("repository")
        count_tokens = _token_counter(repository / "preprocessing" / "1" / "tokenizer")
        session = _Session(ctx)
        world_size = ctx.facts_of("repository")["world_size"]
        requests = ctx.plan.params["requests"]
        # Triton writes the attempt's log; our lines follow once it has stopped
        with _appended_after(ctx.log, session.said), _linked_copy(repository, ctx.work / "repository") as served, \
                ctx.serve(served, log_path=ctx.log, world_size=world_size) as server:
            from ..toolchains.client import generate

            for number, request in enumerate(requests, 1):
                ctx.progress(f"request {number}/{len(requests)}")
                spec = RequestFields.model_validate(request)
                payload = {"text_input": spec.prompt, "max_tokens": spec.max_tokens,
                           "bad_words": spec.bad_words, "stop_words": spec.stop_words,
                           "return_log_probs": True}  # one log prob per generated token: the count
                if spec.stream:
                    payload["stream"] = True
                answer = generate(server.http_url, request["endpoint"], payload, stream=spec.stream,
                                  timeout=min(REQUEST_TIMEOUT, ctx.toolchain.serve_timeout or REQUEST_TIMEOUT))
                tokens = answer.generated_tokens
                if tokens is None and answer.status == 200:
                    tokens = count_tokens(answer.text)
                session.record(request["endpoint"], spec, answer.status, answer.text, answer.error, tokens,
                               answer.seconds)
        session.finish({"lane": ctx.lane})


class _Session:
    """The answers of one smoke: each checked, said on the console and in the log, and reported."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.results: list[dict] = []
        self.failed: list[str] = []
        self.said: list[str] = []  # appended to the log once the server has stopped

    def say(self, line: str) -> None:
        self.ctx.progress.keep(line)
        self.said.append(f"llmbuild: {line}\n")

    def record(self, endpoint: str, spec: RequestFields, status: int, text: str, error: str | None,
               tokens: int | None, seconds: float) -> None:
        problems = check_answer(spec, status, text, error, tokens)
        self.results.append({"endpoint": endpoint, "prompt": spec.prompt, "stream": spec.stream, "status": status,
                             "text": text, "error": error, "tokens": tokens, "latency_ms": round(seconds * 1000, 1),
                             "ok": not problems, "problems": problems})
        self.say(f"{endpoint}{' (stream)' if spec.stream else ''} {spec.prompt!r} -> {text or error!r} "
                 f"[{tokens} tokens, {seconds * 1000:.0f} ms] {'; '.join(problems) or 'ok'}")
        self.failed += [f"request {len(self.results)}: {p}" for p in problems]

    def finish(self, head: dict) -> None:
        """Write report.json; fail when any check failed."""
        report = {**head, "passed": not self.failed, "requests": self.results}
        (self.ctx.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        if self.failed:
            raise LLMBuildError("smoke checks failed: " + "; ".join(self.failed))


def check_llmapi_request(ctx: KindContext, request: RequestFields, repository: dict, prefix: str) -> None:
    """What a request to the llmapi model or trtllm-serve can ask for."""
    fmt = repository["format"]
    if request.endpoint is not None:
        raise ctx.error(f"endpoint {request.endpoint!r} is a model of the engine lane's repository; the engine-free "
                        f"lane serves one model ({'tensorrt_llm' if fmt == 'triton' else 'the OpenAI endpoints'})",
                        key=prefix + "endpoint")
    for name in ("bad_words", "stop_words"):
        if getattr(request, name):
            raise ctx.error(f"{name} is an input of the engine lane's ensemble; the llmapi model and trtllm-serve "
                            f"smokes send a prompt and max_tokens", key=prefix + name)
    if request.stream and fmt != "triton":
        raise ctx.error("stream: the trtllm-serve smoke sends non-streamed /v1/completions and "
                        "/v1/chat/completions requests", key=prefix + "stream")


def run_llmapi(ctx) -> None:
    """The engine-free lane's smoke: Triton's llmapi model through /v2/models/tensorrt_llm/generate[_stream]
    (its loaded config read back first), or trtllm-serve's /v1/completions and /v1/chat/completions.
    Token counts are what the server reports (trtllm-serve's usage); the llmapi model's tensors carry
    none, and re-tokenizing its text does not give them back exactly."""
    from ..toolchains.client import generate
    from ..toolchains.llmapi.serving import config_problems, openai

    facts = ctx.facts_of("repository")
    session = _Session(ctx)
    with _appended_after(ctx.log, session.said), \
            _linked_copy(ctx.dep_out("repository"), ctx.work / "repository") as served, \
            ctx.serve(served, log_path=ctx.log, world_size=facts["world_size"]) as server:
        if facts["format"] == "triton":
            for problem in config_problems(server.http_url, facts["triton_config"]):
                session.failed.append(problem)
                session.say(problem)
        requests = ctx.plan.params["requests"]
        timeout = min(REQUEST_TIMEOUT, ctx.toolchain.serve_timeout or REQUEST_TIMEOUT)
        for number, request in enumerate(requests, 1):
            ctx.progress(f"request {number}/{len(requests)}")
            spec = RequestFields.model_validate({**request, "endpoint": None})
            if facts["format"] == "triton":
                payload = {"text_input": spec.prompt, "sampling_param_max_tokens": spec.max_tokens}
                if spec.stream:
                    payload["streaming"] = True
                answer = generate(server.http_url, "tensorrt_llm", payload, stream=spec.stream, timeout=timeout)
                session.record("tensorrt_llm", spec, answer.status, answer.text, answer.error, None, answer.seconds)
                continue
            for route in ("completions", "chat/completions"):
                answer = openai(server.http_url, route, "model", spec.prompt, spec.max_tokens)
                session.record(f"v1/{route}", spec, answer["status"], answer["text"], answer["error"],
                               answer["tokens"], answer["seconds"])
    session.finish({"lane": ctx.lane, "format": facts["format"]})


def check_serving_versions(ctx: KindContext, repository: dict) -> None:
    """An engine only loads in the TensorRT-LLM / TensorRT it was built with."""
    built, served = repository["engine_built_with"], ctx.toolchain
    container = str(ctx.dep("container").address) if ctx.has_dep("container") else None
    for what, old, new in (("TensorRT-LLM", built["trtllm_version"], served.trtllm_version),
                           ("TensorRT", built["tensorrt_version"], served.device_identity().get("tensorrt_version"))):
        if old and new and old != new:
            def via(address):
                return f" (container {address})" if address else ""
            raise ctx.error(f"{repository['engine']} is built with {what} {old}{via(built['container'])} but "
                            f"would be served with {what} {new}{via(container)}; an engine only loads in the "
                            f"version that built it", key="container")


@contextlib.contextmanager
def _appended_after(log: Path, lines: list[str]):
    """Append `lines` to `log` on the way out, after the server writing it has stopped."""
    try:
        yield
    finally:
        with open(log, "a") as handle:
            handle.writelines(lines)


@contextlib.contextmanager
def _linked_copy(repository: Path, where: Path):
    """The repository as fresh directories of hard links, for the server: what Triton's Python
    backend writes next to a model (its stub's isolated interpreter ignores
    PYTHONDONTWRITEBYTECODE and writes __pycache__) never lands in the committed entry."""
    shutil.copytree(repository, where, copy_function=os.link)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
