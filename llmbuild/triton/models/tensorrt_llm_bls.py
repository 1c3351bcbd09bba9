"""Triton Python-backend model ``tensorrt_llm_bls`` (llmbuild; the tensorrtllm_backend v0.16 interface).

Written for llmbuild; runs inside Triton's Python backend, imports nothing
from llmbuild. Business-logic scripting with the v0.16 BLS's behaviour
(llmbuild/triton/backend/behaviour-v0.16.0.json): one request runs
``preprocessing`` -> the LLM model -> ``postprocessing`` through
``pb_utils.InferenceRequest``. The pre/post model names are fixed; the LLM
model's comes from the parameter ``tensorrt_llm_model_name`` (default
``tensorrt_llm``).

* Not decoupled and one row: one blocking LLM call, one response.
* Otherwise a decoupled LLM call: every LLM response is post-processed and
  sent (decoupled BLS), then an empty final response. With
  ``accumulate_tokens`` (decoupled, one row, one beam) each response carries
  the text of all tokens so far.
* ``text_output`` is postprocessing's flat array, one string per beam; the
  other outputs are the LLM response's, passed on unchanged.
* ``num_return_sequences`` is declared but, as in v0.16, not forwarded.
* A failure is answered with the Python traceback, as the v0.16 BLS does;
  requests are served one at a time per instance (``bls_instance_count``).

Text only: image/video inputs need a multimodal encoder and speculative
decoding (``num_draft_tokens`` > 0) a draft model; neither is configured.
"""

import json
import traceback

import numpy as np
import triton_python_backend_utils as pb_utils

PREPROCESSING = "preprocessing"
POSTPROCESSING = "postprocessing"

# request input -> preprocessing input
_TO_PREPROCESSING = {
    "text_input": "QUERY",
    "image_bytes_input": "IMAGE_BYTES",
    "image_url_input": "IMAGE_URL",
    "video_bytes_input": "VIDEO_BYTES",
    "decoder_text_input": "DECODER_QUERY",
    "max_tokens": "REQUEST_OUTPUT_LEN",
    "bad_words": "BAD_WORDS_DICT",
    "stop_words": "STOP_WORDS_DICT",
    "embedding_bias_words": "EMBEDDING_BIAS_WORDS",
    "embedding_bias_weights": "EMBEDDING_BIAS_WEIGHTS",
    "pad_id": "PAD_ID",
    "end_id": "END_ID",
    "prompt_table_extra_id": "PROMPT_TABLE_EXTRA_ID",
}
# preprocessing output -> LLM input
_FROM_PREPROCESSING = {
    "INPUT_ID": "input_ids",
    "DECODER_INPUT_ID": "decoder_input_ids",
    "REQUEST_INPUT_LEN": "input_lengths",
    "REQUEST_DECODER_INPUT_LEN": "decoder_input_lengths",
    "BAD_WORDS_IDS": "bad_words_list",
    "STOP_WORDS_IDS": "stop_words_list",
    "EMBEDDING_BIAS": "embedding_bias",
    "OUT_PAD_ID": "pad_id",
    "OUT_END_ID": "end_id",
    "OUT_PROMPT_TABLE_EXTRA_IDS": "prompt_table_extra_ids",
}
# request input -> LLM input
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
    "prompt_embedding_table": "prompt_embedding_table",
    "prompt_vocab_size": "prompt_vocab_size",
    "lora_task_id": "lora_task_id",
    "lora_weights": "lora_weights",
    "lora_config": "lora_config",
    "exclude_input_in_output": "exclude_input_in_output",
    "return_kv_cache_reuse_stats": "return_kv_cache_reuse_stats",
}
# Inputs that arrive as [B] because the config reshapes them: sent on as [1, B], as the v0.16 BLS does.
_UNDO_RESHAPE = {
    "max_tokens", "end_id", "pad_id", "top_k", "top_p", "temperature", "length_penalty", "repetition_penalty",
    "min_length", "presence_penalty", "frequency_penalty", "random_seed", "return_log_probs", "beam_width",
    "stream", "prompt_vocab_size", "exclude_input_in_output", "return_kv_cache_reuse_stats",
}
_LLM_OUTPUTS = ("output_ids", "sequence_length", "cum_log_probs", "output_log_probs", "context_logits",
                "generation_logits", "batch_index", "sequence_index", "kv_cache_alloc_new_blocks",
                "kv_cache_reused_blocks", "kv_cache_alloc_total_blocks")
_MULTIMODAL = ("image_input", "image_bytes_input", "image_url_input", "video_bytes_input")
_TRUE = ("true", "yes", "1", "t")


class RequestValidationError(Exception):
    pass


def _param(config, key):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return None if value == "" or value.startswith("${") else value


def _tensor(name, value, source_name):
    value = np.asarray(value)
    if source_name in _UNDO_RESHAPE and value.ndim == 1:
        value = np.expand_dims(value, 0)
    return pb_utils.Tensor(name, np.ascontiguousarray(value))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.accumulate = (_param(config, "accumulate_tokens") or "").lower() in _TRUE
        self.llm_name = _param(config, "tensorrt_llm_model_name") or "tensorrt_llm"
        self.draft_name = _param(config, "tensorrt_llm_draft_model_name")

    # -- calls ----------------------------------------------------------------------------------

    @staticmethod
    def _single(model, tensors, outputs):
        response = pb_utils.InferenceRequest(model_name=model, inputs=tensors,
                                             requested_output_names=list(outputs)).exec(decoupled=False)
        if response.has_error():
            raise pb_utils.TritonModelException(response.error().message())
        return {t.name(): t.as_numpy() for t in response.output_tensors()}

    @staticmethod
    def _stream(model, tensors, outputs):
        request = pb_utils.InferenceRequest(model_name=model, inputs=tensors, requested_output_names=list(outputs))
        for response in request.exec(decoupled=True):
            if response.has_error():
                raise pb_utils.TritonModelException(response.error().message())
            values = {t.name(): t.as_numpy() for t in response.output_tensors()}
            if values:  # the last one may be an empty "final" flag
                yield values

    # -- one request ----------------------------------------------------------------------------

    def _validate(self, inputs):
        text = inputs.get("text_input")
        if text is None or text.size == 0:
            raise RequestValidationError("text_input is required")
        tokens = inputs.get("max_tokens")
        if tokens is None or tokens.size == 0 or not tokens.flatten()[0] > 0:
            raise RequestValidationError("max_tokens must be a single value > 0")
        drafts = inputs.get("num_draft_tokens")
        if drafts is not None and drafts.flatten()[0] > 0:
            if not self.draft_name:
                raise Exception("cannot perform speculative decoding without draft model")
            raise Exception("speculative decoding is not supported by llmbuild's BLS")
        if any(name in inputs for name in _MULTIMODAL):
            raise Exception("multimodal requests need the tensorrt_llm_bls parameter multimodal_encoders_name "
                            "(a vision encoder model)")

    def _llm_tensors(self, inputs, pre):
        batch = inputs["text_input"].shape[0]
        tensors = [_tensor(target, pre[name], name) for name, target in _FROM_PREPROCESSING.items() if name in pre]
        tensors += [_tensor(target, inputs[name], name) for name, target in _TO_LLM.items() if name in inputs]
        tensors.append(pb_utils.Tensor("request_output_len", np.asarray(inputs["max_tokens"], dtype=np.int32)
                                       .reshape(batch, -1)))
        for name in ("return_context_logits", "return_generation_logits"):
            flag = inputs.get(name)
            flag = [False] if flag is None else flag.reshape(-1)[:1].tolist()
            tensors.append(pb_utils.Tensor(name, np.array([flag] * batch, dtype=bool)))
        return tensors

    def _postprocess(self, generated, accumulated):
        ids, lengths = generated["output_ids"], generated["sequence_length"]
        if self.accumulate and self.decoupled:
            if ids.ndim != 3 or ids.shape[0] != 1:
                raise Exception("Expected batch size of 1")
            if ids.shape[1] != 1:
                raise Exception("Accumulation of tokens is only implemented for beam width = 1")
            row = int(generated["batch_index"].reshape(-1)[0]) if "batch_index" in generated else 0
            ids = ids if row not in accumulated else np.concatenate((accumulated[row], ids), axis=2)
            accumulated[row] = ids
            lengths = np.array([[ids.shape[2]]], dtype=np.int32)
        post = self._single(POSTPROCESSING, [pb_utils.Tensor("TOKENS_BATCH", ids),
                                             pb_utils.Tensor("SEQUENCE_LENGTH", lengths)], ["OUTPUT"])
        tensors = [pb_utils.Tensor("text_output", post["OUTPUT"])]
        tensors += [pb_utils.Tensor(name, generated[name]) for name in _LLM_OUTPUTS[2:] if name in generated]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _responses(self, request):
        """The responses of one request, in order."""
        inputs = {t.name(): t.as_numpy() for t in request.inputs()}
        self._validate(inputs)
        pre_tensors = [_tensor(target, inputs[name], name) for name, target in _TO_PREPROCESSING.items()
                       if name in inputs]
        pre = self._single(PREPROCESSING, pre_tensors, list(_FROM_PREPROCESSING) + ["PIXEL_VALUES", "IMAGE_SIZES",
                                                                                     "IS_VIDEO_INPUT"])
        llm_tensors = self._llm_tensors(inputs, pre)
        accumulated = {}
        if not self.decoupled and inputs["text_input"].shape[0] == 1:
            yield self._postprocess(self._single(self.llm_name, llm_tensors, _LLM_OUTPUTS), accumulated)
            return
        for generated in self._stream(self.llm_name, llm_tensors, _LLM_OUTPUTS):
            yield self._postprocess(generated, accumulated)

    def execute(self, requests):
        responses = []
        for request in requests:
            sender = request.get_response_sender() if self.decoupled else None
            try:
                for response in self._responses(request):
                    if self.decoupled:
                        sender.send(response)
                    else:
                        responses.append(response)
                if self.decoupled:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception:  # noqa: BLE001 - the v0.16 BLS answers with the traceback
                error = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(traceback.format_exc()))
                if self.decoupled:
                    sender.send(error)
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                else:
                    responses.append(error)
        return None if self.decoupled else responses

    def finalize(self):
        pass
