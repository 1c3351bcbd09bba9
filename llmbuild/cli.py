"""`llmbuild`: look at what doit would do without doing it; for CI, build what a change affects.

    llmbuild plan [--json] [--lane cpu|gpu] [--trtllm-version V] [SPEC...]
                                                        the steps (lane, program, argv) of each target
    llmbuild render ADDRESS --out DIR [--lane cpu|gpu] the files a repository target would produce
    llmbuild explain [--lane cpu|gpu] SPEC...           why each would rebuild (or not)
    llmbuild graph [--format dot|mermaid|png] [--out PATH] [--lane cpu|gpu] [SPEC...]
                                                        the target graph, coloured by the last run
    llmbuild changed --since REV [--build [-- DOIT_ARG...]]
                                                        targets a git change affects; --build
                                                        runs doit on exactly those (CI)
    llmbuild schema [--out FILE]                        JSON Schema of BUILD.toml, for editors
    llmbuild schema --reference [--out FILE]            docs/reference.md: every field, generated
    llmbuild cache push|pull [--lane cpu|gpu] [SPEC...] move entries to / from the remote cache
    llmbuild cache size|ls|verify|gc ...                look after the cache (see `llmbuild cache -h`)
    llmbuild --version                                  llmbuild's, doit's and Python's versions

SPEC is read as Pants reads it, relative to the current directory: `:engine` (a target here),
`.` (the targets here), `::` or `./sub::` (at or below), `sub:name`; `//models/x:engine` from the
workspace root; `tag:fp8` (the targets tagged fp8). No SPEC: every target at or below here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path

from . import __version__
from .core.errors import LLMBuildError
from .core.redact import RedactingStream
from .core.workspace import Workspace
from .introspect.changed import build_affected, changed_targets
from .introspect.explain import explain
from .introspect.graph import default_graph_path, graph_text, write_graph
from .introspect.plan import plan_document, plan_text
from .introspect.render import render_target
from .plugins import load_workspace


def _load(args, *, verify_sources: bool = False) -> Workspace:
    environ = dict(os.environ)
    if getattr(args, "lane", None):
        environ["LLMBUILD_LANE"] = args.lane
    if getattr(args, "trtllm_version", None):
        environ["LLMBUILD_TRTLLM_VERSION_OVERRIDE"] = args.trtllm_version
    # under a forced version a target that cannot move shows its error; the others still load
    ws = load_workspace(Path(args.workspace) if args.workspace else None, environ, verify_sources=verify_sources,
                        keep_going=bool(environ.get("LLMBUILD_TRTLLM_VERSION_OVERRIDE")))
    for warning in ws.warnings:
        print(f"llmbuild: {warning}", file=sys.stderr)
    return ws


def _lane_workspace(args, lane: str, cache: dict[str, Workspace]) -> Workspace:
    if lane not in cache:
        args_lane = argparse.Namespace(**{**vars(args), "lane": lane})
        cache[lane] = _load(args_lane)
    return cache[lane]


def cmd_plan(args) -> int:
    ws = _load(args)
    workspaces = {ws.lane: ws}
    document = plan_document(ws, args.specs, lambda lane: _lane_workspace(args, lane, workspaces))
    if not document:  # no SPEC given (one matching nothing is an error) and no targets here
        print(f"llmbuild: no targets at or below {ws.cwd}" if ws.cwd else
              "llmbuild: no targets: no BUILD.toml under the build_roots declares one", file=sys.stderr)
    sys.stdout.write(json.dumps(document, indent=2) + "\n" if args.json else plan_text(document))
    return 0


def cmd_render(args) -> int:
    ws = _load(args)
    target = ws.target(args.address)
    files = render_target(ws, target, Path(args.out))
    print(f"rendered {target.address} ({ws.lane} lane) into {args.out}")
    for path in files:
        print(f"  {path}")
    return 0


def cmd_explain(args) -> int:
    ws = _load(args, verify_sources=True)
    for target in ws.select(args.specs):
        print("\n".join(explain(ws, target).lines()))
    return 0


def cmd_schema(args) -> int:
    if args.reference:
        from .introspect.reference import reference_markdown as text, write_reference as write
    else:
        from .introspect.schema import schema_json as text, write_schema as write

    if args.out:
        print(f"wrote {write(args.out)}")
    else:
        sys.stdout.write(text())
    return 0


def cmd_graph(args) -> int:
    ws = _load(args)
    targets = ws.select(args.specs)
    if args.format != "png" and not args.out:
        sys.stdout.write(graph_text(ws, targets, args.format))
        return 0
    out = Path(args.out) if args.out else default_graph_path(ws, args.format)
    write_graph(ws, targets, args.format, out)
    print(f"wrote {os.path.relpath(out) if out.resolve().is_relative_to(Path.cwd()) else out}")
    return 0


def cmd_changed(args) -> int:
    if args.doit_args and not args.build:
        raise LLMBuildError(f"'{' '.join(args.doit_args)}': arguments for doit need --build "
                            "(llmbuild changed --since REV --build -- DOIT_ARG...)")
    environ = dict(os.environ)
    if args.lane:
        environ["LLMBUILD_LANE"] = args.lane
    ws = _load(args, verify_sources=True)
    report = changed_targets(ws, args.since, environ=environ)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    for line in report.lines(quiet=args.quiet):
        print(line)
    if report.removed and not args.quiet:
        print("removed since " + args.since + ": " + ", ".join(report.removed), file=sys.stderr)
    return build_affected(ws, report, args.doit_args, environ) if args.build else 0


def cmd_cache(args) -> int:
    from .remote.commands import cache_command  # imports boto3: only for this command

    return cache_command(_load(args, verify_sources=True), args.action, args.specs)


SPECS_HELP = ("SPEC, as Pants reads it from the current directory: :name (a target here), . (the "
              "targets here), :: or ./sub:: (at or below), sub:name; //dir:name from the workspace "
              "root; tag:NAME (the targets tagged NAME).")


def versions() -> str:
    return (f"llmbuild {__version__} (doit {version('doit')}, "
            f"Python {platform.python_version()})")


def _lane_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lane", choices=["cpu", "gpu"], help="for this lane instead of the active one")


def cmd_cache_tool(args) -> int:
    from . import cachetool
    from .remote.commands import configured_remote

    ws = _load(args, verify_sources=bool(getattr(args, "specs", None)) or bool(getattr(args, "keep_revs", None)))
    if args.action == "size":
        return cachetool.cache_size(ws, configured_remote(ws, required=False))
    if args.action == "ls":
        return cachetool.cache_ls(ws, args.specs)
    if args.action == "verify":
        return cachetool.cache_verify(ws, args.specs, configured_remote(ws) if args.remote else None)
    return cachetool.cache_gc(
        ws, max_size=args.max_size and cachetool.parse_size(args.max_size),
        older_than=args.older_than and cachetool.parse_age(args.older_than), keep=args.keep,
        keep_revs=args.keep_revs, dry_run=args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmbuild",
        description="Inspect an llmbuild workspace. Build with `doit` (see `doit list`).", epilog=SPECS_HELP)
    parser.add_argument("--version", action="version", version=versions())
    parser.add_argument("-C", "--workspace", help="run as if started in this directory "
                        "(default: the current one; the workspace is found above it)")
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="show each target's steps (lane, program, argv); runs nothing",
                          description="Show the commands each selected target would run, on the "
                          "active lane or --lane. No SPEC: every target at or below the current "
                          "directory.", epilog=SPECS_HELP)
    plan.add_argument("specs", nargs="*", metavar="SPEC")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    _lane_option(plan)
    plan.add_argument("--trtllm-version", metavar="V", help="plan every target for TensorRT-LLM V, over its "
                      "container's and its own version (e.g. 1.3.0rc29: the engine-free lane)")
    plan.set_defaults(func=cmd_plan)

    render = sub.add_parser("render", help="write the files a repository target would produce, "
                            "without building anything (for reviewing a change)",
                            description="Generate a repository target's config.pbtxt and model "
                            "files from its engine's declared build settings. The engine and "
                            "tokenizer are not copied (nothing is built).")
    render.add_argument("address", metavar="ADDRESS")
    render.add_argument("--out", required=True, help="directory to write (must be empty or absent)")
    _lane_option(render)
    render.set_defaults(func=cmd_render)

    why = sub.add_parser("explain", help="why a target would rebuild now (or that it would not)",
                         description="Compare each selected target's key inputs now with the last "
                         "key committed for it (the one dist/ links): parameters, argv flags, source "
                         "files, dependency outputs, toolchain. Says 'up to date' or 'restorable "
                         "from cache' when nothing would build.", epilog=SPECS_HELP)
    why.add_argument("specs", nargs="+", metavar="SPEC")
    _lane_option(why)
    why.set_defaults(func=cmd_explain)

    graph = sub.add_parser("graph", help="the target graph as DOT, Mermaid or PNG, coloured by the last run",
                           description="Draw the selected targets and their dependencies, grouped by "
                           "directory, coloured by their outcome in dist/run.json.", epilog=SPECS_HELP)
    graph.add_argument("specs", nargs="*", metavar="SPEC")
    _lane_option(graph)
    graph.add_argument("--format", choices=["dot", "mermaid", "png"], default="dot")
    graph.add_argument("--out", metavar="PATH", help="file to write (default: stdout for dot and mermaid; "
                       "dist/graph.png for png)")
    graph.set_defaults(func=cmd_graph)

    changed = sub.add_parser(
        "changed", help="the targets whose keys a git change affects; with --build, build exactly those (CI)",
        usage="llmbuild changed [-h] --since REV [--build [-- DOIT_ARG ...] | --json] [-q] [--lane {cpu,gpu}]",
        description="Compare every target's inputs now (working tree) with REV: BUILD.toml and "
        "[defaults] edits, source files, toolchain files; targets depending on an affected one are "
        "affected too. Prints one address per line with the reason. For CI: `llmbuild changed "
        "--since origin/main --build` runs doit on exactly the affected targets, and runs nothing "
        "when none is (`doit $(llmbuild changed ... -q)` would then be a plain `doit`, which "
        "builds everything).",
        epilog="example: llmbuild changed --since origin/main --build -- -n 2")
    changed.add_argument("--since", required=True, metavar="REV", help="git revision to compare with")
    mode = changed.add_mutually_exclusive_group()
    mode.add_argument("--build", action="store_true",
                      help="then run `doit run [DOIT_ARG...] ADDRESS...` on exactly the affected addresses "
                      "(exit status: doit's); with none affected, print 'nothing changed since REV; "
                      "nothing to build' and exit 0 without running doit")
    mode.add_argument("--json", action="store_true", help="addresses with reasons, as JSON")
    changed.add_argument("-q", "--quiet", action="store_true", help="addresses only")
    _lane_option(changed)
    changed.add_argument("doit_args", nargs="*", metavar="DOIT_ARG",
                         help="with --build: options for `doit run`, after `--` (e.g. -- -n 2)")
    changed.set_defaults(func=cmd_changed)

    schema = sub.add_parser("schema", help="the JSON Schema of BUILD.toml (for editors)",
                            description="Print (or write with --out) the JSON Schema of BUILD.toml "
                            "files, generated from the registered kinds. See docs/editors.md.")
    schema.add_argument("--out", help="file to write instead of stdout")
    schema.add_argument("--reference", action="store_true",
                        help="the Markdown field reference (docs/reference.md) instead")
    schema.set_defaults(func=cmd_schema)

    cache = sub.add_parser("cache", help="look after the cache: size, ls, verify, gc; push/pull to the remote",
                           description="Look after the local cache (and remote_cache). Each of these is "
                           "safe while doit runs on the same cache: an entry being built or restored is "
                           "never removed.")
    actions = cache.add_subparsers(dest="action", required=True)
    for action, what in (("push", "those built here that the remote lacks"),
                         ("pull", "those the remote has, every file verified")):
        moved = actions.add_parser(action, help=f"{action} the selected targets' entries ({what})",
                                   description=f"Move the entries of the selected targets, and of what they "
                                   f"depend on, between the local cache and remote_cache (S3): {what}. Exit "
                                   "status 1 when some target could not be moved.", epilog=SPECS_HELP)
        moved.add_argument("specs", nargs="*", metavar="SPEC")
        _lane_option(moved)
        moved.set_defaults(func=cmd_cache)
    size = actions.add_parser("size", help="bytes used, by kind and by model directory (local, and remote "
                              "when remote_cache is set)")
    size.set_defaults(func=cmd_cache_tool)
    ls = actions.add_parser("ls", help="one line per entry: key, kind, target, size, last use, linked")
    ls.add_argument("specs", nargs="*", metavar="SPEC", help="only the current entries of these targets")
    ls.set_defaults(func=cmd_cache_tool)
    verify = actions.add_parser("verify", help="re-hash entries against their manifests; quarantine corrupt ones",
                                description="Read every file of every entry (or of the selected targets' "
                                "current entries) and compare size, mtime and digest with its manifest. A "
                                "corrupt entry is reported in one line and moved to <cache>/quarantine (with "
                                "--remote: removed from the remote cache); the next doit rebuilds it. Exit "
                                "status 1 if any entry was corrupt.")
    verify.add_argument("--remote", action="store_true", help="verify the remote cache's entries instead")
    verify.add_argument("specs", nargs="*", metavar="SPEC")
    verify.set_defaults(func=cmd_cache_tool)
    gc = actions.add_parser(
        "gc", help="remove old entries, failed attempts, quarantined entries and stale staging",
        description="Remove staging directories of builds that are gone, failed attempts and quarantined "
        "entries (all but the newest of each key, and any older than --older-than, default 7d), then evict "
        "entries: those unused for --older-than, then least recently used first until the cache fits "
        "--max-size. Never evicted: an entry that a dist directory of any workspace using this cache links "
        "to, one that --keep-revs revisions' targets would use, a target's --keep newest, and one being "
        "built or restored.",
        epilog="example: llmbuild cache gc --max-size 50GB --older-than 14d --keep-revs origin/main")
    gc.add_argument("--max-size", metavar="SIZE", help="evict until the cache is at most this big (50GB, 500MB)")
    gc.add_argument("--older-than", metavar="AGE", help="evict entries unused for this long (14d, 12h)")
    gc.add_argument("--keep", type=int, default=0, metavar="N",
                    help="always keep each target's N most recently used entries (default 0)")
    gc.add_argument("--keep-revs", nargs="+", default=[], metavar="REV",
                    help="keep every entry these git revisions' targets would use")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    gc.set_defaults(func=cmd_cache_tool)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = map(RedactingStream, streams)  # no secret's value is ever printed
    try:
        return args.func(args)
    except LLMBuildError as err:
        print(f"llmbuild: error: {err}", file=sys.stderr)
        return 2
    finally:
        sys.stdout, sys.stderr = streams
