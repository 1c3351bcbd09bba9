"""Triton Python-backend model ``tensorrt_llm`` for the CPU lane (llmbuild).

Stands in for the TensorRT-LLM C++ backend of tensorrtllm_backend v0.16 with
its tensor interface and request handling (llmbuild/triton/backend/
behaviour-v0.16.0.json is the contract): it runs the engine directory's
weights with PyTorch through llmbuild's CPU runtime, copied next to this file
as ``llmbuild_cpu_runtime.py``. Written for llmbuild; imports nothing from
llmbuild itself (it runs in the Triton venv).

As the C++ backend does, ``execute`` only reads and checks each request and
returns at once; every row (and every sequence of num_return_sequences) runs
on its own thread, at most ``max_batch_size`` at a time, so requests are
served concurrently in both transaction modes and answered through the
response sender. Between tokens a thread notices ``stop`` (a second request
with the same id and ``stop`` true) and client cancellation (checked every
``cancellation_check_period_ms``) and ends with the tokens so far.

Parameters: ``gpt_model_path`` (the engine dir; relative = against the
repository root), ``gpt_model_type``, ``exclude_input_in_output``,
``max_beam_width``, ``enable_kv_cache_reuse``, ``cancellation_check_period_ms``;
the other tensorrt_llm parameters only matter on GPUs.
"""

import dataclasses
import json
import math
import os
import sys
import threading
import time

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import llmbuild_cpu_runtime as runtime  # noqa: E402  (copied next to this file)

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_BATCHING = ("V1", "v1", "inflight_batching", "inflight_fused_batching")
_TRUE = ("true", "True", "TRUE", "1")
_FALSE = ("false", "False", "FALSE", "0")
# Inputs the CPU lane cannot serve (encoder-decoder, multimodal, prompt tables, LoRA, disaggregation).
_ENCODER_INPUTS = ("encoder_input_features", "cross_attention_mask", "skip_cross_attn_blocks")
_REFUSED = {
    "prompt_embedding_table": "input 'prompt_embedding_table' needs an engine built with "
                              "max_prompt_embedding_table_size; the CPU lane does not run prompt tables",
    "lora_task_id": "input 'lora_task_id' needs an engine built with the LoRA plugin; the CPU lane does not run "
                    "LoRA adapters",
    "context_phase_params": "input 'context_phase_params' is for disaggregated serving, which the CPU lane does "
                            "not run",
}


class _Refused(Exception):
    """A request the backend refuses; the message goes back to the client as is."""


def _param(config, key):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    if value is None or value == "" or value.startswith("${"):
        return None
    return value


def _bool_param(config, key, default):
    value = _param(config, key)
    if value is None:
        return default
    if value.strip() in _TRUE:
        return True
    if value.strip() in _FALSE:
        return False
    raise ValueError(f"parameter '{key}': cannot convert {value!r} to a boolean")


def _repository_root(args):
    model_dir = os.path.normpath(args["model_repository"])
    if os.path.basename(model_dir) == args.get("model_name"):
        return os.path.dirname(model_dir)
    return model_dir


class _Inputs:
    """Every input of one request as numpy, copied inside execute (Triton frees them when it returns)."""

    def __init__(self, request):
        self.values = {t.name(): np.array(t.as_numpy()) for t in request.inputs()}

    def __contains__(self, name):
        return name in self.values

    def get(self, name):
        return self.values.get(name)

    def first(self, name, default=None):
        """The first element of a scalar input (how the C++ backend reads stop and streaming)."""
        value = self.values.get(name)
        return default if value is None or value.size == 0 else value.reshape(-1)[0].item()

    def row(self, name, batch, b, default=None):
        """Row b's value of a [B]/[B,1] scalar input."""
        value = self.values.get(name)
        if value is None or value.size == 0:
            return default
        flat = value.reshape(batch, -1) if value.size % batch == 0 else value.reshape(1, -1)
        return flat[min(b, flat.shape[0] - 1), 0].item()

    def tensor_row(self, name, batch, b):
        value = self.values.get(name)
        if value is None:
            return None
        return value[b] if value.ndim > 0 and value.shape[0] == batch else value


def _word_list(packed):
    """[2, N] packed ids/offsets -> token-id lists, checked as the C++ backend's convertWordList."""
    if packed is None or packed.size == 0:
        return []
    flat = [int(v) for v in packed.reshape(-1)]
    if len(flat) % 2:
        raise _Refused("Sparse list must not have odd length: " + " ".join(map(str, flat)) + " ")
    n = len(flat) // 2
    ids, offsets = flat[:n], flat[n:]
    words, start = [], 0
    for i, end in enumerate(offsets):
        if end == -1:
            break
        if end > n:
            raise _Refused("Sparse list must not have out-of-bound offsets: " + " ".join(map(str, flat)) + " ")
        if i and end <= offsets[i - 1]:
            raise _Refused("Sparse list must not have non-increasing offsets: " + " ".join(map(str, flat)) + " ")
        words.append(ids[start:end])
        start = end
    return words


class _Stream:
    """One executor request: a row of the Triton request, or one of its num_return_sequences."""

    def __init__(self, job, batch_index, sequence_index, prompt, max_new, sampling, row_inputs):
        self.job = job
        self.batch_index = batch_index
        self.sequence_index = sequence_index
        self.prompt = prompt
        self.max_new = max_new
        self.sampling = sampling
        self.inputs = row_inputs
        self.cancelled = False
        self.generation = None
        self.sent_steps = 0  # generation steps already streamed
        self.reused_blocks = 0


class _Job:
    """One Triton request: its streams, its response sender and what it asked for."""

    def __init__(self, request_id, sender, requested, streaming, batch):
        self.request_id = request_id
        self.sender = sender
        self.requested = requested
        self.streaming = streaming
        self.batch = batch
        self.streams = []
        self.open = 0
        self.lock = threading.Lock()


class TritonPythonModel:
    def initialize(self, args):
        # A tiny model gains nothing from intra-op threads, and they spin against each other
        # (and against other requests' threads) on a loaded CPU.
        torch.set_num_threads(1)
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        batching = _param(config, "gpt_model_type")
        if batching not in _BATCHING:
            raise ValueError("Invalid gpt_model_type. Must be v1/inflight_batching/inflight_fused_batching.")
        path = _param(config, "gpt_model_path")
        if path is None:
            raise ValueError("tensorrt_llm: parameter 'gpt_model_path' is not set")
        engine_dir = path if os.path.isabs(path) else os.path.join(_repository_root(args), path)
        if not os.path.isfile(os.path.join(engine_dir, "config.json")):
            raise ValueError(f"tensorrt_llm: gpt_model_path {path!r} -> {engine_dir} has no config.json")
        self.exclude_default = _bool_param(config, "exclude_input_in_output", False)
        self.reuse = _bool_param(config, "enable_kv_cache_reuse", False)
        beam = _param(config, "max_beam_width")
        self.max_beam_width = int(beam) if beam is not None else 1
        period = _param(config, "cancellation_check_period_ms")
        self.cancel_period = (int(period) if period is not None else 100) / 1000.0
        self.engine = runtime.CpuEngine.load(engine_dir)
        self.slots = threading.BoundedSemaphore(self.engine.max_batch_size)
        self.lock = threading.Lock()
        self.next_id = 1  # executor request ids
        self.by_request_id = {}  # Triton request id -> running streams (for stop)
        self.blocks = set()  # KV-cache blocks (token prefixes) kept for reuse
        self.threads = set()

    # -- accepting requests ---------------------------------------------------------------------

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                job = self._accept(request, sender)
            except _Refused as e:
                self._send(sender, pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))),
                           _FINAL)
                continue
            except Exception as e:  # noqa: BLE001 - one bad request must not take the model down
                self._send(sender, pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"{type(e).__name__}: {e}")), _FINAL)
                continue
            if job is not None:
                self._start(job)
        return None

    def _accept(self, request, sender):
        """Read and check one request (the C++ backend's enqueue); None for a stop request."""
        inputs = _Inputs(request)
        request_id = request.request_id()
        if inputs.first("stop", False):
            if not request_id:
                raise _Refused("Trying to stop a request but request ID is not provided")
            with self.lock:
                for stream in self.by_request_id.get(request_id, ()):
                    stream.cancelled = True
            self._send(sender, pb_utils.InferenceResponse(output_tensors=[]), _FINAL)
            return None
        if "input_ids" not in inputs:
            raise _Refused("inputTokens or encoderInputFeatures tensor not provided")
        input_ids = inputs.get("input_ids")
        if input_ids.ndim != 2:
            raise _Refused("Expected inputTokens tensors to have 2 dimensions")
        batch = input_ids.shape[0]
        streaming = bool(inputs.first("streaming", False))
        if not self.decoupled and batch > 1:
            raise _Refused("Batch size > 1 requires the tensorrt_llm backend to be using decoupled transaction policy")
        if streaming and not self.decoupled:
            raise _Refused("Streaming is only supported if model is deployed using decoupled mode.")
        for name in _ENCODER_INPUTS:
            if name in inputs:
                raise _Refused(f"input '{name}' is for encoder-decoder and multimodal engines; the CPU lane runs "
                               f"decoder-only engines")
        for name, message in _REFUSED.items():
            if name in inputs:
                raise _Refused(message)
        job = _Job(request_id, sender, set(request.requested_output_names()), streaming, batch)
        for name in ("output_ids", "sequence_length"):  # the C++ backend fails its first response so
            if name not in job.requested:
                raise _Refused(f"Error encountered while populating response: {name} tensor must be present in "
                               f"list of output tensors")
        lengths = inputs.get("input_lengths")
        for b in range(batch):
            row = input_ids[b]
            if batch > 1:
                if lengths is None:
                    raise _Refused("input lengths tensor not provided")
                row = row[: int(lengths.reshape(batch, -1)[b, 0])]
            self._add_streams(job, inputs, b, [int(t) for t in row])
        return job

    def _add_streams(self, job, inputs, b, prompt):
        get = lambda name, default=None: inputs.row(name, job.batch, b, default)  # noqa: E731
        beam_width = int(get("beam_width", 1))
        requested = get("num_return_sequences")
        sequences = int(requested or 1)
        top_p = float(get("runtime_top_p", 0.0))
        sampling = runtime.Sampling(
            beam_width=beam_width,
            top_k=int(get("runtime_top_k", 0)),
            top_p=top_p if top_p > 0 else 0.0,
            top_p_min=get("runtime_top_p_min"),
            top_p_decay=get("runtime_top_p_decay"),
            top_p_reset_id=get("runtime_top_p_reset_ids"),
            temperature=float(get("temperature", 1.0)),
            repetition_penalty=float(get("repetition_penalty", 1.0)),
            presence_penalty=float(get("presence_penalty", 0.0)),
            frequency_penalty=float(get("frequency_penalty", 0.0)),
            min_length=int(get("min_length", 1)),
            length_penalty=float(get("len_penalty", 0.0)),
            early_stopping=int(get("early_stopping", 1)),
            diversity_rate=float(get("beam_search_diversity_rate", 0.0)),
            seed=int(get("random_seed", 0)),
            beams_out=min(sequences, beam_width) if beam_width > 1 and requested is not None else None,
        )
        row_inputs = {
            "end_id": get("end_id"),
            "exclude": bool(get("exclude_input_in_output", self.exclude_default)),
            "log_probs": bool(get("return_log_probs", False)),
            "context_logits": bool(get("return_context_logits", False)),
            "generation_logits": bool(get("return_generation_logits", False)),
            "kv_stats": bool(inputs.first("return_kv_cache_reuse_stats", False)),
            "bad_words": _word_list(inputs.tensor_row("bad_words_list", job.batch, b)),
            "stop_words": _word_list(inputs.tensor_row("stop_words_list", job.batch, b)),
            "bias": inputs.tensor_row("embedding_bias", job.batch, b),
            "draft": inputs.tensor_row("draft_input_ids", job.batch, b),
            "sequences": sequences,
        }
        max_new = int(get("request_output_len"))
        # beam_width 1: one executor child request per sequence; not decoupled only the first is delivered.
        count = sequences if beam_width == 1 and self.decoupled else 1
        for s in range(count):
            seeded = dataclasses.replace(sampling, seed=sampling.seed + s)
            job.streams.append(_Stream(job, b, s, prompt, max_new, seeded, row_inputs))

    # -- running ------------------------------------------------------------------------------

    def _start(self, job):
        job.open = len(job.streams)
        with self.lock:
            if job.request_id:
                self.by_request_id.setdefault(job.request_id, []).extend(job.streams)
        for stream in job.streams:
            thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
            with self.lock:
                self.threads.add(thread)
            thread.start()

    def _executor_error(self, stream, message):
        with self.lock:
            request_id, self.next_id = self.next_id, self.next_id + 1
        return _Refused(f"Executor failed process requestId {request_id} due to the following error: {message}")

    def _prepare(self, stream):
        """The executor's checks when it takes the request (fetchNewRequests / forward)."""
        engine, inputs = self.engine, stream.inputs
        fetch = "Encountered an error when fetching new request: "
        if stream.sampling.beam_width > self.max_beam_width:
            raise self._executor_error(stream, "Encountered an error in forwardAsync function: [TensorRT-LLM][ERROR] "
                                       f"Assertion failed: Requested beam width {stream.sampling.beam_width} is "
                                       f"larger than configured max beam width {self.max_beam_width}")
        draft = inputs["draft"]
        if draft is not None and draft.size > engine.max_draft_len:
            raise self._executor_error(stream, f"{fetch}Draft tokens length ({draft.size}) exceeds maximum draft "
                                       f"tokens length ({engine.max_draft_len}).")
        try:
            max_new, warning = engine.check_lengths(stream.prompt, stream.max_new)
        except runtime.EngineLimitError as e:
            raise self._executor_error(stream, f"{fetch}{e}") from None
        except ValueError as e:
            raise self._executor_error(stream, f"{fetch}{e}") from None
        if warning:
            pb_utils.Logger.log_warn(f"[TensorRT-LLM][WARNING] {warning}")
        if inputs["context_logits"] and not engine.gather_context_logits:
            raise self._executor_error(stream, f"{fetch}[TensorRT-LLM][ERROR] Assertion failed: Return context "
                                       f"logit need to build engine with gather_context_logits")
        if inputs["generation_logits"] and not engine.gather_generation_logits:
            raise self._executor_error(stream, f"{fetch}[TensorRT-LLM][ERROR] Assertion failed: To return "
                                       f"generation logits, gather_generation_logits must be enabled in "
                                       f"ExecutorConfig")
        bias = inputs["bias"]
        return runtime.Generation(
            engine, stream.prompt, max_new, stream.sampling, end_id=inputs["end_id"],
            bad_words=inputs["bad_words"], stop_words=inputs["stop_words"],
            embedding_bias=None if bias is None or bias.size == 0 else torch.from_numpy(bias.astype(np.float32)),
            want_context_logits=inputs["context_logits"], want_generation_logits=inputs["generation_logits"])

    def _run(self, stream):
        job = stream.job
        try:
            with self.slots:  # the executor's in-flight batch: at most max_batch_size requests at a time
                try:
                    stream.generation = self._prepare(stream)
                except _Refused as e:
                    self._finish(stream, pb_utils.InferenceResponse(output_tensors=[],
                                                                    error=pb_utils.TritonError(str(e))))
                    return
                self._generate(stream)
        except Exception as e:  # noqa: BLE001
            self._finish(stream, pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"Error encountered while populating response: "
                                                              f"{type(e).__name__}: {e}")))
        finally:
            with self.lock:
                self.threads.discard(threading.current_thread())
                running = self.by_request_id.get(job.request_id)
                if running is not None and stream in running:
                    running.remove(stream)
                    if not running:
                        del self.by_request_id[job.request_id]

    def _generate(self, stream):
        gen, job = stream.generation, stream.job
        checked = time.monotonic()
        while not gen.finished:
            now = time.monotonic()
            if now - checked >= self.cancel_period:
                checked = now
                stream.cancelled = stream.cancelled or job.sender.is_cancelled()
            if stream.cancelled:
                gen.cancel()
                pb_utils.Logger.log_info(f"tensorrt_llm: request '{job.request_id}' cancelled after "
                                         f"{gen.steps} generated tokens")
                break
            added = gen.step()
            if gen.steps == 1:
                self._account_blocks(stream)
            if job.streaming and not gen.finished and any(added):
                with job.lock:
                    self._send(job.sender, self._response(stream))
        self._finish(stream, self._response(stream))

    def _finish(self, stream, response):
        job = stream.job
        with job.lock:  # the final flag must go out after every other stream's last response
            job.open -= 1
            self._send(job.sender, response, _FINAL if job.open == 0 else 0)

    @staticmethod
    def _send(sender, response, flags=0):
        try:
            sender.send(response, flags=flags)
        except Exception as e:  # noqa: BLE001 - e.g. the client is gone
            pb_utils.Logger.log_warn(f"tensorrt_llm: could not send a response: {e}")

    # -- responses ----------------------------------------------------------------------------

    def _account_blocks(self, stream):
        """KV-cache reuse statistics, modelled on the block manager: full blocks of the prompt seen before."""
        if not stream.inputs["kv_stats"] and not self.reuse:
            return
        size, prompt = self.engine.tokens_per_block, stream.prompt
        prefixes = [tuple(prompt[: (i + 1) * size]) for i in range((len(prompt) - 1) // size)]
        if self.reuse:
            with self.lock:
                for prefix in prefixes:
                    if prefix not in self.blocks:
                        break
                    stream.reused_blocks += 1
                self.blocks.update(prefixes)

    def _response(self, stream):
        gen, job, inputs = stream.generation, stream.job, stream.inputs
        streaming = job.streaming
        beams = gen.beams or [runtime.Beam([], [])]
        if streaming and gen.width == 1:
            start = stream.sent_steps
            sequences = [b.tokens[start:] for b in beams]
        elif streaming or inputs["exclude"]:
            sequences = [list(b.tokens) for b in beams]
        else:
            sequences = [stream.prompt + b.tokens for b in beams]
        steps = (stream.sent_steps, gen.steps)
        stream.sent_steps = gen.steps if gen.width > 1 else len(beams[0].tokens)
        tensors = {
            "output_ids": _padded(sequences, np.int32).reshape(1, len(sequences), -1),
            "sequence_length": np.array([[len(s) for s in sequences]], dtype=np.int32),
        }
        if inputs["log_probs"]:
            tensors["cum_log_probs"] = np.array([[b.cum_log_prob for b in beams]], dtype=np.float32)
            tensors["output_log_probs"] = _padded([b.log_probs for b in beams], np.float32)[None]
        if inputs["context_logits"] and gen.context_logits is not None:
            tensors["context_logits"] = gen.context_logits.numpy().astype(np.float32)[None]
        if inputs["generation_logits"] and gen.generation_logits is not None:
            logits = gen.generation_logits.numpy().astype(np.float32)
            if streaming:
                logits = logits[:, steps[0]:steps[1]]
            tensors["generation_logits"] = logits[None]
        if job.batch > 1:
            tensors["batch_index"] = np.array([[stream.batch_index]], dtype=np.int32)
        if stream.inputs["sequences"] > 1:
            tensors["sequence_index"] = np.array([[stream.sequence_index]], dtype=np.int32)
        if inputs["kv_stats"]:
            total = math.ceil((len(stream.prompt) + len(beams[0].tokens)) / self.engine.tokens_per_block)
            tensors["kv_cache_alloc_total_blocks"] = np.array([[total]], dtype=np.int32)
            tensors["kv_cache_reused_blocks"] = np.array([[stream.reused_blocks]], dtype=np.int32)
            tensors["kv_cache_alloc_new_blocks"] = np.array([[total - stream.reused_blocks]], dtype=np.int32)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in tensors.items()
            if name in job.requested])

    def finalize(self):
        with self.lock:
            streams = [s for running in self.by_request_id.values() for s in running]
            threads = list(self.threads)
        for stream in streams:
            stream.cancelled = True
        for thread in threads:
            thread.join(timeout=5)
        self.engine = None


def _padded(rows, dtype):
    """Rows of different lengths -> one array, padded with -1 (as the C++ backend pads beams)."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -1, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
