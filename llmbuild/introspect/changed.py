"""`llmbuild changed --since REV`: the targets whose keys a git change affects.

A target's full action key needs its dependencies' *built* outputs, so this
compares a **static key document** instead: the `KeyDocument` of the key with
the dependency fields holding the addresses they name rather than output
digests. A target is affected when its static document differs between REV and
the working tree (`KeyDocument.diff`; or it is new), or when a dependency is
affected (its key holds the dependency's output digest).

The REV side is a throwaway copy of the workspace subtree written from git
objects (`ls-tree` + `cat-file --batch`: no hooks, no filters, no LFS
downloads, nothing written into the repository). Source digests are not
re-read from that copy: the REV listing of a source is the working tree's
listing with the files git reports as different (`git diff REV`, untracked
files) taken out, marked changed or put back as REV had them. So unchanged
sources (and everything outside the repository, such as data roots) are hashed
once, through the workspace's own digest cache, and git-ignored files (weights
fetched by a script) count as the same on both sides.
"""

from __future__ import annotations

import bisect
import os
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.digests import DigestCache, digest_of_listing
from ..core.errors import LLMBuildError
from ..core.keys import ABSENT, Change, KeyDocument
from ..core.protocols import Plugins
from ..core.settings import PYPROJECT, load_settings
from ..core.target import Target
from ..core.workspace import Workspace

__all__ = ["ChangedReport", "build_affected", "changed_targets"]

_CHUNK = 1 << 20
#: llmbuild itself: when it lives in the compared repository, its changes may change every key.
_PACKAGE = Path(__file__).resolve().parent.parent
#: git statuses (`diff --name-status`, plus "?" for untracked) whose path REV does not have.
_ABSENT_AT_REV = {"A", "?"}


@dataclass
class ChangedReport:
    """What `changed_targets` found; `reasons` has an entry for every affected address."""

    affected: list[str]  # addresses, dependencies first (the workspace's order)
    reasons: dict[str, str]  # address -> short human reason
    removed: list[str]  # addresses REV had and the working tree does not
    since: str = ""  # the revision as given
    commit: str = ""  # what it resolved to

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since, "commit": self.commit,
                "affected": [{"address": a, "reason": self.reasons.get(a, "")} for a in self.affected],
                "removed": list(self.removed)}

    def lines(self, *, quiet: bool = False) -> list[str]:
        """One line per affected target: the address, and unless quiet the reason."""
        return [a if quiet else f"{a}  ({self.reasons[a]})" for a in self.affected]


def changed_targets(ws: Workspace, since: str, *, environ: Mapping[str, str] | None = None) -> ChangedReport:
    """Targets of `ws` whose keys differ from what they were at git revision `since`.

    `environ` should be what `ws` was loaded with (LLMBUILD_LANE etc. apply to both sides);
    default: os.environ."""
    environ = dict(os.environ if environ is None else environ)
    with checked_out(ws, since) as sides:
        rev_ws = sides.load_rev(since, environ, sides.scratch, ws.plugins)
        sides.collect_changes(rev_ws)
        return _compare(ws, rev_ws, sides, since, sides.commit)


@contextmanager
def checked_out(ws: Workspace, rev: str) -> Iterator[_Sides]:
    """The workspace's repository at git revision `rev`, materialised in a scratch directory
    (`sides.rev_top`; files git ignores, such as weights, linked from the working tree) for as long
    as the block runs."""
    git = _Git(ws.root)
    top, prefix = git.locate()
    commit = git.resolve(rev)
    with tempfile.TemporaryDirectory(prefix="llmbuild-rev-") as tmp:
        scratch = Path(tmp).resolve()
        rev_top = scratch / "tree"
        rev_top.mkdir()
        git.materialise(commit, prefix, rev_top, top)
        sides = _Sides(ws, git, top, prefix, commit, rev_top, scratch)
        sides.overlay_ignored()
        yield sides


def build_affected(ws: Workspace, report: ChangedReport, doit_args: Sequence[str],
                   environ: Mapping[str, str]) -> int:
    """`llmbuild changed --build`: run doit on exactly the affected targets (what they need comes
    along); with none affected, say so and run nothing (a plain `doit` would build everything)."""
    if not report.affected:
        print(f"nothing changed since {report.since}; nothing to build")
        return 0
    argv = [sys.executable, "-m", "doit", "run", *doit_args, *report.affected]
    print(f"llmbuild: {shlex.join(['doit', *argv[3:]])}", flush=True)
    return subprocess.run(argv, cwd=ws.root, env=dict(environ)).returncode


# -- git ---------------------------------------------------------------------------------------


class _Git:
    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.top: Path | None = None
        self.env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0",
                    "GIT_LITERAL_PATHSPECS": "1", "LC_ALL": "C"}

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return ["git", "-C", str(self.top or self.cwd), *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self._argv(args), capture_output=True, env=self.env)
        except FileNotFoundError:
            raise LLMBuildError("git is not installed (needed to compare with a revision)") from None
        if check and proc.returncode != 0:
            message = _first_line(proc.stderr) or f"exit status {proc.returncode}"
            raise LLMBuildError(f"git {args[0]} failed: {message}")
        return proc

    def locate(self) -> tuple[Path, str]:
        """(repository top, the workspace's path inside it as 'a/b/' or '')."""
        proc = self.run("rev-parse", "--show-toplevel", "--show-prefix", check=False)
        if proc.returncode != 0:
            detail = _first_line(proc.stderr)
            raise LLMBuildError(f"the workspace {self.cwd} is not in a git repository"
                                + (f" ({detail})" if detail and "not a git repository" not in detail else ""))
        lines = os.fsdecode(proc.stdout).split("\n")
        self.top = Path(lines[0]).resolve()
        prefix = lines[1].strip() if len(lines) > 1 else ""
        return self.top, "" if prefix in ("", "./") else prefix.rstrip("/") + "/"

    def resolve(self, rev: str) -> str:
        if not rev or rev.startswith("-"):
            raise LLMBuildError(f"'{rev}' is not a git revision")
        proc = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if proc.returncode == 0:
            return proc.stdout.decode().strip()
        hint = ""
        if self.run("rev-parse", "--is-shallow-repository", check=False).stdout.strip() == b"true":
            hint = " (this clone is shallow: fetch more history, e.g. `git fetch --unshallow`)"
        elif self.run("rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode != 0:
            hint = " (the repository has no commits yet)"
        raise LLMBuildError(f"unknown git revision '{rev}'{hint}")

    def materialise(self, commit: str, prefix: str, dest: Path, top: Path) -> None:
        """Write the tree of `commit` below `prefix` into dest (mirroring the repository layout)."""
        listing = self.run("ls-tree", "-r", "-z", "--full-tree", commit,
                           *(["--", prefix.rstrip("/")] if prefix else [])).stdout
        entries = []
        for record in listing.split(b"\0"):
            if record:
                meta, raw_path = record.split(b"\t", 1)
                mode, _, obj = meta.decode().split()
                entries.append((mode, obj, os.fsdecode(raw_path)))
        with subprocess.Popen(self._argv(("cat-file", "--batch")), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env) as proc:
            try:
                for mode, obj, path in entries:
                    if any(part in ("", ".", "..", ".git") for part in path.split("/")):
                        continue  # git never checks such a path out; neither do we
                    out = dest / path
                    out.parent.mkdir(parents=True, exist_ok=True)
                    if mode == "160000":  # a submodule: its commit, not its files
                        out.mkdir(exist_ok=True)
                        continue
                    proc.stdin.write(obj.encode() + b"\n")
                    proc.stdin.flush()
                    header = proc.stdout.readline().split()
                    if len(header) != 3 or header[1] != b"blob":
                        raise LLMBuildError(f"git cat-file: cannot read {path} at {commit[:12]}")
                    size = int(header[2])
                    if mode == "120000":
                        link = os.fsdecode(proc.stdout.read(size))
                        os.symlink(_relink(link, path, top, prefix, dest), out)
                    else:
                        with open(out, "wb") as handle:
                            while size:
                                chunk = proc.stdout.read(min(size, _CHUNK))
                                if not chunk:
                                    raise LLMBuildError(f"git cat-file: {path} ended early")
                                handle.write(chunk)
                                size -= len(chunk)
                        if mode == "100755":
                            out.chmod(0o755)
                    proc.stdout.read(1)  # the newline after each object
            finally:
                proc.stdin.close()

    def changes(self, commit: str, pathspecs: list[str]) -> dict[str, str]:
        """{repo path: status} of what differs between `commit` and the working tree: M, T, A, D
        for tracked content (stat-only changes excluded), '?' for untracked, unignored files."""
        specs = ["--", *pathspecs] if pathspecs else []
        changed: dict[str, str] = {}
        out = self.run("diff", "--no-renames", "--no-ext-diff", "--no-color", "--name-status", "-z",
                       commit, *specs).stdout
        fields = out.split(b"\0")
        for status, raw_path in zip(fields[0::2], fields[1::2]):
            if status:
                changed[os.fsdecode(raw_path)] = status.decode()[:1]
        out = self.run("ls-files", "-z", "--others", "--exclude-standard", *specs).stdout
        for raw_path in out.split(b"\0"):
            if raw_path:
                changed.setdefault(os.fsdecode(raw_path), "?")
        return changed

    def ignored(self, pathspecs: list[str]) -> list[str]:
        if not pathspecs:
            return []
        out = self.run("ls-files", "-z", "--others", "--ignored", "--exclude-standard",
                       "--", *pathspecs).stdout
        return [os.fsdecode(p) for p in out.split(b"\0") if p]


def _first_line(stderr: bytes) -> str:
    for line in os.fsdecode(stderr).splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return ""


def _relink(link: str, path: str, top: Path, prefix: str, dest: Path) -> str:
    """A symlink of the REV tree, made to point where it points in the repository: into the
    REV copy when its target is in the workspace, else at the real place (data roots)."""
    real = Path(os.path.normpath(link if os.path.isabs(link) else top / os.path.dirname(path) / link))
    workspace = top / prefix
    if real == workspace or workspace in real.parents:
        return str(dest / real.relative_to(top))
    return str(real)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# -- the two sides -------------------------------------------------------------------------------


class _Sides:
    """Maps both sides' source paths to repository paths and lists their files."""

    def __init__(self, ws: Workspace, git: _Git, top: Path, prefix: str, commit: str, rev_top: Path,
                 scratch: Path):
        self.ws, self.git, self.top, self.prefix, self.commit = ws, git, top, prefix, commit
        self.rev_top, self.scratch = rev_top, scratch
        self.code_changes: list[str] = []  # changed files of llmbuild itself, when it lives in this repo
        self.changes: dict[str, str] = {}
        self._changed_sorted: list[str] = []
        self._listings: dict[Path, dict[str, str] | None] = {}
        self._rev_listings: dict[str, dict[str, str]] = {}
        self._digests: DigestCache | None = None
        self._spare_digests: DigestCache | None = None
        self._real_dirs: dict[str, str] = {}

    def repo_path(self, path: Path, *, rev: bool) -> str | None:
        """The path inside the repository ('' for its top), or None outside it."""
        if rev and _inside(path, self.rev_top):
            rel = path.relative_to(self.rev_top).as_posix()
        elif _inside(path, self.top):
            rel = path.relative_to(self.top).as_posix()
        else:
            return None
        return "" if rel == "." else rel

    def overlay_ignored(self) -> None:
        """Link git-ignored files under the working tree's sources into the REV copy: they are
        not part of any change (e.g. weights fetched by a script), so both sides see them."""
        specs = sorted({rel for t in self.ws.order for p in t.sources.values()
                        if (rel := self.repo_path(p, rev=False)) and rel.startswith(self.prefix)
                        and p.exists()})
        for rel in self.git.ignored(specs):
            out = self.rev_top / rel
            parents = [p for p in out.parents if p != self.rev_top and _inside(p, self.rev_top)]
            # never write through a symlink of the REV copy (it may point into the working tree)
            if os.path.lexists(out) or any(p.is_symlink() or (p.exists() and not p.is_dir())
                                           for p in parents):
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(self.top / rel, out)

    def load_rev(self, since: str, environ: dict[str, str], tmp: Path, plugins: Plugins) -> Workspace | None:
        root = self.rev_top / self.prefix
        pyproject = root / PYPROJECT
        if not pyproject.is_file() or "[tool.llmbuild" not in pyproject.read_text(errors="replace"):
            return None  # no workspace here at REV: every target is new
        try:
            # A throwaway cache and dist (same directory names, so discovery skips the same dirs).
            settings = load_settings(root, environ)
            environ = {**environ,
                       "LLMBUILD_CACHE_DIR": str(tmp / "cache" / (Path(settings.cache).name or "cache")),
                       "LLMBUILD_DIST_DIR": str(tmp / "dist" / (Path(settings.dist).name or "dist")),
                       "LLMBUILD_TOOLCHAINS_DIR": str(tmp / "toolchains")}
            return Workspace.load(root, environ, plugins=plugins, verify_sources=False, linked_from=(self.top,))
        except LLMBuildError as err:
            raise self.at_rev(err, since) from None

    def at_rev(self, err: LLMBuildError, since: str) -> LLMBuildError:
        text = str(err).replace(str(self.rev_top), str(self.top))
        return LLMBuildError(f"at {since}: {text}")

    def collect_changes(self, rev_ws: Workspace | None) -> None:
        specs = {self.prefix.rstrip("/")} if self.prefix else set()
        for side, workspace in ((False, self.ws), (True, rev_ws)):
            for target in (workspace.order if workspace else []):
                for path in target.sources.values():
                    rel = self.repo_path(path, rev=side)
                    if rel and self.prefix and not (rel + "/").startswith(self.prefix):
                        specs.add(rel)  # inside the repository, outside the workspace (a data root)
        package = self.repo_path(_PACKAGE, rev=False)
        if self.prefix and package:
            specs.add(package)
        if not self.prefix:
            specs = set()
        self.changes = self.git.changes(self.commit, sorted(specs))
        self._changed_sorted = sorted(self.changes)
        if package:  # keys hold digests of llmbuild's own code; REV's code cannot run here
            self.code_changes = [p for p, _ in self._changed_below(package)
                                 if "__pycache__" not in p.split("/")]

    # digests

    def _digest_cache(self) -> DigestCache:
        if self._digests is None:
            self._digests = self.ws.digests
        return self._digests

    def _tree_files(self, path: Path) -> dict[str, str]:
        try:
            return self._digest_cache().tree_files(path)
        except (sqlite3.Error, OSError):  # e.g. a read-only shared cache: hash without it
            if self._digests is self._spare_digests:
                try:
                    return self._digests.tree_files(path)
                except OSError as err:
                    raise LLMBuildError(f"cannot read source {path}: {err.strerror or err}") from None
            self._digests = self._spare_digests = DigestCache(self.scratch / "digests.sqlite3")
            return self._tree_files(path)

    def listing(self, path: Path) -> dict[str, str] | None:
        """The working tree's {relative file: digest} of a source (None if missing)."""
        if path not in self._listings:
            self._listings[path] = self._tree_files(path) if path.exists() else None
        return self._listings[path]

    def _changed_below(self, rel: str) -> list[tuple[str, str]]:
        """(path, status) of changes at or below repository path rel."""
        if not rel:
            return list(self.changes.items())
        found = []
        if rel in self.changes:
            found.append((rel, self.changes[rel]))
        start = bisect.bisect_left(self._changed_sorted, rel + "/")
        for path in self._changed_sorted[start:]:
            if not path.startswith(rel + "/"):
                break
            found.append((path, self.changes[path]))
        return found

    def _change_of(self, rel: str, file_path: Path) -> str | None:
        """The change status of one working-tree file, seen through symlinks too."""
        parts = rel.split("/")
        for end in range(len(parts), 0, -1):  # the file, or a (symlinked) directory above it
            status = self.changes.get("/".join(parts[:end]))
            if status:
                return status
        directory = str(file_path.parent)
        if directory not in self._real_dirs:
            self._real_dirs[directory] = os.path.realpath(directory)
        real = Path(self._real_dirs[directory]) / file_path.name
        if file_path.is_symlink():
            real = Path(os.path.realpath(file_path))
        if real != file_path:
            real_rel = self.repo_path(real, rev=False)
            if real_rel is not None and real_rel != rel:
                return self.changes.get(real_rel)
        return None

    def source_digest(self, path: Path, *, rev: bool) -> str:
        rel = self.repo_path(path, rev=rev)
        work_path = self.top / rel if rel is not None else path
        if not rev or rel is None or not self.changes:
            files = self.listing(work_path)
            return "missing" if files is None else digest_of_listing(files)
        if rel not in self._rev_listings:
            # Every file is looked at (not only those below rel): one may be a symlink to a
            # changed file elsewhere in the repository.
            files: dict[str, str] = {}
            for name, digest in (self.listing(work_path) or {}).items():
                file_rel = f"{rel}/{name}" if name else rel
                status = self._change_of(file_rel, work_path / name if name else work_path)
                if status is None:
                    files[name] = digest
                elif status not in _ABSENT_AT_REV:
                    files[name] = f"changed-since-rev:{file_rel}"
            for changed, status in self._changed_below(rel):
                if status == "D":
                    name = changed[len(rel) + 1:] if changed != rel else ""
                    files[name] = f"deleted-since-rev:{changed}"
            self._rev_listings[rel] = files
        files = self._rev_listings[rel]
        return digest_of_listing(files) if files else "missing"


# -- static key documents ----------------------------------------------------------------------


@dataclass
class _Print:
    """A target's static key document, and what its reasons need besides."""

    document: KeyDocument  # deps: the addresses the dependency fields name, not output digests
    available: bool
    fields: dict[str, Any]  # validated fields: was a parameter change inherited from [defaults]?
    raw: dict[str, Any]  # the target's own BUILD.toml table


def _fingerprint(ws: Workspace, target: Target, sides: _Sides, *, rev: bool,
                 raw_tables: dict[str, dict]) -> _Print:
    try:
        plan = ws.plan(target)
        params = plan.params
        steps = [step.key_document() for step in plan.steps]
        toolchain = {**ws.toolchain_for(target).identity, **plan.extra_identity}
    except LLMBuildError:
        if target.unavailable is None:
            raise
        # Not buildable on this lane and not plannable either: compare what is declared.
        params = target.fields.model_dump(mode="json", exclude={"description", "tags", "lanes"})
        steps, toolchain = [], {"lane": ws.lane}
    if target.build_file not in raw_tables:
        try:
            raw_tables[target.build_file] = tomllib.loads((ws.root / target.build_file).read_text())
        except (OSError, tomllib.TOMLDecodeError):
            raw_tables[target.build_file] = {}
    raw = raw_tables[target.build_file].get(target.kind.name, {}).get(target.address.name, {})
    document = KeyDocument(
        kind=target.kind.name, params=params, steps=steps, toolchain=toolchain,
        sources={name: sides.source_digest(path, rev=rev) for name, path in sorted(target.sources.items())},
        deps={name: str(dep.address) for name, dep in sorted(target.deps.items())})
    return _Print(document, available=target.unavailable is None,
                  fields=target.fields.model_dump(mode="json"), raw=raw if isinstance(raw, dict) else {})


def _own_reasons(old: _Print, new: _Print, lane: str) -> list[str]:
    """One short phrase per changed section of the static key document (a CI log line)."""
    changes: dict[str, list[Change]] = {}
    for change in old.document.diff(new.document):
        changes.setdefault(change.section, []).append(change)
    if "kind" in changes:
        return [f"kind changed ({changes['kind'][0].old} -> {changes['kind'][0].new})"]
    reasons = []
    if "param" in changes:
        names = ", ".join(c.name for c in changes["param"])
        fields = {k for k in set(old.fields) | set(new.fields) if old.fields.get(k) != new.fields.get(k)}
        own = {k for k in set(old.raw) | set(new.raw) if old.raw.get(k, ABSENT) != new.raw.get(k, ABSENT)}
        inherited = bool(fields) and not (fields & own)
        reasons.append(f"{'inherited params' if inherited else 'params'} changed: {names}"
                       + (" (from [defaults])" if inherited else ""))
    elif "step" in changes or "flag" in changes:
        reasons.append("command changed")
    for section in ("toolchain", "source"):
        if section in changes:
            reasons.append(f"{section} changed: " + ", ".join(c.name for c in changes[section]))
    if "dependency" in changes:
        reasons.append("dependency changed: " + ", ".join(
            f"{c.name} ({'none' if c.old is ABSENT else c.old} -> {'none' if c.new is ABSENT else c.new})"
            for c in changes["dependency"]))
    if new.available and not old.available:
        reasons.append(f"now buildable on the {lane} lane")
    return reasons


def _compare(ws: Workspace, rev_ws: Workspace | None, sides: _Sides, since: str,
             commit: str) -> ChangedReport:
    rev_targets = {str(t.address): t for t in rev_ws.order} if rev_ws else {}
    work_raw: dict[str, dict] = {}
    rev_raw: dict[str, dict] = {}
    affected: list[str] = []
    reasons: dict[str, str] = {}
    for target in ws.order:
        address = str(target.address)
        new = _fingerprint(ws, target, sides, rev=False, raw_tables=work_raw)
        old_target = rev_targets.get(address)
        if old_target is None:
            own = ["new target"]
        else:
            try:
                old = _fingerprint(rev_ws, old_target, sides, rev=True, raw_tables=rev_raw)
            except LLMBuildError as err:
                raise sides.at_rev(err, since) from None
            own = _own_reasons(old, new, ws.lane)
        if sides.code_changes and not own:
            own = [f"llmbuild's code changed ({sides.code_changes[0]}"
                   + (f" and {len(sides.code_changes) - 1} more)" if len(sides.code_changes) > 1 else ")")]
        upstream = [str(dep.address) for dep in target.deps.values() if str(dep.address) in reasons]
        if own or upstream:
            affected.append(address)
            reasons[address] = "; ".join(own) if own else f"depends on {upstream[0]}"
    work = {str(t.address) for t in ws.order}
    removed = [a for a in rev_targets if a not in work]
    return ChangedReport(affected=affected, reasons=reasons, removed=removed, since=since, commit=commit)
