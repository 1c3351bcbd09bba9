"""Triton Python-backend model ``postprocessing`` (llmbuild; the tensorrtllm_backend v0.16 interface).

Written for llmbuild; runs inside Triton's Python backend, imports nothing
from llmbuild.

``TOKENS_BATCH`` [B, beams, T] is cut per beam to ``SEQUENCE_LENGTH``
[B, beams] and decoded with ``batch_decode(skip_special_tokens=...)``;
``OUTPUT`` is one UTF-8 string per beam, [B, beams]. Any other input is
refused (as the 0.16 model does).

Parameters: ``tokenizer_dir`` (required; relative = against the repository
root, the parent of this model's directory), ``skip_special_tokens``
(default true).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

_TRUE = ("true", "1", "t", "y", "yes")
_FALSE = ("false", "0", "f", "n", "no")
_INPUTS = ("TOKENS_BATCH", "SEQUENCE_LENGTH")


def _param(config, key):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    if value is None or value == "" or value.startswith("${"):
        return None
    return value


def _flag(config, key, default):
    value = _param(config, key)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"parameter '{key}': {value!r} is not a boolean (true/false)")


def _repository_root(args):
    model_dir = os.path.normpath(args["model_repository"])
    if os.path.basename(model_dir) == args.get("model_name"):
        return os.path.dirname(model_dir)
    return model_dir


class TritonPythonModel:
    def initialize(self, args):
        from transformers import AutoTokenizer

        config = json.loads(args["model_config"])
        tokenizer_dir = _param(config, "tokenizer_dir")
        if tokenizer_dir is None:
            raise ValueError("postprocessing: parameter 'tokenizer_dir' is not set")
        path = tokenizer_dir if os.path.isabs(tokenizer_dir) else os.path.join(_repository_root(args), tokenizer_dir)
        if not os.path.isdir(path):
            raise ValueError(f"postprocessing: tokenizer_dir {tokenizer_dir!r} -> {path} is not a directory")
        self.skip_special_tokens = _flag(config, "skip_special_tokens", True)
        self.tokenizer = AutoTokenizer.from_pretrained(path, legacy=False, padding_side="left", trust_remote_code=True)
        if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        out = pb_utils.get_output_config_by_name(config, "OUTPUT")
        self.output_dtype = pb_utils.triton_string_to_numpy(out["data_type"])

    def _process(self, request):
        for tensor in request.inputs():
            if tensor.name() not in _INPUTS:
                raise ValueError(f"unknown input '{tensor.name()}'")
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH")
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH")
        if tokens is None or lengths is None:
            raise ValueError("inputs 'TOKENS_BATCH' and 'SEQUENCE_LENGTH' are required")
        tokens = np.asarray(tokens.as_numpy())
        lengths = np.asarray(lengths.as_numpy())
        if tokens.ndim == 2:  # [B, T]: one beam
            tokens = tokens[:, None, :]
        if tokens.ndim != 3:
            raise ValueError(f"TOKENS_BATCH must be [batch, beams, tokens], got shape {tokens.shape}")
        batch, beams, width = tokens.shape
        lengths = lengths.reshape(batch, -1)
        if lengths.shape[1] != beams:
            raise ValueError(f"SEQUENCE_LENGTH has shape {lengths.shape} for TOKENS_BATCH {tokens.shape}")
        sequences = []
        for b in range(batch):
            for k in range(beams):
                n = int(min(max(int(lengths[b, k]), 0), width))
                sequences.append([int(t) for t in tokens[b, k, :n] if t >= 0])
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=self.skip_special_tokens)
        out = np.array([t.encode("utf-8") for t in texts], dtype=object).reshape(batch, beams)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", out.astype(self.output_dtype))])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._process(request))
            except Exception as e:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"postprocessing: {e}")))
        return responses

    def finalize(self):
        self.tokenizer = None
