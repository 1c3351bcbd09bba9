"""The remote cache on any S3-compatible store, through boto3.

    <prefix>blobs/<blake3 digest>           a file's content, stored once whatever entry names it
    <prefix>manifests/<action key>.json     an entry: its local manifest and which blob each file is
    <prefix>claims/<action key>             held by the process building that key right now

An entry is published content first, manifest last, by a conditional PUT (If-None-Match: *):
the first writer wins and a readable entry never changes. A blob the store already has is not
sent again (HEAD first), so two entries sharing a tokenizer upload it once and an interrupted
upload is cheap to retry. Files go multipart in concurrent parts, streamed from disk (memory
flat in file size); downloads stream into the local cache's staging directory, where the core
verifies every file before committing.

A claim makes a second machine that misses the same key wait for the first one's entry rather
than build it too. It is renewed while its build runs; one not renewed for CLAIM_EXPIRES
belongs to a process that died and is taken over. Two processes taking over at once both
build: a wasted build, never a wrong entry.

Endpoint, region and credentials come from boto3's own chain (the AWS_* variables, profiles,
config files): this module never reads, stores or prints them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import blake3
import boto3
import boto3.exceptions
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ..core.cache import LOG, OUT, Staging
from ..core.digests import hash_file
from ..core.errors import LLMBuildError
from ..core.faults import reach
from .settings import RemoteCacheSettings, parse_url

T = TypeVar("T")

FORMAT = 1
#: Files at least this large get a line of their own as they move.
PROGRESS_BYTES = 64 << 20
#: Multipart above this size, in parts of this size, PARTS_IN_FLIGHT of them at once per file:
#: memory stays about PART_BYTES x PARTS_IN_FLIGHT whatever the file's size.
PART_BYTES = 32 << 20
PARTS_IN_FLIGHT = 4
#: Files of one entry moved at once.
FILES_IN_FLIGHT = 4
#: A claim is renewed every CLAIM_RENEW seconds; one unchanged for CLAIM_EXPIRES is abandoned.
CLAIM_RENEW, CLAIM_EXPIRES, CLAIM_POLL = 10.0, 60.0, 0.5
#: What fails a request to the store (a miss and a lost race are told apart by the callers).
FAILURES = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, boto3.exceptions.Boto3Error)
DIGEST = re.compile(r"[0-9a-f]{64}")


class Unusable(Exception):
    """An entry the store holds but that cannot be served: corrupt or partial."""


class S3RemoteCache:
    """The RemoteCache protocol on an S3 bucket (see the module's docstring for the layout)."""

    def __init__(self, url: str, *, writes: bool, required: bool, connect_timeout: float,
                 read_timeout: float, retries: int):
        self._arguments = {"url": url, "writes": writes, "required": required, "connect_timeout": connect_timeout,
                           "read_timeout": read_timeout, "retries": retries}
        self.url = url
        self.writes = writes
        self._bucket, self._prefix = parse_url(url)
        self._required = required
        self._config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                              retries={"total_max_attempts": retries + 1, "mode": "standard"},
                              max_pool_connections=FILES_IN_FLIGHT * PARTS_IN_FLIGHT + 4)
        self._transfer = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES,
                                        max_concurrency=PARTS_IN_FLIGHT)
        self._client: Any = None
        self._pid = 0
        self._down: str | None = None  # why the store is unusable, once it failed
        self._served: dict[str, dict[str, Any]] = {}  # key -> the remote manifest `fetch` used
        self._suspect: set[str] = set()  # digests of blobs found corrupt: sent again when published

    @classmethod
    def from_settings(cls, options: RemoteCacheSettings, *, required: bool | None = None) -> S3RemoteCache:
        assert options.remote_cache is not None
        return cls(options.remote_cache, writes=options.remote_cache_mode == "readwrite",
                   required=options.remote_cache_required if required is None else required,
                   connect_timeout=options.remote_cache_connect_timeout,
                   read_timeout=options.remote_cache_read_timeout, retries=options.remote_cache_retries)

    def arguments(self) -> dict[str, Any]:
        """What makes the same store elsewhere (a Ray worker), required there: no credential."""
        return {**self._arguments, "required": True}

    # -- the protocol -------------------------------------------------------------------------

    def fetch(self, key: str, staging: Staging, *, label: str) -> dict[str, Any] | None:
        def download() -> dict[str, Any] | None:
            raw = self._get(self._manifest(key))
            if raw is None:
                return None
            try:
                remote = _parse_manifest(raw, key)
                self._served[key] = remote
                return self._download(remote, staging, label)
            except Unusable as err:
                _say(f"{label}: the entry of key {key[:12]} in {self.url} is {err}: not used")
                self.discard(key)
                return None

        return self._guarded(download, None)

    def discard(self, key: str) -> None:
        """Its blobs are suspect from now on; when writing, its manifest goes (so no one is offered
        it again) and this process's build of the key publishes a whole entry in its place."""
        served = self._served.pop(key, None)
        if served is not None:
            self._suspect |= {f["digest"] for f in served["files"].values()}
        if self.writes:
            self._guarded(lambda: self._s3().delete_object(Bucket=self._bucket, Key=self._manifest(key)), None)

    @contextmanager
    def claim(self, key: str, *, label: str) -> Iterator[None]:
        me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        held = self.writes and self._guarded(lambda: self._take_claim(key, me, label), False)
        if not held:
            yield
            return
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_claim, args=(key, me, label, stop), daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            self._guarded(lambda: self._release_claim(key, me), None)

    def publish(self, key: str, entry: Path, manifest: dict[str, Any], *, label: str) -> None:
        if self.writes:
            self._guarded(lambda: self._publish(key, entry, manifest, label), None)

    def entries(self) -> dict[str, dict[str, Any]]:
        def listing() -> dict[str, dict[str, Any]]:
            found = {}
            for name in self._list(f"{self._prefix}manifests/"):
                key = name.rsplit("/", 1)[1].removesuffix(".json")
                raw = self._get(name)
                try:
                    remote = _parse_manifest(raw, key) if raw is not None else None
                except Unusable:
                    remote = None
                if remote is not None:
                    found[key] = {**remote["entry"], "size": sum(f["size"] for f in remote["files"].values())}
            return found
        return self._strict(listing)

    def stored_bytes(self) -> int:
        return self._strict(lambda: sum(self._list(f"{self._prefix}blobs/").values()))

    def verify(self, key: str) -> str | None:
        def check() -> str | None:
            raw = self._get(self._manifest(key))
            if raw is None:
                return "absent"
            try:
                remote = _parse_manifest(raw, key)
            except Unusable as err:
                return str(err)
            checked: dict[str, str | None] = {}
            for name, file in sorted(remote["files"].items()):
                if file["digest"] not in checked:
                    checked[file["digest"]] = self._blob_problem(file)
                if checked[file["digest"]] is not None:
                    self._served[key] = remote  # its blobs are suspect: `discard` marks them
                    return f"{name} {checked[file['digest']]}"
            return None
        return self._strict(check)

    def _blob_problem(self, file: dict[str, Any]) -> str | None:
        """Stream one blob through the hash: what is wrong with it, or None."""
        try:
            body = self._s3().get_object(Bucket=self._bucket, Key=self._blob(file["digest"]))["Body"]
        except botocore.exceptions.ClientError as err:
            if _missing(err):
                return "is missing"
            raise
        hasher, size = blake3.blake3(), 0
        for chunk in body.iter_chunks(PART_BYTES):
            hasher.update(chunk)
            size += len(chunk)
        if size != file["size"]:
            return f"is {size} bytes, {file['size']} in its manifest"
        return None if hasher.hexdigest() == file["digest"] else "does not match its digest"

    def _list(self, prefix: str) -> dict[str, int]:
        """{object name: size} of every object under `prefix`."""
        found = {}
        for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found

    def has(self, key: str) -> bool:
        """Whether the store holds an entry for `key` (for `llmbuild cache push`)."""
        return self._guarded(lambda: self._head(self._manifest(key)) is not None, False)

    def send_blobs(self, files: dict[str, Path], *, label: str) -> None:
        """Make sure the store holds these files' contents ({digest: path}), each sent once; an
        unusable store is an LLMBuildError here (a Ray worker could not get its inputs)."""
        def send() -> None:
            with ThreadPoolExecutor(FILES_IN_FLIGHT) as pool:
                list(pool.map(lambda item: self._send_blob(
                    {"digest": item[0], "size": item[1].stat().st_size}, item[1], item[1].name, label),
                    files.items()))
        self._strict(send)

    def get_blob(self, digest: str, path: Path) -> None:
        """Download one blob to `path`, verified against its digest (else an LLMBuildError)."""
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        self._strict(lambda: self._s3().download_file(self._bucket, self._blob(digest), str(partial),
                                                        Config=self._transfer))
        if hash_file(partial) != digest:
            partial.unlink()
            raise LLMBuildError(f"blob {digest[:12]} in {self.url} does not match its digest")
        os.replace(partial, path)

    def _strict(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except FAILURES as err:
            raise LLMBuildError(f"remote cache {self.url} cannot be used ({_describe(err)})") from None

    # -- fetching -----------------------------------------------------------------------------

    def _download(self, remote: dict[str, Any], staging: Staging, label: str) -> dict[str, Any]:
        """Every file of the entry into staging (a blob named twice is fetched once); the log is
        verified here, the outputs by the core against the manifest."""
        clock = time.monotonic()
        for directory in remote["dirs"]:
            (staging.path / directory).mkdir(parents=True, exist_ok=True)
        first: dict[str, str] = {}  # digest -> the first file holding it
        for name, file in remote["files"].items():
            first.setdefault(file["digest"], name)
        with ThreadPoolExecutor(FILES_IN_FLIGHT) as pool:
            list(pool.map(lambda name: self._fetch_blob(remote["files"][name], staging.path / name,
                                                        name, label), first.values()))
        for name, file in remote["files"].items():
            path = staging.path / name
            if first[file["digest"]] != name:
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(staging.path / first[file["digest"]], path)
            if file["executable"]:
                os.chmod(path, 0o755)
        log = remote["files"].get(LOG)
        if log is not None and hash_file(staging.log) != log["digest"]:
            raise Unusable(f"corrupt ({LOG} does not match its digest)")
        size = sum(remote["files"][name]["size"] for name in first.values())
        _say(f"{label}: downloaded {len(first)} file(s), {_size(size)}, from {self.url} "
             f"in {time.monotonic() - clock:.1f} s")
        return remote["entry"]

    def _fetch_blob(self, file: dict[str, Any], path: Path, name: str, label: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        clock = time.monotonic()
        try:
            self._s3().download_file(self._bucket, self._blob(file["digest"]), str(path), Config=self._transfer)
            reach("remote-download")
        except botocore.exceptions.ClientError as err:
            if _missing(err):
                raise Unusable(f"partial (the content of {name} is missing)") from None
            raise
        if file["size"] >= PROGRESS_BYTES:
            _say(f"{label}: downloaded {name} ({_size(file['size'])}) in {time.monotonic() - clock:.1f} s")

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, key: str, entry: Path, manifest: dict[str, Any], label: str) -> None:
        if self._head(self._manifest(key)) is not None:
            _say(f"{label}: {self.url} already has key {key[:12]}: left as it is")
            return
        clock = time.monotonic()
        files, dirs = _listing(entry, manifest)
        first: dict[str, str] = {}
        for name, file in files.items():
            first.setdefault(file["digest"], name)
        with ThreadPoolExecutor(FILES_IN_FLIGHT) as pool:
            sent = [name for name, was_sent in zip(first.values(), pool.map(
                lambda name: self._send_blob(files[name], entry / name, name, label), first.values()))
                if was_sent]
        body = json.dumps({"format": FORMAT, "entry": manifest, "files": files, "dirs": dirs},
                          indent=1, sort_keys=True).encode()
        try:
            self._s3().put_object(Bucket=self._bucket, Key=self._manifest(key), Body=body, IfNoneMatch="*",
                                  ContentType="application/json")
        except botocore.exceptions.ClientError as err:
            if not _precondition_failed(err):
                raise
            _say(f"{label}: {self.url} got key {key[:12]} from another builder first: left as it is")
            return
        size = sum(files[name]["size"] for name in sent)
        _say(f"{label}: uploaded {len(sent)} file(s), {_size(size)}, to {self.url} "
             f"({len(first) - len(sent)} already there) in {time.monotonic() - clock:.1f} s")

    def _send_blob(self, file: dict[str, Any], path: Path, name: str, label: str) -> bool:
        """Upload a blob unless the store has it whole (same size, not found corrupt); True if sent."""
        digest = file["digest"]
        if digest not in self._suspect and self._head(self._blob(digest)) == file["size"]:
            return False
        clock = time.monotonic()
        self._s3().upload_file(str(path), self._bucket, self._blob(digest), Config=self._transfer)
        reach("remote-upload")
        self._suspect.discard(digest)
        if file["size"] >= PROGRESS_BYTES:
            _say(f"{label}: uploaded {name} ({_size(file['size'])}) in {time.monotonic() - clock:.1f} s")
        return True

    # -- claims -------------------------------------------------------------------------------

    def _take_claim(self, key: str, me: str, label: str) -> bool:
        """Wait until no one else holds the key's claim, then hold it."""
        seen, since, said = None, time.monotonic(), False
        while True:
            try:
                self._put_claim(key, me, label, 0, exclusive=True)
                return True
            except botocore.exceptions.ClientError as err:
                if not _precondition_failed(err):
                    raise
            current = self._get(self._claim(key), etag=True)
            if current is None:  # released meanwhile
                continue
            body, etag = current
            if etag != seen:
                seen, since = etag, time.monotonic()
            elif time.monotonic() - since > CLAIM_EXPIRES:
                _say(f"{label}: the claim on key {key[:12]} by {_holder(body)} was not renewed for "
                     f"{CLAIM_EXPIRES:.0f} s: taking it over")
                self._s3().delete_object(Bucket=self._bucket, Key=self._claim(key))
                continue
            if not said:
                _say(f"{label}: {_holder(body)} is building the same key (its claim is in {self.url}); waiting")
                said = True
            time.sleep(CLAIM_POLL)

    def _put_claim(self, key: str, me: str, label: str, renewal: int, *, exclusive: bool) -> None:
        body = json.dumps({"holder": me, "target": label, "renewal": renewal}).encode()
        self._s3().put_object(Bucket=self._bucket, Key=self._claim(key), Body=body,
                              **({"IfNoneMatch": "*"} if exclusive else {}))

    def _renew_claim(self, key: str, me: str, label: str, stop: threading.Event) -> None:
        renewal = 0
        while not stop.wait(CLAIM_RENEW):
            renewal += 1
            try:
                self._put_claim(key, me, label, renewal, exclusive=False)
            except FAILURES:  # the build goes on; at worst another process builds the key too
                pass

    def _release_claim(self, key: str, me: str) -> None:
        current = self._get(self._claim(key))
        if current is not None and _holder(current, full=True) == me:
            self._s3().delete_object(Bucket=self._bucket, Key=self._claim(key))

    # -- the store ----------------------------------------------------------------------------

    def _s3(self) -> Any:
        if self._client is None or self._pid != os.getpid():  # never share a client across fork
            self._client = boto3.session.Session().client("s3", config=self._config)
            self._pid = os.getpid()
        return self._client

    def _manifest(self, key: str) -> str:
        return f"{self._prefix}manifests/{key}.json"

    def _blob(self, digest: str) -> str:
        return f"{self._prefix}blobs/{digest}"

    def _claim(self, key: str) -> str:
        return f"{self._prefix}claims/{key}"

    def _get(self, name: str, *, etag: bool = False) -> Any:
        """The object's bytes (with its ETag if asked), None if absent."""
        try:
            response = self._s3().get_object(Bucket=self._bucket, Key=name)
        except botocore.exceptions.ClientError as err:
            if _missing(err):
                return None
            raise
        body = response["Body"].read()
        return (body, response.get("ETag")) if etag else body

    def _head(self, name: str) -> int | None:
        """The object's size, None if absent."""
        try:
            return self._s3().head_object(Bucket=self._bucket, Key=name)["ContentLength"]
        except botocore.exceptions.ClientError as err:
            if _missing(err):
                return None
            raise

    def _guarded(self, action: Callable[[], T], otherwise: T) -> T:
        """Run `action` against the store; once the store fails, say so once (or raise when it is
        required) and return `otherwise` from then on."""
        if self._down is not None:
            return otherwise
        try:
            return action()
        except FAILURES as err:
            why = _describe(err)
            if self._required:
                raise LLMBuildError(f"remote cache {self.url} cannot be used ({why}) and "
                                    "remote_cache_required = true") from None
            self._down = why
            _say(f"warning: remote cache {self.url} cannot be used ({why}): going on without it")
            return otherwise


def _parse_manifest(raw: bytes, key: str) -> dict[str, Any]:
    """The remote manifest, checked for shape: every file a blob digest under out/ or the log,
    the entry's own listing the same as the files under out/. Else Unusable."""
    try:
        remote = json.loads(raw)
        files, dirs, entry = remote["files"], remote["dirs"], remote["entry"]
        assert remote["format"] == FORMAT and isinstance(entry, dict)
        for name, file in files.items():
            assert _safe(name) and (name == LOG or name.startswith(f"{OUT}/"))
            assert DIGEST.fullmatch(file["digest"]) and isinstance(file["size"], int)
            assert isinstance(file["executable"], bool)
        assert all(isinstance(d, str) and _safe(d) for d in dirs)
        outputs = {name[len(OUT) + 1:]: file["digest"] for name, file in files.items() if name != LOG}
        assert entry.get("outputs") == outputs
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError):
        raise Unusable("corrupt (its manifest is malformed)") from None
    if entry.get("key") != key:
        raise Unusable("corrupt (its manifest is for another key)")
    return remote


def _safe(name: str) -> bool:
    """A relative path that stays inside the staging directory."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _listing(entry: Path, manifest: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """{file: digest, size, executable} of a committed entry (outputs as its manifest lists them,
    symlinks followed as the listing does, and its log) and every directory under out/ (empty
    ones matter: Triton wants an ensemble's version directory)."""
    files: dict[str, dict[str, Any]] = {}
    for name, digest in manifest["outputs"].items():
        st = os.stat(entry / OUT / name)
        files[f"{OUT}/{name}"] = {"digest": digest, "size": st.st_size, "executable": bool(st.st_mode & 0o111)}
    if (entry / LOG).is_file():
        files[LOG] = {"digest": hash_file(entry / LOG), "size": (entry / LOG).stat().st_size, "executable": False}
    dirs = [OUT]
    for directory, dirnames, _ in os.walk(entry / OUT, followlinks=True):
        dirnames.sort()
        dirs.extend((Path(directory) / d).relative_to(entry).as_posix() for d in dirnames)
    return files, dirs


def _missing(err: botocore.exceptions.ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


def _precondition_failed(err: botocore.exceptions.ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in ("412", "PreconditionFailed")


def _holder(body: bytes, *, full: bool = False) -> str:
    """Who holds a claim: 'host:pid' (full: with the claim's own ID)."""
    try:
        holder = str(json.loads(body)["holder"])
    except (ValueError, KeyError, TypeError):
        return "another process"
    return holder if full else holder.rsplit(":", 1)[0]


def _describe(err: Exception) -> str:
    """One line about a failed request (botocore's messages name the endpoint, never a credential)."""
    if isinstance(err, botocore.exceptions.ClientError):
        error = err.response.get("Error", {})
        text = f"{error.get('Code', '?')}: {error.get('Message') or 'no message'}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _say(line: str) -> None:
    print(f"llmbuild: {line}", file=sys.stderr, flush=True)



def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
