"""The source-digest stat cache: hits, misses, re-hashing, lookups by key, last use and pruning."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import blake3
import pytest

from llmbuild.core import digests
from llmbuild.core.digests import DigestCache


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """Every file actually read and hashed."""
    calls: list[Path] = []
    real = digests.hash_file

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(digests, "hash_file", counting)
    return calls


@pytest.fixture
def day(monkeypatch):
    """Set the cache's idea of today (days since the epoch)."""
    today = [20_000]
    monkeypatch.setattr(digests, "_today", lambda: today[0])
    return today


def b3(text: str) -> str:
    return blake3.blake3(text.encode()).hexdigest()


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT size, digest, used FROM {digests.TABLE} ORDER BY size").fetchall()


def test_a_second_process_hashes_nothing_unchanged(tmp_path, hashed):
    src = tree(tmp_path / "src", {"a.txt": "a", "sub/b.txt": "bb"})
    db = tmp_path / "cache" / "digests.sqlite3"
    first = DigestCache(db).tree_files(src)
    assert first == {"a.txt": b3("a"), "sub/b.txt": b3("bb")}
    assert len(hashed) == 2
    assert DigestCache(db).tree_files(src) == first  # a new process: rows read from the table
    assert len(hashed) == 2
    assert DigestCache(db).tree_files(src / "a.txt") == {"": b3("a")}
    assert len(hashed) == 2


def test_a_changed_file_is_rehashed_and_hard_links_share_a_row(tmp_path, hashed):
    src = tree(tmp_path / "src", {"a.txt": "a", "b.txt": "b"})
    os.link(src / "b.txt", src / "c.txt")
    cache = DigestCache(tmp_path / "d.sqlite3")
    assert cache.tree_files(src) == {"a.txt": b3("a"), "b.txt": b3("b"), "c.txt": b3("b")}
    assert sorted(p.name for p in hashed) == ["a.txt", "b.txt"]
    (src / "a.txt").write_text("changed")
    assert DigestCache(tmp_path / "d.sqlite3").tree_files(src)["a.txt"] == b3("changed")
    assert sorted(p.name for p in hashed) == ["a.txt", "a.txt", "b.txt"]
    # Same size, new mtime: also re-hashed.
    (src / "b.txt").unlink()
    (src / "b.txt").write_text("x")
    assert DigestCache(tmp_path / "d.sqlite3").tree_files(src)["b.txt"] == b3("x")


def test_rows_are_looked_up_by_key_never_loaded_whole(tmp_path):
    db = tmp_path / "d.sqlite3"
    src = tree(tmp_path / "src", {"a.txt": "a"})
    DigestCache(db).tree_files(src)
    with sqlite3.connect(db) as conn:  # a long-lived shared cache: many rows of other files
        conn.executemany(f"INSERT INTO {digests.TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                         [(1, i, 1, 1, "x", digests._today()) for i in range(5000)])
    cache = DigestCache(db)
    statements: list[str] = []
    cache._connection().set_trace_callback(statements.append)
    assert cache.tree_files(src) == {"a.txt": b3("a")}
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT") and digests.TABLE in s]
    assert reads and all("WHERE" in s.upper() for s in reads), reads


def test_last_use_is_recorded_at_most_once_a_day(tmp_path, day):
    db = tmp_path / "d.sqlite3"
    src = tree(tmp_path / "src", {"a.txt": "a"})
    DigestCache(db).tree_files(src)
    assert rows(db) == [(1, b3("a"), 20_000)]
    day[0] += 3
    cache = DigestCache(db)
    cache.tree_files(src)
    assert rows(db) == [(1, b3("a"), 20_003)]
    later = DigestCache(db)
    writes: list[str] = []
    later._connection().set_trace_callback(writes.append)
    later.tree_files(src)
    assert not [s for s in writes if s.lstrip().upper().startswith(("UPDATE", "INSERT", "BEGIN"))]


def test_rows_unused_for_keep_days_are_pruned_once_a_day_through_the_index(tmp_path, day):
    db = tmp_path / "d.sqlite3"
    old = tree(tmp_path / "old", {"a.txt": "a"})
    new = tree(tmp_path / "new", {"b.txt": "bb"})
    DigestCache(db, keep_days=30).tree_files(old)
    day[0] += 20
    DigestCache(db, keep_days=30).tree_files(new)
    day[0] += 10  # old: unused for 30 days, kept
    DigestCache(db, keep_days=30).tree_files(tmp_path / "new")
    assert [r[0] for r in rows(db)] == [1, 2]
    day[0] += 1  # old: 31 days
    DigestCache(db, keep_days=30)._connection()
    assert [r[0] for r in rows(db)] == [2]
    with sqlite3.connect(db) as conn:  # not pruned again the same day
        conn.execute(f"INSERT INTO {digests.TABLE} VALUES (0, 0, 9, 0, 'x', 0)")
    DigestCache(db, keep_days=30)._connection()
    assert [r[0] for r in rows(db)] == [2, 9]
    with sqlite3.connect(db) as conn:
        plan = " ".join(str(r) for r in conn.execute(
            f"EXPLAIN QUERY PLAN DELETE FROM {digests.TABLE} WHERE used < 5"))
    assert "USING COVERING INDEX" in plan or "USING INDEX" in plan, plan


def test_tables_of_earlier_versions_are_dropped_and_never_read(tmp_path):
    """`digests` was never pruned; `file_digests` holds SHA-256 digests, as long as ours: a row
    of it for an unchanged file must not pass for that file's BLAKE3."""
    db = tmp_path / "d.sqlite3"
    src = tree(tmp_path / "src", {"a": "a"})
    st = os.stat(src / "a")
    with sqlite3.connect(db) as conn:
        for table in ("digests", "file_digests"):
            conn.execute(f"CREATE TABLE {table} (dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER, "
                         "digest TEXT, used INTEGER, PRIMARY KEY (dev, ino, size, mtime))")
            conn.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
                         (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, "5" * 64, digests._today()))
    assert DigestCache(db).tree_files(src) == {"a": b3("a")}
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {digests.TABLE, "meta"}


def _hash_tree(args: tuple[str, str]) -> dict[str, str]:
    db, src = args
    return DigestCache(Path(db)).tree_files(Path(src))


def test_concurrent_processes_share_the_table(tmp_path):
    src = tree(tmp_path / "src", {f"f{i}.txt": str(i) for i in range(300)})
    db = tmp_path / "d.sqlite3"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_hash_tree, [(str(db), str(src))] * 4)
    expected = {f"f{i}.txt": b3(str(i)) for i in range(300)}
    assert all(result == expected for result in results)
    assert len(rows(db)) == 300
