"""checkpoint -> engine -> repository -> smoke, served by a real Triton on the CPU lane."""

from __future__ import annotations

import json

import pytest

from llmbuild.triton.build import ModelConfig

pytestmark = pytest.mark.slow

PIPELINE = """\
[checkpoint.checkpoint]
source = "hf"

[engine.engine]
checkpoint = ":checkpoint"
max_batch_size = 4
max_input_len = 48
max_seq_len = 80

[repository.repository]
engine = ":engine"
max_queue_delay_microseconds = 0

[smoke.smoke]
repository = ":repository"
prompt = "What is machine learning?"
max_tokens = 20
requests = [
  { prompt = "What is machine learning?", max_tokens = 20, endpoint = "tensorrt_llm_bls" },
  { prompt = "machine learning machine learning machine learning machine learning machine learning machine learning machine learning machine learning machine learning machine learning", max_tokens = 5, expect_status = 400, expect_error = "exceeds" },
]

[repository.decoupled]
engine = ":engine"
decoupled = true

[smoke.streaming]
repository = ":decoupled"
prompt = "What is machine learning?"
max_tokens = 12
stream = true
"""
STAGES = ("checkpoint", "engine", "repository", "smoke", "decoupled", "streaming")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_models):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("pipeline")
    workspace = Workspace(root / "ws", root / "cache")
    workspace.add_model("tiny", tiny_models[0], PIPELINE)
    return workspace


def addresses(*names: str) -> set[str]:
    return {f"models/tiny:{n}" for n in names}


def edit(ws, old: str, new: str) -> None:
    path = ws.root / "models/tiny/BUILD.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_whole_pipeline_builds_and_serves(ws):
    run = ws.doit()
    assert run.built() == addresses(*STAGES), run.stdout + run.stderr
    repository = ws.root / "dist/models/tiny/repository"
    for model in ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls"):
        from google.protobuf import text_format

        config = text_format.Parse((repository / model / "config.pbtxt").read_text(), ModelConfig())
        assert config.name == model
        assert (repository / model / "1").is_dir()
    report = json.loads((ws.root / "dist/models/tiny/smoke/report.json").read_text())
    assert report["passed"] and report["lane"] == "cpu"
    ensemble, bls, too_long = report["requests"]
    assert ensemble["endpoint"] == "ensemble" and bls["endpoint"] == "tensorrt_llm_bls"
    assert ensemble["text"] and ensemble["text"] == bls["text"]  # greedy: same answer both ways
    assert 0 < ensemble["tokens"] <= 20
    assert too_long["status"] == 400 and "exceeds" in too_long["error"]
    streamed = json.loads((ws.root / "dist/models/tiny/streaming/report.json").read_text())
    assert streamed["passed"] and streamed["requests"][0]["stream"]
    assert streamed["requests"][0]["text"]
    assert "What is machine learning?" in run.stdout  # progress shows the conversation


def test_triton_only_change_rebuilds_repository_and_smoke_only(ws):
    edit(ws, "max_queue_delay_microseconds = 0", "max_queue_delay_microseconds = 100")
    run = ws.doit()
    assert run.built() == addresses("repository", "smoke")
    assert run.with_outcome("up-to-date") == addresses("checkpoint", "engine", "decoupled", "streaming")
    config = (ws.root / "dist/models/tiny/repository/tensorrt_llm/config.pbtxt").read_text()
    assert "max_queue_delay_microseconds: 100" in config


def test_engine_change_rebuilds_engine_repositories_and_smokes(ws):
    edit(ws, "max_batch_size = 4", "max_batch_size = 3")
    run = ws.doit()
    assert run.built() == addresses("engine", "repository", "smoke", "decoupled", "streaming")
    assert run.outcomes["models/tiny:checkpoint"] == "up-to-date"


def test_reverting_restores(ws):
    edit(ws, "max_batch_size = 3", "max_batch_size = 4")
    edit(ws, "max_queue_delay_microseconds = 100", "max_queue_delay_microseconds = 0")
    run = ws.doit()
    assert run.with_outcome("restored") == addresses("engine", "repository", "smoke", "decoupled", "streaming")
    assert run.built() == set()


BAD = {
    "missing engine": ('engine = ":engine"\nmax_queue', 'engine = ":nope"\nmax_queue',
                       ["[repository.repository]", "engine", "models/tiny:nope"]),
    "non-engine target": ('engine = ":engine"\nmax_queue', 'engine = ":checkpoint"\nmax_queue',
                          ["[repository.repository]", "a checkpoint target; expected an engine"]),
    "streaming against non-decoupled": ("decoupled = true", "decoupled = false",
                                        ["[smoke.streaming]", "stream", "decoupled"]),
    "instance count 0": ("max_queue_delay_microseconds = 0",
                         "max_queue_delay_microseconds = 0\npreprocessing_instance_count = 0",
                         ["[repository.repository]", "preprocessing_instance_count"]),
    "unknown parameter": ("max_queue_delay_microseconds = 0",
                          "max_queue_delay_microseconds = 0\nextra_parameters = { no_such_knob = 1 }",
                          ["[repository.repository]", "no_such_knob"]),
    "unknown key": ("max_queue_delay_microseconds = 0", "max_queue_delay_microsecond = 0",
                    ["[repository.repository]", "did you mean 'max_queue_delay_microseconds'"]),
    "batch above engine": ("max_queue_delay_microseconds = 0",
                           "max_queue_delay_microseconds = 0\ntriton_max_batch_size = 16",
                           ["[repository.repository]", "triton_max_batch_size 16",
                            "built with max_batch_size=4"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_repository_or_smoke(case, make_workspace, tiny_models):
    old, new, expected = BAD[case]
    ws = make_workspace()
    assert old in PIPELINE
    ws.add_model("tiny", tiny_models[0], PIPELINE.replace(old, new, 1))
    run = ws.doit(check=False)
    output = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} not in {output}"
    assert not (ws.root / "dist/run.json").exists()
