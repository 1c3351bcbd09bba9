"""The repository behaves like tensorrtllm_backend v0.16.0 to every client.

Driven by the behaviour table (llmbuild/triton/backend/behaviour-v0.16.0.json):
the generated configs must declare exactly its tensors, and every input and
output row has a request through a real Triton on the CPU lane.
"""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from llmbuild.triton import behaviour
from llmbuild.triton.configs import BACKEND_VERSION, ServingOptions, build_configs

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
