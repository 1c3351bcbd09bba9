"""LLMBUILD_FAULT: the crash tests' kill switch stops a process at the Nth time it reaches a point,
with the signal asked for, says so, and refuses a spec that would never fire."""

from __future__ import annotations

import os
import subprocess
import sys

from cache_checks import interruptible

REACH_TWICE = """
from llmbuild.core.faults import reach
for i in (1, 2, 3):
    reach("commit-manifest")
    print("passed", i, flush=True)
"""


def run(spec: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LLMBUILD_FAULT"}
    if spec is not None:
        env["LLMBUILD_FAULT"] = spec
    return subprocess.run([sys.executable, "-c", REACH_TWICE], env=env, capture_output=True, text=True,
                          timeout=60, check=False, preexec_fn=interruptible)


def test_unset_reach_does_nothing():
    done = run(None)
    assert (done.returncode, done.stdout, done.stderr) == (0, "passed 1\npassed 2\npassed 3\n", "")


def test_the_nth_time_the_point_is_reached_the_process_gets_the_signal():
    killed = run("commit-manifest@2")
    assert (killed.returncode, killed.stdout) == (-9, "passed 1\n")
    assert killed.stderr == "llmbuild: fault injected at commit-manifest@2: SIGKILL\n"
    interrupted = run("commit-manifest:INT")
    assert interrupted.returncode == -2 and interrupted.stdout == ""  # Python re-raises an uncaught SIGINT
    assert interrupted.stderr.startswith("llmbuild: fault injected at commit-manifest@1: SIGINT\n")
    assert interrupted.stderr.rstrip().endswith("KeyboardInterrupt")


def test_another_point_is_not_stopped_at():
    assert run("tool-run").stdout == "passed 1\npassed 2\npassed 3\n"


def test_a_spec_that_names_no_point_or_signal_is_refused():
    for spec in ("commit-manifst", "commit-manifest:TERM", "commit-manifest@x"):
        refused = run(spec)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith(f"llmbuild: LLMBUILD_FAULT={spec}: expected POINT[@N][:KILL|INT], "
                                         "POINT one of tool-run, output-written,"), refused.stderr
