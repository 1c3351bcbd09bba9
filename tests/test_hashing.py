"""Source and output digests are BLAKE3, each file is hashed once (a fresh clone too), runs say
what they hashed, and hashing on several threads survives doit's forked workers."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from conftest import TINY_HF
from llmbuild.core import digests
from llmbuild.core.digests import DigestCache, digest_of_listing, hash_file
from llmbuild.core.keys import Change

#: Official BLAKE3 test vectors (BLAKE3-team/BLAKE3 test_vectors.json: input byte i is i % 251),
#: and the hash of b"abc".
VECTORS = {
    0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    1025: "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444",
    102400: "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085",
}
ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def pattern(length: int) -> bytes:
    return bytes(i % 251 for i in range(251)) * (length // 251) + bytes(range(length % 251))


def big_file(path: Path, tag: bytes) -> Path:
    """A sparse file large enough to be hashed on several threads, distinct by its first bytes."""
    with open(path, "wb") as handle:
        handle.write(tag)
        handle.truncate(digests.PARALLEL_MIN_BYTES + 4096)
    return path


def run_json(ws) -> dict:
    return json.loads((ws.root / "dist" / "run.json").read_text())


# -- the digest is BLAKE3 ---------------------------------------------------------------------


def test_file_digests_are_blake3_reference_values(tmp_path):
    (tmp_path / "abc").write_bytes(b"abc")
    assert hash_file(tmp_path / "abc") == ABC
    for length, expected in VECTORS.items():
        (tmp_path / f"v{length}").write_bytes(pattern(length))
        assert hash_file(tmp_path / f"v{length}") == expected, length
    # More than one read (CHUNK), on one thread and on two: the same digest.
    (tmp_path / "long").write_bytes(pattern(digests.CHUNK + 1025))
    whole = blake3.blake3(pattern(digests.CHUNK + 1025)).hexdigest()
    assert hash_file(tmp_path / "long", threads=1) == hash_file(tmp_path / "long", threads=2) == whole
    # What keys hold: a listing's digest, prefixed by the algorithm.
    files = DigestCache(tmp_path / "d.sqlite3").tree_files(tmp_path / "abc")
    assert files == {"": ABC}
    assert digest_of_listing(files) == "blake3:" + blake3.blake3(f"{ABC}  \n".encode()).hexdigest()
    # ... which `llmbuild explain` shortens.
    change = Change("dependency", "checkpoint", "blake3:" + "a" * 64, "blake3:" + "b" * 64)
    assert change.describe() == "dependency checkpoint: blake3:aaaaaaaaaaaa… -> blake3:bbbbbbbbbbbb…"


# -- several threads, forked processes --------------------------------------------------------


def _hash_big(path: str) -> str:
    return hash_file(Path(path))


def test_a_fork_of_a_process_that_hashed_on_threads_hashes_on_threads(tmp_path):
    """rayon's global pool (blake3.AUTO) is created once per process: a child forked after it
    exists waits on threads it does not have. Our hasher brings its own pool in each process."""
    path = big_file(tmp_path / "big.bin", b"fork")
    assert len(os.sched_getaffinity(0)) > 1, "needs two CPUs to hash on several threads"
    parent = hash_file(path)  # several threads, in this process, before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_hash_big, (str(path),)).get(timeout=120)  # terminates the pool if hung
    assert child == parent == blake3.blake3(path.read_bytes()).hexdigest()


BLOB_KIND = '''
import shutil
from typing import Annotated

from pydantic import Field

from llmbuild.core import digests
from llmbuild.core.steps import Plan
from llmbuild.core.target import Kind, Source, TargetFields, register


class BlobFields(TargetFields):
    source: Annotated[str, Source()] = Field(description="A file to copy.")


@register
class Blob(Kind):
    name = "blob"
    Fields = BlobFields
    help = "Copies its source (a kind registered by a test): a large source, a large output."

    def plan(self, ctx):
        return Plan(params={})

    def run(self, ctx):
        shutil.copyfile(ctx.sources["source"], ctx.out / "blob.bin")


# Which processes hashed on several threads: one line "<pid> <max_threads>" per hasher.
_real = digests.blake3


class _Recording:
    @staticmethod
    def blake3(data=b"", max_threads=1):
        if max_threads > 1:
            with open(LOG, "a") as log:
                log.write(f"{__import__('os').getpid()} {max_threads}\\n")
        return _real.blake3(data, max_threads=max_threads)


digests.blake3 = _Recording
'''


def test_doit_n_2_hashes_large_sources_and_outputs_on_threads_and_finishes(make_workspace, tmp_path):
    """The main process hashes both sources on several threads (up-to-date checks), then forks
    its workers, which hash their outputs on several threads: the run must finish."""
    assert len(os.sched_getaffinity(0)) > 1, "needs two CPUs to hash on several threads"
    ws = make_workspace()
    log = tmp_path / "threads.log"
    (tmp_path / "kindmod").mkdir()
    (tmp_path / "kindmod" / "blob_kind.py").write_text(f"LOG = {str(log)!r}\n" + BLOB_KIND)
    (ws.root / "dodo.py").write_text("import blob_kind  # noqa: F401\nfrom llmbuild.doit import *  # noqa\n")
    for name in ("a", "b"):
        ws.write(f"models/{name}/BUILD.toml", '[blob.blob]\nsource = "big.bin"\n')
        big_file(ws.root / "models" / name / "big.bin", name.encode())
    env = ws.env(PYTHONPATH=f"{tmp_path / 'kindmod'}:{os.environ.get('PYTHONPATH', '')}")
    with open(tmp_path / "out.txt", "w") as out:  # files, not pipes: a hung worker would hold a pipe
        proc = subprocess.Popen([sys.executable, "-m", "doit", "-n", "2"], cwd=ws.root, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # doit and its workers
            proc.wait()
            pytest.fail("doit -n 2 hung hashing on several threads:\n" + (tmp_path / "out.txt").read_text())
    assert returncode == 0, (tmp_path / "out.txt").read_text()
    record = run_json(ws)
    assert {r["address"]: r["outcome"] for r in record["targets"]} == {
        "models/a:blob": "built", "models/b:blob": "built"}
    for name in ("a", "b"):
        assert (ws.root / "dist/models" / name / "blob/blob.bin").read_bytes()[:1] == name.encode()
    # doit's process hashed the two sources; its workers, forked after, the two outputs.
    pids = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert len(pids) == 4 and pids.count(proc.pid) == 2, (proc.pid, pids)
    assert record["hashed"]["files"] == 2  # the main process's count: the sources


# -- each source hashed once, ever ------------------------------------------------------------


@pytest.mark.slow
def test_a_fresh_clone_hashes_each_source_once_then_nothing(make_workspace):
    ws = make_workspace()
    ws.add_model("m", TINY_HF)
    built = ws.doit()
    assert set(built.outcomes.values()) == {"built"}
    sources = [p for p in (ws.root / "models/m/hf").rglob("*") if p.is_file()]
    # A fresh clone: every file has a new mtime, the same bytes.
    for path in ws.root.joinpath("models").rglob("*"):
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3600 * 10**9))
    first = ws.doit()
    assert set(first.outcomes.values()) == {"up-to-date"}
    hashed = run_json(ws)["hashed"]
    assert (hashed["files"], hashed["bytes"]) == (len(sources), sum(p.stat().st_size for p in sources))
    assert f"hashed {len(sources)} files, " in first.stdout
    second = ws.doit()
    assert set(second.outcomes.values()) == {"up-to-date"}
    assert run_json(ws)["hashed"] == {"files": 0, "bytes": 0, "seconds": 0.0}
    assert "hashed" not in second.stdout
