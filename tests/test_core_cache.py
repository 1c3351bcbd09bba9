"""The action cache (commit, evict, keep a failure, one builder per key) and address specs."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from llmbuild.core.addresses import Address, Spec, parse_address, parse_spec
from llmbuild.core.cache import Cache
from llmbuild.core.errors import LLMBuildError

KEY = "ab" + "0" * 62


def built(cache: Cache, key: str = KEY, text: str = "weights") -> Cache:
    staging = cache.stage(key)
    (staging.out / "sub").mkdir()
    (staging.out / "sub" / "model.bin").write_text(text)
    staging.log.write_text("ran\n")
    cache.commit(staging, {"key": key})
    return cache


def test_commit_makes_an_immutable_entry_with_its_manifest(tmp_path):
    cache = built(Cache(tmp_path))
    assert cache.is_committed(KEY) and cache.manifest(KEY) == {"key": KEY}
    out = cache.out(KEY)
    assert out == tmp_path / "entries" / "ab" / KEY / "out"
    assert (out / "sub" / "model.bin").read_text() == "weights"
    assert not os.stat(out / "sub" / "model.bin").st_mode & 0o222, "outputs are read-only"
    assert (cache.entry(KEY) / "log.txt").read_text() == "ran\n"
    assert not list((tmp_path / "staging").iterdir())


def test_an_uncommitted_key_has_no_manifest(tmp_path):
    cache = Cache(tmp_path)
    staging = cache.stage(KEY)
    (staging.out / "half").write_text("x")
    assert not cache.is_committed(KEY) and cache.manifest(KEY) is None


def test_a_second_commit_of_a_key_keeps_the_first(tmp_path):
    cache = built(Cache(tmp_path), text="first")
    staging = cache.stage(KEY)
    (staging.out / "other").write_text("second")
    cache.commit(staging, {"key": KEY, "n": 2})
    assert cache.manifest(KEY) == {"key": KEY}
    assert (cache.out(KEY) / "sub" / "model.bin").read_text() == "first"
    assert not staging.path.exists()


def test_stage_clears_a_killed_build_of_the_same_key(tmp_path):
    cache = Cache(tmp_path)
    leftover = tmp_path / "staging" / f"{KEY}.99999"
    (leftover / "out").mkdir(parents=True)
    (leftover / "out" / "partial").write_text("x")
    os.chmod(leftover / "out" / "partial", 0o444)
    staging = cache.stage(KEY)
    assert not leftover.exists() and staging.out.is_dir() and not any(staging.out.iterdir())


def test_evict_removes_a_read_only_entry(tmp_path):
    cache = built(Cache(tmp_path))
    cache.evict(KEY)
    assert not cache.is_committed(KEY) and not cache.entry(KEY).exists()
    assert not list(cache.entry(KEY).parent.iterdir())
    cache.evict(KEY)  # nothing left: no error


def test_a_failed_build_is_kept_with_its_log(tmp_path):
    cache = Cache(tmp_path)
    staging = cache.stage(KEY)
    staging.log.write_text("boom\n")
    failed = cache.keep_failed(staging)
    assert failed.parent == tmp_path / "failed" and failed.name.startswith(KEY)
    assert (failed / "log.txt").read_text() == "boom\n"
    assert not cache.is_committed(KEY) and not staging.path.exists()


def test_lock_lets_one_builder_in_and_says_why_the_other_waits(tmp_path, capsys):
    cache = Cache(tmp_path)
    events: list[str] = []

    def second() -> None:
        with cache.lock(KEY, who="models/m:e"):
            events.append("second in")

    said = ""
    with cache.lock(KEY):
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 30
        while "waiting" not in said and time.monotonic() < deadline:  # after a silent half second
            time.sleep(0.05)
            said += capsys.readouterr().err
        events.append("first out")
    thread.join(timeout=10)
    assert events == ["first out", "second in"]
    assert said == "llmbuild: models/m:e: another process is building the same key; waiting\n"
    with cache.lock(KEY):  # released: taken at once
        pass


# -- addresses and specs -----------------------------------------------------------------------

@pytest.mark.parametrize("text, relative_to, expected", [
    ("models/m:e", None, Address("models/m", "e")),
    ("//models/m:e", None, Address("models/m", "e")),
    (":e", "models/m", Address("models/m", "e")),
    ("models/./m/:e", None, Address("models/m", "e")),
    (":root", "", Address("", "root")),
])
def test_parse_address(text, relative_to, expected):
    assert parse_address(text, relative_to) == expected


@pytest.mark.parametrize("text, message", [
    ("models/m", "'models/m' is not an address: expected 'dir:name' or ':name'"),
    ("../x:e", "'..' is not allowed in an address: '../x'"),
    ("models:bad name", "invalid target name 'bad name'"),
])
def test_bad_addresses(text, message):
    with pytest.raises(LLMBuildError) as caught:
        parse_address(text)
    assert str(caught.value).startswith(message)


def test_address_text_and_dist_path():
    assert str(Address("models/m", "e")) == "models/m:e" and Address("", "e").dist_path == "e"
    assert Address("models/m", "e").dist_path == "models/m/e"


@pytest.mark.parametrize("text, spec", [
    ("models/m:e", Spec("models/m", "e")),
    ("models/m", Spec("models/m")),
    ("//models::", Spec("models", recursive=True)),
    ("::", Spec("", recursive=True)),
])
def test_parse_spec(text, spec):
    assert parse_spec(text) == spec


def test_spec_matches():
    addresses = [Address("models", "x"), Address("models/m", "e"), Address("models/m/sub", "e"),
                 Address("modelsx", "e"), Address("", "top")]

    def matched(text: str) -> list[str]:
        return [str(a) for a in addresses if parse_spec(text).matches(a)]

    assert matched("models/m") == ["models/m:e"]
    assert matched("models/m:e") == ["models/m:e"]
    assert matched("models::") == ["models:x", "models/m:e", "models/m/sub:e"]
    assert matched("::") == [str(a) for a in addresses]


def test_a_manifest_records_each_output_and_problem_names_what_changed(tmp_path):
    cache = Cache(tmp_path)
    staging = cache.stage(KEY)
    (staging.out / "sub").mkdir()
    (staging.out / "sub" / "model.bin").write_text("weights")
    cache.commit(staging, {"key": KEY, "outputs": {"sub/model.bin": "d" * 64}})
    manifest = cache.manifest(KEY)
    path = cache.out(KEY) / "sub" / "model.bin"
    assert manifest["files"] == {"sub/model.bin": {"digest": "d" * 64, "size": 7,
                                                   "mtime_ns": path.stat().st_mtime_ns}}
    assert set(manifest["dirs"]) == {".", "sub"}
    assert cache.problem(KEY) is None
    assert cache.problem(KEY, rehash=True) == "out/sub/model.bin does not match its digest"

    (cache.out(KEY) / "sub" / "new.bin").write_text("x")
    assert cache.problem(KEY) == "out/sub/new.bin is not in its manifest"
    moved = cache.quarantine(KEY, "out/sub/new.bin is not in its manifest")
    assert moved.parent == tmp_path / "quarantine" and (moved / "why.txt").read_text().startswith("out/sub/new.bin")
    assert not cache.is_committed(KEY) and cache.problem(KEY) == "its manifest is missing"


def test_try_lock_never_waits_for_a_held_key(tmp_path):
    cache = Cache(tmp_path)
    seen = []

    def probe() -> None:
        with cache.try_lock(KEY) as free:
            seen.append(free)

    with cache.lock(KEY):
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join(timeout=30)
    probe()
    assert seen == [False, True]


def test_failed_attempts_of_a_key_are_bounded(tmp_path):
    cache = Cache(tmp_path)
    for stamp in range(5):
        old = tmp_path / "failed" / f"{KEY}.2020010{stamp}T000000.1"
        old.mkdir(parents=True)
    staging = cache.stage(KEY)
    kept = cache.keep_failed(staging)
    assert sorted((tmp_path / "failed").iterdir()) == [
        tmp_path / "failed" / f"{KEY}.2020010{stamp}T000000.1" for stamp in (3, 4)] + [kept]


def test_an_entry_of_an_earlier_llmbuild_gets_records_once(tmp_path):
    cache = Cache(tmp_path)
    staging = cache.stage(KEY)
    (staging.out / "model.bin").write_text("weights")
    cache.commit(staging, {"key": KEY})
    legacy = {"key": KEY, "outputs": {"model.bin": "d" * 64}}  # as an earlier llmbuild wrote it
    (cache.entry(KEY) / "manifest.json").write_text(json.dumps(legacy))
    assert cache.problem(KEY) is None  # nothing recorded to compare with
    assert cache.add_records(KEY) and not cache.add_records(KEY)
    assert cache.manifest(KEY)["files"]["model.bin"]["size"] == 7
    os.utime(cache.out(KEY) / "model.bin", (0, 0))
    assert cache.problem(KEY).startswith("out/model.bin was modified ")
