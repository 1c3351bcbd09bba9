"""What a person sees from `doit`: progress with phases and elapsed time (live on a terminal,
timestamped lines in CI logs), failures in one line naming the kept log, and none of doit's
internals (tracebacks, `####` blocks, UnmetDependency, `(args=[], kwargs={})`, "executing
'Python: ...'") in any of the cases a newcomer meets."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cache_checks import interruptible
from conftest import MODEL_TOML, TINY_HF

from llmbuild.core import progress as core_progress
from llmbuild.plugins import load_workspace

#: What doit's own reporting looks like; none of it may reach a person.
DOIT_INTERNALS = ("Traceback", "KeyboardInterrupt", "UnmetDependency", "TaskFailed", "####", "args=[]",
                  "executing 'Python", "taskid:")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

SMOKE_MODEL = MODEL_TOML + """
[repository.repository]
engine = ":engine"

[smoke.smoke]
repository = ":repository"
prompt = "What is machine learning?"
max_tokens = 8
requests = [{ prompt = "Hello", max_tokens = 4 }]
"""
GPU_ONLY = """\
[engine.gpu]
checkpoint = "models/a:checkpoint"
lanes = ["gpu"]
"""


def assert_no_internals(text: str) -> None:
    for internal in DOIT_INTERNALS:
        assert internal not in text, f"{internal!r} in:\n{text}"


def in_pty(argv: list[str], cwd: Path, env: dict[str, str], interrupt_when: str | None = None,
           timeout: float = 600) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its stdin/stdout/stderr; its status and everything it
    wrote (SIGINT once `interrupt_when` has appeared)."""
    master, slave = os.openpty()
    process = subprocess.Popen(argv, cwd=cwd, env={**env, "COLUMNS": "200", "TERM": "xterm"},
                               stdin=slave, stdout=slave, stderr=slave, close_fds=True, preexec_fn=interruptible)
    os.close(slave)
    output, deadline, interrupted = b"", time.monotonic() + timeout, False
    try:
        while time.monotonic() < deadline:
            if interrupt_when and not interrupted and interrupt_when.encode() in output:
                process.send_signal(signal.SIGINT)
                interrupted = True
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(timeout=60), output.decode(errors="replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


def summary_addresses(stdout: str) -> list[str]:
    summary = stdout.split("llmbuild (cpu lane) -> ", 1)[1]
    return re.findall(r"^  \S+\s+(\S+:\S+)", summary, re.M)


# -- failures, info, clean, skipped, -n 2 ---------------------------------------------------------

@pytest.fixture
def broken(make_workspace):
    """models/a builds; models/b's weights are truncated, so its checkpoint fails."""
    w = make_workspace()
    w.add_model("a", TINY_HF)
    w.add_model("b", TINY_HF)
    weights = w.root / "models/b/hf/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return w


def test_failure_says_what_failed_and_names_the_kept_log(broken):
    run = broken.doit("models/b", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert_no_internals(out)
    log = Path(run.records[0]["log"])
    assert log.is_file() and "/cache/failed/" in str(log)
    failure = next(line for line in run.stdout.splitlines() if line.startswith("models/b:checkpoint failed:"))
    assert f"log: {log}" in failure
    # the tool's last lines follow, its paths where the attempt is kept (staging is gone)
    tail = [line for line in run.stdout.splitlines() if line.startswith("   | ")]
    assert any("convert_checkpoint.py: error:" in line and "cannot load weights" in line for line in tail), out
    assert any(str(log.parent) in line for line in tail)
    assert "/cache/staging/" not in out and "/cache/staging/" not in log.read_text()
    assert ("not built: models/b:engine: depends on models/b:checkpoint, which failed"
            in run.stdout.splitlines())
    assert summary_addresses(run.stdout) == ["models/b:checkpoint", "models/b:engine"]


def test_info_and_clean_say_it_in_one_line(broken):
    broken.doit("models/a")
    unknown = broken.doit("info", "nosuch:thing", check=False)
    assert unknown.returncode == 3 and unknown.stdout == ""
    assert unknown.stderr == "ERROR: no target matches 'nosuch:thing'\n"
    typo = broken.doit("info", "models/a:engin", check=False)
    assert typo.stderr == "ERROR: no target matches 'models/a:engin' (did you mean 'models/a:engine'?)\n"

    build_toml = broken.root / "models/a/BUILD.toml"
    build_toml.write_text(build_toml.read_text().replace("max_batch_size = 4", "max_batch_size = 3"))
    info = broken.doit("info", "models/a:engine", check=False)
    assert info.returncode == 1
    assert_no_internals(info.stdout + info.stderr)
    assert "        - parameter max_batch_size: 4 -> 3\n" in info.stdout

    link = broken.root / "dist/models/a/checkpoint"
    dry = broken.doit("clean", "-n", "models/a:checkpoint")
    assert dry.stdout == f"would remove {link}\n" and link.is_symlink()
    clean = broken.doit("clean", "models/a:checkpoint")
    assert clean.stdout == f"removed {link}\n" and not link.is_symlink()
    assert_no_internals(clean.stdout + clean.stderr)


def test_skipped_targets_are_listed_once_and_parallel_summaries_follow_the_graph(make_workspace):
    w = make_workspace()
    for name in ("a", "b", "c"):
        w.add_model(name, TINY_HF)
    w.write("models/gpu/BUILD.toml", GPU_ONLY)
    run = w.doit("-n", "2")
    assert_no_internals(run.stdout + run.stderr)
    assert (run.stdout + run.stderr).count("models/gpu:gpu") == 1  # in the summary only
    assert "  skipped    models/gpu:gpu" in run.stdout
    order = [str(t.address) for t in load_workspace(w.root, environ={}).order]
    assert summary_addresses(run.stdout) == order
    assert [r["address"] for r in run.records] == order


def test_ctrl_c_ends_with_the_summary_and_no_traceback(make_workspace):
    w = make_workspace()
    w.add_model("a", TINY_HF)
    env = w.env(LLMBUILD_TEST_BUILD_SECONDS="120")  # the engine build takes two minutes
    process = subprocess.Popen([sys.executable, "-m", "doit", "models/a"], cwd=w.root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    seen = ""
    assert process.stdout is not None
    for line in process.stdout:  # timestamped progress lines: stdout is not a terminal
        seen += line
        if "running trtllm_build" in line:
            process.send_signal(signal.SIGINT)
            break
    rest, errors = process.communicate(timeout=120)
    out = seen + rest + errors
    assert process.returncode == 130, out
    assert_no_internals(out)
    assert re.search(r"^  failed     models/a:engine\s+\d+\.\ds  \(interrupted\)$", out, re.M), out
    assert out.rstrip().endswith("interrupted")


# -- progress -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_progress_live_on_a_terminal_and_timestamped_in_logs(make_workspace, triton_env):
    w = make_workspace()
    w.add_model("m", TINY_HF, SMOKE_MODEL)

    run = w.doit("models/m")  # not a terminal: one timestamped line per phase
    assert_no_internals(run.stdout + run.stderr)
    line = r"^\d\d:\d\d:\d\d models/m:smoke +\d+\.\ds  "
    for phase in (r"starting Triton on :\d+$", r"loading models [0-5]/5$", r"request 1/2$", r"request 2/2$",
                  r"ensemble 'What is machine learning\?' -> .* ok$", r"stopping Triton$"):
        assert re.search(line + phase, run.stdout, re.M), (phase, run.stdout)
    assert re.search(r"^\d\d:\d\d:\d\d models/m:engine +\d+\.\ds  running trtllm_build$", run.stdout, re.M)

    build_toml = w.root / "models/m/BUILD.toml"  # the smoke again, this time on a terminal
    build_toml.write_text(build_toml.read_text().replace("max_tokens = 4", "max_tokens = 3"))
    status, output = in_pty([sys.executable, "-m", "doit", "models/m"], w.root, w.env())
    assert status == 0, output
    assert_no_internals(output)
    assert "\x1b[" in output  # drawn by rich, in place
    plain = ANSI.sub("", output).replace("\r\n", "\n").replace("\r", "")
    for phase in ("starting Triton on :", "loading models", "request 1/2", "request 2/2", "stopping Triton"):
        assert re.search(r"models/m:smoke " + re.escape(phase) + r".*?\d+\.\ds", plain), (phase, plain)
    assert not re.search(r"^\d\d:\d\d:\d\d ", plain, re.M)  # no log lines on a terminal
    assert re.search(r"^  built      models/m:smoke\s+\d+\.\ds$", plain, re.M)


@pytest.mark.slow
def test_triton_install_is_its_own_phase_and_not_in_the_smoke_seconds(make_workspace, triton_env, monkeypatch):
    """A first install shows as a phase of its own; the smoke's seconds leave it out."""
    from llmbuild.core.build import bring_up_to_date
    from llmbuild.toolchains.cpu import install

    w = make_workspace()
    w.add_model("m", TINY_HF, SMOKE_MODEL)
    w.doit("models/m:repository")
    for name, value in w.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLMBUILD_TRITON_ENV", raising=False)
    monkeypatch.setattr(install, "find_cpu_triton", lambda root, **kwargs: None)  # as on a fresh machine

    def slow_install(root, *, progress, **kwargs):
        progress("pip: collecting torch==2.13.0")
        time.sleep(3)
        return triton_env

    monkeypatch.setattr(install, "ensure_cpu_triton", slow_install)
    said: list[tuple[str, str]] = []
    core_progress.set_sink(lambda label, text, keep: said.append((label, text)))
    try:
        ws = load_workspace(w.root)
        started = time.monotonic()
        result = bring_up_to_date(ws, ws.targets_by_name["models/m:smoke"])
        wall = time.monotonic() - started
    finally:
        core_progress.set_sink(None)
    assert result.outcome == "built"
    phases = [text for label, text in said if label == "models/m:smoke"]
    assert phases[:2] == ["installing CPU Triton (one time)", "pip: collecting torch==2.13.0"]
    assert phases.index("pip: collecting torch==2.13.0") < phases.index(
        next(p for p in phases if p.startswith("starting Triton on :")))
    assert wall - result.seconds >= 3.0  # the install's three seconds are not the smoke's


# -- a newcomer's session -------------------------------------------------------------------------

def test_a_newcomers_session_shows_no_traceback_and_no_doit_internals(make_workspace):
    """Build, edit, break, interrupt and explain, from the workspace root and from a model
    directory: every command answers in llmbuild's words."""
    w = make_workspace()
    w.add_model("a", TINY_HF)
    model = w.root / "models" / "a"
    build_toml = model / "BUILD.toml"
    said: list[str] = []

    def run(*argv: str, cwd: Path = w.root, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env or w.env(), capture_output=True,
                              text=True, timeout=300)
        said.append(done.stdout + done.stderr)
        return done

    assert run("doit").returncode == 0  # build, from the root
    build_toml.write_text(build_toml.read_text().replace("max_batch_size = 4", "max_batch_size = 3"))
    assert "max_batch_size" in run("llmbuild", "explain", ":engine", cwd=model).stdout  # explain the edit, from the model
    assert run("doit", "-k", cwd=model).returncode == 0  # rebuild, from the model directory
    assert run("doit", "-k", ":engine", cwd=model).returncode == 0
    assert run("llmbuild", "plan", ".", cwd=model).returncode == 0
    typo = run("llmbuild", "explain", ":engin", cwd=model)
    assert typo.returncode != 0 and "did you mean ':engine'?" in typo.stderr, typo.stderr
    assert "did you mean 'models/a'?" in run("doit", "models/aa").stderr
    build_toml.write_text(build_toml.read_text().replace("max_batch_size = 3", 'max_batch_size = "three"'))
    broken = run("doit")  # break it
    assert broken.returncode != 0 and "max_batch_size" in broken.stderr, broken.stderr
    build_toml.write_text(build_toml.read_text().replace('max_batch_size = "three"', "max_batch_size = 2"))
    slow = w.env(LLMBUILD_TEST_BUILD_SECONDS="120")  # interrupt a rebuild with Ctrl-C
    process = subprocess.Popen([sys.executable, "-m", "doit", "-k"], cwd=model, env=slow, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    seen = ""
    assert process.stdout is not None
    for line in process.stdout:
        seen += line
        if "running trtllm_build" in line:
            process.send_signal(signal.SIGINT)
            break
    rest, errors = process.communicate(timeout=120)
    said.append(seen + rest + errors)
    assert process.returncode == 130 and (rest + errors).rstrip().endswith("interrupted"), said[-1]
    assert run("llmbuild", "explain", "//models/a:engine").returncode == 0
    for output in said:
        assert_no_internals(output)
