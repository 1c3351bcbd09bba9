"""Real-Docker fixtures (a pytest plugin: conftest loads it via ``pytest_plugins``).

- ``docker_client``: a daemon that answers — $DOCKER_HOST, the default socket, or one this
  fixture starts with ``.ci/start-dockerd`` (then DOCKER_HOST is set for the session and
  every subprocess it starts). A test that needs Docker FAILS when none can be had.
- ``busybox_image``: ``FROM scratch`` + Debian's static ``/bin/busybox`` (no registry is
  reachable). No symlinks: call it as ``["/bin/busybox", "sh", "-c", ...]``.
- ``python_image``: Debian bookworm + python3 3.11, made by
  ``tests/docker/make_python_image.sh`` (debootstrap + docker import) once; its root
  filesystem tarball is kept under ``${LLMBUILD_TEST_CACHE:-<repo>/cache}/docker/`` so
  later sessions (and a restarted daemon) skip the ~50 s debootstrap.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_DOCKERD = REPO / ".ci" / "start-dockerd"
MAKE_PYTHON_IMAGE = REPO / "tests" / "docker" / "make_python_image.sh"
PYTHON_IMAGE_TAG = "llmbuild-test/python:bookworm"
PACKAGES = "apt-get install -y docker.io busybox-static debootstrap"


def docker_cache_dir() -> Path:
    return Path(os.environ.get("LLMBUILD_TEST_CACHE") or REPO / "cache") / "docker"


@pytest.fixture(scope="session")
def docker_client():
    """A ping-checked docker.DockerClient; starts dockerd if nothing answers."""
    from llmbuild.executors import docker as executor

    try:
        client = executor.docker_client()
    except executor.DockerUnavailable as e:
        first = str(e)
    else:
        yield client
        return
    if shutil.which("dockerd") is None and not Path("/usr/sbin/dockerd").exists():
        pytest.fail(f"{first}\nand dockerd is not installed here: {PACKAGES}", pytrace=False)
    proc = subprocess.run([str(START_DOCKERD)], capture_output=True, text=True, timeout=120)
    exports = [line for line in proc.stdout.splitlines() if line.startswith("export DOCKER_HOST=")]
    if proc.returncode != 0 or not exports:
        pytest.fail(f"{first}\n.ci/start-dockerd could not start one (exit {proc.returncode}):\n"
                    f"{proc.stderr[-3000:]}", pytrace=False)
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = exports[-1].split("=", 1)[1]
    try:
        client = executor.docker_client()
    except executor.DockerUnavailable as e:
        pytest.fail(f"dockerd was started but does not answer: {e}", pytrace=False)
    yield client
    if previous is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = previous


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    if is64:
        phoff, = struct.unpack_from(e + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 0x36)
    else:
        phoff, = struct.unpack_from(e + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(e + "HH", data, 0x2A)
    for i in range(phnum):
        p_type, = struct.unpack_from(e + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _find_static_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate).resolve()):
            return Path(candidate).resolve()
    pytest.fail(f"no static busybox on this machine: {PACKAGES}", pytrace=False)


def _image_exists(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.fixture(scope="session")
def busybox_image(docker_client) -> str:
    """Tag of a FROM-scratch image holding only /bin/busybox (built in ~2 s, once)."""
    busybox = _find_static_busybox()
    digest = hashlib.sha256(busybox.read_bytes()).hexdigest()[:12]
    tag = f"llmbuild-test/busybox:{digest}"
    if _image_exists(docker_client, tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="llmbuild-busybox-") as context:
        shutil.copy2(busybox, Path(context) / "busybox")
        (Path(context) / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sh\"]\n")
        docker_client.images.build(path=context, tag=tag, rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="session")
def python_image(docker_client) -> str:
    """Tag of a Debian bookworm image with python3 3.11 (debootstrap + docker import)."""
    from filelock import FileLock

    cache = docker_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / "bookworm-python3-rootfs.tar"
    with FileLock(str(cache / "python-image.lock"), timeout=900):
        if _image_exists(docker_client, PYTHON_IMAGE_TAG):
            return PYTHON_IMAGE_TAG
        if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists() \
                and not tarball.exists():
            pytest.fail(f"debootstrap is missing and no cached {tarball}: {PACKAGES}",
                        pytrace=False)
        proc = subprocess.run(["bash", str(MAKE_PYTHON_IMAGE), PYTHON_IMAGE_TAG, str(tarball)],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"making {PYTHON_IMAGE_TAG} failed (exit {proc.returncode}):\n"
                        f"{proc.stderr[-3000:]}", pytrace=False)
    return PYTHON_IMAGE_TAG
