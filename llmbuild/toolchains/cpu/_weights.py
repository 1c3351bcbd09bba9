"""Hugging Face Llama/Mixtral weights -> TensorRT-LLM checkpoint tensors, split per rank.

The names and the tensor-/pipeline-parallel split follow TensorRT-LLM's Llama
converter (``tensorrt_llm/models/llama/convert.py``, ``models/convert_utils.py``,
``mapping.py``; see /work/shared/facts/trtllm-cli.md section D):

* ``attention.qkv``: q, k and v are each split on dim 0 over the TP ranks and
  concatenated per rank; when ``num_key_value_heads < tp_size`` every KV head
  is first repeated ``tp_size // num_key_value_heads`` times (``dup_kv_weight``).
* ``attention.dense`` (o_proj) and ``mlp.proj`` (down_proj) split on dim 1;
  ``mlp.fc`` = **gate_proj** and ``mlp.gate`` = **up_proj** split on dim 0.
* Mixtral: ``mlp.router`` (block_sparse_moe.gate) replicated in float32;
  ``mlp.fc`` = experts' w3 ‖ w1 stacked ``[E, 2*inter, hidden]``, ``mlp.proj`` =
  w2 ``[E, hidden, inter]``; experts divided by moe_ep rank, w3/w1 split on dim 1
  and w2 on dim 2 by moe_tp rank (``moe_tp_rank = tp_rank // moe_ep_size``,
  ``moe_ep_rank = tp_rank % moe_ep_size``).
* ``transformer.vocab_embedding`` on the first PP rank (split on
  ``embedding_sharding_dim`` only with ``use_parallel_embedding``);
  ``transformer.ln_f`` and ``lm_head`` (vocab zero-padded to a multiple of
  tp_size, then split on dim 0) on the last PP rank.
* Layers: each PP rank holds a contiguous block, renumbered from 0 in its file
  (``transformer.layers.{l - first_layer}``).  Up to 0.16 a rank gets
  ``num_layers // pp_size`` layers; later releases use ``torch.tensor_split``
  (the first ``num_layers % pp_size`` ranks get one extra layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import ToolError, at_least, read_json


# ------------------------------------------------------------------ reading HF

def read_hf_config(model_dir: Path) -> dict:
    return read_json(Path(model_dir) / "config.json", "--model_dir")


def load_hf_weights(model_dir: Path) -> dict[str, Any]:
    """All tensors of a Hugging Face checkpoint (safetensors preferred, else pytorch .bin)."""
    import torch
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    weights: dict[str, Any] = {}
    try:
        if files:
            for f in files:
                weights.update(load_file(str(f)))
        else:
            bins = sorted(model_dir.glob("*.bin"))
            if not bins:
                raise ToolError(f"--model_dir {model_dir}: no *.safetensors or *.bin weight files")
            for f in bins:
                weights.update(torch.load(str(f), map_location="cpu", weights_only=True))
    except ToolError:
        raise
    except Exception as err:
        raise ToolError(f"--model_dir {model_dir}: cannot load weights: {err}") from None
    return weights


# ------------------------------------------------------------------ layout helpers

def pp_layers(num_layers: int, pp_size: int, pp_rank: int, version: str) -> list[int]:
    """Global layer indices held by `pp_rank`, as Mapping.pp_layers of that version computes them."""
    if at_least(version, "1.2.0.dev-main-2025-10"):
        base, extra = divmod(num_layers, pp_size)
        start = pp_rank * base + min(pp_rank, extra)
        count = base + (1 if pp_rank < extra else 0)
        return list(range(start, start + count))
    per = num_layers // pp_size
    return list(range(pp_rank * per, (pp_rank + 1) * per))


def pad_vocab_size(vocab_size: int, tp_size: int) -> int:
    return -(-vocab_size // tp_size) * tp_size


def _chunk(t, parts: int, index: int, dim: int = 0):
    """torch.chunk(t, parts, dim)[index] (TensorRT-LLM's `split`), contiguous."""
    import torch

    if parts == 1:
        return t.contiguous()
    pieces = torch.chunk(t, parts, dim=dim)
    if index >= len(pieces):
        raise ToolError(f"cannot split a dimension of size {t.shape[dim]} into {parts} parts")
    return pieces[index].contiguous()


def dup_kv_weight(w, num_kv_heads: int, tp_size: int):
    """Repeat each KV head tp_size // num_kv_heads times (TensorRT-LLM's dup_kv_weight)."""
    reps = tp_size // num_kv_heads
    head = w.shape[0] // num_kv_heads
    rest = w.shape[1:]
    w = w.reshape(num_kv_heads, 1, head, *rest).expand(num_kv_heads, reps, head, *rest)
    return w.reshape(num_kv_heads * reps * head, *rest).clone()


def _get(hf: dict, name: str):
    try:
        return hf[name]
    except KeyError:
        raise ToolError(f"the Hugging Face checkpoint has no tensor {name!r}") from None


def rank_weights(hf: dict, config: dict, rank: int, version: str) -> dict[str, Any]:
    """The tensors of ``rank{rank}.safetensors`` for checkpoint `config` (TensorRT-LLM names)."""
    import torch

    mapping = config["mapping"]
    tp, pp = mapping["tp_size"], mapping["pp_size"]
    moe_tp, moe_ep = mapping["moe_tp_size"], mapping["moe_ep_size"]
    tp_rank, pp_rank = rank % tp, rank // tp
    dtype = getattr(torch, config["dtype"])
    kv_heads = config["num_key_value_heads"]
    num_layers = config["num_hidden_layers"]
    moe = config.get("moe") or {}
    num_experts = moe.get("num_experts", 0) or 0

    def w(name):
        return _get(hf, name).to(dtype)

    out: dict[str, Any] = {}
    layers = pp_layers(num_layers, pp, pp_rank, version)
    for local, layer in enumerate(layers):
        src = f"model.layers.{layer}."
        dst = f"transformer.layers.{local}."
        q, k, v = (w(src + f"self_attn.{p}_proj.weight") for p in "qkv")
        if kv_heads < tp:
            k, v = dup_kv_weight(k, kv_heads, tp), dup_kv_weight(v, kv_heads, tp)
        out[dst + "attention.qkv.weight"] = torch.cat(
            [_chunk(q, tp, tp_rank), _chunk(k, tp, tp_rank), _chunk(v, tp, tp_rank)], dim=0)
        if src + "self_attn.q_proj.bias" in hf:
            qb, kb, vb = (w(src + f"self_attn.{p}_proj.bias") for p in "qkv")
            if kv_heads < tp:
                kb, vb = dup_kv_weight(kb, kv_heads, tp), dup_kv_weight(vb, kv_heads, tp)
            out[dst + "attention.qkv.bias"] = torch.cat(
                [_chunk(qb, tp, tp_rank), _chunk(kb, tp, tp_rank), _chunk(vb, tp, tp_rank)], dim=0)
        out[dst + "attention.dense.weight"] = _chunk(w(src + "self_attn.o_proj.weight"), tp, tp_rank, dim=1)
        if src + "self_attn.o_proj.bias" in hf:
            out[dst + "attention.dense.bias"] = w(src + "self_attn.o_proj.bias").contiguous()
        if num_experts:
            per = num_experts // moe_ep
            ep_rank, mtp_rank = tp_rank % moe_ep, tp_rank // moe_ep
            experts = range(ep_rank * per, (ep_rank + 1) * per)
            moe_src = src + "block_sparse_moe."

            def stack(part):
                return torch.stack([w(f"{moe_src}experts.{e}.{part}.weight") for e in experts])

            w1, w2, w3 = stack("w1"), stack("w2"), stack("w3")
            w1, w3 = _chunk(w1, moe_tp, mtp_rank, dim=1), _chunk(w3, moe_tp, mtp_rank, dim=1)
            out[dst + "mlp.fc.weight"] = torch.cat([w3, w1], dim=-2).contiguous()
            out[dst + "mlp.proj.weight"] = _chunk(w2, moe_tp, mtp_rank, dim=2)
            out[dst + "mlp.router.weight"] = _get(hf, moe_src + "gate.weight").to(torch.float32).contiguous()
        else:
            out[dst + "mlp.fc.weight"] = _chunk(w(src + "mlp.gate_proj.weight"), tp, tp_rank)
            out[dst + "mlp.gate.weight"] = _chunk(w(src + "mlp.up_proj.weight"), tp, tp_rank)
            out[dst + "mlp.proj.weight"] = _chunk(w(src + "mlp.down_proj.weight"), tp, tp_rank, dim=1)
        out[dst + "input_layernorm.weight"] = w(src + "input_layernorm.weight").contiguous()
        out[dst + "post_layernorm.weight"] = w(src + "post_attention_layernorm.weight").contiguous()

    embedding = w("model.embed_tokens.weight")
    if pp_rank == 0:
        emb = embedding
        if config.get("use_parallel_embedding"):
            emb = _chunk(emb, tp, tp_rank, dim=config.get("embedding_sharding_dim", 0))
        out["transformer.vocab_embedding.weight"] = emb.contiguous()
    if pp_rank == pp - 1:
        lm_head = w("lm_head.weight") if "lm_head.weight" in hf else embedding
        vocab = config["vocab_size"]
        padded = pad_vocab_size(vocab, tp)
        if padded != vocab:
            lm_head = torch.nn.functional.pad(lm_head, (0, 0, 0, padded - vocab), "constant", 0)
        out["lm_head.weight"] = _chunk(lm_head, tp, tp_rank)
        out["transformer.ln_f.weight"] = w("model.norm.weight").contiguous()
    return out
