"""Triton Python-backend model ``tensorrt_llm`` with the interface of TensorRT-LLM's ``llmapi``
model (llmbuild's own code, for the engine-free lane, TensorRT-LLM >= 1.3.0rc21).

Configured by ``model.yaml`` next to this file (or ``$LLM_CONFIG_PATH``): ``triton_config``
(``max_batch_size``, ``decoupled``) is Triton's; every other key is an ``LLM(...)`` argument.
``model`` may be relative to this directory.

Two runtimes: with ``llmbuild_cpu_runtime.py`` next to this file (the CPU lane) the Hugging Face
checkpoint runs on llmbuild's PyTorch runtime, greedy, full precision, one request at a time -- a
stand-in, not TensorRT-LLM; without it, TensorRT-LLM's LLM API runs it. Imports nothing from
llmbuild (it runs in Triton's Python environment).
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils
import yaml

_HERE = os.path.dirname(os.path.abspath(__file__))
_CPU_RUNTIME = os.path.join(_HERE, "llmbuild_cpu_runtime.py")
_FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
#: Inputs the CPU runtime serves; any other input a request sends is refused there.
_CPU_INPUTS = ("text_input", "streaming", "sampling_param_max_tokens", "sampling_param_exclude_input_from_output",
               "return_finish_reason", "stop")
DEFAULT_MAX_TOKENS = 32  # SamplingParams' default max_tokens


def _read_config():
    path = os.environ.get("LLM_CONFIG_PATH") or "model.yaml"
    with open(path if os.path.isabs(path) else os.path.join(_HERE, path), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


class _Refused(Exception):
    """A request this model refuses; the message goes back to the client."""


class _CpuRuntime:
    """llmbuild's PyTorch runtime on the Hugging Face weights (the CPU lane's stand-in)."""

    def __init__(self, args):
        if _HERE not in sys.path:
            sys.path.insert(0, _HERE)
        import llmbuild_cpu_runtime as runtime
        from transformers import AutoTokenizer

        self.runtime = runtime
        self.engine = runtime.CpuEngine.from_hf(args["model"], max_batch_size=int(args.get("max_batch_size") or 2048),
                                                max_seq_len=args.get("max_seq_len"),
                                                max_input_len=args.get("max_input_len"))
        self.tokenizer = AutoTokenizer.from_pretrained(args.get("tokenizer") or args["model"])

    def generate(self, prompt, max_tokens, on_text):
        """Greedy generation; on_text(new text) as tokens arrive; returns the finish reason."""
        ids = self.tokenizer.encode(prompt)
        limit, _ = self.engine.check_lengths(ids, max_tokens)
        generation = self.runtime.Generation(self.engine, ids, limit, end_id=self.tokenizer.eos_token_id)
        tokens, said = [], ""
        while not generation.finished:
            tokens += generation.step()[0]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if len(text) > len(said):
                on_text(text[len(said):])
                said = text
        return "length" if len(tokens) >= limit else "stop"


class _LlmApi:
    """TensorRT-LLM's LLM API (GPU lane)."""

    def __init__(self, args):
        from tensorrt_llm import LLM, SamplingParams

        self.sampling = SamplingParams
        self.llm = LLM(**args)

    def generate(self, prompt, max_tokens, on_text):
        result = self.llm.generate_async(prompt, self.sampling(max_tokens=max_tokens), streaming=True)
        said, reason = "", None
        for output in result:
            text = output.outputs[0].text
            if len(text) > len(said):
                on_text(text[len(said):])
                said = text
            reason = output.outputs[0].finish_reason
        return str(reason or "stop")


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        """max_batch_size and decoupled from model.yaml's triton_config (launchers that pass
        --disable-auto-complete-config skip this: config.pbtxt carries them too)."""
        triton = _read_config().get("triton_config") or {}
        auto_complete_model_config.set_max_batch_size(int(triton.get("max_batch_size", 0)))
        auto_complete_model_config.set_model_transaction_policy({"decoupled": bool(triton.get("decoupled", False))})
        return auto_complete_model_config

    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        self.batched = int(model_config.get("max_batch_size", 0)) > 0
        self.outputs = {o["name"] for o in model_config.get("output", [])}
        llm_args = _read_config()
        llm_args.pop("triton_config", None)
        if not os.path.isabs(str(llm_args.get("model", ""))) and os.path.isdir(os.path.join(_HERE, llm_args["model"])):
            llm_args["model"] = os.path.join(_HERE, llm_args["model"])
        self.cpu = os.path.isfile(_CPU_RUNTIME)
        self.runtime = _CpuRuntime(llm_args) if self.cpu else _LlmApi(llm_args)

    def _input(self, request, name, default=None):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            return default
        value = tensor.as_numpy().reshape(-1)[0]
        return value.decode("utf-8") if isinstance(value, bytes) else value.item() if hasattr(value, "item") else value

    def _response(self, text, reason):
        def tensor(name, value):
            array = np.array([value.encode("utf-8")], dtype=object)
            return pb_utils.Tensor(name, array.reshape(1, 1) if self.batched else array)

        tensors = [tensor("text_output", text)]
        if reason is not None and "finish_reason" in self.outputs:
            tensors.append(tensor("finish_reason", reason))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _serve(self, request, send):
        """Run one request, handing each response to send(response, final)."""
        if self.cpu:
            extra = [t.name() for t in request.inputs() if t.name() not in _CPU_INPUTS]
            if extra:
                raise _Refused(f"input '{extra[0]}' is not run on the CPU lane (llmbuild's stand-in runs greedy, "
                               f"full-precision text generation)")
        prompt = self._input(request, "text_input")
        if not prompt:
            raise _Refused("text_input is required")
        max_tokens = int(self._input(request, "sampling_param_max_tokens", DEFAULT_MAX_TOKENS))
        streaming = bool(self._input(request, "streaming", False))
        if streaming and not self.decoupled:
            raise _Refused("streaming needs triton_config.decoupled: true in model.yaml")
        pieces = []

        def on_text(piece):
            if streaming:
                send(self._response(piece, None), False)
            else:
                pieces.append(piece)

        try:
            reason = self.runtime.generate(prompt, max_tokens, on_text)
        except ValueError as err:  # a limit of the LLM's options (prompt too long, ...)
            raise _Refused(str(err)) from None
        send(self._response("" if streaming else "".join(pieces), reason), True)

    def execute(self, requests):
        responses = []
        for request in requests:
            sender = request.get_response_sender() if self.decoupled else None

            def send(response, final, sender=sender):
                if sender is None:
                    responses.append(response)
                else:
                    sender.send(response, flags=_FINAL if final else 0)

            try:
                self._serve(request, send)
            except _Refused as err:
                send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))), True)
        return None if self.decoupled else responses

    def finalize(self):
        self.runtime = None
