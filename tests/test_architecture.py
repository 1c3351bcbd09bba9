"""The tree is the architecture: the core imports no plugin, nothing imports in a loop, and a
kind is one module (a test registers one of its own and builds it through doit)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import TINY_HF

PACKAGE = Path(__file__).resolve().parents[1] / "llmbuild"
#: What the core may not import: every subpackage that implements its protocols or looks at it.
PLUGIN_PACKAGES = ("kinds", "toolchains", "executors", "triton", "introspect", "remote", "doit", "plugins")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node except those under `if TYPE_CHECKING:` (annotations, never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of llmbuild that `path` imports at run time, at any level (top or in a function)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("llmbuild")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("llmbuild"):  # `from pkg import mod` imports pkg.mod, else pkg
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                          for a in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, set(modules)) if m in modules and m != name}
    return graph


def test_core_imports_no_plugin_package():
    offenders = []
    for name, imported in _graph().items():
        if not name.startswith("llmbuild.core"):
            continue
        for module in imported:
            if any(module == f"llmbuild.{p}" or module.startswith(f"llmbuild.{p}.") for p in PLUGIN_PACKAGES):
                offenders.append(f"{name} imports {module}")
    assert offenders == []


def test_no_import_loop_in_llmbuild():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert [" -> ".join(c) for c in cycles] == []


def test_no_kind_imports_another_kind():
    graph = _graph()
    kinds = {m for m in graph if m.startswith("llmbuild.kinds.") and not m.split(".")[-1].startswith("_")}
    offenders = [f"{k} imports {m}" for k in kinds for m in graph[k] if m in kinds]
    assert offenders == []


# -- a kind is one module -------------------------------------------------------------------------

WORDCOUNT_KIND = '''
from typing import Annotated

from pydantic import Field

from llmbuild.core.steps import Plan
from llmbuild.core.target import Kind, Ref, TargetFields, register


class WordCountFields(TargetFields):
    engine: Annotated[str, Ref("engine")] = Field(description="The engine whose config is measured.")
    word: str = Field("max", description="The word to count in the engine's config.json.")


@register
class WordCount(Kind):
    name = "wordcount"
    Fields = WordCountFields
    help = "Counts a word in an engine's config.json (a kind registered by a test)."

    def facts(self, ctx):
        return {"max_seq_len": ctx.facts_of("engine")["config"]["build_config"]["max_seq_len"]}

    def plan(self, ctx):
        return Plan(params={"word": ctx.fields.word})

    def run(self, ctx):
        text = (ctx.dep_out("engine") / "config.json").read_text()
        (ctx.out / "count.txt").write_text(f"{text.count(ctx.fields.word)}\\n")
'''


@pytest.fixture
def wordcount_kind(tmp_path, monkeypatch):
    """A kind defined in a module outside llmbuild, registered as a plugin module would."""
    (tmp_path / "kindmod").mkdir()
    (tmp_path / "kindmod" / "wordcount_kind.py").write_text(WORDCOUNT_KIND)
    monkeypatch.syspath_prepend(str(tmp_path / "kindmod"))
    return tmp_path / "kindmod"


@pytest.mark.slow
def test_a_kind_registered_from_outside_builds_through_doit(make_workspace, wordcount_kind):
    """Adding a kind touches one module: its schema, facts, plan and run; the core and the other
    kinds are unchanged. The workspace's dodo.py imports the module that registers it."""
    ws = make_workspace()
    (ws.root / "dodo.py").write_text("import wordcount_kind  # noqa: F401\nfrom llmbuild.doit import *  # noqa\n")
    ws.add_model("m", TINY_HF)
    ws.write("models/m/BUILD.toml", (ws.root / "models/m/BUILD.toml").read_text()
             + '\n[wordcount.count]\nengine = ":engine"\nword = "max_"\n')
    env = ws.env(PYTHONPATH=f"{wordcount_kind}:{ws.env().get('PYTHONPATH', '')}")
    run = ws.doit("models/m:count", env=env)
    assert run.outcomes == {"models/m:checkpoint": "built", "models/m:engine": "built", "models/m:count": "built"}
    count = int((ws.root / "dist/models/m/count/count.txt").read_text())
    assert count > 3  # max_batch_size, max_input_len, max_seq_len, max_num_tokens, ...
    ws.write("models/m/BUILD.toml", (ws.root / "models/m/BUILD.toml").read_text().replace('"max_"', '"max"'))
    assert ws.doit("models/m:count", env=env).outcomes["models/m:count"] == "built"
    bad = ws.write("models/m/BUILD.toml", (ws.root / "models/m/BUILD.toml").read_text() + "[wordcount.x]\nengine = \":engine\"\nwrod = 1\n")
    failed = ws.doit("models/m:count", env=env, check=False)
    assert failed.returncode != 0 and "wrod" in failed.stderr + failed.stdout and "did you mean 'word'" in failed.stderr + failed.stdout
    assert bad.exists()
