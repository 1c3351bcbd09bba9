"""The promise: exactly the stages whose inputs changed rebuild, never more, never less.

A workspace of three tiny real Llamas with different weights is built once; each test
edits its own copy (workspace and cache) and `doit` runs; dist/run.json says what happened.
The tests share nothing else, so any one of them, in any order, passes alone.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import NamedTuple

import pytest

pytestmark = pytest.mark.slow

MODELS = ("family/m0", "family/m1", "m2")
ALL = {f"models/{m}:{t}" for m in MODELS for t in ("checkpoint", "engine")}


class Warm(NamedTuple):
    workspace: object  # conftest.Workspace
    first_run: object  # conftest.Run


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_models) -> Warm:
    """The three models built once, with the first run's record."""
    from conftest import Workspace

    root = tmp_path_factory.mktemp("matrix")
    workspace = Workspace(root / "ws", root / "cache")
    workspace.write("models/family/BUILD.toml", """\
        # defaults for everything below models/family
        [defaults.engine]
        max_num_tokens = 256
        """)
    for name, hf in zip(MODELS, tiny_models):
        workspace.add_model(name, hf)
    return Warm(workspace, workspace.doit())


@pytest.fixture
def ws(warm, tmp_path):
    return warm.workspace.copy(tmp_path / "ws", tmp_path / "cache")


def edit(ws, relative: str, old: str, new: str) -> None:
    path = ws.root / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


def explained(ws, *addresses: str) -> str:
    """`llmbuild explain` output: why each would rebuild now."""
    return ws.llmbuild("explain", *addresses).stdout


def test_first_build_then_nothing(warm, ws):
    first = warm.first_run
    assert first.outcomes == {a: "built" for a in ALL}
    assert all(first.keys[a] for a in ALL)
    second = ws.doit()
    assert second.outcomes == {a: "up-to-date" for a in ALL}
    assert second.keys == first.keys
    executed = [line for line in second.stdout.splitlines() if line.startswith(".  ")]
    assert executed == [], "nothing may execute on a no-op run"


def test_engine_only_field_rebuilds_only_that_engine(ws):
    edit(ws, "models/family/m0/BUILD.toml", "max_batch_size = 4", "max_batch_size = 6")
    why = explained(ws, "models/family/m0:engine", "models/family/m0:checkpoint")
    assert "models/family/m0:engine: would build\n  - parameter max_batch_size: 4 -> 6\n" in why
    assert "models/family/m0:checkpoint: up to date" in why
    run = ws.doit()
    assert run.built() == {"models/family/m0:engine"}
    assert run.with_outcome("up-to-date") == ALL - {"models/family/m0:engine"}


def test_checkpoint_field_rebuilds_checkpoint_and_engine(ws):
    edit(ws, "models/family/m1/BUILD.toml", 'source = "hf"', 'source = "hf"\ndtype = "float32"')
    why = explained(ws, "models/family/m1:checkpoint")
    assert why.splitlines()[1:] == ["  - parameter dtype: added (float32)"]
    run = ws.doit()
    assert run.built() == {"models/family/m1:checkpoint", "models/family/m1:engine"}
    edit(ws, "models/m2/BUILD.toml", 'source = "hf"', 'source = "hf"\ntp_size = 2')
    assert explained(ws, "models/m2:checkpoint").splitlines()[1:] == ["  - parameter tp_size: added (2)"]
    run = ws.doit()
    assert run.built() == {"models/m2:checkpoint", "models/m2:engine"}
    assert run.with_outcome("up-to-date") == ALL - run.built()


def test_revert_restores(ws):
    edit(ws, "models/family/m0/BUILD.toml", "max_batch_size = 4", "max_batch_size = 6")
    assert ws.doit().built() == {"models/family/m0:engine"}
    edit(ws, "models/family/m0/BUILD.toml", "max_batch_size = 6", "max_batch_size = 4")
    assert "models/family/m0:engine: restorable from cache" in explained(ws, "models/family/m0:engine")
    run = ws.doit()
    assert run.with_outcome("restored") == {"models/family/m0:engine"}
    assert run.built() == set()


def test_touch_without_changing_bytes_builds_nothing(ws):
    later = time.time() + 5
    for path in (ws.root / "models").rglob("*"):
        if path.is_file():
            os.utime(path, (later, later))
    assert explained(ws, "models/::").count("up to date") == len(ALL)
    run = ws.doit()
    assert run.outcomes == {a: "up-to-date" for a in ALL}


def test_comment_and_key_order_build_nothing(ws):
    (ws.root / "models/m2/BUILD.toml").write_text("""# engine first, keys shuffled, comments added
[engine.engine]
max_seq_len = 96
checkpoint = ":checkpoint"   # same checkpoint
max_input_len = 64
max_batch_size = 4

[checkpoint.checkpoint]
source = "hf"
""")
    run = ws.doit()
    assert run.outcomes == {a: "up-to-date" for a in ALL}


def test_one_changed_weight_byte_rebuilds_that_model(ws):
    weights = ws.root / "models/family/m1/hf/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    why = explained(ws, "models/family/m1:checkpoint")
    assert why.splitlines()[1:] == ["  - source source: content of model.safetensors changed"]
    run = ws.doit()
    assert run.built() == {"models/family/m1:checkpoint", "models/family/m1:engine"}
    assert run.with_outcome("up-to-date") == ALL - run.built()


def test_defaults_edit_rebuilds_exactly_the_inheritors(ws):
    edit(ws, "models/family/BUILD.toml", "max_num_tokens = 256", "max_num_tokens = 320")
    for model in ("m0", "m1"):
        why = explained(ws, f"models/family/{model}:engine")
        assert why.splitlines()[1:] == ["  - parameter max_num_tokens: 256 -> 320"]
    run = ws.doit()
    assert run.built() == {"models/family/m0:engine", "models/family/m1:engine"}
    assert run.with_outcome("up-to-date") == ALL - run.built()


def test_new_model_builds_only_its_targets(ws, tiny_models):
    ws.add_model("m3", tiny_models[0], """\
        [checkpoint.checkpoint]
        source = "hf"
        tp_size = 2

        [engine.engine]
        checkpoint = ":checkpoint"
        max_batch_size = 2
        """)
    assert "never built here" in explained(ws, "models/m3:checkpoint")
    run = ws.doit()
    assert run.built() == {"models/m3:checkpoint", "models/m3:engine"}
    assert run.with_outcome("up-to-date") == ALL


def test_identical_rebuild_cuts_off_downstream(ws):
    """A checkpoint re-run whose output is byte-identical does not rebuild its engine."""
    edit(ws, "models/m2/BUILD.toml", 'source = "hf"', 'source = "hf"\nworkers = 2')
    run = ws.doit()
    assert run.built() == {"models/m2:checkpoint"}
    assert run.outcomes["models/m2:engine"] == "up-to-date"


def test_removing_dist_restores_everything(ws):
    shutil.rmtree(ws.root / "dist")
    run = ws.doit()
    assert run.outcomes == {a: "restored" for a in ALL}
    engine = ws.root / "dist/models/m2/engine"
    assert (engine / "config.json").is_file() and (engine / "rank0.engine").is_file()
