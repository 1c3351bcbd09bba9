"""Triton Python-backend model ``preprocessing`` (llmbuild; the tensorrtllm_backend v0.16 interface).

Written for llmbuild; runs inside Triton's Python backend (numpy < 2), so it
imports nothing from llmbuild. Text only, like the stock model without
``visual_model_path``: the multimodal inputs are accepted and ignored and the
multimodal outputs never produced. The contract is
llmbuild/triton/backend/behaviour-v0.16.0.json:

* ``QUERY`` [B,1] -> ``INPUT_ID`` [B,L] (rows right-padded with the pad id) and
  ``REQUEST_INPUT_LEN`` [B,1]; ``add_special_tokens`` decides BOS & co.
* ``DECODER_QUERY`` -> ``DECODER_INPUT_ID``/``REQUEST_DECODER_INPUT_LEN``
  (absent: one pad token, length 1).
* ``REQUEST_OUTPUT_LEN`` passes through unchanged.
* ``BAD_WORDS_DICT``/``STOP_WORDS_DICT`` [B,N] phrases -> ``[B,2,max(1,L)]``
  int32: row 0 the token ids of every phrase (encoded without special tokens,
  empty ones skipped) padded with 0, row 1 the cumulative end offsets padded
  with -1; absent -> ``[B,2,0]``.
* ``END_ID``/``PAD_ID`` default to the tokenizer's eos / pad (pad falls back to eos).
* ``EMBEDDING_BIAS_WORDS`` + ``EMBEDDING_BIAS_WEIGHTS`` -> ``EMBEDDING_BIAS``
  [B, len(vocab)] (each word encoded with special tokens); ``[B,0]`` without them.
* ``PROMPT_TABLE_EXTRA_ID`` -> ``OUT_PROMPT_TABLE_EXTRA_IDS`` (only then).

A malformed request fails the whole ``execute`` call with the stock model's
assertion text (the Python backend turns it into every request's error).

Parameters: ``tokenizer_dir`` (required; relative = against the repository
root, the parent of this model's directory), ``add_special_tokens``
(default true). ``visual_model_path``/``gpt_model_path`` are kept for the
interface and ignored (text only).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

_TRUE = ("true", "1", "t", "y", "yes")
_FALSE = ("false", "0", "f", "n", "no")


def _param(config, key):
    """A parameter's string value, or None when absent, empty or an unfilled ``${...}``."""
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
    """The repository root: ``model_repository`` is this model's directory."""
    model_dir = os.path.normpath(args["model_repository"])
    if os.path.basename(model_dir) == args.get("model_name"):
        return os.path.dirname(model_dir)
    return model_dir


def _resolve(path, root):
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(root, path))


def _load_tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, legacy=False, padding_side="left", trust_remote_code=True)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _texts(array):
    """[B, N] array of bytes/str -> list of B lists of str."""
    rows = np.asarray(array, dtype=object)
    rows = rows.reshape(rows.shape[0], -1) if rows.ndim else rows.reshape(1, 1)
    out = []
    for row in rows:
        texts = []
        for item in row:
            texts.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
        out.append(texts)
    return out


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.root = _repository_root(args)
        tokenizer_dir = _param(config, "tokenizer_dir")
        if tokenizer_dir is None:
            raise ValueError("preprocessing: parameter 'tokenizer_dir' is not set")
        path = _resolve(tokenizer_dir, self.root)
        if not os.path.isdir(path):
            raise ValueError(f"preprocessing: tokenizer_dir {tokenizer_dir!r} -> {path} is not a directory")
        self.add_special_tokens = _flag(config, "add_special_tokens", True)
        self.tokenizer = _load_tokenizer(path)
        self.end_id = self.tokenizer.encode(self.tokenizer.eos_token, add_special_tokens=False)[0]
        self.pad_id = self.tokenizer.encode(self.tokenizer.pad_token, add_special_tokens=False)[0]
        self.vocab_size = self.tokenizer.vocab_size
        self.dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config.get("output", [])}
        bias = pb_utils.get_input_config_by_name(config, "EMBEDDING_BIAS_WEIGHTS")
        self.bias_dtype = pb_utils.triton_string_to_numpy(bias["data_type"]) if bias else np.float32

    def _encode(self, queries):
        """[B,1] strings -> (ids [B,L] right-padded with the pad id, lengths [B,1])."""
        rows = [self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens) for text in queries]
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        return ids, np.array([[len(r)] for r in rows], dtype=np.int32)

    def _word_list(self, tensor, batch):
        if tensor is None:
            return np.empty((batch, 2, 0), dtype=np.int32)
        packed = []
        for phrases in _texts(tensor.as_numpy()):
            ids, ends = [], []
            for phrase in phrases:
                tokens = self.tokenizer.encode(phrase, add_special_tokens=False)
                if tokens:
                    ids.extend(int(t) for t in tokens)
                    ends.append(len(ids))
            packed.append((ids, ends))
        width = max(1, max(len(ids) for ids, _ in packed))
        out = np.zeros((len(packed), 2, width), dtype=np.int32)
        out[:, 1, :] = -1
        for i, (ids, ends) in enumerate(packed):
            out[i, 0, : len(ids)] = ids
            out[i, 1, : len(ends)] = ends
        return out

    def _embedding_bias(self, words, weights, batch):
        if words is None or weights is None:
            return np.empty((batch, 0), dtype=self.bias_dtype)
        vocab = len(self.tokenizer.vocab)
        rows = []
        for row_words, row_weights in zip(_texts(words.as_numpy()), np.asarray(weights.as_numpy())):
            assert len(row_words) == len(row_weights), \
                "Embedding bias words must have same dimension as embedding bias weights"
            bias = np.zeros(vocab, dtype=np.float64)
            for word, weight in zip(row_words, row_weights):
                for token in self.tokenizer.encode(word):
                    bias[int(token)] += weight
            rows.append(bias)
        return np.array(rows, dtype=self.bias_dtype)

    def _process(self, request):
        get = lambda name: pb_utils.get_input_tensor_by_name(request, name)  # noqa: E731
        queries = [row[0] for row in _texts(get("QUERY").as_numpy())]
        batch = len(queries)
        input_ids, input_lengths = self._encode(queries)
        end = get("END_ID")
        end_ids = np.asarray(end.as_numpy(), dtype=np.int32) if end is not None else \
            np.full((batch, 1), self.end_id, dtype=np.int32)
        pad = get("PAD_ID")
        pad_ids = np.asarray(pad.as_numpy(), dtype=np.int32) if pad is not None else \
            np.full((batch, 1), self.pad_id, dtype=np.int32)
        decoder = get("DECODER_QUERY")
        if decoder is not None:
            decoder_ids, decoder_lengths = self._encode([row[0] for row in _texts(decoder.as_numpy())])
        else:
            decoder_ids = (pad_ids.reshape(batch, -1)[:, :1] * np.ones((batch, 1), np.int32)).astype(np.int32)
            decoder_lengths = np.ones((batch, 1), dtype=np.int32)
        values = {
            "INPUT_ID": input_ids,
            "REQUEST_INPUT_LEN": input_lengths,
            "DECODER_INPUT_ID": decoder_ids,
            "REQUEST_DECODER_INPUT_LEN": decoder_lengths,
            "BAD_WORDS_IDS": self._word_list(get("BAD_WORDS_DICT"), batch),
            "STOP_WORDS_IDS": self._word_list(get("STOP_WORDS_DICT"), batch),
            "EMBEDDING_BIAS": self._embedding_bias(get("EMBEDDING_BIAS_WORDS"), get("EMBEDDING_BIAS_WEIGHTS"), batch),
            "REQUEST_OUTPUT_LEN": get("REQUEST_OUTPUT_LEN").as_numpy(),
            "OUT_END_ID": end_ids,
            "OUT_PAD_ID": pad_ids,
        }
        extra = get("PROMPT_TABLE_EXTRA_ID")
        if extra is not None:
            extra = extra.as_numpy()
            assert extra.shape[0] == batch, "Prompt table extra id must have the same batch size as Query"
            assert extra.shape[1] == 1, "Multiple IDs cannot be provided for a single image"
            values["OUT_PROMPT_TABLE_EXTRA_IDS"] = np.where(input_ids >= self.vocab_size, extra, 0)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, np.ascontiguousarray(np.asarray(value).astype(self.dtypes.get(name, value.dtype))))
            for name, value in values.items()])

    def execute(self, requests):
        # As the stock model: an exception fails every request of this call (the Python backend
        # answers each with "Failed to process the request(s) for model ..., message: <error>").
        return [self._process(request) for request in requests]

    def finalize(self):
        self.tokenizer = None
