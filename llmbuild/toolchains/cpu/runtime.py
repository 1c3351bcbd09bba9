"""llmbuild CPU-lane runtime: runs a CPU-lane engine directory with PyTorch.

This is **not** TensorRT-LLM.  It loads an engine directory written by
llmbuild's CPU-lane ``trtllm-build`` stand-in (``config.json`` with
``"llmbuild_lane": "cpu"`` and ``rank{N}.engine`` files that are safetensors
holding each rank's TensorRT-LLM checkpoint tensors), puts the tensor- and
pipeline-parallel shards back together, and runs the model as a
``transformers`` ``LlamaForCausalLM`` / ``MixtralForCausalLM`` in float32 with
greedy decoding.

Self-contained on purpose: it is copied into Triton model repositories and
runs in Triton's Python backend, so it imports only the standard library,
``torch``, ``safetensors`` and ``transformers`` (4.x or 5.x) -- no other
llmbuild module.

Behaviour mirrors TensorRT-LLM's executor where that is observable:

* limits are checked before any work: more requests than ``max_batch_size``,
  a prompt longer than ``max_input_len`` ("Prompt length (%d) exceeds maximum
  input length (%d).") and ``prompt + max_new_tokens > max_seq_len`` raise
  :class:`EngineLimitError`.  (The real executor *clamps* the last case with a
  warning instead; pass ``clamp_to_max_seq_len=True`` for that behaviour.)
  An engine built with ``--kv_cache_type disabled`` can only run the context
  phase: one output token per request.
* only new tokens are returned (``exclude_input_in_output``);
* generation stops at ``end_id``, which is **not** part of the output;
* generation stops after a stop sequence, which **is** part of the output
  (TensorRT-LLM keeps stop words; the Triton BLS of 19+ trims them as text);
* a bad-words sequence is never completed: when the tokens so far end with
  all but its last token, that last token is banned (a one-token bad word is
  always banned); matching runs over prompt + output, like TensorRT-LLM's
  banBadWords, which sees the whole sequence;
* ``on_token(request_index, token_id)`` is called for every output token as it
  is produced, requests interleaved step by step (streaming); with
  ``return_log_probs`` it also gets the token's log probability.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import operator
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["CpuEngine", "EngineLimitError", "NotACpuEngineError"]

LANE = "cpu"


class EngineLimitError(ValueError):
    """A request exceeds a limit the engine was built with (max_batch_size, max_input_len, max_seq_len)."""


class NotACpuEngineError(ValueError):
    """The directory is not an llmbuild CPU-lane engine (e.g. a real TensorRT engine)."""


# ------------------------------------------------------------------ loading

def _read_rank(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (the engine's world size needs it)")
    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("llmbuild_lane") != LANE:
            raise NotACpuEngineError(f"{path} is not an llmbuild CPU-lane engine file "
                                     f"(a real TensorRT engine needs TensorRT-LLM on a GPU)")
        for name in f.keys():
            tensors[name] = f.get_tensor(name)
    return tensors


def _layers_of(tensors: dict) -> int:
    idx = {int(n.split(".")[2]) for n in tensors if n.startswith("transformer.layers.")}
    if idx != set(range(len(idx))):
        raise ValueError(f"layer indices {sorted(idx)} are not 0..n-1")
    return len(idx)


def _split_qkv(t: torch.Tensor, q_rows: int, kv_rows: int):
    return t[:q_rows], t[q_rows:q_rows + kv_rows], t[q_rows + kv_rows:q_rows + 2 * kv_rows]


def _undup_kv(t: torch.Tensor, kv_heads: int, tp: int) -> torch.Tensor:
    """Inverse of TensorRT-LLM's dup_kv_weight: keep one copy of each repeated KV head."""
    if kv_heads >= tp:
        return t
    reps = tp // kv_heads
    head = t.shape[0] // (kv_heads * reps)
    return t.reshape(kv_heads, reps, head, *t.shape[1:])[:, 0].reshape(kv_heads * head, *t.shape[1:])


def merge_ranks(pretrained: dict, ranks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Reassemble per-rank TensorRT-LLM checkpoint tensors into Hugging Face Llama/Mixtral names."""
    m = pretrained["mapping"]
    tp, pp = int(m["tp_size"]), int(m["pp_size"])
    moe_tp, moe_ep = int(m.get("moe_tp_size", tp)), int(m.get("moe_ep_size", 1))
    heads, kv = int(pretrained["num_attention_heads"]), int(pretrained["num_key_value_heads"])
    head = int(pretrained.get("head_size") or pretrained["hidden_size"] // heads)
    q_rows = heads // tp * head
    kv_rows = (kv // tp if kv >= tp else 1) * head
    vocab = int(pretrained["vocab_size"])
    is_moe = bool((pretrained.get("moe") or {}).get("num_experts"))
    hf: dict[str, torch.Tensor] = {}

    offset = 0
    for stage in range(pp):
        group = ranks[stage * tp:(stage + 1) * tp]
        n_layers = _layers_of(group[0])
        for local in range(n_layers):
            src = f"transformer.layers.{local}."
            dst = f"model.layers.{offset + local}."
            for kind in ("weight", "bias"):
                if src + f"attention.qkv.{kind}" not in group[0]:
                    continue
                parts = [_split_qkv(r[src + f"attention.qkv.{kind}"], q_rows, kv_rows) for r in group]
                hf[dst + f"self_attn.q_proj.{kind}"] = torch.cat([p[0] for p in parts])
                hf[dst + f"self_attn.k_proj.{kind}"] = _undup_kv(torch.cat([p[1] for p in parts]), kv, tp)
                hf[dst + f"self_attn.v_proj.{kind}"] = _undup_kv(torch.cat([p[2] for p in parts]), kv, tp)
            hf[dst + "self_attn.o_proj.weight"] = torch.cat([r[src + "attention.dense.weight"] for r in group], 1)
            if src + "attention.dense.bias" in group[0]:
                hf[dst + "self_attn.o_proj.bias"] = group[0][src + "attention.dense.bias"]
            if is_moe:
                hf[dst + "block_sparse_moe.gate.weight"] = group[0][src + "mlp.router.weight"]
                w1s, w2s, w3s = [], [], []
                for ep_rank in range(moe_ep):
                    members = [group[mtp * moe_ep + ep_rank] for mtp in range(moe_tp)]
                    fcs = [r[src + "mlp.fc.weight"] for r in members]
                    half = fcs[0].shape[1] // 2
                    w3s.append(torch.cat([f[:, :half] for f in fcs], 1))
                    w1s.append(torch.cat([f[:, half:] for f in fcs], 1))
                    w2s.append(torch.cat([r[src + "mlp.proj.weight"] for r in members], 2))
                w1, w2, w3 = torch.cat(w1s), torch.cat(w2s), torch.cat(w3s)
                for e in range(w1.shape[0]):
                    hf[dst + f"block_sparse_moe.experts.{e}.w1.weight"] = w1[e]
                    hf[dst + f"block_sparse_moe.experts.{e}.w2.weight"] = w2[e]
                    hf[dst + f"block_sparse_moe.experts.{e}.w3.weight"] = w3[e]
            else:
                hf[dst + "mlp.gate_proj.weight"] = torch.cat([r[src + "mlp.fc.weight"] for r in group])
                hf[dst + "mlp.up_proj.weight"] = torch.cat([r[src + "mlp.gate.weight"] for r in group])
                hf[dst + "mlp.down_proj.weight"] = torch.cat([r[src + "mlp.proj.weight"] for r in group], 1)
            hf[dst + "input_layernorm.weight"] = group[0][src + "input_layernorm.weight"]
            hf[dst + "post_attention_layernorm.weight"] = group[0][src + "post_layernorm.weight"]
        offset += n_layers
    if offset != int(pretrained["num_hidden_layers"]):
        raise ValueError(f"the rank files hold {offset} layers, num_hidden_layers is "
                         f"{pretrained['num_hidden_layers']}")

    first, last = ranks[:tp], ranks[(pp - 1) * tp:]
    if pretrained.get("use_parallel_embedding"):
        dim = int(pretrained.get("embedding_sharding_dim", 0))
        hf["model.embed_tokens.weight"] = torch.cat([r["transformer.vocab_embedding.weight"] for r in first], dim)
    else:
        hf["model.embed_tokens.weight"] = first[0]["transformer.vocab_embedding.weight"]
    hf["lm_head.weight"] = torch.cat([r["lm_head.weight"] for r in last])[:vocab]
    hf["model.norm.weight"] = last[0]["transformer.ln_f.weight"]
    return hf


def _no_init():
    for where in ("transformers.modeling_utils", "transformers.initialization"):
        try:
            module = __import__(where, fromlist=["no_init_weights"])
            return module.no_init_weights()
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext()


def _hf_model(pretrained: dict, weights: dict[str, torch.Tensor]):
    import transformers

    arch = pretrained["architecture"]
    act = pretrained.get("hidden_act", "silu")
    common = dict(
        vocab_size=int(pretrained["vocab_size"]),
        hidden_size=int(pretrained["hidden_size"]),
        intermediate_size=int(pretrained["intermediate_size"]),
        num_hidden_layers=int(pretrained["num_hidden_layers"]),
        num_attention_heads=int(pretrained["num_attention_heads"]),
        num_key_value_heads=int(pretrained["num_key_value_heads"]),
        head_dim=int(pretrained.get("head_size") or 0) or None,
        max_position_embeddings=int(pretrained.get("max_position_embeddings") or 2048),
        rms_norm_eps=float(pretrained.get("norm_epsilon", 1e-6)),
        rope_theta=float(pretrained.get("rotary_base", 10000.0)),
        rope_scaling=pretrained.get("rotary_scaling"),
        hidden_act="silu" if act in ("silu", "swiglu") else act,
        tie_word_embeddings=False,
        use_cache=True,
    )
    if arch == "LlamaForCausalLM":
        config = transformers.LlamaConfig(attention_bias=bool(pretrained.get("attn_bias", False)),
                                          mlp_bias=False, **common)
        cls = transformers.LlamaForCausalLM
    elif arch == "MixtralForCausalLM":
        moe = pretrained.get("moe") or {}
        if moe.get("normalization_mode", 1) not in (None, 1):
            raise ValueError(f"MoE normalization_mode {moe.get('normalization_mode')} is not supported "
                             f"(only 1, renormalize, as in Mixtral)")
        config = transformers.MixtralConfig(num_local_experts=int(moe["num_experts"]),
                                            num_experts_per_tok=int(moe["top_k"]),
                                            sliding_window=None, router_jitter_noise=0.0, **common)
        cls = transformers.MixtralForCausalLM
    else:
        raise ValueError(f"architecture {arch!r} is not supported by the CPU-lane runtime")
    with _no_init():
        model = cls(config)
    model.to(torch.float32)
    state = {k: v.to(torch.float32) for k, v in weights.items()}
    own = model.state_dict()
    if arch == "MixtralForCausalLM" and not any(".block_sparse_moe." in k for k in own):
        state = _fuse_experts(state, int(pretrained["num_hidden_layers"]), int(pretrained["moe"]["num_experts"]))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"weights do not fit {arch}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def _fuse_experts(state: dict, layers: int, experts: int) -> dict:
    """transformers 5 keeps Mixtral experts fused: gate_up_proj = [w1; w3], down_proj = w2."""
    out = {k: v for k, v in state.items() if ".block_sparse_moe." not in k}
    for layer in range(layers):
        p = f"model.layers.{layer}.block_sparse_moe."
        q = f"model.layers.{layer}.mlp."
        out[q + "gate.weight"] = state[p + "gate.weight"]
        out[q + "experts.gate_up_proj"] = torch.stack(
            [torch.cat([state[f"{p}experts.{e}.w1.weight"], state[f"{p}experts.{e}.w3.weight"]]) for e in range(experts)])
        out[q + "experts.down_proj"] = torch.stack([state[f"{p}experts.{e}.w2.weight"] for e in range(experts)])
    return out


# ------------------------------------------------------------------ engine

def _as_int(x):
    """numpy/torch integers -> int; anything else unchanged (and rejected by the checks)."""
    try:
        return operator.index(x)
    except TypeError:
        return x


class CpuEngine:
    """A CPU-lane engine directory loaded into a PyTorch model (greedy decoding only)."""

    def __init__(self, config: dict, model, engine_dir: Path | None = None):
        self.config = config
        self.engine_dir = engine_dir
        self._model = model
        self._lock = threading.RLock()
        # transformers >= 5.2x names the KV cache argument `cache`; 4.x calls it `past_key_values`.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        build = config["build_config"]
        pretrained = config["pretrained_config"]
        self.max_batch_size = int(build["max_batch_size"])
        self.max_input_len = int(build["max_input_len"])
        self.max_seq_len = int(build["max_seq_len"])
        self.max_beam_width = int(build.get("max_beam_width", 1))
        self.vocab_size = int(pretrained["vocab_size"])
        self.kv_cache_type = build.get("kv_cache_type", "PAGED")

    @classmethod
    def load(cls, engine_dir) -> "CpuEngine":
        engine_dir = Path(engine_dir)
        with open(engine_dir / "config.json", encoding="utf-8") as f:
            config = json.load(f)
        if config.get("llmbuild_lane") != LANE:
            raise NotACpuEngineError(f"{engine_dir} is not an llmbuild CPU-lane engine (its config.json has "
                                     f"no \"llmbuild_lane\": \"cpu\"); a real TensorRT engine needs TensorRT-LLM")
        pretrained = config["pretrained_config"]
        world = int(pretrained["mapping"]["world_size"])
        ranks = [_read_rank(engine_dir / f"rank{r}.engine") for r in range(world)]
        model = _hf_model(pretrained, merge_ranks(pretrained, ranks))
        return cls(config, model, engine_dir)

    # -------------------------------------------------------------- checks

    def _check(self, input_ids, max_new_tokens, bad_words, stop_words, clamp: bool) -> list[int]:
        n = len(input_ids)
        if n > self.max_batch_size:
            raise EngineLimitError(f"Batch size ({n}) exceeds maximum batch size ({self.max_batch_size}).")
        if len(max_new_tokens) != n:
            raise ValueError(f"max_new_tokens has {len(max_new_tokens)} entries for {n} requests")
        for name, words in (("bad_words", bad_words), ("stop_words", stop_words)):
            if words is not None and len(words) != n:
                raise ValueError(f"{name} has {len(words)} entries for {n} requests")
        limits = []
        for i, (prompt, new) in enumerate(zip(input_ids, max_new_tokens)):
            if len(prompt) == 0:
                raise ValueError(f"request {i}: the prompt is empty")
            bad = [t for t in prompt if not (isinstance(t, int) and 0 <= t < self.vocab_size)]
            if bad:
                raise ValueError(f"request {i}: token id {bad[0]!r} is outside the vocabulary "
                                 f"(vocab_size {self.vocab_size})")
            if not isinstance(new, int) or new < 1:
                raise ValueError(f"request {i}: max_new_tokens must be a positive integer, got {new!r}")
            if len(prompt) > self.max_input_len:
                raise EngineLimitError(f"Prompt length ({len(prompt)}) exceeds maximum input length "
                                       f"({self.max_input_len}).")
            if len(prompt) + new > self.max_seq_len:
                message = (f"Prompt length + number of requested output tokens ({len(prompt)} + {new}) "
                           f"exceeds maximum sequence length ({self.max_seq_len}).")
                if not clamp:
                    raise EngineLimitError(message)
                new = self.max_seq_len - len(prompt)
                warnings.warn(f"{message} Number of requested output tokens is changed to ({new}).")
            if self.kv_cache_type == "DISABLED" and new > 1:
                raise EngineLimitError(f"request {i}: the engine was built without a KV cache "
                                       f"(kv_cache_type DISABLED) and runs only the context phase: "
                                       f"max_new_tokens must be 1, got {new}")
            limits.append(new)
        return limits

    # -------------------------------------------------------------- generation

    @staticmethod
    def _words(words, i) -> list[list[int]]:
        if words is None or words[i] is None:
            return []
        return [list(map(int, w)) for w in words[i] if len(w) > 0]

    def generate(self, input_ids: Sequence[Sequence[int]], max_new_tokens: Sequence[int], *,
                 end_id: int | None = None, pad_id: int | None = None,
                 bad_words: Sequence[Sequence[Sequence[int]]] | None = None,
                 stop_words: Sequence[Sequence[Sequence[int]]] | None = None,
                 on_token: Callable[[int, int], Any] | None = None,
                 clamp_to_max_seq_len: bool = False, return_log_probs: bool = False):
        """Greedy generation; returns only the new tokens of each request (and, with
        return_log_probs, each new token's log probability: `(tokens, log_probs)`).

        `pad_id` is accepted for interface parity and unused (outputs are not padded).
        """
        input_ids = [[_as_int(t) for t in p] for p in input_ids]
        max_new_tokens = [_as_int(x) for x in max_new_tokens]
        limits = self._check(input_ids, max_new_tokens, bad_words, stop_words, clamp_to_max_seq_len)
        n = len(input_ids)
        outputs: list[list[int]] = [[] for _ in range(n)]
        log_probs: list[list[float]] = [[] for _ in range(n)]
        if n == 0:
            return (outputs, log_probs) if return_log_probs else outputs
        bans = [self._words(bad_words, i) for i in range(n)]
        stops = [self._words(stop_words, i) for i in range(n)]
        for i, words in enumerate(bans):
            for word in words:
                if not 0 <= word[-1] < self.vocab_size:
                    raise ValueError(f"request {i}: bad word {word} ends outside the vocabulary")
        seqs = [list(p) for p in input_ids]
        caches: list[Any] = [None] * n
        pending: list[list[int]] = [list(p) for p in input_ids]  # tokens not yet fed to the model
        active = [i for i in range(n) if limits[i] > 0]
        with self._lock, torch.inference_mode():
            while active:
                still = []
                for i in active:
                    out = self._model(input_ids=torch.tensor([pending[i]], dtype=torch.long),
                                      use_cache=True, **{self._cache_kw: caches[i]})
                    caches[i] = out[self._cache_kw] if self._cache_kw in out.keys() else out[1]
                    logits = out.logits[0, -1].float()
                    for word in bans[i]:
                        prefix = word[:-1]
                        if not prefix or (len(seqs[i]) >= len(prefix) and seqs[i][-len(prefix):] == prefix):
                            logits[word[-1]] = float("-inf")
                    token = int(torch.argmax(logits))
                    if end_id is not None and token == end_id:
                        continue
                    outputs[i].append(token)
                    if return_log_probs:
                        log_probs[i].append(float(torch.log_softmax(logits, -1)[token]))
                    seqs[i].append(token)
                    if on_token is not None:  # (i, token), plus its log probability if asked for
                        on_token(i, token, *log_probs[i][-1:])
                    if len(outputs[i]) >= limits[i]:
                        continue
                    if any(len(seqs[i]) >= len(s) and seqs[i][-len(s):] == s for s in stops[i]):
                        continue
                    pending[i] = [token]
                    still.append(i)
                active = still
        return (outputs, log_probs) if return_log_probs else outputs

    def __repr__(self) -> str:
        arch = self.config["pretrained_config"]["architecture"]
        return (f"<CpuEngine {arch} (llmbuild CPU lane) max_batch_size={self.max_batch_size} "
                f"max_input_len={self.max_input_len} max_seq_len={self.max_seq_len}>")
