"""Load-time verdicts are remembered by their inputs, and an edit that breaks one is still caught."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_HF
from llmbuild.core.errors import LLMBuildError
from llmbuild.plugins import load_workspace

REPOSITORY = """
[repository.serve]
engine = ":engine"
"""


@pytest.fixture
def ws(make_workspace):
    ws = make_workspace()
    model = ws.add_model("m", TINY_HF)
    (model / "BUILD.toml").write_text((model / "BUILD.toml").read_text() + REPOSITORY)
    return ws


def load(ws):
    return load_workspace(ws.root, ws.env())


def test_a_second_load_checks_and_plans_nothing_again(ws):
    first = load(ws)
    assert (first.verdicts.hits, first.verdicts.misses) == (0, 3)
    second = load(ws)
    assert (second.verdicts.hits, second.verdicts.misses) == (3, 0)
    for target in first.order:  # the remembered facts and plans are the computed ones
        again = second.targets[target.address]
        assert second.facts(again) == first.facts(target)
        assert second.plan(again) == first.plan(target)
    checkpoint = "models/m:checkpoint"  # built from sources only: its key is known before a build
    assert second.key(second.targets_by_name[checkpoint])[0] == first.key(first.targets_by_name[checkpoint])[0]


def test_an_edit_that_breaks_a_remembered_check_still_fails_at_load(ws):
    load(ws)
    build = ws.root / "models/m/BUILD.toml"
    build.write_text(build.read_text() + "triton_max_batch_size = 64\n")  # the engine's is 4
    with pytest.raises(LLMBuildError) as caught:
        load(ws)
    assert "triton_max_batch_size" in str(caught.value) and "[repository.serve]" in str(caught.value)


def test_a_changed_file_a_check_reads_is_checked_again(ws):
    load(ws)
    config = ws.root / "models/m/hf/config.json"
    data = json.loads(config.read_text())
    data["num_attention_heads"] = 3  # tp_size 1 still divides it; the engine facts change
    data["architectures"] = ["GPT2LMHeadModel"]  # the checkpoint's check refuses this family
    config.write_text(json.dumps(data))
    with pytest.raises(LLMBuildError) as caught:
        load(ws)
    assert "GPT2LMHeadModel is not a llama-family model" in str(caught.value)


def test_a_remembered_warning_is_given_again(ws):
    build = ws.root / "models/m/BUILD.toml"
    build.write_text(build.read_text().replace("max_input_len = 64", "max_input_len = 200"))
    warned = [w for w in load(ws).warnings if "max_input_len (200)" in w]
    again = load(ws)
    assert again.verdicts.misses == 0
    assert warned and [w for w in again.warnings if "max_input_len (200)" in w] == warned


def test_a_copy_of_a_model_elsewhere_gets_its_own_facts(ws):
    """Identical models at two paths share action keys, never facts that name their paths."""
    first = load(ws)
    ws.add_model("n", TINY_HF, build_toml=(ws.root / "models/m/BUILD.toml").read_text())
    second = load(ws)
    assert second.verdicts.hits == 3 and second.verdicts.misses == 3
    facts = second.facts(second.targets_by_name["models/n:engine"])
    assert facts["tokenizer_dir"] == (ws.root / "models/n/hf").resolve()
    assert first.facts(first.targets_by_name["models/m:engine"])["tokenizer_dir"] == (ws.root / "models/m/hf").resolve()
