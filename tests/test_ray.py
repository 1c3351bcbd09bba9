"""The Ray executor (`executor = "ray"`).

The cluster tests live in ray_cases.py and run here in a network namespace where only loopback
exists (`unshare -n`, as root; util-linux and iproute2): Ray advertises the machine's eth0
address otherwise. The S3 server, the Ray nodes and the `doit` drivers all start inside it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, TINY_HF, Workspace

pytestmark = pytest.mark.slow


def test_ray_cluster_cases_in_a_loopback_only_namespace(tmp_path):
    for tool in ("unshare", "ip"):
        assert shutil.which(tool), f"the Ray tests need {tool} (util-linux, iproute2)"
    inner = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--durations=0", "-s",
             f"--basetemp={tmp_path / 'inner'}", str(REPO / "tests" / "ray_cases.py")]
    clock = time.monotonic()
    proc = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *inner],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-4000:], f"\nray_cases.py under unshare -n: {time.monotonic() - clock:.1f} s")
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-4000:]
    assert re.search(r"^3 passed", proc.stdout, re.M), proc.stdout[-2000:]


def test_a_ray_run_without_a_remote_cache_is_one_line(tmp_path):
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.add_model("m", TINY_HF)
    run = ws.doit("models/m:checkpoint", check=False,
                  env=ws.env(LLMBUILD_EXECUTOR="ray", RAY_ADDRESS="127.0.0.1:1"))
    assert run.returncode != 0
    assert run.records[0]["note"] == ('executor = "ray" needs a remote cache it can write: set remote_cache = '
                                      '"s3://<bucket>/<prefix>" in [tool.llmbuild] (or LLMBUILD_REMOTE_CACHE) '
                                      'with remote_cache_mode = "readwrite"')
    assert run.records[0]["outcome"] == "failed"
