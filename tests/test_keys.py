"""Keys depend on what is built, never on where or under which name."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from conftest import TINY_HF

from llmbuild.core.addresses import Address
from llmbuild.core.errors import LLMBuildError
from llmbuild.core.graph import topological_order
from llmbuild.core.keys import ABSENT, SECTIONS, Change, KeyDocument
from llmbuild.core.target import KINDS, Target
from llmbuild.plugins import load_kinds, load_workspace


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


# -- KeyDocument: the canonical form, the key, the diff ---------------------------------------

ARGV = ["--checkpoint_dir", "${dep:checkpoint}", "--output_dir", "${out}", "--max_batch_size", "4"]


def document(**changes) -> KeyDocument:
    fields = dict(kind="engine",
                  params={"max_batch_size": 4, "lora": {"max_rank": 8, "modules": ["attn_q"]}, "dtype": None,
                          "note": "ü"},
                  steps=[{"tool": "trtllm-build", "argv": list(ARGV)}],
                  toolchain={"lane": "cpu", "trtllm_version": "0.16.0"},
                  sources={"source": "sha256:aa"}, deps={"checkpoint": "sha256:bb"})
    fields.update(changes)
    return KeyDocument(**fields)


def test_key_is_stable():
    """The key of a fixed document, as the key_document()/action_key() functions computed it
    before KeyDocument existed: a changed hash here invalidates every cache."""
    doc = document()
    assert doc.key == "43cbab7246715bd418ba660bed2cdd56e5a244613d1154935db6f236efee48c0"
    assert doc.canonical_json().startswith('{"deps":{"checkpoint":"sha256:bb"},"kind":"engine",')
    assert '"note":"ü"' in doc.canonical_json()  # not \\u-escaped
    assert doc.key == hashlib.sha256(json.dumps(
        doc.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_canonical_form_ignores_insertion_order_and_round_trips():
    doc = document()
    shuffled = document(params={"note": "ü", "dtype": None, "lora": {"modules": ["attn_q"], "max_rank": 8},
                                "max_batch_size": 4},
                        toolchain={"trtllm_version": "0.16.0", "lane": "cpu"})
    assert shuffled.canonical_json() == doc.canonical_json() and shuffled.key == doc.key
    assert set(doc.as_dict()) == {"schema", "kind", "params", "steps", "toolchain", "sources", "deps"}
    assert KeyDocument.from_dict(json.loads(doc.canonical_json())) == doc
    assert document(steps=[{"tool": "trtllm-build", "argv": list(reversed(ARGV))}]).key != doc.key


def test_workspace_key_is_the_documents_key(make_workspace):
    w = make_workspace()
    w.add_model("m", TINY_HF)
    ws = load_workspace(w.root, w.env())
    target = ws.target("models/m:checkpoint")
    key, doc = ws.key(target)
    assert isinstance(doc, KeyDocument) and ws.key_document(target) == doc
    assert key == doc.key == hashlib.sha256(doc.canonical_json().encode()).hexdigest()
    assert doc.kind == "checkpoint" and doc.deps == {} and set(doc.sources) == {"source"}


def describe(old: KeyDocument, new: KeyDocument, **context) -> list[str]:
    return [c.describe() for c in old.diff(new, **context)]


def test_equal_documents_have_no_changes():
    assert document().diff(document()) == []


def test_parameters_are_diffed_leaf_by_leaf_and_their_flags_are_not_repeated():
    old = document()
    new = document(params={**old.params, "max_batch_size": 6, "lora": {"max_rank": 16, "modules": ["attn_q"]},
                           "dtype": "float16", "tp_size": 2},
                   steps=[{"tool": "trtllm-build", "argv": ARGV[:-1] + ["6"]}])
    new.params.pop("note")
    assert old.diff(new) == [
        Change("param", "dtype", None, "float16"),
        Change("param", "lora.max_rank", 8, 16),
        Change("param", "max_batch_size", 4, 6),
        Change("param", "note", "ü", ABSENT),
        Change("param", "tp_size", ABSENT, 2),
    ]
    assert describe(old, new) == [
        "parameter dtype: None -> float16",  # None is a value, not an absent entry
        "parameter lora.max_rank: 8 -> 16",
        "parameter max_batch_size: 4 -> 6",  # --max_batch_size is this change: not listed again
        "parameter note: removed (was ü)",
        "parameter tp_size: added (2)",
    ]


def test_argv_is_diffed_flag_by_flag():
    old = document()
    argv = ARGV + ["--gemm_plugin", "float16"]
    new = document(steps=[{"tool": "trtllm-build", "argv": argv}])
    assert describe(old, new) == ["argv flag --gemm_plugin: added (float16)"]
    newer = document(steps=[{"tool": "trtllm-build", "argv": argv[:-1] + ["auto"]}])
    assert newer.diff(new) == [Change("flag", "--gemm_plugin", "auto", "float16")]
    assert describe(newer, new) == ["argv flag --gemm_plugin: auto -> float16"]
    assert describe(new, old) == ["argv flag --gemm_plugin: removed (was float16)"]


def test_steps_programs_positionals_order_and_count():
    old = document()
    assert describe(old, document(steps=[{"tool": "quantize.py", "argv": list(ARGV)}])) == [
        "step 1: program trtllm-build -> quantize.py"]
    assert describe(old, document(steps=[{"tool": "trtllm-build", "argv": ["build"] + ARGV}])) == [
        "step 1: argv " + " ".join(ARGV) + " -> build " + " ".join(ARGV)]
    swapped = ARGV[2:4] + ARGV[:2] + ARGV[4:]  # same flags, another order: still a change
    assert [c.name for c in old.diff(document(steps=[{"tool": "trtllm-build", "argv": swapped}]))] == ["1.argv"]
    two = document(steps=old.steps + [{"tool": "check", "argv": []}])
    assert describe(old, two) == ["number of steps: 1 -> 2"]


def test_toolchain_sources_and_dependencies():
    old = document()
    new = document(toolchain={"lane": "cpu", "trtllm_version": "0.15.0"}, sources={"source": "sha256:cc"},
                   deps={"checkpoint": "sha256:dd"})
    assert [c.section for c in old.diff(new)] == ["toolchain", "source", "dependency"]
    assert describe(old, new) == [
        "toolchain trtllm_version: 0.16.0 -> 0.15.0",
        "source source: content changed",  # the file listings are not known
        "dependency checkpoint: sha256:bb -> sha256:dd",
    ]
    listing = {f"shard{i}.bin": "sha256:0" for i in range(7)} | {"config.json": "sha256:1"}
    changed = {**listing, "config.json": "sha256:2"}
    assert describe(old, new, old_files={"source": listing}, new_files={"source": changed},
                    dep_addresses={"checkpoint": "models/m:ckpt"})[1:] == [
        "source source: content of config.json changed",
        "dependency checkpoint: output of models/m:ckpt changed",
    ]
    many = {name: "sha256:9" for name in listing} | {"new.bin": "sha256:3"}
    assert old.diff(new, old_files={"source": listing}, new_files={"source": many})[1].describe() == (
        "source source: content of config.json, new.bin, shard0.bin, shard1.bin, shard2.bin and 4 more changed")
    single = old.diff(new, old_files={"source": {"": "sha256:1"}}, new_files={"source": {"": "sha256:2"}})
    assert single[1].files == ("",) and single[1].describe() == "source source: content of (the file) changed"
    assert describe(document(deps={}), document(deps={"container": "toolchains/img:img"})) == [
        "dependency container: added"]
    assert describe(document(sources={}), old) == ["source source: added"]


def test_another_kind_is_one_change():
    old = document()
    new = document(kind="checkpoint", params={"dtype": "float16"}, steps=[])
    assert old.diff(new) == [Change("kind", "kind", "engine", "checkpoint")]
    assert describe(old, new) == ["kind: engine -> checkpoint"]


def test_every_section_differs_in_order():
    old = document()
    new = KeyDocument(kind="engine", params={"max_batch_size": 5, "lora": old.params["lora"], "dtype": None,
                                             "note": "ü"},
                      steps=[{"tool": "other", "argv": ARGV + ["--x", "1"]}],
                      toolchain={"lane": "gpu", "trtllm_version": "0.16.0"}, sources={"source": "sha256:ab"},
                      deps={"checkpoint": None}, schema=2)
    sections = [c.section for c in old.diff(new)]
    assert sections == ["schema", "param", "step", "flag", "toolchain", "source", "dependency"]
    assert sections == sorted(sections, key=SECTIONS.index)
    assert old.diff(new)[0].describe() == "key schema: 1 -> 2"
