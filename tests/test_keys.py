"""Keys depend on what is built, never on where or under which name."""

from __future__ import annotations

import json
import shutil

import pytest

from llmbuild.core.addresses import Address
from llmbuild.core.errors import LLMBuildError
from llmbuild.core.graph import topological_order
from llmbuild.core.target import KINDS, Target
from llmbuild.plugins import load_kinds


@pytest.mark.slow
def test_keys_ignore_workspace_cache_source_paths_and_names(tmp_path, tiny_models):
    from conftest import Workspace

    one = Workspace(tmp_path / "one", tmp_path / "cache-one")
    one.add_model("alpha", tiny_models[0], """\
        [checkpoint.ckpt]
        source = "hf"
        tp_size = 2
        [engine.eng]
        checkpoint = ":ckpt"
        max_batch_size = 3
        """)
    two = Workspace(tmp_path / "deeper" / "two", tmp_path / "cache-two")
    directory = tmp_path / "deeper" / "two" / "models" / "beta"
    shutil.copytree(tiny_models[0], directory / "weights")
    two.write("models/beta/BUILD.toml", """\
        [checkpoint.checkpoint]
        tp_size = 2
        source = "weights"
        [engine.engine]
        max_batch_size = 3
        checkpoint = "models/beta:checkpoint"
        """)
    run_one, run_two = one.doit(), two.doit()
    assert run_one.keys["models/alpha:ckpt"] == run_two.keys["models/beta:checkpoint"]
    assert run_one.keys["models/alpha:eng"] == run_two.keys["models/beta:engine"]
    # The manifest keeps the whole key document: placeholders and digests, no paths.
    manifest = next((tmp_path / "cache-one").glob("entries/*/*/manifest.json"))
    document = json.loads(manifest.read_text())["document"]
    text = json.dumps(document)
    assert str(tmp_path) not in text and "alpha" not in text
    assert set(document) == {"schema", "kind", "params", "steps", "toolchain", "sources", "deps"}


def test_cycles_are_named(tmp_path):
    kind = load_kinds()["engine"]
    a = Target(Address("m", "a"), kind, None, "m/BUILD.toml")
    b = Target(Address("m", "b"), kind, None, "m/BUILD.toml")
    a.deps["checkpoint"], b.deps["checkpoint"] = b, a
    with pytest.raises(LLMBuildError, match="dependency cycle: m:a -> m:b -> m:a"):
        topological_order([a, b])


def test_kinds_register_from_their_modules():
    load_kinds()
    assert {"checkpoint", "engine"} <= set(KINDS)
