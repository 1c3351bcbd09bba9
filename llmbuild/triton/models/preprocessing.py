"""Triton Python-backend model ``preprocessing`` (llmbuild; the tensorrtllm_backend v0.16 interface).

Written for llmbuild; runs inside Triton's Python backend (numpy < 2), so it
imports nothing from llmbuild. Text only: the multimodal inputs are declared
(the interface keeps them) but refused.

* ``QUERY`` [B,1] -> ``INPUT_ID`` [B,L] (rows right-padded with the pad id) and
  ``REQUEST_INPUT_LEN`` [B,1]; ``add_special_tokens`` decides BOS & co.
* ``DECODER_QUERY`` -> ``DECODER_INPUT_ID``/``REQUEST_DECODER_INPUT_LEN``
  (absent: one pad token, length 1).
* ``REQUEST_OUTPUT_LEN`` passes through.
* ``BAD_WORDS_DICT``/``STOP_WORDS_DICT`` [B,N] phrases -> ``[B,2,L]`` int32:
  row 0 the token ids of every phrase (encoded without special tokens)
  concatenated, row 1 the cumulative end offset of each phrase, -1 padded;
  no phrase at all -> ``[B,2,0]``.
* ``END_ID``/``PAD_ID`` default to the tokenizer's eos / pad (pad falls back to eos).
* ``EMBEDDING_BIAS_WORDS`` + ``EMBEDDING_BIAS_WEIGHTS`` -> ``EMBEDDING_BIAS``
  [B,vocab] (``[B,0]`` without them).
* Every other declared output is filled with an empty/zero tensor of the
  declared dtype, so a caller can ask for any of them.

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
_MULTIMODAL_INPUTS = ("IMAGE_BYTES", "IMAGE_URL", "VIDEO_BYTES")


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


def _per_row(array, batch, name):
    """[B,1]-like scalar input -> int32 [B,1]."""
    values = np.asarray(array).reshape(-1)
    if values.size == 1 and batch > 1:
        values = np.repeat(values, batch)
    if values.size != batch:
        raise ValueError(f"input '{name}' must hold one value per batch row ({batch}), got shape {np.shape(array)}")
    return values.astype(np.int32).reshape(batch, 1)


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
        self.end_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_id
        self.vocab_size = len(self.tokenizer)
        # Output name -> numpy dtype, as declared in config.pbtxt (only declared outputs are sent).
        self.outputs = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config.get("output", [])
        }
        bias = pb_utils.get_input_config_by_name(config, "EMBEDDING_BIAS_WEIGHTS")
        self.bias_dtype = pb_utils.triton_string_to_numpy(bias["data_type"]) if bias else np.float32

    # -- helpers --------------------------------------------------------------------------------

    def _encode(self, texts, name):
        ids = []
        for i, text in enumerate(texts):
            row = self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens)
            if len(row) == 0:
                raise ValueError(f"input '{name}' row {i} encodes to no tokens")
            ids.append([int(t) for t in row])
        return ids

    def _pad(self, rows, pad_id):
        width = max(len(r) for r in rows)
        out = np.full((len(rows), width), pad_id, dtype=np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        lengths = np.array([[len(r)] for r in rows], dtype=np.int32)
        return out, lengths

    def _word_list(self, tensor, batch):
        if tensor is None:
            return np.zeros((batch, 2, 0), dtype=np.int32)
        packed = []
        for phrases in _texts(tensor.as_numpy()):
            ids, ends = [], []
            for phrase in phrases:
                if phrase == "":
                    continue
                tokens = self.tokenizer.encode(phrase, add_special_tokens=False)
                if not tokens:
                    continue
                ids.extend(int(t) for t in tokens)
                ends.append(len(ids))
            packed.append((ids, ends))
        if len(packed) != batch:
            raise ValueError(f"word list has {len(packed)} rows for a batch of {batch}")
        width = max(len(ids) for ids, _ in packed)
        out = np.zeros((batch, 2, width), dtype=np.int32)
        out[:, 1, :] = -1
        for i, (ids, ends) in enumerate(packed):
            out[i, 0, : len(ids)] = ids
            out[i, 1, : len(ends)] = ends
        return out

    def _embedding_bias(self, words, weights, batch):
        if words is None or weights is None:
            return np.zeros((batch, 0), dtype=self.bias_dtype)
        word_rows = _texts(words.as_numpy())
        weight_rows = np.asarray(weights.as_numpy(), dtype=np.float64).reshape(len(word_rows), -1)
        out = np.zeros((batch, self.vocab_size), dtype=self.bias_dtype)
        for i, (row_words, row_weights) in enumerate(zip(word_rows, weight_rows)):
            if len(row_words) != len(row_weights):
                raise ValueError(
                    f"EMBEDDING_BIAS_WORDS row {i} has {len(row_words)} words but EMBEDDING_BIAS_WEIGHTS has "
                    f"{len(row_weights)} weights")
            for word, weight in zip(row_words, row_weights):
                if word == "":
                    continue
                for token in self.tokenizer.encode(word, add_special_tokens=False):
                    out[i, int(token)] += weight
        return out

    # -- execute --------------------------------------------------------------------------------

    def _process(self, request):
        get = lambda name: pb_utils.get_input_tensor_by_name(request, name)  # noqa: E731
        for name in _MULTIMODAL_INPUTS:
            if get(name) is not None:
                raise ValueError(f"input '{name}': this preprocessing model is text-only")
        query = get("QUERY")
        if query is None:
            raise ValueError("input 'QUERY' is required")
        queries = [row[0] if row else "" for row in _texts(query.as_numpy())]
        batch = len(queries)
        input_ids, input_lengths = self._pad(self._encode(queries, "QUERY"), self.pad_id if self.pad_id is not None else 0)

        end = get("END_ID")
        pad = get("PAD_ID")
        if end is None and self.end_id is None:
            raise ValueError("input 'END_ID' is required: the tokenizer has no eos token")
        end_ids = _per_row(end.as_numpy(), batch, "END_ID") if end is not None else np.full((batch, 1), self.end_id, np.int32)
        if pad is not None:
            pad_ids = _per_row(pad.as_numpy(), batch, "PAD_ID")
        else:
            pad_ids = np.full((batch, 1), self.pad_id if self.pad_id is not None else end_ids[0, 0], np.int32)

        decoder = get("DECODER_QUERY")
        if decoder is not None:
            texts = [row[0] if row else "" for row in _texts(decoder.as_numpy())]
            decoder_ids, decoder_lengths = self._pad(self._encode(texts, "DECODER_QUERY"), int(pad_ids[0, 0]))
        else:
            decoder_ids = pad_ids.copy()
            decoder_lengths = np.ones((batch, 1), dtype=np.int32)

        output_len = get("REQUEST_OUTPUT_LEN")
        if output_len is None:
            raise ValueError("input 'REQUEST_OUTPUT_LEN' is required")
        output_len = _per_row(output_len.as_numpy(), batch, "REQUEST_OUTPUT_LEN")

        extra = get("PROMPT_TABLE_EXTRA_ID")
        extra_ids = np.zeros(input_ids.shape, dtype=np.uint64)
        if extra is not None:
            per_row = np.asarray(extra.as_numpy()).reshape(batch, -1)[:, 0].astype(np.uint64)
            for i in range(batch):
                extra_ids[i] = np.where(input_ids[i] >= self.vocab_size, per_row[i], 0)

        values = {
            "INPUT_ID": input_ids,
            "REQUEST_INPUT_LEN": input_lengths,
            "DECODER_INPUT_ID": decoder_ids,
            "REQUEST_DECODER_INPUT_LEN": decoder_lengths,
            "BAD_WORDS_IDS": self._word_list(get("BAD_WORDS_DICT"), batch),
            "STOP_WORDS_IDS": self._word_list(get("STOP_WORDS_DICT"), batch),
            "EMBEDDING_BIAS": self._embedding_bias(get("EMBEDDING_BIAS_WORDS"), get("EMBEDDING_BIAS_WEIGHTS"), batch),
            "REQUEST_OUTPUT_LEN": output_len,
            "OUT_END_ID": end_ids,
            "OUT_PAD_ID": pad_ids,
            "OUT_PROMPT_TABLE_EXTRA_IDS": extra_ids,
            # Text only: the multimodal outputs are empty.
            "PIXEL_VALUES": np.zeros((batch, 0, 0, 0)),
            "ASPECT_RATIO_IDS": np.zeros((batch, 0)),
            "ASPECT_RATIO_MASK": np.zeros((batch, 0, 0)),
            "CROSS_ATTENTION_MASK": np.zeros((batch, 0, 0, 0)),
            "IMAGE_SIZES": np.zeros((batch, 2)),
            "IS_VIDEO_INPUT": np.zeros((batch, 1), dtype=bool),
        }
        tensors = []
        for name, dtype in self.outputs.items():
            if name in values:
                tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(values[name].astype(dtype))))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._process(request))
            except Exception as e:  # one bad request must not take the model down
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"preprocessing: {e}")))
        return responses

    def finalize(self):
        self.tokenizer = None
