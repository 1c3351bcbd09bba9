"""Container targets and steps in containers, against a real Docker daemon."""

from __future__ import annotations

import filecmp
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MODEL = """\
[checkpoint.checkpoint]
source = "hf"
container = "toolchains/py:py"
tp_size = 2

[engine.engine]
checkpoint = ":checkpoint"
container = "toolchains/py:py"
max_batch_size = 2
"""
DOWNSTREAM = {"models/m:checkpoint", "models/m:engine"}
CONTAINER = "toolchains/py:py"


def _dockerfile(base: str, note: str = "1") -> str:
    return (f"# the CPU lane's Python, plus a context file\nFROM {base}\nARG FLAVOR=plain\n"
            f"LABEL flavor=$FLAVOR note={note}\nCOPY extra.txt /opt/extra.txt\n")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_models, python_image, docker_client):
    from conftest import Workspace

    root = tmp_path_factory.mktemp("containers")
    workspace = Workspace(root / "ws", root / "cache")
    workspace.write_pyproject(build_roots=("models", "toolchains"))
    workspace.write("toolchains/py/Dockerfile", _dockerfile(python_image))
    workspace.write("toolchains/py/extra.txt", "one\n")
    workspace.write("toolchains/py/BUILD.toml", """\
        [container.py]
        dockerfile = "Dockerfile"
        build_args = { FLAVOR = "plain" }
        """)
    workspace.add_model("m", tiny_models[1], MODEL)
    workspace.python_image = python_image
    return workspace


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_first_build_then_up_to_date(ws):
    run = ws.doit()
    assert run.built() == DOWNSTREAM | {CONTAINER}, run.stdout + run.stderr
    image = (ws.root / "dist/toolchains/py/py/image.json").read_text()
    assert '"image_id": "sha256:' in image
    assert ws.doit().outcomes == {a: "up-to-date" for a in DOWNSTREAM | {CONTAINER}}


def test_steps_in_the_container_match_the_host_byte_for_byte(ws, tmp_path, tiny_models):
    from conftest import Workspace

    host = Workspace(tmp_path / "host", tmp_path / "host-cache")
    host.add_model("m", tiny_models[1], MODEL.replace('container = "toolchains/py:py"\n', ""))
    run = host.doit()
    assert run.built() == DOWNSTREAM
    for stage in ("checkpoint", "engine"):
        a = (ws.root / f"dist/models/m/{stage}").resolve()
        b = (host.root / f"dist/models/m/{stage}").resolve()
        names = sorted(p.name for p in a.iterdir())
        assert names == sorted(p.name for p in b.iterdir())
        assert filecmp.cmpfiles(a, b, names, shallow=False)[0] == names


def test_a_comment_in_the_dockerfile_rebuilds_the_image_but_not_downstream(ws):
    """docker's layer cache gives the same image ID: early cutoff."""
    _edit(ws.root / "toolchains/py/Dockerfile", "# the CPU lane's Python", "# the CPU lane's Python (edited)")
    run = ws.doit()
    assert run.built() == {CONTAINER}
    assert run.with_outcome("up-to-date") == DOWNSTREAM


@pytest.mark.parametrize("change", ["dockerfile line", "context file", "build arg"])
def test_a_changed_image_rebuilds_everything_downstream(ws, change):
    if change == "dockerfile line":
        _edit(ws.root / "toolchains/py/Dockerfile", "note=1", "note=2")
    elif change == "context file":
        (ws.root / "toolchains/py/extra.txt").write_text("two\n")
    else:
        _edit(ws.root / "toolchains/py/BUILD.toml", 'FLAVOR = "plain"', 'FLAVOR = "spicy"')
    run = ws.doit()
    assert run.built() == DOWNSTREAM | {CONTAINER}, run.stdout + run.stderr


def test_a_deleted_image_is_rebuilt(ws, docker_client):
    image_id = (ws.root / "dist/toolchains/py/py/image.json").read_text().split('"image_id": "')[1].split('"')[0]
    docker_client.images.remove(image_id, force=True)
    run = ws.doit()
    assert run.outcomes[CONTAINER] == "built"
    rebuilt = (ws.root / "dist/toolchains/py/py/image.json").read_text()
    assert docker_client.images.get(rebuilt.split('"image_id": "')[1].split('"')[0])
    assert run.built() - {CONTAINER} in (set(), DOWNSTREAM)  # downstream follows the image ID


def test_without_a_daemon_container_targets_fail_in_one_line_and_host_targets_build(ws, tiny_models):
    ws.add_model("hostonly", tiny_models[0], """\
        [checkpoint.checkpoint]
        source = "hf"
        """)
    _edit(ws.root / "toolchains/py/extra.txt", "two", "three")  # the image must be rebuilt
    run = ws.doit(check=False, env=ws.env(DOCKER_HOST="unix:///nonexistent/docker.sock"))
    assert run.returncode != 0
    assert run.outcomes["models/hostonly:checkpoint"] == "built"
    assert run.outcomes[CONTAINER] == "failed"
    assert run.outcomes["models/m:checkpoint"] == "skipped"
    output = run.stdout + run.stderr
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "unix:///nonexistent/docker.sock" in line]
    assert lines and "dockerd" in lines[0], output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killing_doit_mid_step_leaves_no_container_running(ws, docker_client, sig):
    build = ws.root / "models/m/BUILD.toml"
    build.write_text(re.sub(r"max_batch_size = \d+", f"max_batch_size = {3 + int(sig)}", build.read_text()))
    proc = subprocess.Popen([sys.executable, "-m", "doit", "models/m:engine"], cwd=ws.root, env=ws.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not (running := docker_client.containers.list(filters={"label": "llmbuild.owner"})):
        assert proc.poll() is None, "doit ended before its container step started"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    # The next run starts by removing what the killed one left, then builds the target afresh.
    run = subprocess.run([sys.executable, "-m", "doit", "models/m:engine"], cwd=ws.root, env=ws.env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "models/m:engine" in run.stdout
    assert docker_client.containers.list(all=True, filters={"label": "llmbuild.owner"}) == []
    for container in running:
        with pytest.raises(Exception):
            docker_client.containers.get(container.id)
