"""The doit commands users reach for work on llmbuild tasks."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

MODEL = """\
[checkpoint.checkpoint]
source = "hf"

[engine.engine]
checkpoint = ":checkpoint"
max_batch_size = 2
"""
ALL = {f"models/{m}:{t}" for m in ("a", "b") for t in ("checkpoint", "engine")}


@pytest.fixture
def ws(make_workspace, tiny_models):
    workspace = make_workspace()
    workspace.add_model("a", tiny_models[0], MODEL)
    workspace.add_model("b", tiny_models[1], MODEL)
    return workspace


def test_parallel_run_json_reporter_list_info_clean(ws):
    run = ws.doit("-n", "2")
    assert run.outcomes == {a: "built" for a in ALL}
    assert all(r["seconds"] > 0 and len(r["key"]) == 64 for r in run.records)

    as_json = ws.doit("--reporter", "json")
    assert as_json.outcomes == {a: "up-to-date" for a in ALL}  # run.json written by the json reporter too
    assert {t["name"] for t in json.loads(as_json.stdout)["tasks"]} >= ALL

    listed = ws.doit("list").stdout
    for name in (*ALL, "models/a", "models/::"):
        assert name in listed
    info = ws.doit("info", "models/a:engine").stdout
    assert "status     : up-to-date" in info and "models/a:checkpoint" in info

    ws.doit("clean", "models/a:engine")
    assert not (ws.root / "dist/models/a/engine").exists()
    again = ws.doit("models/a")  # a directory selects its targets
    assert again.outcomes == {"models/a:checkpoint": "up-to-date", "models/a:engine": "restored"}
    ws.doit("forget")
    assert set(ws.doit("models/::").outcomes.values()) == {"up-to-date"}

    # `doit info` and `llmbuild explain` give the same reason, from the same key document diff.
    build_toml = ws.root / "models/b/BUILD.toml"
    build_toml.write_text(build_toml.read_text().replace("max_batch_size = 2", "max_batch_size = 3"))
    reason = "- parameter max_batch_size: 2 -> 3"
    explained = ws.llmbuild("explain", "models/b:engine").stdout
    assert explained.splitlines() == ["models/b:engine: would build", f"  {reason}"]
    info = ws.doit("info", "models/b:engine", check=False)  # exit status 1: not up to date
    assert info.returncode == 1 and "status     : run" in info.stdout
    assert "llmbuild action key:\n" in info.stdout and "models/b:engine: would build\n" in info.stdout
    # without doit's "(args=[], kwargs={})" after it
    assert [line.strip() for line in info.stdout.splitlines() if line.strip().startswith("- parameter")] == [reason]
