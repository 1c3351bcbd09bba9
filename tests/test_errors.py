"""Bad input: one clear message naming file, target and key; non-zero exit; nothing built."""

from __future__ import annotations

import json

import pytest

GOOD = """\
[checkpoint.checkpoint]
source = "hf"

[engine.engine]
checkpoint = ":checkpoint"
"""

CASES = {
    "malformed toml": (GOOD + "[engine.broken\n", ["models/m/BUILD.toml", "invalid TOML"]),
    "unknown kind": (GOOD + "[engin.e2]\ncheckpoint = ':checkpoint'\n",
                     ["models/m/BUILD.toml", "unknown kind 'engin'", "did you mean 'engine'"]),
    "unknown key": (GOOD + "max_batch_sise = 8\n",
                    ["[engine.engine]", "max_batch_sise", "did you mean 'max_batch_size'"]),
    "wrong type": (GOOD + 'max_batch_size = "big"\n', ["[engine.engine]", "max_batch_size", "integer"]),
    "impossible value": (GOOD.replace('source = "hf"', 'source = "hf"\ntp_size = 0'),
                         ["[checkpoint.checkpoint]", "tp_size", "greater than 0"]),
    "misspelt dtype": (GOOD.replace('source = "hf"', 'source = "hf"\ndtype = "flaot16"'),
                       ["[checkpoint.checkpoint]", "dtype", "flaot16"]),
    "tp does not divide heads": (GOOD.replace('source = "hf"', 'source = "hf"\ntp_size = 3'),
                                 ["[checkpoint.checkpoint]", "tp_size", "does not divide", "4 attention heads"]),
    "pp exceeds layers": (GOOD.replace('source = "hf"', 'source = "hf"\npp_size = 3'),
                          ["[checkpoint.checkpoint]", "pp_size", "2 layers"]),
    "missing source": (GOOD.replace('"hf"', '"nothere"'),
                       ["[checkpoint.checkpoint]", "source", "does not exist"]),
    "escaping source": (GOOD.replace('"hf"', '"../../../../etc"'),
                        ["[checkpoint.checkpoint]", "source", "escapes the workspace"]),
    "absolute source outside data roots": (GOOD.replace('"hf"', '"/usr/share"'),
                                           ["[checkpoint.checkpoint]", "source", "data root"]),
    "dangling reference": (GOOD.replace('":checkpoint"', '":nope"'),
                           ["[engine.engine]", "checkpoint", "models/m:nope", "no BUILD.toml declares"]),
    "wrong-kind reference": (GOOD + "\n[engine.other]\ncheckpoint = \":engine\"\n",
                             ["[engine.other]", "models/m:engine, an engine target; expected a checkpoint"]),
    "duplicate address": (GOOD + "\n[engine.checkpoint]\ncheckpoint = \":checkpoint\"\n",
                          ["duplicate address models/m:checkpoint"]),
    "unknown defaults key": ("[defaults.engine]\nmax_batch = 3\n" + GOOD,
                             ["[defaults.engine]", "max_batch", "did you mean 'max_batch_size'"]),
}


def _assert_clean_failure(proc_stdout: str, proc_stderr: str, returncode: int, expected: list[str],
                          ws) -> None:
    output = proc_stdout + proc_stderr
    assert returncode != 0
    assert "Traceback" not in output, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} not in:\n{output}"
    assert not (ws.root / "dist" / "run.json").exists()
    assert not any(ws.cache.glob("entries/*/*")), "nothing may be built or cached"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_build_file(case, make_workspace, tiny_models):
    text, expected = CASES[case]
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], text)
    run = ws.doit(check=False)
    _assert_clean_failure(run.stdout, run.stderr, run.returncode, expected, ws)
    plan = ws.llmbuild("plan", check=False)
    if case not in ("missing source",):  # plan works without sources present
        assert plan.returncode != 0 and "Traceback" not in plan.stderr


@pytest.mark.parametrize("extra, expected", [
    ('lanee = "cpu"', ["pyproject.toml", "[tool.llmbuild]", "lanee", "unknown key", "did you mean 'lane'"]),
    ('data_roots = "/data"', ["pyproject.toml", "data_roots"]),
])
def test_bad_settings(extra, expected, make_workspace, tiny_models):
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], GOOD)
    ws.write_pyproject(extra)
    run = ws.doit(check=False)
    _assert_clean_failure(run.stdout, run.stderr, run.returncode, expected, ws)


def test_bad_lane_override(make_workspace, tiny_models):
    ws = make_workspace()
    ws.add_model("m", tiny_models[0], GOOD)
    run = ws.doit(check=False, env=ws.env(LLMBUILD_LANE="tpu"))
    _assert_clean_failure(run.stdout, run.stderr, run.returncode, ["lane", "tpu"], ws)


def test_failing_tool_keeps_its_log_and_says_where(make_workspace, tiny_models):
    ws = make_workspace()
    model = ws.add_model("m", tiny_models[0], GOOD)
    (model / "hf" / "model.safetensors").write_bytes(b"not a safetensors file")
    run = ws.doit(check=False)
    assert run.returncode != 0
    assert run.outcomes["models/m:checkpoint"] == "failed"
    output = run.stdout + run.stderr
    logs = list(ws.cache.glob("failed/*/log.txt"))
    assert len(logs) == 1 and str(logs[0]) in output
    assert "--model_dir" in logs[0].read_text()
    assert not any(ws.cache.glob("entries/*/*"))
    assert "models/m:engine" not in run.outcomes or run.outcomes["models/m:engine"] != "built"
    record = json.loads((ws.root / "dist/run.json").read_text())
    assert record["targets"][0]["outcome"] == "failed"
