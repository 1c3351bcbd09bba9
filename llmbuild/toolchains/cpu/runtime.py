"""llmbuild CPU-lane runtime: runs a CPU-lane engine directory with PyTorch.

This is **not** TensorRT-LLM.  It loads an engine directory written by
llmbuild's CPU-lane ``trtllm-build`` stand-in (``config.json`` with
``"llmbuild_lane": "cpu"`` and ``rank{N}.engine`` files that are safetensors
holding each rank's TensorRT-LLM checkpoint tensors), puts the tensor- and
pipeline-parallel shards back together, and runs the model as a
``transformers`` ``LlamaForCausalLM`` / ``MixtralForCausalLM`` in float32.

Self-contained on purpose: it is copied into Triton model repositories and
runs in Triton's Python backend, so it imports only the standard library,
``torch``, ``safetensors`` and ``transformers`` (4.x or 5.x) -- no other
llmbuild module.

One request is a :class:`Generation`, advanced one token at a time by
:meth:`Generation.step` (so a server can interleave requests, stream and
cancel between steps).  It follows TensorRT-LLM's executor where that is
observable:

* limits (:meth:`CpuEngine.check_lengths`): a prompt longer than
  ``max_input_len`` is refused ("Prompt length (%d) exceeds maximum input
  length (%d)."); ``prompt + max_new_tokens > max_seq_len`` clips the output
  length with a warning, as ``LlmRequest::validate`` does.  An engine built
  with ``--kv_cache_type disabled`` runs only the context phase.
* decoding (:class:`Sampling`): greedy when ``top_k`` is 0 or 1 and
  ``top_p`` is 0 (the executor's defaults); otherwise top-k / top-p sampling
  with ``temperature``, deterministic for a given ``seed`` (default 0, as in
  TensorRT-LLM); beam search for ``beam_width > 1`` (length penalty, early
  stopping, diversity rate).  Logits pass through embedding bias, bad words,
  repetition / presence / frequency penalties and ``min_length`` before
  temperature and top-k / top-p.
* only new tokens are kept (the server adds the prompt when asked);
  generation stops at ``end_id`` (not part of the output) and after a stop
  sequence (part of the output); a bad-words sequence is never completed
  (matching runs over prompt + output, like TensorRT-LLM's banBadWords).
* log probabilities are those of the chosen tokens under the processed,
  temperature-scaled distribution; context logits are the prompt's raw
  logits [prompt, vocab]; generation logits the raw logits of each step
  [beams, max_new_tokens, vocab] (steps not run stay 0).

:meth:`CpuEngine.generate` runs several greedy requests interleaved step by
step (the form the CLI tests use).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import operator
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Beam", "CpuEngine", "EngineLimitError", "Generation", "NotACpuEngineError", "Sampling"]

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


# ------------------------------------------------------------------ decoding

def _as_int(x):
    """numpy/torch integers -> int; anything else unchanged (and rejected by the checks)."""
    try:
        return operator.index(x)
    except TypeError:
        return x


@dataclass(frozen=True)
class Sampling:
    """One request's decoding knobs, with TensorRT-LLM's defaults (SamplingConfig)."""

    beam_width: int = 1
    top_k: int = 0
    top_p: float = 0.0
    top_p_min: float | None = None
    top_p_decay: float | None = None
    top_p_reset_id: int | None = None
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_length: int = 1
    length_penalty: float = 0.0
    early_stopping: int = 1
    diversity_rate: float = 0.0
    seed: int = 0
    #: Beams returned by beam search (num_return_sequences); None = beam_width.
    beams_out: int | None = None

    @property
    def sampled(self) -> bool:
        """Random sampling (top-k > 1, or top-p alone); top_k 0/1 without top_p is greedy."""
        return self.beam_width == 1 and (self.top_k > 1 or (self.top_k == 0 and self.top_p > 0))


@dataclass
class Beam:
    """One returned sequence: new tokens only, with their log probabilities."""

    tokens: list[int]
    log_probs: list[float]
    cum_log_prob: float = 0.0


def _ends_with(seq: list[int], word: list[int]) -> bool:
    return len(seq) >= len(word) and seq[-len(word):] == word


class Generation:
    """One request on a :class:`CpuEngine`, advanced a token at a time by :meth:`step`.

    ``beams`` are the sequences so far (best first once finished); with
    ``want_generation_logits`` the raw logits of every step are kept in
    ``generation_logits`` [beams, max_new_tokens, vocab].
    """

    def __init__(self, engine: "CpuEngine", prompt: Sequence[int], max_new_tokens: int,
                 sampling: Sampling = Sampling(), *, end_id: int | None = None,
                 bad_words: Sequence[Sequence[int]] = (), stop_words: Sequence[Sequence[int]] = (),
                 embedding_bias: torch.Tensor | None = None, want_context_logits: bool = False,
                 want_generation_logits: bool = False):
        self.engine = engine
        self.prompt = [int(t) for t in prompt]
        self.max_new_tokens = int(max_new_tokens)
        self.sampling = sampling
        self.end_id = end_id
        self.bad_words = [list(map(int, w)) for w in bad_words if len(w) > 0]
        self.stop_words = [list(map(int, w)) for w in stop_words if len(w) > 0]
        for word in self.bad_words:
            if not 0 <= word[-1] < engine.vocab_size:
                raise ValueError(f"bad word {word} ends outside the vocabulary")
        self.bias = None if embedding_bias is None or embedding_bias.numel() == 0 else \
            embedding_bias.to(torch.float32).reshape(-1)[:engine.vocab_size]
        self.width = sampling.beam_width
        self.beams = [Beam([], []) for _ in range(self.width)]
        self.finished = self.max_new_tokens < 1
        self.steps = 0
        self.context_logits: torch.Tensor | None = None
        self._want_context = want_context_logits
        self.generation_logits = (torch.zeros(self.width, max(self.max_new_tokens, 0), engine.vocab_size)
                                  if want_generation_logits else None)
        self._done: list[tuple[Beam, torch.Tensor | None]] = []  # beam search: finished hypotheses
        self._cache: Any = None
        self._next: torch.Tensor | None = None  # [width, vocab] logits for the next token
        self._rng = torch.Generator().manual_seed(int(sampling.seed) & 0xFFFF_FFFF_FFFF_FFFF)
        self._top_p = sampling.top_p

    # -------------------------------------------------------------- model calls

    def _prefill(self) -> None:
        logits, self._cache = self.engine._forward(torch.tensor([self.prompt], dtype=torch.long), None)
        if self._want_context:
            self.context_logits = logits[0].clone()
        self._next = logits[0, -1:].repeat(self.width, 1)
        if self.width > 1:
            self._cache.batch_repeat_interleave(self.width)

    def _feed(self, tokens: list[int]) -> None:
        logits, self._cache = self.engine._forward(torch.tensor([[t] for t in tokens], dtype=torch.long),
                                                   self._cache)
        self._next = logits[:, -1]

    # -------------------------------------------------------------- logits processing

    def _processed(self, row: int, raw: torch.Tensor) -> torch.Tensor:
        """Raw logits of one beam -> the temperature-scaled log distribution the token is drawn from."""
        s, beam = self.sampling, self.beams[row]
        logits = raw.clone()
        if self.bias is not None:
            logits[: self.bias.numel()] += self.bias
        seq = self.prompt + beam.tokens
        for word in self.bad_words:
            if _ends_with(seq, word[:-1]) or len(word) == 1:
                logits[word[-1]] = float("-inf")
        if s.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(seq)), dtype=torch.long)
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / s.repetition_penalty, vals * s.repetition_penalty)
        if beam.tokens and (s.presence_penalty or s.frequency_penalty):
            counts = torch.bincount(torch.tensor(beam.tokens), minlength=logits.numel()).to(logits.dtype)
            logits -= s.frequency_penalty * counts + s.presence_penalty * (counts > 0).to(logits.dtype)
        if self.end_id is not None and 0 <= self.end_id < logits.numel() and len(beam.tokens) < s.min_length:
            logits[self.end_id] = float("-inf")
        if s.temperature > 0 and s.temperature != 1.0:
            logits = logits / s.temperature
        return torch.log_softmax(logits, -1)

    def _draw(self, logp: torch.Tensor) -> int:
        s = self.sampling
        if not s.sampled:
            return int(torch.argmax(logp))
        probs = logp.exp()
        if s.top_k > 1:
            kth = torch.topk(probs, min(s.top_k, probs.numel())).values[-1]
            probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
        if self._top_p > 0:
            ordered, index = torch.sort(probs, descending=True)
            cut = torch.cumsum(ordered, 0) - ordered >= self._top_p * ordered.sum()
            ordered[cut] = 0.0
            probs = torch.zeros_like(probs).scatter(0, index, ordered)
        return int(torch.multinomial(probs / probs.sum(), 1, generator=self._rng))

    def _decay_top_p(self, token: int) -> None:
        s = self.sampling
        if s.top_p_reset_id is not None and token == s.top_p_reset_id:
            self._top_p = s.top_p
        elif s.top_p_decay is not None:
            self._top_p = max(self._top_p * s.top_p_decay, s.top_p_min or 0.0)

    # -------------------------------------------------------------- stepping

    def step(self) -> list[list[int]]:
        """Produce the next token of every beam; returns the tokens added per beam ([] when done)."""
        if self.finished:
            return [[] for _ in self.beams]
        if self._next is None:
            self._prefill()
        added = self._greedy_or_sampled_step() if self.width == 1 else self._beam_step()
        self.steps += 1
        if self.steps >= self.max_new_tokens:
            self._finish()
        if not self.finished:
            self._feed([b.tokens[-1] for b in self.beams])
        return added

    def _greedy_or_sampled_step(self) -> list[list[int]]:
        raw = self._next[0]
        logp = self._processed(0, raw)
        token = self._draw(logp)
        if self.generation_logits is not None:
            self.generation_logits[0, self.steps] = raw
        beam = self.beams[0]
        if self.end_id is not None and token == self.end_id:
            self._finish()
            return [[]]
        beam.tokens.append(token)
        beam.log_probs.append(float(logp[token]))
        beam.cum_log_prob += beam.log_probs[-1]
        self._decay_top_p(token)
        if any(_ends_with(self.prompt + beam.tokens, w) for w in self.stop_words):
            self._finish()
        return [[token]]

    def _score(self, beam: Beam) -> float:
        length = max(len(beam.tokens), 1)
        return beam.cum_log_prob / (length ** self.sampling.length_penalty)

    def _beam_step(self) -> list[list[int]]:
        s, width = self.sampling, self.width
        rows = 1 if self.steps == 0 else width  # all beams are the prompt before the first token
        logps = torch.stack([self._processed(r, self._next[r]) for r in range(width)])
        candidates = []
        for r in range(rows):
            values, tokens = torch.topk(logps[r], min(2 * width, logps.shape[1]))
            for rank, (value, token) in enumerate(zip(values.tolist(), tokens.tolist())):
                if value == float("-inf"):
                    break
                score = self.beams[r].cum_log_prob + value - s.diversity_rate * rank
                candidates.append((score, r, token, value))
        candidates.sort(key=lambda c: -c[0])
        parents, chosen = [], []
        for rank, (_, r, token, value) in enumerate(candidates[: 2 * width]):
            old = self.beams[r]
            if self.end_id is not None and token == self.end_id:
                if rank < width:  # an ended hypothesis counts only among the best `width` candidates
                    self._retire(Beam(list(old.tokens), list(old.log_probs), old.cum_log_prob + value), r)
                continue
            beam = Beam(old.tokens + [token], old.log_probs + [value], old.cum_log_prob + value)
            if any(_ends_with(self.prompt + beam.tokens, w) for w in self.stop_words):
                self._retire(beam, r)
                continue
            parents.append(r)
            chosen.append(beam)
            if len(chosen) == width:
                break
        if self.generation_logits is not None:
            index = torch.tensor(parents, dtype=torch.long)
            history = self.generation_logits[index]
            history[:, self.steps] = self._next[index]
            self.generation_logits = history
        self.beams = chosen
        if len(chosen) < width or self._beam_search_done():
            self._finish()
            return [b.tokens for b in self.beams]
        self._cache.reorder_cache(torch.tensor(parents, dtype=torch.long))
        return [b.tokens for b in self.beams]

    def _retire(self, beam: Beam, row: int) -> None:
        logits = None
        if self.generation_logits is not None:
            logits = self.generation_logits[row].clone()
            logits[self.steps] = self._next[row]
        self._done.append((beam, logits))

    def _beam_search_done(self) -> bool:
        s = self.sampling
        if len(self._done) < self.width or s.early_stopping > 1:
            return False
        if s.early_stopping == 1:
            return True
        worst = min(self._score(b) for b, _ in self._done)
        return max(self._score(b) for b in self.beams) <= worst

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._cache = None
        if self.width == 1:
            return
        pool = list(self._done)
        for i, beam in enumerate(self.beams):
            row = self.generation_logits[i] if self.generation_logits is not None else None
            pool.append((beam, row))
        pool.sort(key=lambda item: -self._score(item[0]))
        keep = pool[: self.sampling.beams_out or self.width]
        self.beams = [beam for beam, _ in keep]
        if self.generation_logits is not None:
            self.generation_logits = torch.stack([row for _, row in keep])

    def cancel(self) -> None:
        """Stop here: the beams keep the tokens produced so far (a cancelled request's final result)."""
        if not self.finished:
            self._finish()


# ------------------------------------------------------------------ engine

class CpuEngine:
    """A CPU-lane engine directory loaded into a PyTorch model."""

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
        self.max_draft_len = int(build.get("max_draft_len") or 0)
        self.gather_context_logits = bool(build.get("gather_context_logits"))
        self.gather_generation_logits = bool(build.get("gather_generation_logits"))
        plugin = build.get("plugin_config") or {}
        self.tokens_per_block = int(plugin.get("tokens_per_block") or 64)
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

    @classmethod
    def from_hf(cls, model_dir, *, max_batch_size: int = 2048, max_seq_len: int | None = None,
                max_input_len: int | None = None) -> "CpuEngine":
        """A Hugging Face checkpoint run as it is (the engine-free lane: no engine, the LLM API's
        limits given by its options), in float32."""
        import transformers

        model_dir = Path(model_dir)
        with open(model_dir / "config.json", encoding="utf-8") as f:
            hf = json.load(f)
        quant = model_dir / "hf_quant_config.json"
        algo = json.loads(quant.read_text()).get("quantization", {}).get("quant_algo") if quant.is_file() else None
        if hf.get("quantization_config") or algo:
            raise NotACpuEngineError(f"{model_dir} is a quantized checkpoint; the CPU lane runs full precision only")
        seq = int(max_seq_len or hf.get("max_position_embeddings") or 2048)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        model.eval()
        config = {"build_config": {"max_batch_size": max_batch_size, "max_seq_len": seq,
                                   "max_input_len": int(max_input_len or seq - 1)},
                  "pretrained_config": {"vocab_size": hf["vocab_size"], "architecture": (hf.get("architectures") or ["?"])[0]}}
        return cls(config, model, model_dir)

    def _forward(self, ids: torch.Tensor, cache):
        """One model call (serialised: requests on several threads share the model)."""
        with self._lock, torch.inference_mode():
            out = self._model(input_ids=ids, use_cache=True, **{self._cache_kw: cache})
        cache = out[self._cache_kw] if self._cache_kw in out.keys() else out[1]
        return out.logits.float(), cache

    # -------------------------------------------------------------- checks

    def check_lengths(self, prompt: Sequence[int], max_new_tokens: int) -> tuple[int, str | None]:
        """(max new tokens after clipping, the executor's warning or None); raises on what it refuses."""
        if len(prompt) == 0:
            raise ValueError("the prompt is empty")
        bad = [t for t in prompt if not (isinstance(t, int) and 0 <= t < self.vocab_size)]
        if bad:
            raise ValueError(f"token id {bad[0]!r} is outside the vocabulary (vocab_size {self.vocab_size})")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if len(prompt) > self.max_input_len:
            raise EngineLimitError(f"Prompt length ({len(prompt)}) exceeds maximum input length "
                                   f"({self.max_input_len}).")
        warning = None
        if len(prompt) + max_new_tokens > self.max_seq_len:
            clipped = self.max_seq_len - len(prompt)
            warning = (f"Prompt length + number of requested output tokens + draft tokens per step "
                       f"({len(prompt)} + {max_new_tokens} + 0) exceeds maximum sequence length "
                       f"({self.max_seq_len}). Number of requested output tokens is changed to ({clipped}).")
            max_new_tokens = clipped
        if self.kv_cache_type == "DISABLED" and max_new_tokens > 1:
            raise EngineLimitError(f"the engine was built without a KV cache (kv_cache_type DISABLED) and runs "
                                   f"only the context phase: max_new_tokens must be 1, got {max_new_tokens}")
        return max_new_tokens, warning

    # -------------------------------------------------------------- batch of greedy requests

    def generate(self, input_ids: Sequence[Sequence[int]], max_new_tokens: Sequence[int], *,
                 end_id: int | None = None, pad_id: int | None = None,
                 bad_words: Sequence[Sequence[Sequence[int]]] | None = None,
                 stop_words: Sequence[Sequence[Sequence[int]]] | None = None,
                 on_token: Callable[..., Any] | None = None,
                 clamp_to_max_seq_len: bool = False, return_log_probs: bool = False):
        """Greedy generation of several requests, interleaved step by step.

        Returns only the new tokens of each request (with return_log_probs also
        each token's log probability: `(tokens, log_probs)`); ``on_token(i,
        token[, log_prob])`` sees every token as it is produced. Limits are
        checked before any work; prompt + output over max_seq_len raises unless
        ``clamp_to_max_seq_len`` (then clipped with a warning, as the executor
        does). `pad_id` is accepted for interface parity (outputs are not padded).
        """
        input_ids = [[_as_int(t) for t in p] for p in input_ids]
        max_new_tokens = [_as_int(x) for x in max_new_tokens]
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
            try:
                limit, warning = self.check_lengths(prompt, new)
            except EngineLimitError:
                raise
            except ValueError as err:
                raise ValueError(f"request {i}: {err}") from None
            if warning:
                if not clamp_to_max_seq_len:
                    raise EngineLimitError(warning.split(" Number of requested")[0])
                warnings.warn(warning)
            limits.append(limit)
        gens = [Generation(self, p, limit, end_id=end_id,
                           bad_words=(bad_words[i] or []) if bad_words else [],
                           stop_words=(stop_words[i] or []) if stop_words else [])
                for i, (p, limit) in enumerate(zip(input_ids, limits))]
        active = list(range(n))
        while active:
            for i in active:
                for token in gens[i].step()[0]:
                    if on_token is not None:
                        on_token(i, token, *([gens[i].beams[0].log_probs[-1]] if return_log_probs else []))
            active = [i for i in active if not gens[i].finished]
        outputs = [g.beams[0].tokens for g in gens]
        return (outputs, [g.beams[0].log_probs for g in gens]) if return_log_probs else outputs

    def __repr__(self) -> str:
        arch = self.config["pretrained_config"]["architecture"]
        return (f"<CpuEngine {arch} (llmbuild CPU lane) max_batch_size={self.max_batch_size} "
                f"max_input_len={self.max_input_len} max_seq_len={self.max_seq_len}>")
