"""BUILD.toml discovery, `[defaults]` inheritance and load-time messages, in process (no doit)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from llmbuild import cli
from llmbuild.core import buildfiles
from llmbuild.core.errors import LLMBuildError
from llmbuild.core.settings import load_settings
from llmbuild.plugins import load_kinds, load_workspace

ENGINE = '[engine.e]\ncheckpoint = ":c"\n'


def make(root: Path, files: dict[str, str], settings: str = 'build_roots = ["models"]\n') -> Path:
    (root / "pyproject.toml").write_text("[tool.llmbuild]\n" + textwrap.dedent(settings))
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def found(root: Path, environ: dict[str, str] | None = None) -> list[str]:
    settings = load_settings(root, environ or {})
    return [p.relative_to(root.resolve()).parent.as_posix()
            for p in buildfiles.discover(root, settings)]


def load(root: Path) -> list:
    paths = buildfiles.discover(root, load_settings(root, {}))
    kinds = load_kinds()
    return buildfiles.build_targets([buildfiles.parse(p, root, kinds) for p in paths], kinds)


def load_error(root: Path) -> str:
    with pytest.raises(LLMBuildError) as caught:
        load(root)
    return str(caught.value)


# -- discovery ---------------------------------------------------------------------------------

def test_ignore_takes_root_relative_paths_and_globs_and_keeps_the_defaults(tmp_path):
    dirs = ["models/old", "models/a/old", "models/a/scratch", "models/a/scratch2",
            "models/a/node_modules", "models/a/__pycache__", "models/a/.hidden", "models/b"]
    make(tmp_path, {f"{d}/BUILD.toml": "" for d in dirs},
         'build_roots = ["models"]\nignore = ["models/old", "models/*/scratch/"]\n')
    assert found(tmp_path) == ["models/a/old", "models/a/scratch2", "models/b"]


def test_default_ignores_hold_without_an_ignore_setting(tmp_path):
    make(tmp_path, {f"models/{d}/BUILD.toml": "" for d in ("old", ".venv", "node_modules", "x")})
    assert found(tmp_path) == ["models/old", "models/x"]


def test_cache_and_dist_are_skipped_by_path_not_by_name(tmp_path):
    make(tmp_path, {f"models/{d}/BUILD.toml": "" for d in ("m", "cache", "dist", "c", "d")})
    # Default cache/dist are <root>/cache and <root>/dist: models/cache and models/dist are searched.
    assert found(tmp_path) == ["models/c", "models/cache", "models/d", "models/dist", "models/m"]
    # A cache elsewhere named like a model directory hides nothing.
    assert found(tmp_path, {"LLMBUILD_CACHE_DIR": str(tmp_path / "x" / "m")}) == \
        ["models/c", "models/cache", "models/d", "models/dist", "models/m"]
    # Inside the build roots, the cache and dist directories themselves are skipped.
    environ = {"LLMBUILD_CACHE_DIR": str(tmp_path / "models" / "c"), "LLMBUILD_DIST_DIR": "models/d"}
    assert found(tmp_path, environ) == ["models/cache", "models/dist", "models/m"]


def test_build_root_ancestors_pass_defaults_but_siblings_are_not_searched(tmp_path):
    make(tmp_path, {"BUILD.toml": "", "models/BUILD.toml": "", "models/a/BUILD.toml": "",
                    "other/BUILD.toml": ""}, 'build_roots = ["models/a"]\n')
    assert found(tmp_path) == [".", "models", "models/a"]


# -- [defaults] --------------------------------------------------------------------------------

def test_defaults_nearest_wins_and_a_target_value_beats_both(tmp_path):
    make(tmp_path, {
        "BUILD.toml": "[defaults.engine]\nmax_batch_size = 8\nmax_beam_width = 2\n",
        "models/BUILD.toml": "[defaults.engine]\nmax_batch_size = 16\n",
        "models/a/BUILD.toml": ENGINE + '\n[engine.own]\ncheckpoint = ":c"\nmax_batch_size = 1\n',
        "other/BUILD.toml": ENGINE,
    }, 'build_roots = ["."]\n')
    fields = {str(t.address): t.fields for t in load(tmp_path)}
    assert (fields["models/a:e"].max_batch_size, fields["models/a:e"].max_beam_width) == (16, 2)
    assert (fields["models/a:own"].max_batch_size, fields["models/a:own"].max_beam_width) == (1, 2)
    assert (fields["other:e"].max_batch_size, fields["other:e"].max_beam_width) == (8, 2)


def test_defaults_apply_only_to_their_kind_and_workspace_defaults_come_last(tmp_path):
    make(tmp_path, {"models/BUILD.toml": '[defaults.engine]\ncontainer = ":img"\n',
                    "models/a/BUILD.toml": ENGINE + '[checkpoint.c]\nsource = "hf"\n'})
    paths = buildfiles.discover(tmp_path, load_settings(tmp_path, {}))
    kinds = load_kinds()
    targets = buildfiles.build_targets([buildfiles.parse(p, tmp_path, kinds) for p in paths], kinds,
                                       {"container": "toolchains:image"})
    fields = {str(t.address): t.fields for t in targets}
    assert fields["models/a:e"].container == ":img"
    assert fields["models/a:c"].container == "toolchains:image"


def test_a_bad_inherited_value_names_where_it_comes_from(tmp_path):
    make(tmp_path, {"models/BUILD.toml": '[defaults.engine]\nmax_batch_size = "8"\n',
                    "models/a/BUILD.toml": ENGINE})
    assert load_error(tmp_path) == (
        "models/a/BUILD.toml: [engine.e]: max_batch_size: Input should be a valid integer (got '8') "
        "(inherited from models/BUILD.toml [defaults.engine])")


# -- messages ----------------------------------------------------------------------------------

def test_unknown_key_inside_a_list_of_tables_suggests_the_field(tmp_path):
    make(tmp_path, {"models/m/BUILD.toml": """\
        [smoke.s]
        repository = ":r"
        requests = [{ prompt = "hi", max_tokns = 3 }]
        """})
    assert load_error(tmp_path) == ("models/m/BUILD.toml: [smoke.s]: requests.0.max_tokns: "
                                    "unknown key (did you mean 'max_tokens'?)")


def test_unknown_key_inside_a_nested_table_suggests_the_field(tmp_path):
    make(tmp_path, {"models/m/BUILD.toml": ENGINE + "lora = { max_rnk = 8 }\n"})
    assert load_error(tmp_path) == ("models/m/BUILD.toml: [engine.e]: lora.max_rnk: "
                                    "unknown key (did you mean 'max_rank'?)")


def test_a_kind_entry_that_is_not_a_table_is_named(tmp_path):
    make(tmp_path, {"models/m/BUILD.toml": '[checkpoint]\nckpt = "x"\n'})
    assert load_error(tmp_path) == (
        "models/m/BUILD.toml: [checkpoint]: checkpoint.ckpt: expected a target table "
        "[checkpoint.ckpt] (targets are named: [checkpoint.<name>]), got 'x'")


def test_wrong_kind_reference_says_an_engine(tmp_path):
    make(tmp_path, {"models/m/BUILD.toml": '[checkpoint.c]\nsource = "hf"\n\n' + ENGINE
                    + '\n[engine.f]\ncheckpoint = ":e"\n'})
    with pytest.raises(LLMBuildError) as caught:
        load_workspace(tmp_path, {}, verify_sources=False)
    assert str(caught.value) == ("models/m/BUILD.toml: [engine.f]: checkpoint: ':e' refers to "
                                 "models/m:e, an engine target; expected a checkpoint")


# -- the CLI on small workspaces ---------------------------------------------------------------

def run_cli(root: Path, *args: str, capsys, monkeypatch) -> tuple[int, str, str]:
    for variable in [v for v in os.environ if v.startswith("LLMBUILD_")]:
        monkeypatch.delenv(variable)
    code = cli.main(["-C", str(root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_of_a_workspace_without_targets_says_so(tmp_path, capsys, monkeypatch):
    make(tmp_path, {"models/m/BUILD.toml": ENGINE}, 'build_roots = ["nothing-here"]\n')
    code, out, err = run_cli(tmp_path, "plan", capsys=capsys, monkeypatch=monkeypatch)
    assert (code, out) == (0, "")
    assert err == "llmbuild: no targets: no BUILD.toml under the build_roots declares one\n"


@pytest.mark.parametrize("existing", ["file", "full directory"])
def test_render_onto_something_existing_is_one_line(existing, tmp_path, capsys, monkeypatch):
    make(tmp_path, {"models/m/BUILD.toml": '[checkpoint.c]\nsource = "hf"\n'})
    out = tmp_path / "out"
    if existing == "file":
        out.write_text("keep me")
    else:
        (out / "x").mkdir(parents=True)
    code, stdout, err = run_cli(tmp_path, "render", "models/m:c", "--out", str(out),
                                capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and stdout == ""
    assert err == f"llmbuild: error: --out {out} exists and is not an empty directory\n"
    assert out.read_text() == "keep me" if existing == "file" else [p.name for p in out.iterdir()] == ["x"]


def test_render_of_a_kind_without_render_says_an_engine(tmp_path, capsys, monkeypatch):
    make(tmp_path, {"models/m/BUILD.toml": '[checkpoint.c]\nsource = "hf"\n\n' + ENGINE})
    code, _, err = run_cli(tmp_path, "render", "models/m:e", "--out", str(tmp_path / "out"),
                           capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2
    assert err.startswith("llmbuild: error: models/m:e is an engine target; only targets whose output")
