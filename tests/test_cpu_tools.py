"""The CPU lane's stand-ins (convert_checkpoint, quantize, trtllm-build) and its runtime.

Real behaviour only: a tiny real Llama is generated once per module, converted
and built by running the stand-ins as the build does (``python -m ...``), and
the engine's generations are compared with ``transformers`` greedy decoding.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from llmbuild.toolchains.cpu.runtime import CpuEngine, EngineLimitError, NotACpuEngineError  # noqa: E402
from llmbuild.toolchains.trtllm import flags  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_HF = REPO / "models" / "tiny-llama" / "hf"
VERSION = flags.DEFAULT_VERSION


def run_tool(module: str, *argv, check: bool = True, version: str = VERSION) -> subprocess.CompletedProcess:
    env = dict(os.environ, LLMBUILD_TRTLLM_VERSION=version,
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", f"llmbuild.toolchains.cpu.{module}", *map(str, argv)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {argv} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def dir_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cpu_tools")


@pytest.fixture(scope="module")
def hf_dir(work) -> Path:
    out = work / "hf"
    shutil.copytree(TINY_HF, out)
    return out


@pytest.fixture(scope="module")
def hf_weights(hf_dir) -> dict:
    return load_file(str(hf_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def prompts(hf_dir) -> list[list[int]]:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    return [tok(t).input_ids for t in ("What is machine learning?", "The quick brown fox", "Hello")]


def _checkpoint(work, hf_dir, name, *argv) -> Path:
    out = work / name
    if not out.exists():
        run_tool("convert_checkpoint", "--model_dir", hf_dir, "--output_dir", out, *argv)
    return out


def _engine(work, ckpt, name, *argv) -> Path:
    out = work / name
    if not out.exists():
        run_tool("trtllm_build", "--checkpoint_dir", ckpt, "--output_dir", out, *argv)
    return out


@pytest.fixture(scope="module")
def ckpt_tp1(work, hf_dir):
    return _checkpoint(work, hf_dir, "ckpt_tp1")


@pytest.fixture(scope="module")
def ckpt_tp2(work, hf_dir):
    return _checkpoint(work, hf_dir, "ckpt_tp2", "--tp_size", "2")


@pytest.fixture(scope="module")
def engine_tp1(work, ckpt_tp1):
    return _engine(work, ckpt_tp1, "engine_tp1", "--max_batch_size", "4", "--lora_plugin", "auto")


@pytest.fixture(scope="module")
def engine_tp2(work, ckpt_tp2):
    return _engine(work, ckpt_tp2, "engine_tp2", "--max_batch_size", "4")


@pytest.fixture(scope="module")
def small_engine(work, ckpt_tp1):
    """An engine with tight limits, for the limit checks."""
    return CpuEngine.load(_engine(work, ckpt_tp1, "engine_small", "--max_batch_size", "2",
                                  "--max_input_len", "16", "--max_seq_len", "24"))


def hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=3)
    return out[0, len(prompt):].tolist()


# ------------------------------------------------------------------ checkpoint layout

def _qkv(t, heads_local, kv_local, head=16):
    q, k = heads_local * head, kv_local * head
    return t[:q], t[q:q + k], t[q + k:q + 2 * k]


def test_tp2_shards_concatenate_back_to_hf(ckpt_tp2, hf_weights):
    cfg = json.loads((ckpt_tp2 / "config.json").read_text())
    assert cfg["mapping"]["world_size"] == 2 and cfg["mapping"]["tp_size"] == 2
    assert sorted(p.name for p in ckpt_tp2.glob("rank*.safetensors")) == ["rank0.safetensors", "rank1.safetensors"]
    r = [load_file(str(ckpt_tp2 / f"rank{i}.safetensors")) for i in range(2)]
    hf = hf_weights
    for layer in range(2):
        t, h = f"transformer.layers.{layer}.", f"model.layers.{layer}."
        parts = [_qkv(x[t + "attention.qkv.weight"], heads_local=2, kv_local=1) for x in r]
        for i, proj in enumerate("qkv"):  # per head group, concatenated per rank
            assert torch.equal(torch.cat([p[i] for p in parts]), hf[h + f"self_attn.{proj}_proj.weight"])
        assert torch.equal(torch.cat([x[t + "attention.dense.weight"] for x in r], 1), hf[h + "self_attn.o_proj.weight"])
        assert torch.equal(torch.cat([x[t + "mlp.fc.weight"] for x in r]), hf[h + "mlp.gate_proj.weight"])
        assert torch.equal(torch.cat([x[t + "mlp.gate.weight"] for x in r]), hf[h + "mlp.up_proj.weight"])
        assert torch.equal(torch.cat([x[t + "mlp.proj.weight"] for x in r], 1), hf[h + "mlp.down_proj.weight"])
        for x in r:
            assert torch.equal(x[t + "input_layernorm.weight"], hf[h + "input_layernorm.weight"])
            assert torch.equal(x[t + "post_layernorm.weight"], hf[h + "post_attention_layernorm.weight"])
    assert torch.equal(torch.cat([x["lm_head.weight"] for x in r]), hf["lm_head.weight"])
    for x in r:
        assert torch.equal(x["transformer.vocab_embedding.weight"], hf["model.embed_tokens.weight"])
        assert torch.equal(x["transformer.ln_f.weight"], hf["model.norm.weight"])
        assert x["transformer.vocab_embedding.weight"].dtype == torch.float16


def test_kv_heads_are_duplicated_when_fewer_than_tp(work, hf_dir, hf_weights):
    ckpt = _checkpoint(work, hf_dir, "ckpt_tp4", "--tp_size", "4")
    hf = hf_weights
    for rank in range(4):
        x = load_file(str(ckpt / f"rank{rank}.safetensors"))
        q, k, v = _qkv(x["transformer.layers.0.attention.qkv.weight"], heads_local=1, kv_local=1)
        assert torch.equal(q, hf["model.layers.0.self_attn.q_proj.weight"][rank * 16:(rank + 1) * 16])
        kv_head = rank // 2  # 2 KV heads, each repeated tp/kv = 2 times
        assert torch.equal(k, hf["model.layers.0.self_attn.k_proj.weight"][kv_head * 16:(kv_head + 1) * 16])
        assert torch.equal(v, hf["model.layers.0.self_attn.v_proj.weight"][kv_head * 16:(kv_head + 1) * 16])


def test_lm_head_vocab_is_padded_to_a_multiple_of_tp(work, hf_dir):
    odd = work / "hf_vocab299"
    odd.mkdir()
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["vocab_size"] = 299
    (odd / "config.json").write_text(json.dumps(cfg))
    w = load_file(str(hf_dir / "model.safetensors"))
    w["lm_head.weight"] = w["lm_head.weight"][:299].clone()
    w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][:299].clone()
    save_file(w, str(odd / "model.safetensors"))
    ckpt = _checkpoint(work, odd, "ckpt_vocab299", "--tp_size", "2")
    heads = [load_file(str(ckpt / f"rank{i}.safetensors"))["lm_head.weight"] for i in range(2)]
    assert [h.shape[0] for h in heads] == [150, 150]
    full = torch.cat(heads)
    assert torch.equal(full[:299], w["lm_head.weight"]) and not full[299].any()
    assert load_file(str(ckpt / "rank0.safetensors"))["transformer.vocab_embedding.weight"].shape[0] == 299


def test_pp2_places_layers_embedding_and_head_on_the_right_ranks(work, hf_dir, hf_weights):
    ckpt = _checkpoint(work, hf_dir, "ckpt_pp2", "--pp_size", "2")
    assert json.loads((ckpt / "config.json").read_text())["mapping"]["world_size"] == 2
    r0, r1 = (load_file(str(ckpt / f"rank{i}.safetensors")) for i in range(2))
    assert "transformer.vocab_embedding.weight" in r0 and "transformer.vocab_embedding.weight" not in r1
    assert "lm_head.weight" in r1 and "transformer.ln_f.weight" in r1
    assert "lm_head.weight" not in r0 and "transformer.ln_f.weight" not in r0
    layers = lambda x: {n.split(".")[2] for n in x if n.startswith("transformer.layers.")}  # noqa: E731
    assert layers(r0) == layers(r1) == {"0"}  # renumbered from 0 on every stage
    assert torch.equal(r0["transformer.layers.0.mlp.fc.weight"], hf_weights["model.layers.0.mlp.gate_proj.weight"])
    assert torch.equal(r1["transformer.layers.0.mlp.fc.weight"], hf_weights["model.layers.1.mlp.gate_proj.weight"])


def test_dtype_cast_and_config_keys(work, hf_dir):
    ckpt = _checkpoint(work, hf_dir, "ckpt_bf16", "--dtype", "bfloat16")
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"
    assert load_file(str(ckpt / "rank0.safetensors"))["lm_head.weight"].dtype == torch.bfloat16
    for key in ("architecture", "dtype", "logits_dtype", "vocab_size", "max_position_embeddings", "hidden_size",
                "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_size", "hidden_act",
                "intermediate_size", "norm_epsilon", "position_embedding_type", "rotary_base", "rotary_scaling",
                "mapping", "quantization"):
        assert key in cfg, key
    assert set(cfg["mapping"]) >= {"world_size", "gpus_per_node", "cp_size", "tp_size", "pp_size",
                                   "moe_tp_size", "moe_ep_size"}
    assert cfg["quantization"]["quant_algo"] is None
    assert cfg["position_embedding_type"] == "rope_gpt_neox" and cfg["head_size"] == 16


# ------------------------------------------------------------------ reproducibility

def test_convert_and_build_are_byte_reproducible(work, hf_dir, ckpt_tp2):
    again = work / "ckpt_tp2_again"
    run_tool("convert_checkpoint", "--model_dir", hf_dir, "--output_dir", again, "--tp_size", "2")
    assert dir_bytes(again) == dir_bytes(ckpt_tp2)
    e1, e2 = work / "repro_e1", work / "repro_e2"
    for out in (e1, e2):
        run_tool("trtllm_build", "--checkpoint_dir", ckpt_tp2, "--output_dir", out, "--max_batch_size", "8")
    assert dir_bytes(e1) == dir_bytes(e2)
    assert sorted(dir_bytes(e1)) == ["config.json", "rank0.engine", "rank1.engine"]
    for p in list(again.iterdir()) + list(e1.iterdir()):
        assert p.stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ engine config

def test_engine_config_has_trtllm_build_derived_values(engine_tp1, ckpt_tp1):
    config = json.loads((engine_tp1 / "config.json").read_text())
    assert config["version"] == VERSION
    assert config["llmbuild_lane"] == "cpu" and "not a TensorRT engine" in config["llmbuild_note"]
    assert set(config) == {"version", "pretrained_config", "build_config", "llmbuild_lane", "llmbuild_note"}
    bc = config["build_config"]
    assert bc["max_seq_len"] == 2048  # deduced from max_position_embeddings
    assert bc["max_batch_size"] == 4 and bc["max_input_len"] == 1024
    assert bc["opt_num_tokens"] == 4  # min(max_batch_size * max_beam_width, max_num_tokens)
    assert bc["max_num_tokens"] == 8192
    assert bc["kv_cache_type"] == "PAGED" and bc["plugin_config"]["paged_kv_cache"] is True
    pc = bc["plugin_config"]
    assert pc["lora_plugin"] == "auto" and pc["dtype"] == "float16"
    assert pc["gpt_attention_plugin"] == "auto" and pc["gemm_plugin"] is None
    assert pc["nccl_plugin"] is None  # world size 1
    assert pc["paged_state"] is False
    assert bc["lora_config"]["max_lora_rank"] == 64 and bc["lora_config"]["lora_dir"] == []
    checkpoint = json.loads((ckpt_tp1 / "config.json").read_text())
    assert config["pretrained_config"] == checkpoint


def test_engine_config_derivation_rules(work, ckpt_tp1, ckpt_tp2):
    e = _engine(work, ckpt_tp1, "engine_rules", "--max_input_len", "4096", "--kv_cache_type", "continuous",
                "--gather_all_token_logits", "--remove_input_padding", "disable", "--max_batch_size", "3")
    bc = json.loads((e / "config.json").read_text())["build_config"]
    assert bc["max_input_len"] == 2048  # clipped to max_seq_len
    assert bc["kv_cache_type"] == "CONTINUOUS" and bc["plugin_config"]["paged_kv_cache"] is False
    assert bc["gather_context_logits"] and bc["gather_generation_logits"]
    assert bc["max_num_tokens"] == 3 * 2048 and bc["opt_num_tokens"] is None  # padding kept
    e2 = _engine(work, ckpt_tp2, "engine_rules_tp2", "--max_seq_len", "100", "--max_num_tokens", "16")
    bc2 = json.loads((e2 / "config.json").read_text())["build_config"]
    assert bc2["max_seq_len"] == 100 and bc2["max_input_len"] == 100
    assert bc2["max_num_tokens"] == 64  # raised to tokens_per_block with context FMHA
    assert bc2["plugin_config"]["nccl_plugin"] == "float16"  # world size 2: the model dtype
    proc = run_tool("trtllm_build", "--checkpoint_dir", ckpt_tp1, "--output_dir", work / "engine_bad",
                    "--multiple_profiles", "enable", "--opt_num_tokens", "8", check=False)
    assert proc.returncode == 1 and "opt_num_tokens" in proc.stderr and "Traceback" not in proc.stderr
    assert not (work / "engine_bad" / "config.json").exists()


# ------------------------------------------------------------------ runtime

@pytest.mark.parametrize("engine_fixture", ["engine_tp1", "engine_tp2"])
def test_generate_equals_transformers_greedy(request, engine_fixture, hf_model, prompts):
    engine = CpuEngine.load(request.getfixturevalue(engine_fixture))
    assert (engine.max_batch_size, engine.max_input_len, engine.max_seq_len, engine.vocab_size) == (4, 1024, 2048, 300)
    streamed: list[tuple[int, int]] = []
    out = engine.generate(prompts, [16, 9, 12], on_token=lambda i, t: streamed.append((i, t)))
    assert [len(o) for o in out] == [16, 9, 12]
    for prompt, got, n in zip(prompts, out, [16, 9, 12]):
        assert got == hf_greedy(hf_model, prompt, n)
    for i in range(3):
        assert [t for j, t in streamed if j == i] == out[i]
    assert streamed[:3] == [(0, out[0][0]), (1, out[1][0]), (2, out[2][0])]  # interleaved


def test_limits_raise_before_any_work(small_engine):
    calls = []
    cb = lambda i, t: calls.append(t)  # noqa: E731
    with pytest.raises(EngineLimitError, match="batch size"):
        small_engine.generate([[1, 2]] * 3, [1, 1, 1], on_token=cb)
    with pytest.raises(EngineLimitError, match=r"Prompt length \(17\) exceeds maximum input length \(16\)"):
        small_engine.generate([[1, 2], [5] * 17], [1, 1], on_token=cb)
    with pytest.raises(EngineLimitError, match="maximum sequence length"):
        small_engine.generate([[1] * 10], [15], on_token=cb)
    assert calls == []
    assert len(small_engine.generate([[1] * 10], [14])[0]) == 14
    with pytest.warns(UserWarning, match="changed to"):
        assert len(small_engine.generate([[1] * 10], [20], clamp_to_max_seq_len=True)[0]) == 14
    with pytest.raises(ValueError):
        small_engine.generate([[1, 300]], [1])  # outside the vocabulary
    assert issubclass(EngineLimitError, ValueError)


def test_bad_words_are_never_emitted(small_engine, prompts):
    prompt = prompts[0]
    base = small_engine.generate([prompt], [10])[0]
    out = small_engine.generate([prompt], [10], bad_words=[[[base[0]]]])[0]
    assert base[0] not in out and len(out) == 10
    pair = base[:2]
    out = small_engine.generate([prompt], [10], bad_words=[[pair]])[0]
    assert out[0] == base[0] and out[1] != base[1]
    assert all(out[i:i + 2] != pair for i in range(len(out) - 1))


def test_stop_words_are_kept_and_end_id_is_not(small_engine, prompts):
    prompt = prompts[0]
    base = small_engine.generate([prompt], [10])[0]
    stop = base[2:4]
    first = next(i for i in range(len(base) - 1) if base[i:i + 2] == stop)
    assert small_engine.generate([prompt], [10], stop_words=[[stop]])[0] == base[:first + 2]
    end = base[3]
    assert small_engine.generate([prompt], [10], end_id=end)[0] == base[:base.index(end)]
    # per-request lists; None for a request without words
    both = small_engine.generate([prompt, prompt], [10, 10], stop_words=[[stop], None])
    assert both == [base[:first + 2], base]


def test_runtime_refuses_a_directory_that_is_not_cpu_lane(work, engine_tp1):
    fake = work / "not_cpu_lane"
    fake.mkdir()
    config = json.loads((engine_tp1 / "config.json").read_text())
    del config["llmbuild_lane"]
    (fake / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotACpuEngineError):
        CpuEngine.load(fake)


def test_runtime_is_self_contained():
    path = REPO / "llmbuild" / "toolchains" / "cpu" / "runtime.py"
    allowed = {"torch", "safetensors", "transformers", "numpy"}
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            continue
        for name in names:
            top = name.split(".")[0]
            assert top in allowed or top in sys.stdlib_module_names, name


# ------------------------------------------------------------------ refusals and errors

def test_unsupported_options_exit_non_zero_with_the_cpu_lane_message(work, hf_dir, ckpt_tp1):
    cases = [
        ("convert_checkpoint", "--model_dir", hf_dir, "--output_dir", work / "x1", "--use_weight_only",
         "--weight_only_precision", "int8"),
        ("convert_checkpoint", "--model_dir", hf_dir, "--output_dir", work / "x2", "--smoothquant", "0.5"),
        ("quantize", "--model_dir", hf_dir, "--output_dir", work / "x3", "--qformat", "fp8"),
        ("trtllm_build", "--checkpoint_dir", ckpt_tp1, "--output_dir", work / "x4",
         "--speculative_decoding_mode", "medusa"),
    ]
    for module, *argv in cases:
        proc = run_tool(module, *argv, check=False)
        assert proc.returncode == 2, (module, argv, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "is not supported on the CPU lane (llmbuild stand-in); build on the GPU lane" \
            in lines[0], proc.stderr
    for n in range(1, 5):
        assert not (work / f"x{n}").exists()


def test_bad_input_is_one_line_without_traceback(work, hf_dir):
    proc = run_tool("convert_checkpoint", "--model_dir", hf_dir, "--output_dir", work / "y1", "--tp_size", "3",
                    check=False)
    assert proc.returncode == 1 and "divisible by tp_size" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_tool("convert_checkpoint", "--model_dir", hf_dir, "--output_dir", work / "y2", "--tp_size", "2",
                    "--moe_tp_size", "2", "--moe_ep_size", "2", check=False)
    assert proc.returncode == 1 and "moe_tp_size * moe_ep_size" in proc.stderr
    proc = run_tool("convert_checkpoint", "--model_dir", hf_dir, "--cp_size", "2", check=False, version="0.13.0")
    assert proc.returncode == 2 and "no --cp_size" in proc.stderr  # flag tables of the emulated version
    proc = run_tool("trtllm_build", "--checkpoint_dir", work / "nowhere", "--output_dir", work / "y3", check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    proc = run_tool("trtllm_build", "--checkpoint_dir", work, "--paged_kv_cache", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_quantize_full_prec_writes_the_checkpoint_layout(work, hf_dir, ckpt_tp2):
    out = work / "quant_full_prec"
    run_tool("quantize", "--model_dir", hf_dir, "--output_dir", out, "--qformat", "full_prec", "--tp_size", "2")
    assert dir_bytes(out) == dir_bytes(ckpt_tp2)


# ------------------------------------------------------------------ Mixtral

def test_mixtral_moe_split_and_generation(work):
    from transformers import MixtralConfig, MixtralForCausalLM

    hf = work / "mixtral_hf"
    torch.manual_seed(0)
    model = MixtralForCausalLM(MixtralConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=32,
        num_local_experts=4, num_experts_per_tok=2, num_hidden_layers=2, vocab_size=300,
        max_position_embeddings=256))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    model.to(torch.float16).save_pretrained(str(hf))
    src = load_file(str(hf / "model.safetensors"))
    ckpt = _checkpoint(work, hf, "mixtral_ckpt", "--tp_size", "4", "--moe_tp_size", "2", "--moe_ep_size", "2")
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["moe"]["num_experts"] == 4 and cfg["moe"]["top_k"] == 2 and cfg["hidden_act"] == "swiglu"
    r3 = load_file(str(ckpt / "rank3.safetensors"))  # tp_rank 3: moe_ep_rank 1, moe_tp_rank 1
    fc = r3["transformer.layers.0.mlp.fc.weight"]
    assert fc.shape == (2, 2 * 16, 64)
    e = "model.layers.0.block_sparse_moe.experts.2."  # first expert of ep rank 1
    assert torch.equal(fc[0, :16], src[e + "w3.weight"][16:])  # w3 first, second moe_tp half
    assert torch.equal(fc[0, 16:], src[e + "w1.weight"][16:])
    assert torch.equal(r3["transformer.layers.0.mlp.proj.weight"][0], src[e + "w2.weight"][:, 16:])
    assert r3["transformer.layers.0.mlp.router.weight"].dtype == torch.float32
    engine = CpuEngine.load(_engine(work, ckpt, "mixtral_engine", "--max_batch_size", "2"))
    ref = MixtralForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    for prompt in ([1, 5, 9, 200], [1, 42]):
        assert engine.generate([prompt], [10])[0] == hf_greedy(ref, prompt, 10)
