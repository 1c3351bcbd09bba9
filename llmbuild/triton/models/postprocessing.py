"""Triton Python-backend model ``postprocessing`` (llmbuild; the tensorrtllm_backend v0.16 interface).

Written for llmbuild; runs inside Triton's Python backend, imports nothing
from llmbuild.

``TOKENS_BATCH`` [B, beams, T] is cut per beam to ``SEQUENCE_LENGTH``
[B, beams] and decoded with ``batch_decode(skip_special_tokens=...)``;
``OUTPUT`` is a FLAT array of one UTF-8 string per beam, [B * beams] (row
major), exactly as the 0.16 model returns it -- clients read ``OUTPUT[0]``
as bytes. Requests of one call are decoded together (dynamic batching).

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

    def execute(self, requests):
        sequences, counts = [], []
        for request in requests:
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            before = len(sequences)
            for b, beams in enumerate(tokens):
                for k, beam in enumerate(beams):
                    sequences.append([int(t) for t in beam[: int(lengths[b][k])]])
            counts.append(len(sequences) - before)
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=self.skip_special_tokens)
        responses, offset = [], 0
        for count in counts:
            out = np.array([t.encode("utf-8") for t in texts[offset: offset + count]], dtype=object)
            offset += count
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT", out.astype(self.output_dtype))]))
        return responses

    def finalize(self):
        self.tokenizer = None
