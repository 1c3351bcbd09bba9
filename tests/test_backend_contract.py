"""The repository behaves like tensorrtllm_backend v0.16.0 to every client.

Driven by the behaviour table (llmbuild/triton/backend/behaviour-v0.16.0.json):
the generated configs must declare exactly its tensors, and every input and
output row has a request through a real Triton on the CPU lane.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from llmbuild.triton import behaviour
from llmbuild.triton.backend import BACKEND_VERSION
from llmbuild.triton.build import build_configs
from llmbuild.triton.options import ServingOptions

TABLE = behaviour.load(BACKEND_VERSION)
ENGINE_CONFIG = {"build_config": {"max_batch_size": 4, "max_beam_width": 2, "max_input_len": 32, "max_seq_len": 64},
                 "pretrained_config": {"mapping": {"world_size": 1}}}


# --------------------------------------------------------------------------------------------
# The table itself, and the configs against it (fast: no server)
# --------------------------------------------------------------------------------------------


def test_the_table_loads_and_names_its_sources():
    assert BACKEND_VERSION in behaviour.versions()
    assert set(TABLE.models) == {"preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls"}
    assert all(TABLE.sources[key] for key in TABLE.sources)
    assert TABLE.error_text("tensorrt_llm.prompt_too_long", prompt=70, max_input_len=48, request_id=1) == (
        "Executor failed process requestId 1 due to the following error: Encountered an error when fetching "
        "new request: Prompt length (70) exceeds maximum input length (48).")


def test_a_broken_table_is_one_clear_line(tmp_path, monkeypatch):
    import json

    data = json.loads(TABLE.path.read_text())
    data["models"]["tensorrt_llm"]["inputs"][0]["error"] = "tensorrt_llm.nope"
    (tmp_path / "behaviour-v9.9.9.json").write_text(json.dumps(dict(data, backend_version="9.9.9")))
    monkeypatch.setattr(behaviour, "DATA_DIR", tmp_path)
    with pytest.raises(behaviour.BehaviourError, match=r"^behaviour-v9\.9\.9\.json: no error 'tensorrt_llm\.nope'$"):
        behaviour.load("9.9.9")
    with pytest.raises(behaviour.BehaviourError, match="no behaviour table for tensorrtllm_backend 1.0.0"):
        behaviour.load("1.0.0")


def _declared(tensor, is_input: bool) -> dict:
    row = {"dtype": mc.DataType.Name(tensor.data_type)[len("TYPE_"):], "dims": tuple(tensor.dims)}
    if is_input:
        row.update(optional=tensor.optional, reshape=tensor.HasField("reshape"), ragged=tensor.allow_ragged_batch)
    return row


@pytest.mark.parametrize("lane", ["cpu", "gpu"])
def test_generated_configs_declare_exactly_the_tables_tensors(lane):
    configs = build_configs(ServingOptions(), ENGINE_CONFIG, lane=lane)
    for name, contract in TABLE.models.items():
        config = configs[name]
        assert [t.name for t in config.input] == list(contract.inputs), name
        assert [t.name for t in config.output] == list(contract.outputs), name
        for t in config.input:
            spec = contract.inputs[t.name]
            assert _declared(t, True) == {"dtype": spec.dtype, "dims": spec.dims, "optional": spec.optional,
                                          "reshape": spec.reshape, "ragged": spec.ragged}, (name, t.name)
        for t in config.output:
            spec = contract.outputs[t.name]
            assert _declared(t, False) == {"dtype": spec.dtype, "dims": spec.dims}, (name, t.name)


# --------------------------------------------------------------------------------------------
# Coverage: every row of the table has a test through a real Triton
# --------------------------------------------------------------------------------------------

COVERED: set[tuple[str, str, str]] = set()


def covers(*keys: str):
    """Mark a test as exercising table rows: "model:in:NAME", "model:out:NAME" or "rule:NAME"."""
    def mark(test):
        for key in keys:
            model, kind, name = key.split(":") if key.count(":") == 2 else ("rule", "rule", key.split(":")[1])
            COVERED.add((model, kind, name))
        return test
    return mark


def _rows(kind: str, select=lambda spec: True) -> list[tuple[str, str]]:
    rows = []
    for model, contract in TABLE.models.items():
        specs = contract.inputs if kind == "in" else contract.outputs
        rows += [(model, name) for name, spec in specs.items() if select(spec)]
    return rows


def _id(row) -> str:
    return ".".join(row)


NO_OP_INPUTS = _rows("in", lambda s: s.cpu_lane == "no-op")
REFUSED_INPUTS = _rows("in", lambda s: s.cpu_lane == "refused")
MAPPED_INPUTS = [(m, n) for m, n in _rows("in", lambda s: s.cpu_lane == "honoured" and s.maps_to)
                 if m in ("ensemble", "tensorrt_llm_bls")]
FLAG_OUTPUTS = _rows("out", lambda s: s.returned == "always" or s.condition_input is not None)
NEVER_OUTPUTS = _rows("out", lambda s: s.returned == "never")
COVERED.update((m, "in", n) for m, n in NO_OP_INPUTS + REFUSED_INPUTS + MAPPED_INPUTS)
COVERED.update((m, "out", n) for m, n in FLAG_OUTPUTS + NEVER_OUTPUTS)


def test_every_row_of_the_table_has_a_contract_test():
    rows = {(m, "in", n) for m, c in TABLE.models.items() for n in c.inputs}
    rows |= {(m, "out", n) for m, c in TABLE.models.items() for n in c.outputs}
    rows |= {("rule", "rule", name) for name in ("clipping", "prompt", "beam_width", "batching", "streaming",
                                                  "stop", "cancellation", "entry_models")}
    missing = sorted(":".join(r) for r in rows - COVERED)
    assert not missing, f"table rows without a contract test: {missing}"


# --------------------------------------------------------------------------------------------
# One built tiny model, one Triton per repository mode
# --------------------------------------------------------------------------------------------

BUILD = """\
[checkpoint.checkpoint]
source = "hf"

# beam search, every logit gathered, small KV blocks (reuse shows on short prompts)
[engine.gather]
checkpoint = ":checkpoint"
max_batch_size = 4
max_input_len = 64
max_seq_len = 4096
max_beam_width = 2
gather_all_token_logits = true
use_paged_context_fmha = true
tokens_per_block = 8

[engine.plain]
checkpoint = ":checkpoint"
max_batch_size = 4
max_input_len = 64
max_seq_len = 4096

[repository.blocking]
engine = ":gather"
enable_kv_cache_reuse = true

[repository.streaming]
engine = ":plain"
decoupled = true
accumulate_tokens = true
"""
MAX_INPUT_LEN, MAX_SEQ_LEN, VOCAB = 64, 4096, 300
PROMPT = "What is machine learning?"


@pytest.fixture(scope="module")
def built(tmp_path_factory, untrained_tiny):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("contract")
    ws = Workspace(root / "ws", root / "cache")
    ws.add_model("tiny", untrained_tiny, BUILD)
    ws.doit()
    return ws.root / "dist" / "models" / "tiny"


def _serve(built, triton_env, name):
    from llmbuild.toolchains.cpu.server import TritonServer

    return TritonServer(built / name, triton_env, log_path=built / f"{name}.tritonserver.log", ready_timeout=180)


@pytest.fixture(scope="module")
def blocking(built, triton_env):
    """The non-decoupled repository (engine with beams and gathered logits, KV reuse on)."""
    with _serve(built, triton_env, "blocking") as server:
        yield server


@pytest.fixture(scope="module")
def streaming(built, triton_env):
    """The decoupled repository (plain engine, accumulate_tokens)."""
    with _serve(built, triton_env, "streaming") as server:
        yield server


@pytest.fixture(scope="module")
def tokenizer(built):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(built / "blocking" / "preprocessing" / "1" / "tokenizer"))


@pytest.fixture(scope="module")
def engine(built):
    """The same engine in this process: what the server's tokens must equal."""
    import torch

    from llmbuild.toolchains.cpu.runtime import CpuEngine

    torch.set_num_threads(1)
    return CpuEngine.load(built / "blocking" / "tensorrt_llm" / "1" / "engine")


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


class Failed(Exception):
    """The server answered with an error (its text is the message)."""


def _inputs(values: dict, grpc: bool = True):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import np_to_triton_dtype

    lib = grpcclient if grpc else httpclient
    tensors = []
    for name, value in values.items():
        value = np.asarray(value)
        t = lib.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        t.set_data_from_numpy(value)
        tensors.append(t)
    return tensors


def _result(result) -> dict:
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


def infer(server, model: str, values: dict, *, outputs=None, request_id: str = "", timeout: float = 120) -> dict:
    """One gRPC /infer call (NVIDIA's clients' way); Failed with the server's text on an error."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}") as client:
        requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
        try:
            return _result(client.infer(model, _inputs(values), outputs=requested, request_id=request_id,
                                        client_timeout=timeout))
        except InferenceServerException as e:
            raise Failed(e.message()) from None


def infer_http(server, model: str, values: dict) -> dict:

    with server.client() as client:
        result = client.infer(model, _inputs(values, grpc=False))
        return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


class Stream:
    """A gRPC bidirectional stream (decoupled models): collect each request's responses."""

    def __init__(self, server):
        import queue

        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        self.queue: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.queue.put((result, error)))

    def send(self, model: str, values: dict, request_id: str = "", outputs=None, wait: bool = False):
        """Send a request; with ``wait``, return once tensorrt_llm has it."""
        import tritonclient.grpc as grpcclient

        requested = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
        before = _executions(self.client) if wait else 0
        self.client.async_stream_infer(model, _inputs(values), request_id=request_id, outputs=requested,
                                       enable_empty_final_response=True)
        deadline = time.monotonic() + 30
        while wait and _executions(self.client) == before and time.monotonic() < deadline:
            time.sleep(0.02)

    def responses(self, count: int = 1, timeout: float = 120, errors_final: bool = True) -> list:
        """Responses until `count` final flags: dicts of outputs plus "id" and "final"; Failed for errors.

        An error sent with the final flag arrives without it: ``errors_final`` counts it as final
        (tensorrt_llm does so; the BLS sends an empty final response after its error).
        """
        out, finals = [], 0
        while finals < count:
            result, error = self.queue.get(timeout=timeout)
            if error is not None:
                out.append(Failed(error.message()))
                finals += errors_final
                continue
            response = result.get_response()
            final = response.parameters["triton_final_response"].bool_param
            values = _result(result)
            values["id"] = response.id
            values["final"] = final
            finals += final
            out.append(values)
        return out

    def close(self, cancel: bool = False):
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def llm(ids, max_new: int, **extra) -> dict:
    """tensorrt_llm inputs for rows of prompt ids (NVIDIA's client: [B, L] + [B, 1] scalars)."""
    rows = ids if isinstance(ids[0], list) else [ids]
    width = max(len(r) for r in rows)
    padded = np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int32)
    values = {"input_ids": padded, "input_lengths": np.array([[len(r)] for r in rows], np.int32),
              "request_output_len": np.full((len(rows), 1), max_new, np.int32)}
    for name, value in extra.items():
        value = np.asarray(value)
        values[name] = value if value.ndim >= 2 else np.full((len(rows), 1), value, dtype=value.dtype)
    return values


def text(prompts, max_tokens: int, **extra) -> dict:
    """ensemble / BLS inputs (end_to_end_test.py: [[prompt]] and [[n]])."""
    prompts = [prompts] if isinstance(prompts, str) else prompts
    values = {"text_input": np.array([[p.encode()] for p in prompts], dtype=object),
              "max_tokens": np.full((len(prompts), 1), max_tokens, np.int32)}
    for name, value in extra.items():
        value = np.asarray(value)
        if value.dtype.kind in "US":
            value = value.astype(object)
        values[name] = value if value.ndim >= 2 else np.full((len(prompts), 1), value, dtype=value.dtype)
    return values


def error_pattern(ref: str, via: str | None = None, **fields) -> re.Pattern:
    """The CPU lane's text of a table error; request ids match any number."""
    message = re.escape(TABLE.error_text(ref, request_id="\0", **fields)).replace("\0", r"\d+")
    if via == "ensemble":
        message = re.escape("in ensemble 'ensemble', ") + message
    return re.compile(message)


def generated(tokens, prompt_len: int = 0) -> list[int]:
    return [int(t) for t in np.asarray(tokens).reshape(-1)[prompt_len:] if t >= 0]


#: Table dtype -> numpy dtype.
_NP = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT64": np.uint64, "INT32": np.int32, "INT64": np.int64,
       "FP16": np.float16, "FP32": np.float32, "STRING": np.object_}


def i32(value) -> np.ndarray:
    return np.asarray(value, dtype=np.int32)


def flag(value: bool = True) -> np.ndarray:
    return np.array([[value]], dtype=bool)


def strings(rows) -> np.ndarray:
    return np.array([[s.encode() for s in row] for row in rows], dtype=object)


# --------------------------------------------------------------------------------------------
# NVIDIA's published clients, unmodified in spirit, against the non-decoupled repository
# --------------------------------------------------------------------------------------------


@covers("preprocessing:in:QUERY", "preprocessing:in:REQUEST_OUTPUT_LEN", "preprocessing:out:INPUT_ID",
        "preprocessing:out:REQUEST_INPUT_LEN", "preprocessing:out:REQUEST_OUTPUT_LEN",
        "preprocessing:out:DECODER_INPUT_ID", "preprocessing:out:OUT_END_ID", "preprocessing:out:OUT_PAD_ID",
        "tensorrt_llm:in:input_ids", "tensorrt_llm:in:input_lengths", "tensorrt_llm:in:request_output_len",
        "tensorrt_llm:in:return_log_probs", "tensorrt_llm:in:return_context_logits",
        "tensorrt_llm:in:return_generation_logits", "tensorrt_llm:out:output_ids",
        "tensorrt_llm:out:sequence_length", "tensorrt_llm:out:cum_log_probs", "tensorrt_llm:out:output_log_probs",
        "tensorrt_llm:out:context_logits", "tensorrt_llm:out:generation_logits",
        "postprocessing:in:TOKENS_BATCH", "postprocessing:in:SEQUENCE_LENGTH", "postprocessing:out:OUTPUT",
        "ensemble:out:text_output", "tensorrt_llm_bls:out:text_output", "rule:entry_models")
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_end_to_end_test_py_manual_chain_equals_ensemble_and_bls(blocking, protocol):
    """tools/inflight_batcher_llm/end_to_end_test.py test_functionality, with log probs and logits."""
    call = infer if protocol == "grpc" else infer_http
    for prompt, n in ((PROMPT, 12), ("Hello", 7)):
        pre = call(blocking, "preprocessing", {"QUERY": strings([[prompt]]), "BAD_WORDS_DICT": strings([[""]]),
                                               "STOP_WORDS_DICT": strings([[""]]), "REQUEST_OUTPUT_LEN": i32([[n]])})
        flags = {"return_log_probs": flag(), "return_context_logits": flag(), "return_generation_logits": flag()}
        out = call(blocking, "tensorrt_llm", {
            "input_ids": pre["INPUT_ID"], "decoder_input_ids": pre["DECODER_INPUT_ID"],
            "input_lengths": pre["REQUEST_INPUT_LEN"], "request_output_len": pre["REQUEST_OUTPUT_LEN"],
            "end_id": pre["OUT_END_ID"], "pad_id": pre["OUT_PAD_ID"], **flags})
        post = call(blocking, "postprocessing", {"TOKENS_BATCH": out["output_ids"].astype(np.int32),
                                                 "SEQUENCE_LENGTH": out["sequence_length"]})
        length = int(out["sequence_length"][0, 0])
        assert out["output_ids"].shape == (1, 1, length) and 0 < length <= n  # exclude_input_in_output (llama.md)
        assert post["OUTPUT"].shape == (1,) and isinstance(post["OUTPUT"][0], bytes)
        assert out["cum_log_probs"].shape == (1, 1) and out["output_log_probs"].shape == (1, 1, length)
        assert out["cum_log_probs"][0, 0] == pytest.approx(out["output_log_probs"].sum(), rel=1e-5)
        assert out["context_logits"].shape == (1, pre["INPUT_ID"].size, VOCAB)
        assert out["generation_logits"].shape == (1, 1, n, VOCAB)
        entry = {"text_input": strings([[prompt]]), "max_tokens": i32([[n]]), "bad_words": strings([[""]]),
                 "stop_words": strings([[""]]), **flags}
        ensemble = call(blocking, "ensemble", entry)
        assert ensemble["text_output"].shape == (1,) and ensemble["text_output"][0] == post["OUTPUT"][0]
        assert np.array_equal(ensemble["cum_log_probs"], out["cum_log_probs"])
        assert np.array_equal(ensemble["output_log_probs"], out["output_log_probs"])
        assert np.allclose(ensemble["context_logits"], out["context_logits"], atol=1e-2)
        assert ensemble["generation_logits"].shape == (1, 1, n, VOCAB)
        bls = call(blocking, "tensorrt_llm_bls", entry)
        assert bls["text_output"].shape == (1,) and bls["text_output"][0] == post["OUTPUT"][0]
        assert bls["context_logits"].shape == (1, pre["INPUT_ID"].size, VOCAB)


@covers("tensorrt_llm:in:exclude_input_in_output", "tensorrt_llm:in:end_id", "tensorrt_llm:in:stop_words_list",
        "tensorrt_llm:in:bad_words_list", "tensorrt_llm:in:embedding_bias")
def test_tensorrt_llm_words_end_id_bias_and_exclude_input(blocking, engine):
    prompt = [1, 45, 67, 89, 23]
    base = generated(infer(blocking, "tensorrt_llm", llm(prompt, 10))["output_ids"])
    assert base == engine.generate([prompt], [10])[0] and len(base) == 10
    whole = infer(blocking, "tensorrt_llm", llm(prompt, 10, exclude_input_in_output=flag(False)))
    assert generated(whole["output_ids"]) == prompt + base and whole["sequence_length"].tolist() == [[15]]
    end = infer(blocking, "tensorrt_llm", llm(prompt, 10, end_id=i32(base[3])))
    assert generated(end["output_ids"]) == base[: base.index(base[3])]  # end_id is not part of the output
    stop = [base[2], base[3]]
    words = i32([[[7, 8, 9] + stop, [1, 3, 5, -1, -1]]])  # [1, 2, N]: "7", "8 9", stop
    out = infer(blocking, "tensorrt_llm", llm(prompt, 10, stop_words_list=words))
    assert generated(out["output_ids"]) == base[:4]  # the stop sequence stays in the output
    out = infer(blocking, "tensorrt_llm", llm(prompt, 10, bad_words_list=i32([[[base[0]], [1]]])))
    assert base[0] not in generated(out["output_ids"])
    bias = np.zeros((1, VOCAB), np.float32)
    bias[0, 42] = 100.0
    out = infer(blocking, "tensorrt_llm", llm(prompt, 4, embedding_bias=bias))
    assert generated(out["output_ids"]) == [42] * 4
    empty = infer(blocking, "tensorrt_llm", llm(prompt, 10, embedding_bias=np.zeros((1, 0), np.float32)))
    assert generated(empty["output_ids"]) == base  # [B, 0]: no bias, as the ensemble sends without words


SAMPLING_CASES = {
    # name: (tensorrt_llm inputs, runtime Sampling, the case it must differ from (None: the same as greedy))
    "top_k": ({"runtime_top_k": i32([[20]])}, dict(top_k=20), "greedy"),
    "top_k_seed": ({"runtime_top_k": i32([[20]]), "random_seed": np.array([[7]], np.uint64)},
                   dict(top_k=20, seed=7), "top_k"),
    "top_p": ({"runtime_top_p": np.array([[0.8]], np.float32)}, dict(top_p=0.8), "greedy"),
    "top_p_decay": ({"runtime_top_p": np.array([[0.9]], np.float32),
                     "runtime_top_p_decay": np.array([[0.5]], np.float32),
                     "runtime_top_p_min": np.array([[0.05]], np.float32),
                     "runtime_top_p_reset_ids": i32([[90]])},
                    dict(top_p=0.9, top_p_decay=0.5, top_p_min=0.05, top_p_reset_id=90), "top_p"),
    # the tiny model's distribution is nearly flat: a low temperature is what shows
    "temperature": ({"runtime_top_k": i32([[20]]), "temperature": np.array([[0.05]], np.float32)},
                    dict(top_k=20, temperature=0.05), "top_k"),
    "top_k_1_is_greedy": ({"runtime_top_k": i32([[1]]), "runtime_top_p": np.array([[0.0]], np.float32)},
                          dict(top_k=1), None),
    "repetition": ({"repetition_penalty": np.array([[3.0]], np.float32)}, dict(repetition_penalty=3.0), "greedy"),
    "presence": ({"presence_penalty": np.array([[5.0]], np.float32)}, dict(presence_penalty=5.0), "greedy"),
    "frequency": ({"frequency_penalty": np.array([[5.0]], np.float32)}, dict(frequency_penalty=5.0), "greedy"),
}


@covers("tensorrt_llm:in:runtime_top_k", "tensorrt_llm:in:runtime_top_p", "tensorrt_llm:in:runtime_top_p_min",
        "tensorrt_llm:in:runtime_top_p_decay", "tensorrt_llm:in:runtime_top_p_reset_ids",
        "tensorrt_llm:in:temperature", "tensorrt_llm:in:random_seed", "tensorrt_llm:in:repetition_penalty",
        "tensorrt_llm:in:presence_penalty", "tensorrt_llm:in:frequency_penalty")
@pytest.mark.parametrize("case", sorted(SAMPLING_CASES))
def test_sampling_follows_the_knobs_and_is_reproducible_per_seed(blocking, engine, case):
    from llmbuild.toolchains.cpu.runtime import Generation, Sampling

    values, knobs, other = SAMPLING_CASES[case]
    prompt = [1, 45, 67, 89, 23]

    def expect(knobs):
        gen = Generation(engine, prompt, 16, Sampling(**knobs))
        while not gen.finished:
            gen.step()
        return gen.beams[0].tokens

    first = generated(infer(blocking, "tensorrt_llm", llm(prompt, 16, **values))["output_ids"])
    again = generated(infer(blocking, "tensorrt_llm", llm(prompt, 16, **values))["output_ids"])
    assert first == again == expect(knobs)  # deterministic for a seed (default seed 0)
    greedy = engine.generate([prompt], [16])[0]
    if other is None:
        assert first == greedy
    else:
        assert first != (greedy if other == "greedy" else expect(SAMPLING_CASES[other][1]))


@covers("preprocessing:in:BAD_WORDS_DICT", "preprocessing:in:STOP_WORDS_DICT", "preprocessing:in:END_ID",
        "preprocessing:in:PAD_ID", "preprocessing:in:DECODER_QUERY", "preprocessing:in:EMBEDDING_BIAS_WORDS",
        "preprocessing:in:EMBEDDING_BIAS_WEIGHTS", "preprocessing:in:PROMPT_TABLE_EXTRA_ID",
        "preprocessing:out:BAD_WORDS_IDS", "preprocessing:out:STOP_WORDS_IDS", "preprocessing:out:EMBEDDING_BIAS",
        "preprocessing:out:REQUEST_DECODER_INPUT_LEN", "preprocessing:out:OUT_PROMPT_TABLE_EXTRA_IDS")
def test_preprocessing_packs_words_ids_and_bias_like_the_stock_model(blocking, tokenizer):
    out = infer(blocking, "preprocessing", {
        "QUERY": strings([[PROMPT], ["Hello"]]), "REQUEST_OUTPUT_LEN": i32([[5], [6]]),
        "BAD_WORDS_DICT": strings([["the dog", ""], ["", ""]]),
        "STOP_WORDS_DICT": strings([["Paris", "cat"], ["dog", ""]])})
    first, second = tokenizer.encode(PROMPT), tokenizer.encode("Hello")
    assert first[0] == tokenizer.bos_token_id  # add_special_tokens (default true)
    assert out["INPUT_ID"].dtype == np.int32 and out["INPUT_ID"].tolist() == [
        first, second + [tokenizer.pad_token_id] * (len(first) - len(second))]  # right-padded with the pad id
    assert out["REQUEST_INPUT_LEN"].tolist() == [[len(first)], [len(second)]]
    assert out["REQUEST_OUTPUT_LEN"].tolist() == [[5], [6]]
    assert out["OUT_END_ID"].tolist() == [[tokenizer.eos_token_id]] * 2
    assert out["OUT_PAD_ID"].tolist() == [[tokenizer.pad_token_id]] * 2
    assert out["DECODER_INPUT_ID"].tolist() == [[tokenizer.pad_token_id]] * 2
    assert out["REQUEST_DECODER_INPUT_LEN"].tolist() == [[1]] * 2
    the_dog = tokenizer.encode("the dog", add_special_tokens=False)
    bad = out["BAD_WORDS_IDS"]
    assert bad.shape == (2, 2, len(the_dog))
    assert bad[0].tolist() == [the_dog, [len(the_dog)] + [-1] * (len(the_dog) - 1)]
    assert bad[1].tolist() == [[0] * len(the_dog), [-1] * len(the_dog)]  # ids padded with 0, offsets with -1
    paris, cat, dog = (tokenizer.encode(w, add_special_tokens=False) for w in ("Paris", "cat", "dog"))
    stop = out["STOP_WORDS_IDS"]
    assert stop[0, 0, : len(paris + cat)].tolist() == paris + cat
    assert stop[0, 1, :2].tolist() == [len(paris), len(paris) + len(cat)] and stop[1, 1, 0] == len(dog)
    assert out["EMBEDDING_BIAS"].shape == (2, 0) and out["EMBEDDING_BIAS"].dtype == np.float32
    assert "OUT_PROMPT_TABLE_EXTRA_IDS" not in out
    for name in [n for n, s in TABLE.models["preprocessing"].outputs.items() if s.returned == "always"]:
        assert out[name].dtype == np.dtype(_NP[TABLE.models["preprocessing"].outputs[name].dtype]), name

    out = infer(blocking, "preprocessing", {
        "QUERY": strings([["Hello"]]), "REQUEST_OUTPUT_LEN": i32([[4]]), "BAD_WORDS_DICT": strings([[""]]),
        "END_ID": i32([[7]]), "PAD_ID": i32([[0]]), "DECODER_QUERY": strings([["dog"]]),
        "EMBEDDING_BIAS_WORDS": strings([["dog"]]), "EMBEDDING_BIAS_WEIGHTS": np.array([[2.5]], np.float32),
        "PROMPT_TABLE_EXTRA_ID": np.array([[9]], np.uint64)})
    assert out["BAD_WORDS_IDS"].tolist() == [[[0], [-1]]]  # given but empty: [B, 2, 1]
    assert out["STOP_WORDS_IDS"].shape == (1, 2, 0)  # absent: [B, 2, 0]
    assert out["OUT_END_ID"].tolist() == [[7]] and out["OUT_PAD_ID"].tolist() == [[0]]
    assert out["DECODER_INPUT_ID"].tolist() == [tokenizer.encode("dog")]
    assert out["REQUEST_DECODER_INPUT_LEN"].tolist() == [[len(tokenizer.encode("dog"))]]
    bias = out["EMBEDDING_BIAS"]
    assert bias.shape == (1, len(tokenizer.vocab))
    for token in tokenizer.encode("dog"):  # with special tokens, as the stock model encodes bias words
        assert bias[0, token] == 2.5
    assert bias.sum() == pytest.approx(2.5 * len(tokenizer.encode("dog")))
    extra = out["OUT_PROMPT_TABLE_EXTRA_IDS"]
    assert extra.dtype == np.uint64 and extra.shape == out["INPUT_ID"].shape and not extra.any()  # text only


@covers("preprocessing:in:EMBEDDING_BIAS_WORDS", "preprocessing:in:EMBEDDING_BIAS_WEIGHTS")
def test_preprocessing_assertions_fail_the_request_with_the_stock_text(blocking):
    with pytest.raises(Failed) as err:
        infer(blocking, "preprocessing", {
            "QUERY": strings([["Hello"]]), "REQUEST_OUTPUT_LEN": i32([[4]]),
            "EMBEDDING_BIAS_WORDS": strings([["dog", "cat"]]),
            "EMBEDDING_BIAS_WEIGHTS": np.array([[2.5]], np.float32)})
    assert TABLE.error_text("preprocessing.bias_mismatch", instance="preprocessing_0_0") in str(err.value)
    with pytest.raises(Failed) as err:
        infer(blocking, "ensemble", text("Hello", 4, embedding_bias_words=strings([["dog", "cat"]]),
                                         embedding_bias_weights=np.array([[2.5]], np.float32)))
    assert str(err.value).startswith("in ensemble 'ensemble', ")
    assert TABLE.error_text("preprocessing.bias_mismatch", instance="preprocessing_0_0") in str(err.value)


@covers("postprocessing:in:TOKENS_BATCH", "postprocessing:in:SEQUENCE_LENGTH", "postprocessing:out:OUTPUT")
def test_postprocessing_returns_one_flat_string_per_beam(blocking, tokenizer):
    ids = tokenizer.encode("The capital of France is Paris.", add_special_tokens=False)
    tokens = np.full((2, 2, len(ids) + 2), -1, dtype=np.int32)
    tokens[0, 0, : len(ids)] = ids
    tokens[0, 1, :3] = ids[:3]
    tokens[1, 0, :2] = [tokenizer.bos_token_id, ids[0]]
    tokens[1, 1, :1] = ids[:1]
    out = infer(blocking, "postprocessing", {"TOKENS_BATCH": tokens,
                                             "SEQUENCE_LENGTH": i32([[len(ids), 3], [2, 1]])})["OUTPUT"]
    assert out.shape == (4,)  # [B * beams], row major, not [B, beams]
    assert [t.decode() for t in out] == [tokenizer.decode(ids), tokenizer.decode(ids[:3]),
                                        tokenizer.decode(ids[:1]), tokenizer.decode(ids[:1])]
    assert out[0].decode() == "The capital of France is Paris."  # skip_special_tokens drops <s>



def _expected(engine, prompt, n, **knobs):
    from llmbuild.toolchains.cpu.runtime import Generation, Sampling

    end_id = knobs.pop("end_id", None)
    gen = Generation(engine, prompt, n, Sampling(**knobs), end_id=end_id)
    while not gen.finished:
        gen.step()
    return gen


@covers("tensorrt_llm:in:beam_width", "tensorrt_llm:in:len_penalty", "tensorrt_llm:in:early_stopping",
        "tensorrt_llm:in:beam_search_diversity_rate", "tensorrt_llm:in:num_return_sequences",
        "tensorrt_llm:in:min_length", "rule:beam_width")
def test_beam_search_min_length_and_the_beam_limit(blocking, engine):
    prompt = [1, 45, 67, 89, 23]
    plain = _expected(engine, prompt, 12, beam_width=2)
    cases = [
        ({"beam_width": i32([[2]])}, plain),
        ({"beam_width": i32([[2]]), "beam_search_diversity_rate": np.array([[3.0]], np.float32)},
         _expected(engine, prompt, 12, beam_width=2, diversity_rate=3.0)),
        ({"beam_width": i32([[2]]), "len_penalty": np.array([[2.0]], np.float32), "early_stopping": flag(False),
          "end_id": i32([[plain.beams[1].tokens[4]]])},
         _expected(engine, prompt, 12, beam_width=2, length_penalty=2.0, early_stopping=0,
                   end_id=plain.beams[1].tokens[4])),
    ]
    assert [b.tokens for b in cases[1][1].beams] != [b.tokens for b in plain.beams]  # the knobs matter
    assert [b.tokens for b in cases[2][1].beams] != [b.tokens for b in plain.beams]
    for values, want in cases:
        out = infer(blocking, "tensorrt_llm", llm(prompt, 12, return_log_probs=flag(), **values))
        assert out["output_ids"].shape[:2] == (1, 2) and out["sequence_length"].shape == (1, 2)
        assert [generated(beam) for beam in out["output_ids"][0]] == [b.tokens for b in want.beams]
        assert out["sequence_length"][0].tolist() == [len(b.tokens) for b in want.beams]
        assert out["cum_log_probs"].shape == (1, 2)
        assert np.allclose(out["cum_log_probs"][0], [b.cum_log_prob for b in want.beams], atol=1e-4)
    one = infer(blocking, "tensorrt_llm", llm(prompt, 12, beam_width=i32([[2]]), num_return_sequences=i32([[1]])))
    assert one["output_ids"].shape[:2] == (1, 1) and generated(one["output_ids"]) == plain.beams[0].tokens
    for model in ("ensemble", "tensorrt_llm_bls"):
        both = infer(blocking, model, text(PROMPT, 8, beam_width=i32([[2]])))["text_output"]
        assert both.shape == (2,) and all(isinstance(t, bytes) for t in both)  # flat, one string per beam
    with pytest.raises(Failed) as err:
        infer(blocking, "tensorrt_llm", llm(prompt, 4, beam_width=i32([[3]])))
    assert error_pattern("tensorrt_llm.beam_too_wide", beam_width=3, max_beam_width=2).fullmatch(str(err.value))
    # min_length holds end_id back (its default, 1, already keeps end_id from being the first token)
    greedy = engine.generate([prompt], [12])[0]
    end = greedy[1]
    assert generated(infer(blocking, "tensorrt_llm", llm(prompt, 12, end_id=i32([[end]])))["output_ids"]) == \
        greedy[:1]
    held = infer(blocking, "tensorrt_llm", llm(prompt, 12, end_id=i32([[end]]), min_length=i32([[4]])))
    want = _expected(engine, prompt, 12, min_length=4, end_id=end).beams[0].tokens
    assert generated(held["output_ids"]) == want and len(want) >= 4


@covers("rule:clipping")
def test_output_length_above_the_limit_is_clipped_with_a_warning(blocking, built):
    prompt = [1, 45, 67, 89, 23]
    out = infer(blocking, "tensorrt_llm", llm(prompt, 5000))  # no end_id: runs to the limit
    assert out["sequence_length"].tolist() == [[MAX_SEQ_LEN - len(prompt)]]
    log = (built / "blocking.tritonserver.log").read_text(errors="replace")
    assert TABLE.clipping_warning(prompt=5, requested=5000, draft=0, max_seq_len=MAX_SEQ_LEN,
                                  clipped=MAX_SEQ_LEN - 5) in log
    for model in ("ensemble", "tensorrt_llm_bls"):
        assert infer(blocking, model, text(PROMPT, 3000))["text_output"].shape == (1,)
    from llmbuild.toolchains.client import generate

    answer = generate(blocking.http_url, "ensemble", {"text_input": PROMPT, "max_tokens": 3000})
    assert answer.status == 200 and answer.error is None


@covers("rule:prompt", "rule:batching", "tensorrt_llm:in:streaming", "tensorrt_llm:in:input_ids",
        "tensorrt_llm:out:output_ids", "tensorrt_llm:out:sequence_length")
def test_requests_the_real_backend_refuses_get_its_errors_and_the_server_stays_up(blocking, tokenizer):
    from llmbuild.toolchains.client import generate

    long = list(range(1, 71))
    with pytest.raises(Failed) as err:
        infer(blocking, "tensorrt_llm", llm(long, 4))
    assert error_pattern("tensorrt_llm.prompt_too_long", prompt=70, max_input_len=MAX_INPUT_LEN).fullmatch(
        str(err.value))
    long_text = " ".join(["machine learning"] * 40)
    with pytest.raises(Failed) as err:
        infer(blocking, "ensemble", text(long_text, 4))
    assert error_pattern("tensorrt_llm.prompt_too_long", via="ensemble", prompt=len(tokenizer.encode(long_text)),
                         max_input_len=MAX_INPUT_LEN).fullmatch(str(err.value))
    answer = generate(blocking.http_url, "tensorrt_llm_bls", {"text_input": long_text, "max_tokens": 4})
    assert answer.status == TABLE.rules["error_forms"]["status"]["http_generate"]
    assert "exceeds maximum input length (64)." in answer.error
    with pytest.raises(Failed) as err:
        infer(blocking, "tensorrt_llm", llm([[1, 2, 3], [4, 5, 6]], 4))
    assert str(err.value) == TABLE.error_text("tensorrt_llm.batch_not_decoupled")
    with pytest.raises(Failed) as err:
        infer(blocking, "ensemble", text(["a", "b"], 4))
    assert error_pattern("tensorrt_llm.batch_not_decoupled", via="ensemble").fullmatch(str(err.value))
    with pytest.raises(Failed) as err:
        infer(blocking, "tensorrt_llm", llm([1, 2, 3], 4, streaming=flag()))
    assert str(err.value) == TABLE.error_text("tensorrt_llm.streaming_not_decoupled")
    with pytest.raises(Failed, match="batch-size must be <= 4"):  # Triton's own limit (max_batch_size)
        infer(blocking, "ensemble", text(["a"] * 5, 4))
    with pytest.raises(Failed) as err:
        infer(blocking, "tensorrt_llm", llm([1, 2, 3], 4), outputs=["sequence_length"])
    assert str(err.value) == TABLE.error_text("tensorrt_llm.output_ids_not_requested")
    with pytest.raises(Failed) as err:
        infer(blocking, "tensorrt_llm", {"input_lengths": i32([[3]]), "request_output_len": i32([[4]])})
    assert str(err.value) == TABLE.error_text("tensorrt_llm.no_input_ids")
    assert blocking.is_running()
    assert infer(blocking, "ensemble", text(PROMPT, 4))["text_output"].shape == (1,)


@covers("tensorrt_llm:in:return_kv_cache_reuse_stats", "tensorrt_llm:out:kv_cache_alloc_new_blocks",
        "tensorrt_llm:out:kv_cache_reused_blocks", "tensorrt_llm:out:kv_cache_alloc_total_blocks")
def test_kv_cache_reuse_statistics_when_asked(blocking):
    prompt = list(range(100, 130))  # 30 tokens, 8 per block (engine tokens_per_block)
    stats = ("kv_cache_alloc_new_blocks", "kv_cache_reused_blocks", "kv_cache_alloc_total_blocks")
    first = infer(blocking, "tensorrt_llm", llm(prompt, 6, return_kv_cache_reuse_stats=flag()))
    assert [first[s].tolist() for s in stats] == [[[5]], [[0]], [[5]]]  # ceil(36 / 8) blocks, none seen before
    again = infer(blocking, "tensorrt_llm", llm(prompt, 6, return_kv_cache_reuse_stats=flag()))
    assert [again[s].tolist() for s in stats] == [[[2]], [[3]], [[5]]]  # 29 prompt tokens fill 3 reusable blocks
    assert all(again[s].dtype == np.int32 for s in stats)
    assert not set(stats) & set(infer(blocking, "tensorrt_llm", llm(prompt, 6)))


# --------------------------------------------------------------------------------------------
# Table-driven: every no-op, refused and mapped input, every conditional and absent output
# --------------------------------------------------------------------------------------------

BASE_PROMPT = [1, 45, 67, 89, 23]


def _baseline(model: str) -> dict:
    if model == "preprocessing":
        return {"QUERY": strings([[PROMPT]]), "REQUEST_OUTPUT_LEN": i32([[4]])}
    if model == "postprocessing":
        return {"TOKENS_BATCH": i32([[[10, 11, 12]]]), "SEQUENCE_LENGTH": i32([[3]])}
    if model == "tensorrt_llm":
        return llm(BASE_PROMPT, 6)
    return text(PROMPT, 6)


#: Probe values where zeros would say nothing (beyond them: zeros of the row's dtype and dims).
PROBE = {
    "num_return_sequences": i32([[2]]),
    "pad_id": i32([[7]]),
    "draft_input_ids": i32([[5, 6]]),
    "num_draft_tokens": i32([[2]]),
    "use_draft_logits": flag(),
    "prompt_table_extra_id": np.array([[9]], np.uint64),
    "PROMPT_TABLE_EXTRA_ID": np.array([[9]], np.uint64),
}


def _probe(spec) -> np.ndarray:
    if spec.name in PROBE:
        return PROBE[spec.name]
    shape = [1] + [d if d > 0 else 1 for d in spec.dims]
    if spec.dtype == "STRING":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=_NP[spec.dtype])


@pytest.mark.parametrize("row", NO_OP_INPUTS, ids=_id)
def test_no_op_inputs_are_accepted_and_change_nothing(blocking, row):
    model, name = row
    base = infer(blocking, model, _baseline(model))
    out = infer(blocking, model, _baseline(model) | {name: _probe(TABLE.models[model].inputs[name])})
    assert out.keys() == base.keys()
    for key in base:
        assert np.array_equal(out[key], base[key]), key


@pytest.mark.parametrize("row", REFUSED_INPUTS, ids=_id)
def test_refused_inputs_get_the_tables_error(blocking, row):
    model, name = row
    spec = TABLE.models[model].inputs[name]
    probe = _probe(spec)
    with pytest.raises(Failed) as err:
        infer(blocking, model, _baseline(model) | {name: probe})
    fields = {"input": spec.maps_to.split(".")[1] if spec.maps_to else name, "draft": probe.size, "max_draft_len": 0}
    pattern = error_pattern(spec.error, via="ensemble" if model == "ensemble" else None, **fields)
    if model == "tensorrt_llm_bls":  # the BLS answers with the traceback, ending in the message
        assert pattern.search(str(err.value)) and str(err.value).startswith("Traceback"), str(err.value)
    else:
        assert pattern.fullmatch(str(err.value)), str(err.value)
    assert infer(blocking, model, _baseline(model))  # and the model still serves


def _condition_value(model: str, spec) -> np.ndarray:
    condition = TABLE.models[model].inputs[spec.condition_input]
    return flag() if condition.dtype == "BOOL" else PROBE[condition.name]


@pytest.mark.parametrize("row", FLAG_OUTPUTS, ids=_id)
def test_outputs_are_returned_exactly_when_the_table_says(blocking, tokenizer, row):
    model, name = row
    spec = TABLE.models[model].outputs[name]
    values = _baseline(model)
    if spec.condition_input:
        assert name not in infer(blocking, model, values)
        values[spec.condition_input] = _condition_value(model, spec)
    out = infer(blocking, model, values)
    assert name in out, sorted(out)
    assert out[name].dtype == np.dtype(_NP[spec.dtype])
    assert out[name].ndim == len(spec.shape), (out[name].shape, spec.shape)
    prompt = len(tokenizer.encode(PROMPT)) if model in ("ensemble", "tensorrt_llm_bls") else len(BASE_PROMPT)
    known = {"1": 1, "B": 1, "W": 1, "2": 2, "V": VOCAB, "P": prompt, "M": 6, "S": 1}
    for size, symbol in zip(out[name].shape, spec.shape):
        if symbol in known:
            assert size == known[symbol], (name, out[name].shape, spec.shape)


@pytest.mark.parametrize("row", NEVER_OUTPUTS, ids=_id)
def test_outputs_the_table_says_never_come_are_absent(blocking, row):
    model, name = row
    every = list(TABLE.models[model].outputs)
    assert name not in infer(blocking, model, _baseline(model), outputs=every)


def _reference(server, model: str, values: dict) -> dict:
    """What the entry model must answer: preprocessing -> tensorrt_llm -> postprocessing, called one by one.

    Each entry input goes where the table's maps_to says (end_to_end_test.py's manual ensemble).
    """
    inputs = TABLE.models[model].inputs
    pre_in = {inputs[n].maps_to.split(".")[1]: v for n, v in values.items()
              if inputs[n].maps_to and inputs[n].maps_to.startswith("preprocessing.")}
    pre = infer(server, "preprocessing", pre_in)
    llm_in = {"input_ids": pre["INPUT_ID"], "input_lengths": pre["REQUEST_INPUT_LEN"],
              "request_output_len": pre["REQUEST_OUTPUT_LEN"], "end_id": pre["OUT_END_ID"],
              "pad_id": pre["OUT_PAD_ID"], "bad_words_list": pre["BAD_WORDS_IDS"],
              "stop_words_list": pre["STOP_WORDS_IDS"], "embedding_bias": pre["EMBEDDING_BIAS"],
              "decoder_input_ids": pre["DECODER_INPUT_ID"], "decoder_input_lengths": pre["REQUEST_DECODER_INPUT_LEN"]}
    if "OUT_PROMPT_TABLE_EXTRA_IDS" in pre:
        llm_in["prompt_table_extra_ids"] = pre["OUT_PROMPT_TABLE_EXTRA_IDS"]
    llm_in |= {inputs[n].maps_to.split(".")[1]: v for n, v in values.items()
               if inputs[n].maps_to and inputs[n].maps_to.startswith("tensorrt_llm.")}
    out = infer(server, "tensorrt_llm", llm_in)
    post = infer(server, "postprocessing", {"TOKENS_BATCH": out["output_ids"],
                                            "SEQUENCE_LENGTH": out["sequence_length"]})
    entry_outputs = TABLE.models[model].outputs
    answer = {"text_output": post["OUTPUT"]} | {k: v for k, v in out.items() if k in entry_outputs}
    return answer, generated(out["output_ids"][0, 0])


def _entry_probe(name: str, tokens: list[int], tokenizer) -> dict:
    """Values that make an entry input visible in the answer (with the companions it needs)."""
    # a generated token that survives decode -> encode, so a bad or stop phrase names it exactly
    plain = [i for i, t in enumerate(tokens) if tokenizer.encode(tokenizer.decode([t]), add_special_tokens=False)
             == [t]]
    assert len(plain) >= 2, "the baseline answer has too few plain tokens for the word-list probes"
    word = lambda i: strings([[tokenizer.decode([tokens[i]])]])  # noqa: E731
    seeded = {"top_k": i32([[20]])}
    probes = {
        "text_input": {"text_input": strings([["Hello"]])},
        "decoder_text_input": {"decoder_text_input": strings([["dog"]])},
        "max_tokens": {"max_tokens": i32([[3]])},
        "bad_words": {"bad_words": word(plain[0])},
        "stop_words": {"stop_words": word(plain[1])},
        "end_id": {"end_id": i32([[tokens[2]]])},
        "pad_id": {"pad_id": i32([[7]])},
        "embedding_bias_words": {"embedding_bias_words": strings([["dog"]]),
                                 "embedding_bias_weights": np.array([[100.0]], np.float32)},
        "top_k": {"top_k": i32([[20]])},
        "top_p": {"top_p": np.array([[0.8]], np.float32)},
        "temperature": seeded | {"temperature": np.array([[0.05]], np.float32)},
        "random_seed": seeded | {"random_seed": np.array([[7]], np.uint64)},
        "length_penalty": {"beam_width": i32([[2]]), "length_penalty": np.array([[2.0]], np.float32),
                           "end_id": i32([[tokens[3]]])},
        "repetition_penalty": {"repetition_penalty": np.array([[3.0]], np.float32)},
        "presence_penalty": {"presence_penalty": np.array([[5.0]], np.float32)},
        "frequency_penalty": {"frequency_penalty": np.array([[5.0]], np.float32)},
        "min_length": {"min_length": i32([[4]]), "end_id": i32([[tokens[1]]])},
        "beam_width": {"beam_width": i32([[2]])},
        "exclude_input_in_output": {"exclude_input_in_output": flag(False)},
        "num_return_sequences": seeded | {"num_return_sequences": i32([[2]])},
        "prompt_table_extra_id": {"prompt_table_extra_id": np.array([[9]], np.uint64)},
        "stream": {"stream": flag()},
    }
    probes["embedding_bias_weights"] = probes["embedding_bias_words"]
    for name_ in ("return_log_probs", "return_context_logits", "return_generation_logits",
                  "return_kv_cache_reuse_stats"):
        probes[name_] = {name_: flag()}
    return probes[name]


#: Entry inputs whose probe must change the answer (the others change nothing visible, e.g. pad_id).
_VISIBLE = {"text_input", "max_tokens", "num_return_sequences", "bad_words", "stop_words", "end_id", "embedding_bias_words",
            "embedding_bias_weights", "top_k", "top_p", "temperature", "random_seed", "repetition_penalty",
            "presence_penalty", "frequency_penalty", "min_length", "beam_width", "exclude_input_in_output",
            "return_log_probs", "return_context_logits", "return_generation_logits", "return_kv_cache_reuse_stats"}


@pytest.mark.parametrize("row", MAPPED_INPUTS, ids=_id)
def test_entry_inputs_reach_the_step_the_table_maps_them_to(blocking, tokenizer, row):
    """ensemble / BLS with an input == the steps called by hand with it (and the input shows)."""
    model, name = row
    base_values = text(PROMPT, 16)
    _, tokens = _reference(blocking, model, base_values)
    probe = _entry_probe(name, tokens, tokenizer)
    values = base_values | probe
    try:
        want, _ = _reference(blocking, model, values)
    except Failed as e:  # the steps refuse it (stream on a non-decoupled repository): so must the entry
        with pytest.raises(Failed) as err:
            infer(blocking, model, values)
        assert e.args[0] in err.value.args[0]
        return
    got = infer(blocking, model, values)
    assert got.keys() == want.keys()
    assert got["text_output"].tolist() == want["text_output"].tolist()
    for key in got.keys() - {"text_output"}:
        if key.startswith("kv_cache"):  # counts depend on what ran before
            assert got[key].shape == want[key].shape
        else:
            assert np.allclose(got[key], want[key], atol=1e-3), key
    without = infer(blocking, model, base_values | {k: v for k, v in probe.items() if k != name})
    changed = without.keys() != got.keys() or without["text_output"].tolist() != got["text_output"].tolist()
    assert changed == (name in _VISIBLE)


# --------------------------------------------------------------------------------------------
# Concurrency, stop and cancellation in both transaction modes
# --------------------------------------------------------------------------------------------

LONG = 4000  # tokens: a request that runs for seconds


def _executions(client, model: str = "tensorrt_llm") -> int:
    stats = client.get_inference_statistics(model).model_stats
    return sum(s.execution_count for s in stats)


def _call_async(server, model, values, request_id=""):
    """NVIDIA's client's async_infer with a callback, returned once tensorrt_llm has the request.

    Returns (client, future, queue of (time, result, error)).
    """
    import queue

    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    answers: queue.Queue = queue.Queue()
    before = _executions(client)
    future = client.async_infer(model, _inputs(values), request_id=request_id,
                                callback=lambda result, error: answers.put((time.monotonic(), result, error)))
    deadline = time.monotonic() + 30
    while _executions(client) == before and answers.empty() and time.monotonic() < deadline:
        time.sleep(0.02)
    return client, future, answers


def _stop_signal() -> dict:
    """prepare_stop_signals() of inflight_batcher_llm_client.py."""
    return {"input_ids": np.zeros((1, 1), np.int32), "input_lengths": i32([[0]]),
            "request_output_len": i32([[0]]), "stop": flag()}


def _cancel_lines(built, name: str, request_id: str) -> list[int]:
    log = (built / f"{name}.tritonserver.log").read_text(errors="replace")
    return [int(n) for n in re.findall(rf"request '{request_id}' cancelled after (\d+) generated tokens", log)]


@covers("rule:batching")
def test_non_decoupled_requests_run_concurrently(blocking):
    client, _, answers = _call_async(blocking, "tensorrt_llm", llm(BASE_PROMPT, LONG), request_id="long")
    short = infer(blocking, "tensorrt_llm", llm([1, 2, 3], 4))
    assert generated(short["output_ids"]) and answers.empty()  # answered while the long one still runs
    infer(blocking, "tensorrt_llm", _stop_signal(), request_id="long")
    _, result, error = answers.get(timeout=120)
    client.close()
    assert error is None and result.as_numpy("sequence_length")[0, 0] < LONG


@covers("rule:batching")
def test_decoupled_requests_run_concurrently(streaming):
    stream = Stream(streaming)
    stream.send("tensorrt_llm", llm(BASE_PROMPT, LONG), request_id="long", wait=True)
    stream.send("tensorrt_llm", llm([1, 2, 3], 4), request_id="short")
    (first,) = stream.responses()
    assert first["id"] == "short" and generated(first["output_ids"])  # while the long one still runs
    stream.send("tensorrt_llm", _stop_signal(), request_id="long")
    answers = stream.responses(count=2)
    stream.close()
    (long,) = [a for a in answers if "output_ids" in a]
    assert long["id"] == "long" and long["sequence_length"][0, 0] < LONG


@covers("tensorrt_llm:in:stop", "rule:stop")
def test_stop_after_ms_non_decoupled(blocking):
    """inflight_batcher_llm_client.py --stop-after-ms 300 (non-streaming): a second request stops the first."""
    client, _, answers = _call_async(blocking, "tensorrt_llm", llm(BASE_PROMPT, LONG), request_id="stop-me")
    time.sleep(0.3)
    sent = time.monotonic()
    stop_client, _, _ = _call_async(blocking, "tensorrt_llm", _stop_signal(), request_id="stop-me")
    done, result, error = answers.get(timeout=60)
    client.close()
    stop_client.close()
    assert error is None
    tokens = int(result.as_numpy("sequence_length")[0, 0])
    assert tokens < LONG  # "expect less than request_output_len output tokens"
    assert done - sent < 2.0
    with pytest.raises(Failed) as err:
        infer(blocking, "tensorrt_llm", _stop_signal())  # no request id
    assert str(err.value) == TABLE.error_text("tensorrt_llm.stop_without_id")


@covers("tensorrt_llm:in:stop", "rule:stop")
def test_stop_after_ms_decoupled_streaming(streaming):
    """inflight_batcher_llm_client.py -S --stop-after-ms 300: the stop request gets an empty final response."""
    stream = Stream(streaming)
    stream.send("tensorrt_llm", llm(BASE_PROMPT, LONG, streaming=flag()), request_id="7", wait=True)
    time.sleep(0.3)
    stream.send("tensorrt_llm", _stop_signal(), request_id="7")
    responses = stream.responses(count=2)
    stream.close()
    stop_answer = [r for r in responses if r["final"] and "output_ids" not in r]
    assert len(stop_answer) == 1  # "Got cancellation response from server"
    tokens = [t for r in responses if "output_ids" in r for t in generated(r["output_ids"])]
    assert len(tokens) < LONG  # "expect less than request_output_len output tokens"
    assert responses[-1]["final"]


@covers("rule:cancellation")
def test_client_cancellation_non_decoupled(blocking, built):
    """--stop-via-request-cancel: the gRPC call is cancelled; the model stops generating."""
    from tritonclient.utils import InferenceServerException

    client, future, answers = _call_async(blocking, "tensorrt_llm", llm(BASE_PROMPT, LONG), request_id="cancel-1")
    time.sleep(0.3)
    future.cancel()
    _, result, error = answers.get(timeout=60)
    client.close()
    assert result is None and isinstance(error, InferenceServerException) and error.status() == "StatusCode.CANCELLED"
    deadline = time.monotonic() + 5
    while not _cancel_lines(built, "blocking", "cancel-1") and time.monotonic() < deadline:
        time.sleep(0.1)
    (count,) = _cancel_lines(built, "blocking", "cancel-1")
    assert count < LONG
    # through the ensemble the client is cancelled at once as well
    client, future, answers = _call_async(blocking, "ensemble", text(PROMPT, LONG), request_id="cancel-2")
    time.sleep(0.3)
    future.cancel()
    _, result, error = answers.get(timeout=60)
    client.close()
    assert error.status() == "StatusCode.CANCELLED"
    assert infer(blocking, "ensemble", text(PROMPT, 4))["text_output"].shape == (1,)


@covers("rule:cancellation")
def test_client_cancellation_decoupled(streaming, built):
    """Closing the stream with cancel_requests (the client's stop_stream(cancel_requests=True))."""
    stream = Stream(streaming)
    stream.send("tensorrt_llm", llm(BASE_PROMPT, LONG, streaming=flag()), request_id="cancel-3", wait=True)
    time.sleep(0.3)
    stream.close(cancel=True)
    deadline = time.monotonic() + 5
    while not _cancel_lines(built, "streaming", "cancel-3") and time.monotonic() < deadline:
        time.sleep(0.1)
    (count,) = _cancel_lines(built, "streaming", "cancel-3")
    assert count < LONG


# --------------------------------------------------------------------------------------------
# The decoupled repository: streaming, batched rows, several sequences
# --------------------------------------------------------------------------------------------


@covers("tensorrt_llm:in:streaming", "rule:streaming", "ensemble:in:stream", "tensorrt_llm_bls:in:stream")
def test_streaming_one_response_per_token(streaming, tokenizer):
    """inflight_batcher_llm_client.py -S: new tokens only, the last response final, log probs so far."""
    stream = Stream(streaming)
    stream.send("tensorrt_llm", llm(BASE_PROMPT, 6, streaming=flag(), return_log_probs=flag(),
                                    exclude_input_in_output=flag(False)))
    responses = stream.responses()
    whole = Stream(streaming)
    whole.send("tensorrt_llm", llm(BASE_PROMPT, 6, return_log_probs=flag()))
    (blocking_answer,) = whole.responses()
    stream.close()
    whole.close()
    assert len(responses) == 6 and [r["final"] for r in responses] == [False] * 5 + [True]
    assert all(r["output_ids"].shape == (1, 1, 1) for r in responses)  # exclude_input_in_output does not apply
    assert [generated(r["output_ids"])[0] for r in responses] == generated(blocking_answer["output_ids"])
    assert [r["output_log_probs"].shape for r in responses] == [(1, 1, i) for i in range(1, 7)]
    assert np.allclose(responses[-1]["output_log_probs"], blocking_answer["output_log_probs"])
    # the ensemble streams through /generate_stream; the BLS (accumulate_tokens) re-decodes all so far
    from llmbuild.toolchains.client import generate

    body = {"text_input": PROMPT, "max_tokens": 8, "stream": True}
    events = generate(streaming.http_url, "ensemble", body, stream=True).events
    assert len(events) == 8 and all(isinstance(e["text_output"], str) for e in events)
    bls = [e["text_output"] for e in generate(streaming.http_url, "tensorrt_llm_bls", body, stream=True).events]
    assert len(bls) == 8
    assert all(bls[i + 1].startswith(bls[i].rstrip("\ufffd")) for i in range(len(bls) - 1))
    final = generate(streaming.http_url, "tensorrt_llm_bls", {"text_input": PROMPT, "max_tokens": 8}).body
    assert final["text_output"] == bls[-1]


@covers("tensorrt_llm:out:batch_index", "ensemble:out:batch_index", "tensorrt_llm_bls:out:batch_index",
        "rule:batching")
def test_batched_rows_in_a_decoupled_repository(streaming):
    """Batched inputs: one response stream per row with batch_index, the final flag on the last one."""
    stream = Stream(streaming)
    stream.send("tensorrt_llm", llm([[1, 45, 67], [1, 2, 3, 4]], 3))
    rows = stream.responses()
    assert sorted(int(r["batch_index"][0, 0]) for r in rows) == [0, 1]
    assert [r["final"] for r in rows] == [False, True]
    for model in ("ensemble", "tensorrt_llm_bls"):
        stream.send(model, text(["What is", "Hello there"], 4))
        rows = [r for r in stream.responses() if "text_output" in r]
        assert sorted(int(r["batch_index"][0, 0]) for r in rows) == [0, 1], model
        assert all(r["text_output"].shape == (1,) for r in rows), model
    stream.close()
    assert "batch_index" not in infer_stream_one(streaming, llm([1, 45, 67], 3))


def infer_stream_one(server, values) -> dict:
    stream = Stream(server)
    stream.send("tensorrt_llm", values)
    (answer,) = stream.responses()
    stream.close()
    return answer


@covers("tensorrt_llm:in:num_return_sequences", "tensorrt_llm:out:sequence_index",
        "ensemble:out:sequence_index", "tensorrt_llm_bls:out:sequence_index")
def test_num_return_sequences_in_a_decoupled_repository(streaming):
    stream = Stream(streaming)
    values = llm(BASE_PROMPT, 6, num_return_sequences=i32([[2]]), runtime_top_k=i32([[20]]))
    stream.send("tensorrt_llm", values)
    first = stream.responses()
    stream.send("tensorrt_llm", values)
    second = stream.responses()
    assert sorted(int(r["sequence_index"][0, 0]) for r in first) == [0, 1]
    by_index = lambda rs: {int(r["sequence_index"][0, 0]): generated(r["output_ids"]) for r in rs}  # noqa: E731
    assert by_index(first) == by_index(second)  # seeded: reproducible
    assert by_index(first)[0] != by_index(first)[1]  # the sequences differ
    stream.send("ensemble", text(PROMPT, 6, num_return_sequences=i32([[2]]), top_k=i32([[20]])))
    answers = stream.responses()
    assert sorted(int(r["sequence_index"][0, 0]) for r in answers) == [0, 1]
    stream.send("tensorrt_llm_bls", text(PROMPT, 6, num_return_sequences=i32([[2]]), top_k=i32([[20]])))
    answers = [r for r in stream.responses() if "text_output" in r]
    assert len(answers) == 1 and "sequence_index" not in answers[0]  # the v0.16 BLS does not forward it
    stream.close()


@covers("tensorrt_llm:in:return_context_logits", "tensorrt_llm:in:return_generation_logits",
        "tensorrt_llm:in:beam_width", "rule:beam_width")
def test_what_the_engine_was_not_built_for_is_refused_with_the_real_text(streaming):
    stream = Stream(streaming)
    for values, ref, fields in (
        ({"return_context_logits": flag()}, "tensorrt_llm.no_context_logits", {}),
        ({"return_generation_logits": flag()}, "tensorrt_llm.no_generation_logits", {}),
        ({"beam_width": i32([[2]])}, "tensorrt_llm.beam_too_wide", {"beam_width": 2, "max_beam_width": 1}),
    ):
        stream.send("tensorrt_llm", llm(BASE_PROMPT, 4, **values))
        (answer,) = stream.responses()
        assert isinstance(answer, Failed) and error_pattern(ref, **fields).fullmatch(str(answer)), answer
    stream.close()
