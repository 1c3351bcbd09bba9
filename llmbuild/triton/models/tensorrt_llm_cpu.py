"""Triton Python-backend model ``tensorrt_llm`` for the CPU lane (llmbuild).

Stands in for the TensorRT-LLM C++ backend with the same tensor interface
(tensorrtllm_backend v0.16): it runs the engine directory's weights with
PyTorch through llmbuild's CPU runtime, copied next to this file as
``llmbuild_cpu_runtime.py``. Written for llmbuild; imports nothing from
llmbuild itself (it runs in the Triton venv).

Behaviour, as the C++ backend's where the CPU lane can follow it:

* greedy decoding; ``end_id`` stops a row, ``bad_words_list`` /
  ``stop_words_list`` ([B,2,L] packed ids) are honoured; other sampling
  inputs are accepted and ignored (greedy);
* ``exclude_input_in_output``: the request input wins over the parameter
  (default false); streaming responses carry only the new tokens;
* not decoupled: one request row at a time, ``streaming`` refused (the C++
  backend's rules);
* decoupled: one response per row (``batch_index`` when there are several)
  and, with ``streaming``, one response per generated token; the last response
  carries the final flag;
* a request over the engine's limits (batch > max_batch_size, prompt >
  max_input_len, prompt + output > max_seq_len) gets an error response; the
  model and server stay up;
* outputs: ``output_ids`` [1, beams=1, T] and ``sequence_length`` [1, 1] per
  response (log probs and logits are not produced, as the C++ backend when
  they are not requested); beam search, LoRA, prompt tables, embedding bias
  and draft tokens are refused with an error.

Parameters: ``gpt_model_path`` (the engine dir; relative = against the
repository root), ``gpt_model_type``, ``exclude_input_in_output``,
``max_beam_width``; the other tensorrt_llm parameters only matter on GPUs.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import llmbuild_cpu_runtime as runtime  # noqa: E402  (copied next to this file)

_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
_BATCHING = ("V1", "v1", "inflight_batching", "inflight_fused_batching")
# Inputs the CPU lane cannot honour: refused when present and non-empty.
_REFUSED = (
    "draft_input_ids", "draft_logits", "embedding_bias", "prompt_embedding_table", "lora_task_id",
    "lora_weights", "lora_config", "encoder_input_features", "cross_attention_mask", "context_phase_params",
)


def _param(config, key):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    if value is None or value == "" or value.startswith("${"):
        return None
    return value


def _repository_root(args):
    model_dir = os.path.normpath(args["model_repository"])
    if os.path.basename(model_dir) == args.get("model_name"):
        return os.path.dirname(model_dir)
    return model_dir


def _bool(value, key):
    text = value.strip()
    if text in ("true", "True", "TRUE", "1"):
        return True
    if text in ("false", "False", "FALSE", "0"):
        return False
    raise ValueError(f"parameter '{key}': cannot convert {value!r} to a boolean")


class _RequestError(ValueError):
    """A request the backend refuses; the message goes back to the client."""


def _scalars(request, name, batch):
    """A [B]/[B,1] optional input as a list of B Python scalars, or None."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = np.asarray(tensor.as_numpy()).reshape(-1)
    if values.size != batch:
        raise _RequestError(f"Expected a scalar tensor for tensor {name}")
    return [v.item() for v in values]


def _word_lists(request, name, batch):
    """[B,2,L] packed ids -> per row a list of token-id lists (None when absent)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return [[] for _ in range(batch)]
    packed = np.asarray(tensor.as_numpy())
    if packed.size == 0:
        return [[] for _ in range(batch)]
    packed = packed.reshape(batch, 2, -1)
    rows = []
    for b in range(batch):
        ids, ends = packed[b, 0].tolist(), packed[b, 1].tolist()
        words, start = [], 0
        for end in ends:
            if end < 0:
                break
            if end > len(ids) or end < start:
                raise _RequestError(f"Invalid format for word list {name}")
            if end > start:
                words.append([int(t) for t in ids[start:end]])
            start = end
        rows.append(words)
    return rows


class TritonPythonModel:
    def initialize(self, args):
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
        exclude = _param(config, "exclude_input_in_output")
        self.exclude_default = _bool(exclude, "exclude_input_in_output") if exclude is not None else False
        beam = _param(config, "max_beam_width")
        self.max_beam_width = int(beam) if beam is not None else 1
        self.engine = runtime.CpuEngine.load(engine_dir)

    # -- one request --------------------------------------------------------------------------

    def _convert(self, request):
        """Check a request and turn it into the runtime's arguments (one entry per row)."""
        ids_tensor = pb_utils.get_input_tensor_by_name(request, "input_ids")
        if ids_tensor is None:
            raise _RequestError("A value is required for input_ids")
        input_ids = np.asarray(ids_tensor.as_numpy())
        if input_ids.ndim != 2:
            raise _RequestError("Invalid format for input_ids")
        batch = input_ids.shape[0]
        if not self.decoupled and batch > 1:
            raise _RequestError(
                "Batch size > 1 requires the tensorrt_llm backend to be using decoupled transaction policy")
        if batch > self.engine.max_batch_size:
            raise _RequestError(
                f"Batch size ({batch}) exceeds maximum batch size ({self.engine.max_batch_size}).")
        lengths = _scalars(request, "input_lengths", batch) or [input_ids.shape[1]] * batch
        max_new = _scalars(request, "request_output_len", batch)
        if max_new is None:
            raise _RequestError("A value is required for request_output_len")
        streaming = _scalars(request, "streaming", batch) or [False] * batch
        stream = bool(any(streaming))
        if stream and not self.decoupled:
            raise _RequestError("Streaming is only supported if model is deployed using decoupled mode.")
        exclude = _scalars(request, "exclude_input_in_output", batch) or [self.exclude_default] * batch
        for name in ("beam_width", "num_return_sequences"):
            values = _scalars(request, name, batch)
            if values is not None and any(int(v) > 1 for v in values):
                raise _RequestError(f"{name} > 1 is not supported by the CPU lane (greedy decoding only)")
        log_probs = _scalars(request, "return_log_probs", batch)
        for name in ("return_context_logits", "return_generation_logits"):
            values = _scalars(request, name, batch)
            if values is not None and any(values):
                raise _RequestError(f"{name} is not supported by the CPU lane")
        for name in _REFUSED:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None and np.asarray(tensor.as_numpy()).size > 0:
                raise _RequestError(f"input '{name}' is not supported by the CPU lane")
        end_ids = _scalars(request, "end_id", batch)
        pad_ids = _scalars(request, "pad_id", batch)

        prompts = []
        for b in range(batch):
            n = int(lengths[b])
            if n < 1 or n > input_ids.shape[1]:
                raise _RequestError(f"Invalid input_lengths {n} for input_ids of length {input_ids.shape[1]}")
            prompts.append([int(t) for t in input_ids[b, :n]])
            if n > self.engine.max_input_len:
                raise _RequestError(
                    f"Prompt length ({n}) exceeds maximum input length ({self.engine.max_input_len}).")
            if int(max_new[b]) < 1:
                raise _RequestError(f"request_output_len must be at least 1, got {int(max_new[b])}")
            if n + int(max_new[b]) > self.engine.max_seq_len:
                raise _RequestError(
                    f"Prompt length + number of requested output tokens ({n} + {int(max_new[b])}) exceeds "
                    f"maximum sequence length ({self.engine.max_seq_len}).")
        return {
            "batch": batch,
            "prompts": prompts,
            "max_new": [int(v) for v in max_new],
            "stream": stream,
            "exclude": [bool(v) for v in exclude],
            "end_id": None if end_ids is None else [int(v) for v in end_ids],
            "pad_id": None if pad_ids is None else [int(v) for v in pad_ids],
            "bad_words": _word_lists(request, "bad_words_list", batch),
            "stop_words": _word_lists(request, "stop_words_list", batch),
            "log_probs": bool(log_probs is not None and any(log_probs)),
        }

    def _generate(self, req, on_token=None):
        """Run the rows; rows with different end ids run separately (the runtime takes one end id)."""
        batch = req["batch"]
        end_ids, pad_ids = req["end_id"], req["pad_id"]
        if end_ids is None or len(set(end_ids)) == 1:
            groups = [list(range(batch))]
        else:
            groups = [[row] for row in range(batch)]
        results = [None] * batch
        for rows in groups:
            callback = None
            if on_token is not None:
                callback = (lambda i, token, log_prob, rows=rows: on_token(rows[i], token, log_prob))
            try:
                out, log_probs = self.engine.generate(
                    [req["prompts"][r] for r in rows],
                    [req["max_new"][r] for r in rows],
                    end_id=None if end_ids is None else end_ids[rows[0]],
                    pad_id=None if pad_ids is None else pad_ids[rows[0]],
                    bad_words=[req["bad_words"][r] for r in rows],
                    stop_words=[req["stop_words"][r] for r in rows],
                    on_token=callback,
                    return_log_probs=True,
                )
            except runtime.EngineLimitError as e:
                raise _RequestError(str(e)) from None
            for r, tokens, probs in zip(rows, out, log_probs):
                results[r] = ([int(t) for t in tokens], probs)
        return results

    @staticmethod
    def _response(tokens, batch_index=None, log_probs=None):
        out = [
            pb_utils.Tensor("output_ids", np.asarray(tokens, dtype=np.int32).reshape(1, 1, len(tokens))),
            pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32)),
        ]
        if log_probs is not None:  # over the new tokens, as the real backend returns them
            out.append(pb_utils.Tensor("cum_log_probs", np.array([[sum(log_probs)]], dtype=np.float32)))
            out.append(pb_utils.Tensor("output_log_probs",
                                       np.asarray(log_probs, dtype=np.float32).reshape(1, 1, len(log_probs))))
        if batch_index is not None:
            out.append(pb_utils.Tensor("batch_index", np.array([[batch_index]], dtype=np.int32)))
        return pb_utils.InferenceResponse(output_tensors=out)

    def _full(self, req, row, new_tokens):
        return new_tokens if req["exclude"][row] else req["prompts"][row] + list(new_tokens)

    def _serve_decoupled(self, request, sender):
        req = self._convert(request)
        batch = req["batch"]
        index = (lambda row: row) if batch > 1 else (lambda row: None)
        if not req["stream"]:
            results = self._generate(req)
            for row, (new_tokens, log_probs) in enumerate(results):
                flags = _FINAL if row == batch - 1 else 0
                sender.send(self._response(self._full(req, row, new_tokens), index(row),
                                           log_probs if req["log_probs"] else None), flags=flags)
            return
        # Streaming: one response per token; hold one back so the last can carry the final flag.
        pending = []
        sent_rows = set()

        def on_token(row, token, log_prob):
            if pending:
                sender.send(pending.pop())
            pending.append(self._response([int(token)], index(row), [log_prob] if req["log_probs"] else None))
            sent_rows.add(row)

        self._generate(req, on_token=on_token)
        for row in range(batch):  # rows that produced nothing still get an (empty) response
            if row not in sent_rows:
                if pending:
                    sender.send(pending.pop())
                pending.append(self._response([], index(row)))
        sender.send(pending.pop(), flags=_FINAL)

    def execute(self, requests):
        if self.decoupled:
            for request in requests:
                sender = request.get_response_sender()
                try:
                    stop = _scalars(request, "stop", 1)
                    if stop and stop[0]:
                        sender.send(pb_utils.InferenceResponse(output_tensors=[]), flags=_FINAL)
                        continue
                    self._serve_decoupled(request, sender)
                except Exception as e:
                    sender.send(self._error(request, e), flags=_FINAL)
            return None
        responses = []
        for request in requests:
            try:
                req = self._convert(request)
                new_tokens, log_probs = self._generate(req)[0]
                responses.append(self._response(self._full(req, 0, new_tokens), None,
                                                log_probs if req["log_probs"] else None))
            except Exception as e:
                responses.append(self._error(request, e))
        return responses

    @staticmethod
    def _error(request, e):
        if isinstance(e, _RequestError):
            message = str(e)
        else:
            message = (f"An error occurred when processing the input values for request id "
                       f"{request.request_id()}, the error was '{type(e).__name__}: {e}'")
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def finalize(self):
        self.engine = None

