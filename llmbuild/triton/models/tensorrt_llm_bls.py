"""Triton Python-backend model ``tensorrt_llm_bls`` (llmbuild; the tensorrtllm_backend v0.16 interface).

Written for llmbuild; runs inside Triton's Python backend, imports nothing
from llmbuild. Business-logic scripting: one request runs ``preprocessing``
-> the LLM model -> ``postprocessing`` through ``pb_utils.InferenceRequest``.
The pre/post model names are fixed (as in the backend); the LLM model's name
comes from the parameter ``tensorrt_llm_model_name`` (default
``tensorrt_llm``).

* Decoupled (``model_transaction_policy { decoupled: true }``): the LLM is
  called in decoupled mode; every LLM response is post-processed and sent at
  once (streaming when the request sets ``stream``), then a final flag. With
  ``accumulate_tokens`` each streamed response carries the text of all tokens
  so far instead of the new ones (batch 1, beam 1 only, as in the backend).
* Not decoupled: one response per request. A request with several rows is
  run row by row (a non-decoupled LLM takes one row at a time) and the rows
  are joined again.

Text only: image/video inputs and speculative decoding (``num_draft_tokens``)
are refused with an error response.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

PREPROCESSING = "preprocessing"
POSTPROCESSING = "postprocessing"

# request input -> preprocessing input
_TO_PREPROCESSING = {
    "text_input": "QUERY",
    "decoder_text_input": "DECODER_QUERY",
    "max_tokens": "REQUEST_OUTPUT_LEN",
    "bad_words": "BAD_WORDS_DICT",
    "stop_words": "STOP_WORDS_DICT",
    "embedding_bias_words": "EMBEDDING_BIAS_WORDS",
    "embedding_bias_weights": "EMBEDDING_BIAS_WEIGHTS",
    "end_id": "END_ID",
    "pad_id": "PAD_ID",
    "prompt_table_extra_id": "PROMPT_TABLE_EXTRA_ID",
}
# preprocessing output -> LLM input
_FROM_PREPROCESSING = {
    "INPUT_ID": "input_ids",
    "REQUEST_INPUT_LEN": "input_lengths",
    "OUT_END_ID": "end_id",
    "OUT_PAD_ID": "pad_id",
    "BAD_WORDS_IDS": "bad_words_list",
    "STOP_WORDS_IDS": "stop_words_list",
    "EMBEDDING_BIAS": "embedding_bias",
    "DECODER_INPUT_ID": "decoder_input_ids",
    "REQUEST_DECODER_INPUT_LEN": "decoder_input_lengths",
    "OUT_PROMPT_TABLE_EXTRA_IDS": "prompt_table_extra_ids",
}
# request input -> LLM input (scalars are sent as [B, 1])
_TO_LLM = {
    "beam_width": "beam_width",
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "temperature": "temperature",
    "length_penalty": "len_penalty",
    "repetition_penalty": "repetition_penalty",
    "min_length": "min_length",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "random_seed": "random_seed",
    "return_log_probs": "return_log_probs",
    "stream": "streaming",
    "num_return_sequences": "num_return_sequences",
    "exclude_input_in_output": "exclude_input_in_output",
    "return_kv_cache_reuse_stats": "return_kv_cache_reuse_stats",
    "prompt_vocab_size": "prompt_vocab_size",
    "lora_task_id": "lora_task_id",
    "prompt_embedding_table": "prompt_embedding_table",
    "lora_weights": "lora_weights",
    "lora_config": "lora_config",
}
_SCALARS = {
    "max_tokens", "end_id", "pad_id", "beam_width", "top_k", "top_p", "temperature", "length_penalty",
    "repetition_penalty", "min_length", "presence_penalty", "frequency_penalty", "random_seed",
    "return_log_probs", "return_context_logits", "return_generation_logits", "stream",
    "num_return_sequences", "exclude_input_in_output", "return_kv_cache_reuse_stats", "prompt_vocab_size",
    "lora_task_id", "num_draft_tokens", "use_draft_logits",
}
_REFUSED = ("image_input", "image_bytes_input", "image_url_input", "video_bytes_input")
_TRUE = ("true", "yes", "1", "t", "y")


def _param(config, key):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    if value is None or value == "" or value.startswith("${"):
        return None
    return value


class _Failed(Exception):
    """A called model answered with an error: its message is passed on as is."""


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.accumulate = (_param(config, "accumulate_tokens") or "false").strip().lower() in _TRUE
        self.llm_name = _param(config, "tensorrt_llm_model_name") or "tensorrt_llm"
        if _param(config, "tensorrt_llm_draft_model_name") or _param(config, "multimodal_encoders_name"):
            raise ValueError("tensorrt_llm_bls: draft models and multimodal encoders are not supported")
        # The LLM outputs we pass on = our declared outputs other than text_output.
        self.passthrough = [o["name"] for o in config.get("output", []) if o["name"] != "text_output"]
        self.output_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config.get("output", [])
        }

    # -- calling other models -----------------------------------------------------------------

    @staticmethod
    def _call(model, tensors, outputs):
        request = pb_utils.InferenceRequest(model_name=model, inputs=tensors, requested_output_names=outputs)
        response = request.exec()
        if response.has_error():
            raise _Failed(response.error().message())
        return {t.name(): t.as_numpy() for t in response.output_tensors()}

    def _call_llm(self, tensors, outputs):
        request = pb_utils.InferenceRequest(model_name=self.llm_name, inputs=tensors, requested_output_names=outputs)
        if not self.decoupled:
            response = request.exec()
            if response.has_error():
                raise _Failed(response.error().message())
            yield {t.name(): t.as_numpy() for t in response.output_tensors()}
            return
        for response in request.exec(decoupled=True):
            if response.has_error():
                raise _Failed(response.error().message())
            values = {t.name(): t.as_numpy() for t in response.output_tensors()}
            if values:  # the last one may be an empty "final" flag
                yield values

    # -- one request ----------------------------------------------------------------------------

    @staticmethod
    def _inputs(request):
        values = {}
        for tensor in request.inputs():
            values[tensor.name()] = tensor.as_numpy()
        return values

    @staticmethod
    def _batched(name, value, batch):
        """Scalars arrive as [B] when the config reshapes them; callees declare [1] -> send [B, 1]."""
        value = np.asarray(value)
        if name in _SCALARS:
            return np.ascontiguousarray(value.reshape(batch, -1)[:, :1])
        return np.ascontiguousarray(value)

    def _validate(self, inputs):
        for name in _REFUSED:
            if name in inputs:
                raise ValueError(f"input '{name}': multimodal requests are not supported (text only)")
        if "num_draft_tokens" in inputs and int(np.asarray(inputs["num_draft_tokens"]).reshape(-1)[0]) > 0:
            raise ValueError("speculative decoding (num_draft_tokens > 0) is not supported")
        text = inputs.get("text_input")
        if text is None or np.asarray(text).size == 0:
            raise ValueError("text_input is required")
        tokens = inputs.get("max_tokens")
        if tokens is None or np.asarray(tokens).size == 0 or int(np.asarray(tokens).reshape(-1)[0]) <= 0:
            raise ValueError("max_tokens must be a single value > 0")
        stream = inputs.get("stream")
        if stream is not None and bool(np.asarray(stream).any()) and not self.decoupled:
            raise ValueError("streaming needs the tensorrt_llm_bls model deployed with decoupled: true")

    def _run(self, inputs):
        """Yield response dicts (output name -> array) for one request (all its rows)."""
        batch = int(np.asarray(inputs["text_input"]).shape[0])
        pre_tensors = [
            pb_utils.Tensor(target, self._batched(name, inputs[name], batch))
            for name, target in _TO_PREPROCESSING.items() if name in inputs
        ]
        pre = self._call(PREPROCESSING, pre_tensors, list(_FROM_PREPROCESSING))

        llm = {}
        for name, target in _FROM_PREPROCESSING.items():
            if name not in pre:
                continue
            if name in ("DECODER_INPUT_ID", "REQUEST_DECODER_INPUT_LEN") and "decoder_text_input" not in inputs:
                continue  # decoder-only model
            if name == "OUT_PROMPT_TABLE_EXTRA_IDS" and "prompt_table_extra_id" not in inputs:
                continue
            if name == "EMBEDDING_BIAS" and np.asarray(pre[name]).size == 0:
                continue
            llm[target] = pre[name]
        llm["request_output_len"] = self._batched("max_tokens", inputs["max_tokens"], batch).astype(np.int32)
        for name, target in _TO_LLM.items():
            if name in inputs:
                llm[target] = self._batched(name, inputs[name], batch)
        for name in ("return_context_logits", "return_generation_logits"):
            value = inputs.get(name)
            llm[name] = (self._batched(name, value, batch).astype(bool) if value is not None
                         else np.zeros((batch, 1), dtype=bool))
        tensors = [pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in llm.items()]
        wanted = ["output_ids", "sequence_length"] + [n for n in self.passthrough if n not in ("output_ids",)]

        accumulated = {}
        for out in self._call_llm(tensors, wanted):
            ids = np.asarray(out["output_ids"])
            lengths = np.asarray(out["sequence_length"])
            if self.accumulate and self.decoupled:
                if ids.shape[0] != 1 or ids.shape[1] != 1:
                    raise ValueError("accumulate_tokens works with one row and one beam only")
                row = int(np.asarray(out["batch_index"]).reshape(-1)[0]) if "batch_index" in out else 0
                new = ids[:, :, : int(lengths.reshape(-1)[0])]
                accumulated[row] = new if row not in accumulated else np.concatenate((accumulated[row], new), axis=2)
                ids = accumulated[row]
                lengths = np.array([[ids.shape[2]]], dtype=np.int32)
            post = self._call(POSTPROCESSING, [
                pb_utils.Tensor("TOKENS_BATCH", np.ascontiguousarray(ids.astype(np.int32))),
                pb_utils.Tensor("SEQUENCE_LENGTH", np.ascontiguousarray(lengths.astype(np.int32))),
            ], ["OUTPUT"])
            result = {"text_output": post["OUTPUT"]}
            for name in self.passthrough:
                if name in out:
                    result[name] = out[name]
            yield result

    def _response(self, values):
        tensors = []
        for name, value in values.items():
            dtype = self.output_dtypes.get(name)
            if dtype is None:
                continue
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(np.asarray(value).astype(dtype))))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_rows(self, inputs):
        """Not decoupled: one response; several rows run one at a time and are joined."""
        batch = int(np.asarray(inputs["text_input"]).shape[0])
        if batch == 1:
            results = list(self._run(inputs))
            return results[-1]
        rows = []
        for b in range(batch):
            row_inputs = {k: np.asarray(v)[b : b + 1] for k, v in inputs.items()}
            rows.append(list(self._run(row_inputs))[-1])
        joined = {}
        for name in rows[0]:
            if name == "batch_index" or not all(name in r for r in rows):
                continue
            try:
                joined[name] = np.concatenate([np.asarray(r[name]) for r in rows], axis=0)
            except ValueError:
                if name == "text_output":
                    raise
        return joined

    def execute(self, requests):
        responses = []
        for request in requests:
            sender = request.get_response_sender() if self.decoupled else None
            try:
                inputs = self._inputs(request)
                self._validate(inputs)
                if self.decoupled:
                    for values in self._run(inputs):
                        sender.send(self._response(values))
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                else:
                    responses.append(self._response(self._run_rows(inputs)))
            except Exception as e:
                message = str(e) if isinstance(e, _Failed) else f"tensorrt_llm_bls: {e}"
                error = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
                if self.decoupled:
                    sender.send(error, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                else:
                    responses.append(error)
        return None if self.decoupled else responses

    def finalize(self):
        pass
