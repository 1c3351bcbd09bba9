"""When something fails, dist/ never shows an earlier success as current and the log the
error names exists and says why; a missing data-root source fails only its own targets;
serving a repository leaves its cache entry as it was committed.

Every test starts from a copy of one warm workspace whose whole pipeline is built.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cache_checks import interruptible

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

[smoke.smoke]
repository = ":repository"
prompt = "What is machine learning?"
max_tokens = 8
"""
STAGES = ("checkpoint", "engine", "repository", "smoke")


def address(stage: str) -> str:
    return f"models/tiny:{stage}"


@pytest.fixture(scope="module")
def warm(tmp_path_factory, tiny_models):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("warm")
    workspace = Workspace(root / "ws", root / "cache")
    workspace.add_model("tiny", tiny_models[0], PIPELINE)
    assert workspace.doit().built() == {address(s) for s in STAGES}
    return workspace


@pytest.fixture
def ws(warm, tmp_path):
    return warm.copy(tmp_path / "ws", tmp_path / "cache")


def edit(ws, old: str, new: str) -> None:
    path = ws.root / "models/tiny/BUILD.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def linked(ws, stage: str) -> bool:
    return os.path.lexists(ws.root / "dist/models/tiny" / stage)


def record(run, name: str) -> dict:
    """The run.json record of `name`, from a conftest.Run or a loaded dist/run.json."""
    records = run["targets"] if isinstance(run, dict) else run.records
    return next(r for r in records if r["address"] == name)


def assert_console_agrees(run) -> None:
    """The run's summary on the console says what dist/run.json says."""
    for rec in run.records:
        if rec["outcome"] != "up-to-date":
            assert f"  {rec['outcome']:<10} {rec['address']}" in run.stdout, (rec, run.stdout)


def test_failed_smoke_removes_its_link_and_its_log_holds_answers_and_triton_log(ws):
    assert json.loads((ws.root / "dist/models/tiny/smoke/report.json").read_text())["passed"]
    edit(ws, "max_tokens = 8", 'max_tokens = 8\nexpect_substring = "no such answer"')
    run = ws.doit(check=False)
    assert run.returncode != 0
    assert run.outcomes == {address("checkpoint"): "up-to-date", address("engine"): "up-to-date",
                            address("repository"): "up-to-date", address("smoke"): "failed"}
    assert not linked(ws, "smoke"), "a failed smoke must not leave the last passing report in dist/"
    assert_console_agrees(run)
    log = Path(record(run, address("smoke"))["log"])
    assert log.parent.parent == ws.cache / "failed" and log.is_file()
    assert f"log: {log}" in run.stdout + run.stderr  # the error and the summary name it
    text = log.read_text()
    assert "text does not contain 'no such answer'" in text  # the answer and what was wrong
    assert "Started HTTPService at" in text  # Triton's own log
    assert text.splitlines()[-1].startswith(f"llmbuild: {address('smoke')} failed: smoke checks failed: "
                                            "request 1: text does not contain 'no such answer'")
    assert not json.loads((log.parent / "out/report.json").read_text())["passed"]

    edit(ws, '\nexpect_substring = "no such answer"', "")
    again = ws.doit()
    assert again.outcomes[address("smoke")] == "restored"  # the earlier pass stayed in the cache
    assert json.loads((ws.root / "dist/models/tiny/smoke/report.json").read_text())["passed"]


def test_interrupted_build_leaves_no_link_from_the_moment_it_starts(ws):
    edit(ws, 'prompt = "What is machine learning?"', 'prompt = "What is deep learning?"')
    doit = subprocess.Popen([sys.executable, "-m", "doit"], cwd=ws.root, env=ws.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=interruptible)
    deadline = time.monotonic() + 300
    while not any((ws.cache / "staging").glob("*")):  # the smoke's build has started
        assert doit.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert not linked(ws, "smoke"), "even a SIGKILL from here on must not leave the last report in dist/"
    doit.send_signal(signal.SIGINT)
    doit.communicate(timeout=120)
    assert doit.returncode != 0
    interrupted = record(json.loads((ws.root / "dist/run.json").read_text()), address("smoke"))
    assert (interrupted["outcome"], interrupted["note"]) == ("failed", "interrupted")
    assert not linked(ws, "smoke")
    [log] = ws.cache.glob("failed/*/log.txt")
    assert log.read_text().endswith(f"llmbuild: {address('smoke')} failed: interrupted\n")


def test_failed_dependency_removes_the_links_of_everything_built_from_it(ws):
    (ws.root / "models/tiny/hf/model.safetensors").write_bytes(b"not a safetensors file")
    run = ws.doit(check=False)
    assert run.returncode != 0
    assert run.outcomes == {address("checkpoint"): "failed", address("engine"): "skipped",
                            address("repository"): "skipped", address("smoke"): "skipped"}
    assert record(run, address("engine"))["note"] == f"needs {address('checkpoint')}, which failed"
    assert [s for s in STAGES if linked(ws, s)] == []
    assert_console_agrees(run)
    log = Path(record(run, address("checkpoint"))["log"])
    assert log.is_file() and "--model_dir" in log.read_text()  # the stand-in's command and output


def break_engine(ws) -> None:
    """The CPU stand-in refuses, when it runs, what only the real trtllm-build can honour."""
    edit(ws, "max_seq_len = 80", 'max_seq_len = 80\nspeculative_decoding_mode = "medusa"\nmax_draft_len = 2')


def break_repository(ws) -> None:
    """A kind without tool steps fails by an exception: here a corrupt engine in the cache, changed
    keeping its size and mtimes (which the stat check before linking lets through)."""
    config = (ws.root / "dist/models/tiny/engine").resolve() / "config.json"
    st, directory = config.stat(), config.parent.stat()
    config.unlink()
    config.write_text("{".ljust(st.st_size))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(config.parent, ns=(directory.st_atime_ns, directory.st_mtime_ns))
    edit(ws, 'engine = ":engine"', 'engine = ":engine"\nmax_queue_size = 3')


@pytest.mark.parametrize("stage, breaks, says", [
    ("engine", break_engine, "--speculative_decoding_mode medusa is not supported on the CPU lane"),
    ("repository", break_repository, "JSONDecodeError"),
])
def test_a_failure_names_a_log_that_exists_and_says_why(ws, stage, breaks, says):
    breaks(ws)
    run = ws.doit(check=False)
    assert run.outcomes[address(stage)] == "failed"
    assert not linked(ws, stage)
    error = next(line for line in (run.stdout + run.stderr).splitlines()
                 if line.startswith(f"{address(stage)} failed:"))
    log = Path(error.split("; log: ")[1].split(";")[0])
    assert log.is_file() and says in log.read_text()
    assert log == Path(record(run, address(stage))["log"])
    assert f"output so far: {log.parent / 'out'}" in error
    assert_console_agrees(run)


def test_serving_leaves_the_repository_entry_as_committed(ws):
    entry = (ws.root / "dist/models/tiny/repository").resolve()
    committed = json.loads((entry.parent / "manifest.json").read_text())["outputs"]

    def state() -> tuple[list[str], dict[str, str]]:
        """Every file and directory in the entry, and the files' digests."""
        from llmbuild.core.digests import DigestCache

        paths = sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*"))
        return paths, DigestCache(ws.cache / "digests.sqlite3").tree_files(entry)

    before = state()
    assert before[1] == committed, "the warm workspace's smoke served it once already"
    assert not [p for p in before[0] if "__pycache__" in p]
    edit(ws, 'prompt = "What is machine learning?"', 'prompt = "What is deep learning?"')
    assert ws.doit().built() == {address("smoke")}
    assert state() == before


def test_missing_data_root_source_fails_only_the_targets_that_need_it(ws, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ws.write_pyproject(f'data_roots = ["{data}"]')
    ws.write("models/big/BUILD.toml", f"""\
        [checkpoint.checkpoint]
        source = "{data}/hf/mixtral-8x7b"

        [engine.engine]
        checkpoint = ":checkpoint"
        max_batch_size = 4
        """)
    missing = (f"models/big/BUILD.toml: [checkpoint.checkpoint]: source: source path "
               f"{data}/hf/mixtral-8x7b does not exist on this machine")
    for lane in ("cpu", "gpu"):
        env = ws.env(LLMBUILD_LANE=lane)
        listed = ws.doit("list", env=env)
        assert f"[fails here: {missing}]" in listed.stdout and "models/tiny:engine" in listed.stdout
        plan = ws.llmbuild("plan", "--lane", lane, "models/big:checkpoint").stdout
        assert "--model_dir" in plan and f"{data}/hf/mixtral-8x7b" in plan
        failed = ws.doit("models/big:engine", check=False, env=env)
        assert failed.returncode != 0 and "Traceback" not in failed.stdout + failed.stderr
        assert missing in failed.stdout + failed.stderr
        assert failed.outcomes == {"models/big:checkpoint": "failed", "models/big:engine": "skipped"}
        assert record(failed, "models/big:checkpoint")["note"] == missing
    assert ws.doit("models/tiny").outcomes == {address(s): "up-to-date" for s in STAGES}
    everything = ws.doit(check=False)
    assert everything.returncode != 0
    assert everything.outcomes == {**{address(s): "up-to-date" for s in STAGES},
                                   "models/big:checkpoint": "failed", "models/big:engine": "skipped"}
    assert f"needs models/big:checkpoint first (would fail):\n  -   {missing}" in \
        ws.llmbuild("explain", "models/big:engine").stdout
    assert f"models/big:checkpoint: would fail\n  - {missing}" in \
        ws.llmbuild("explain", "models/big:checkpoint").stdout
