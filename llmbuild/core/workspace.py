"""A loaded workspace: settings, every target, the graph, and keys on demand."""

from __future__ import annotations

import inspect
import os
from functools import cached_property
from pathlib import Path
from typing import Any

from . import buildfiles
from .addresses import TAG_PREFIX, Address, Spec, parse_spec
from .cache import Cache
from .digests import DigestCache, digest_of_listing
from .errors import LLMBuildError, closest, did_you_mean
from .graph import resolve_references, topological_order
from .context import KindContext
from .keys import KeyDocument
from .paths import escaping_link, resolve_source
from .protocols import Executor, Plugins, Toolchain
from .settings import Settings, find_workspace_root, load_settings, resolve_dir
from .steps import PathArg, Plan
from .target import Source, Target, marked_fields
from .verdicts import VerdictCache


class NotReady(Exception):
    """No key yet: a dependency has no committed output, or a source is absent on this machine."""


class Workspace:
    def __init__(self, root: Path, settings: Settings, plugins: Plugins):
        self.root = root.resolve()
        self.settings = settings
        self.plugins = plugins
        self.cache = Cache(resolve_dir(self.root, settings.cache).resolve())
        self.dist = resolve_dir(self.root, settings.dist)
        self.data_roots = [Path(d) for d in settings.data_roots]
        self.linked_from: list[Path] = []
        self.lane = plugins.lane(self)
        self.targets: dict[Address, Target] = {}
        self.targets_by_name: dict[str, Target] = {}
        self.order: list[Target] = []
        self._plans: dict[Address, Plan] = {}
        self._facts: dict[Address, dict[str, Any]] = {}
        self._contexts: dict[Address, KindContext] = {}
        self._toolchains: dict[Address, Toolchain] = {}
        self._executors: dict[Address, Executor] = {}
        self.warnings: list[str] = []  # from checks where the real tools only warn
        self._new_verdicts: list[tuple[str, Any]] = []  # a workspace that fails to load stores none
        self.verify_sources = True  # False: plan/render on a machine without the sources
        self.cwd = ""  # where the command runs, relative to the root: specs are read from here
        self._keys: dict[Address, tuple[str, KeyDocument]] = {}
        self._source_files: dict[Address, dict[str, dict[str, str]]] = {}
        self._input_digests: dict[Address, str] = {}
        self._code_digests: dict[Path | None, str] = {}  # None: the package's

    @classmethod
    def load(cls, start: Path | None = None, environ: dict[str, str] | None = None, *,
             plugins: Plugins, verify_sources: bool = True, cwd: Path | None = None,
             keep_going: bool = False, linked_from: tuple[Path, ...] = ()) -> Workspace:
        """verify_sources=False (plan, render): sources need not exist on this machine.
        `cwd` (default: `start`): the directory command-line specs are relative to; outside
        the workspace, its root. keep_going: a target whose check fails gets that error as its
        `failure` instead of failing the load (a plan under another version shows each target's
        own error). linked_from: more places symlinks inside sources may lead to (a copy of the
        workspace whose ignored files are links to the original)."""
        start = (start or Path.cwd()).resolve()
        root = find_workspace_root(start)
        ws = cls(root, load_settings(root, environ, plugins.subsystems), plugins)
        ws.linked_from = list(linked_from)
        here = (cwd or start).resolve()
        if here.is_relative_to(ws.root) and here != ws.root:
            ws.cwd = here.relative_to(ws.root).as_posix()
        ws._load_targets(verify_sources, keep_going)
        return ws

    # -- loading ---------------------------------------------------------------------------

    def _load_targets(self, verify_sources: bool = True, keep_going: bool = False) -> None:
        self.verify_sources = verify_sources
        for bad in self.data_roots:
            if not bad.is_absolute():
                raise LLMBuildError(f"data root '{bad}' must be an absolute path",
                                    file="pyproject.toml", target="[tool.llmbuild]", key="data_roots")
        kinds = self.plugins.kinds
        files = [buildfiles.parse(p, self.root, kinds) for p in buildfiles.discover(self.root, self.settings)]
        targets = buildfiles.build_targets(files, kinds, self.plugins.field_defaults(self))
        resolve_references(targets)
        self.order = topological_order(targets)
        self.targets = {t.address: t for t in self.order}
        self.targets_by_name = {str(t.address): t for t in self.order}
        for target in self.order:  # every path checked before any target is (and a verdict stored)
            self._resolve_sources(target)
        for target in self.order:  # dependencies first: their facts are known when asked for
            try:
                target.unavailable = self._unavailable(target)
                target.sources.update(target.kind.derived_sources(self.context(target)))
                if target.unavailable is None:
                    if verify_sources:
                        self._check_sources_exist(target)
                    self._verify(target)
            except LLMBuildError as err:
                if not keep_going:
                    raise
                target.failure = target.failure or str(err)
        for digest, verdict in self._new_verdicts:  # stored only once every target passed
            self.verdicts.put(digest, verdict)
        self._new_verdicts.clear()

    def _verify(self, target: Target) -> None:
        """Check and plan the target (an argv the declared TensorRT-LLM version refuses fails
        here), or replay the verdict remembered for the same inputs."""
        digest = self._input_digest(target)
        remembered = self.verdicts.get(digest) if digest else None
        if remembered is not None:
            self._facts[target.address], self._plans[target.address], warnings = remembered
            self.warnings.extend(warnings)
            return
        before = len(self.warnings)
        if target.failure is None:  # checked where its data is
            target.kind.check(self.context(target))
        plan = self.plan(target)
        if digest:
            self._new_verdicts.append((digest, (self.facts(target), plan, self.warnings[before:])))

    def _input_digest(self, target: Target) -> str | None:
        """A digest of everything checking and planning the target reads, or None when some of
        it is not known on this machine (then it is checked every time)."""
        if not self.verify_sources or target.failure is not None:
            return None
        deps = {field: self._input_digests.get(dep.address) for field, dep in target.deps.items()}
        if None in deps.values():
            return None
        document = KeyDocument(
            kind=target.kind.name, params={"fields": target.fields.model_dump(mode="json"), "root": str(self.root),
                                           "address": str(target.address), "settings": self.settings.fingerprint(),
                                           "lane": self.lane, "paths": {f: str(p) for f, p in target.sources.items()},
                                           "gpus": self.toolchain_for(target).gpus_offered},
            steps=[], toolchain={"llmbuild": self._code_digest(target.kind)},
            sources={field: digest_of_listing(files) for field, files in self.source_files(target).items()},
            deps=deps)
        self._input_digests[target.address] = document.key
        return document.key

    def _code_digest(self, kind: Any) -> str:
        """llmbuild's code and data files, and the kind's own module (which may live outside it)."""
        module = Path(inspect.getfile(type(kind))).resolve()
        if module not in self._code_digests:
            if None not in self._code_digests:
                package = Path(__file__).resolve().parents[1]
                files = sorted(p for p in package.rglob("*") if p.suffix in (".py", ".json"))
                self._code_digests[None] = digest_of_listing(
                    dict(zip(map(str, files), self.digests.digests([(f, f.stat()) for f in files], counted=False))))
            [own] = self.digests.digests([(module, module.stat())], counted=False)
            self._code_digests[module] = digest_of_listing({"llmbuild": self._code_digests[None], str(module): own})
        return self._code_digests[module]

    def _resolve_sources(self, target: Target) -> None:
        build_dir = self.root / target.address.directory
        for field, _, value in marked_fields(target.fields, Source):
            values = value if isinstance(value, list) else [value]
            for index, item in enumerate(values):
                name = f"{field}.{index}" if isinstance(value, list) else field
                path, problem = resolve_source(item, build_dir=build_dir, root=self.root,
                                               data_roots=self.data_roots)
                if problem:
                    raise target.error(problem, key=field)
                link = escaping_link(path, [self.root, *self.data_roots, *self.linked_from]) if path.is_dir() else None
                if link:
                    raise target.error(f"{link[0].relative_to(path.parent)} is a symlink to {link[1]}, outside "
                                       "the workspace and every data root", key=field)
                target.sources[name] = path

    def _unavailable(self, target: Target) -> str | None:
        lane = self.lane
        if lane not in target.fields.lanes:
            return f"declared for the {'/'.join(target.fields.lanes)} lane only (active lane: {lane})"
        for dep in target.deps.values():
            if dep.unavailable:
                return f"needs {dep.address}, which is skipped"
        return target.kind.unavailable(self.context(target))

    def _check_sources_exist(self, target: Target) -> None:
        """A missing workspace path is a BUILD.toml error; data a data root lacks on this machine
        fails only this target (and skips its dependents) when it runs."""
        for field, path in target.sources.items():
            if not path.exists():
                if path.is_relative_to(self.root):
                    raise target.error(f"source path {path} does not exist", key=field)
                target.failure = target.failure or str(
                    target.error(f"source path {path} does not exist on this machine", key=field))

    def context(self, target: Target) -> KindContext:
        """The narrow view a kind gets of its target."""
        if target.address not in self._contexts:
            self._contexts[target.address] = KindContext(self, target)
        return self._contexts[target.address]

    def toolchain_for(self, target: Target) -> Toolchain:
        if target.address not in self._toolchains:
            self._toolchains[target.address] = self.plugins.toolchain_for(self, target)
        return self._toolchains[target.address]

    def executor_for(self, target: Target) -> Executor:
        if target.address not in self._executors:
            self._executors[target.address] = self.plugins.executor_for(self, target)
        return self._executors[target.address]

    @cached_property
    def verdicts(self) -> VerdictCache:
        return VerdictCache(self.cache.root / "verdicts.sqlite3")

    @cached_property
    def digests(self) -> DigestCache:
        return DigestCache(self.cache.root / "digests.sqlite3")

    # -- selection ---------------------------------------------------------------------------

    def select(self, specs: list[str]) -> list[Target]:
        """The targets command-line specs name, read from `cwd` as Pants reads them
        (`parse_spec`); no spec: every target at or below `cwd`."""
        if not specs:
            below = Spec(self.cwd, recursive=True)
            return [t for t in self.order if below.matches(t.address)]
        chosen: list[Target] = []
        for text in specs:
            spec = parse_spec(text, self.cwd)
            matched = [t for t in self.order if spec.matches(t.address, t.fields.tags)]
            if not matched:
                where = f" from {self.cwd}" if self.cwd and not text.startswith(("//", TAG_PREFIX)) else ""
                raise LLMBuildError(f"no target matches '{text}'{where}{self._suggestion(text, spec)}")
            chosen.extend(t for t in matched if t not in chosen)
        return chosen

    def _suggestion(self, text: str, spec: Spec) -> str:
        """' (did you mean X?)': the same spec from the root when it matches there, else the
        closest tag, address or directory, written as it can be typed from `cwd`."""
        if spec.tag is not None:
            tags = {TAG_PREFIX + tag for t in self.order for tag in t.fields.tags}
            return did_you_mean(text, tags) if tags else "; no target has a tag"
        if self.cwd and not text.startswith("//"):
            try:
                rooted = parse_spec(text)
            except LLMBuildError:  # e.g. '../x' from the root
                rooted = None
            if rooted and any(rooted.matches(t.address) for t in self.order):
                return f" (did you mean '//{text.removeprefix('./')}'?)"
        dirs = {d for t in self.order for d in _with_parents(t.address.directory)}
        if spec.recursive:
            choices = [str(Spec(d, recursive=True)) for d in dirs]
        elif spec.name is None:
            choices = [d for d in dirs if any(t.address.directory == d for t in self.order)]
        else:
            choices = [str(t.address) for t in self.order]
        typed = {"//" + c if text.startswith("//") else self._from_cwd(c): c for c in choices}
        close = closest(text.removeprefix("./"), typed)
        return f" (did you mean '{close}'?)" if close else ""

    def _from_cwd(self, spec: str) -> str:
        """A root-relative spec as typed from `cwd`: `:engine`, `sub:x`, or `//dir:x`."""
        if not self.cwd:
            return spec
        directory, sep, rest = spec.partition(":")
        if directory.endswith("/"):  # "dir/::"
            directory, sep, rest = directory[:-1], "", "::"
        if directory == self.cwd:
            return (sep + rest) or "."
        if directory.startswith(self.cwd + "/"):
            return directory[len(self.cwd) + 1:] + sep + rest
        return "//" + spec

    def target(self, address: str) -> Target:
        selected = self.select([address])
        if len(selected) != 1:
            raise LLMBuildError(f"'{address}' names {len(selected)} targets; give one address dir:name")
        return selected[0]

    # -- plans, keys and state -------------------------------------------------------------------

    def facts(self, target: Target) -> dict[str, Any]:
        if target.address not in self._facts:
            self._facts[target.address] = target.kind.facts(self.context(target))
        return self._facts[target.address]

    def plan(self, target: Target) -> Plan:
        if target.address not in self._plans:
            self._plans[target.address] = target.kind.plan(self.context(target))
        return self._plans[target.address]

    def key(self, target: Target) -> tuple[str, KeyDocument]:
        """(action key, key document). Raises NotReady if a dependency is not built yet."""
        if target.failure:
            raise NotReady(target.failure)
        if target.address not in self._keys:
            document = self.key_document(target)
            self._keys[target.address] = (document.key, document)
        return self._keys[target.address]

    def key_document(self, target: Target, *, partial: bool = False) -> KeyDocument:
        """The canonical document the key hashes. With partial=True a dependency not built
        yet appears as None instead of raising NotReady (for explaining)."""
        plan = self.plan(target)
        deps: dict[str, str | None] = {}
        for field, dep in target.deps.items():
            try:
                manifest = self.cache.manifest(self.key(dep)[0])
            except NotReady:
                manifest = None
            if manifest is None and not partial:
                raise NotReady(f"{dep.address} has not been built")
            deps[field] = manifest and manifest["output_digest"]
        sources = {field: digest_of_listing(files) for field, files in self.source_files(target).items()}
        return KeyDocument(
            kind=target.kind.name, params=plan.params,
            steps=[s.key_document() for s in plan.steps],
            toolchain={**self.toolchain_for(target).identity, **plan.extra_identity},
            sources=sources, deps=deps)

    def source_files(self, target: Target) -> dict[str, dict[str, str]]:
        """{source field: {file: digest}} (stat-cached; listed once per process)."""
        if target.address not in self._source_files:
            self._source_files[target.address] = {field: self.digests.tree_files(path)
                                                  for field, path in target.sources.items()}
        return self._source_files[target.address]

    def dist_link(self, target: Target) -> Path:
        return self.dist / target.address.dist_path

    def is_up_to_date(self, target: Target) -> bool:
        """Committed for the current key, intact (one stat per file), and dist already points at it."""
        try:
            key, _ = self.key(target)
        except NotReady:
            return False
        link = self.dist_link(target)
        try:
            linked = os.readlink(link) == str(self.cache.out(key))
        except OSError:
            return False
        if not linked:
            return False
        self.cache.register_dist(self.dist)  # a workspace linking into the cache: gc keeps what it links
        return self.is_committed(target, key) and self.cache.problem(key) is None

    def is_committed(self, target: Target, key: str) -> bool:
        return self.cache.is_committed(key) and target.kind.output_valid(self.context(target), key)

    def paths(self, target: Target, out: Path | None = None) -> dict[PathArg, Path]:
        """Real host paths for every placeholder; without `out`, the stable dist paths (for plans)."""
        mapping: dict[PathArg, Path] = {PathArg("out"): out or self.dist_link(target)}
        for field, path in target.sources.items():
            mapping[PathArg("source", field)] = path
        for field, dep in target.deps.items():
            mapping[PathArg("dep", field)] = self.dist_link(dep)
            if out is not None:
                mapping[PathArg("dep", field)] = self.cache.out(self.key(dep)[0])
        return mapping


def _with_parents(directory: str) -> list[str]:
    """'a/b' -> ['a/b', 'a']: the directories a spec may name to reach a target in `directory`."""
    parts = directory.split("/") if directory else []
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
