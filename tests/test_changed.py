"""`changed_targets(ws, REV)`: exactly the targets whose keys a git change affects.

Real git repositories in tmp dirs; nothing is built. Each workspace holds

    models/family/BUILD.toml      [defaults.engine] max_num_tokens = 256
    models/family/m0              inherits max_num_tokens
    models/family/m1              sets max_num_tokens itself
    models/m2                     another subtree, with a repository on its engine

and lives either at the repository's top or in a subdirectory of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import MODEL_TOML, Workspace as DiskWorkspace

from llmbuild.core.errors import LLMBuildError
from llmbuild.plugins import load_workspace
from llmbuild.introspect.changed import ChangedReport, changed_targets

GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}

ENGINE = """\
    [engine.engine]
    checkpoint = ":checkpoint"
    max_batch_size = 4
    max_input_len = 64
    max_seq_len = 96
    """
M1 = MODEL_TOML + "max_num_tokens = 512\n"
M2 = MODEL_TOML + '\n[repository.serve]\nengine = ":engine"\n'
M0, M1_, M2_ = "models/family/m0", "models/family/m1", "models/m2"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout


def commit(repo: Path, message: str = "change") -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


class Repo:
    def __init__(self, top: Path, ws: DiskWorkspace):
        self.top, self.ws = top, ws

    def load(self):
        return load_workspace(self.ws.root, self.ws.env())

    def changed(self, since: str = "HEAD~1") -> ChangedReport:
        return changed_targets(self.load(), since, environ=self.ws.env())

    def affected(self, since: str = "HEAD~1") -> set[str]:
        return set(self.changed(since).affected)

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.ws.root / relative
        text = path.read_text()
        assert old in text, (old, text)
        path.write_text(text.replace(old, new, 1))

    def commit(self, message: str = "change") -> None:
        commit(self.top, message)


@pytest.fixture(params=["", "sub/ws"], ids=["top", "subdir"])
def repo(request, tmp_path, tiny_models) -> Repo:
    top = tmp_path / "repo"
    top.mkdir()
    git(top, "init", "-q", "-b", "main")
    ws = DiskWorkspace(top / request.param if request.param else top, tmp_path / "cache")
    ws.write("models/family/BUILD.toml", """\
        # defaults for everything below models/family
        [defaults.engine]
        max_num_tokens = 256
        """)
    ws.add_model("family/m0", tiny_models[0])
    ws.add_model("family/m1", tiny_models[1], M1)
    ws.add_model("m2", tiny_models[2], M2)
    (top / "README").write_text("not part of the workspace\n")
    commit(top, "initial")
    return Repo(top, ws)


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def addresses(*pairs: tuple[str, str]) -> set[str]:
    return {f"{d}:{n}" for d, n in pairs}


def test_unchanged_tree_affects_nothing(repo):
    report = repo.changed("HEAD")
    assert report.affected == [] and report.removed == [] and report.reasons == {}
    assert len(report.commit) == 40


def test_defaults_edit_affects_exactly_the_inheriting_engines(repo):
    repo.edit("models/family/BUILD.toml", "max_num_tokens = 256", "max_num_tokens = 320")
    repo.commit("defaults")
    report = repo.changed("HEAD~1")
    # Not m1 (sets max_num_tokens itself), not the checkpoints, not the other subtree.
    assert report.affected == [f"{M0}:engine"]
    reason = report.reasons[f"{M0}:engine"]
    assert "max_num_tokens" in reason and "defaults" in reason, reason


def test_engine_field_edit_affects_the_engine_and_its_dependents(repo):
    repo.edit(f"{M2_}/BUILD.toml", "max_batch_size = 4", "max_batch_size = 8")
    repo.commit()
    report = repo.changed()
    assert report.affected == [f"{M2_}:engine", f"{M2_}:serve"]  # dependencies first
    assert report.reasons[f"{M2_}:engine"] == "params changed: max_batch_size"
    assert report.reasons[f"{M2_}:serve"] == f"depends on {M2_}:engine"


def test_checkpoint_field_edit_affects_checkpoint_and_engine(repo):
    repo.edit(f"{M1_}/BUILD.toml", 'source = "hf"', 'source = "hf"\ndtype = "float32"')
    repo.commit()
    report = repo.changed()
    assert report.affected == [f"{M1_}:checkpoint", f"{M1_}:engine"]
    assert "dtype" in report.reasons[f"{M1_}:checkpoint"]


def test_weight_byte_change_affects_that_models_checkpoint_and_engine(repo):
    flip_last_byte(repo.ws.root / M0 / "hf" / "model.safetensors")
    repo.commit("weights")
    report = repo.changed()
    assert report.affected == [f"{M0}:checkpoint", f"{M0}:engine"]
    assert report.reasons[f"{M0}:checkpoint"] == "source changed: source"
    assert report.reasons[f"{M0}:engine"] == f"depends on {M0}:checkpoint"


def test_tokenizer_change_reaches_the_repository_through_its_own_source(repo):
    tokenizer = repo.ws.root / M2_ / "hf" / "tokenizer_config.json"
    if not tokenizer.exists():
        pytest.skip("tiny model has no tokenizer_config.json")
    tokenizer.write_text(tokenizer.read_text() + "\n")
    report = repo.changed("HEAD")  # uncommitted
    assert report.affected == [f"{M2_}:checkpoint", f"{M2_}:engine", f"{M2_}:serve"]
    assert "source changed: tokenizer" in report.reasons[f"{M2_}:serve"]


def test_comment_description_and_touch_change_nothing(repo):
    repo.edit("models/family/BUILD.toml", "# defaults", "# the defaults")
    repo.edit(f"{M2_}/BUILD.toml", 'source = "hf"', 'source = "hf"  # weights\ndescription = "m2"')
    repo.edit(f"{M2_}/BUILD.toml", "[engine.engine]", "[engine.engine]\ntags = [\"x\"]")
    os.utime(repo.ws.root / M0 / "hf" / "model.safetensors", (1, 1))  # mtime only
    repo.commit("cosmetics")
    assert repo.affected() == set()
    assert repo.affected("HEAD~1") == set()


def test_writing_a_default_value_explicitly_changes_nothing(repo):
    repo.edit(f"{M1_}/BUILD.toml", 'source = "hf"', 'source = "hf"\ntp_size = 1')
    assert repo.affected("HEAD") == set()


def test_new_and_removed_models(repo, tiny_models):
    repo.ws.add_model("m3", tiny_models[1])
    shutil.rmtree(repo.ws.root / M1_)
    repo.commit("add m3, drop m1")
    report = repo.changed()
    assert report.affected == ["models/m3:checkpoint", "models/m3:engine"]
    assert set(report.reasons.values()) == {"new target"}
    assert report.removed == [f"{M1_}:checkpoint", f"{M1_}:engine"]


def test_uncommitted_edits_count(repo, tiny_models):
    repo.edit(f"{M0}/BUILD.toml", "max_seq_len = 96", "max_seq_len = 80")  # modified, not staged
    repo.ws.add_model("m3", tiny_models[0])  # untracked, not added
    (repo.ws.root / M2_ / "hf" / "extra.txt").write_text("new untracked file in a source\n")
    report = repo.changed("HEAD")
    assert report.affected == [f"{M0}:engine", f"{M2_}:checkpoint", f"{M2_}:engine", f"{M2_}:serve",
                               "models/m3:checkpoint", "models/m3:engine"]
    assert report.reasons[f"{M0}:engine"] == "params changed: max_seq_len"
    # Committed since HEAD~1 and edited since: both count against HEAD~1.
    repo.commit()
    repo.edit(f"{M1_}/BUILD.toml", "max_batch_size = 4", "max_batch_size = 2")
    git(repo.top, "add", "-A")  # staged only
    assert f"{M1_}:engine" in repo.affected("HEAD~1") and f"{M0}:engine" in repo.affected("HEAD~1")
    assert repo.affected("HEAD") == {f"{M1_}:engine"}


def test_deleted_source_file(repo):
    (repo.ws.root / M0 / "hf" / "generation_config.json").unlink(missing_ok=True)
    (repo.ws.root / M0 / "hf" / "extra.json").write_text("{}")
    repo.commit()
    os.remove(repo.ws.root / M0 / "hf" / "extra.json")  # uncommitted deletion
    assert repo.affected("HEAD") == {f"{M0}:checkpoint", f"{M0}:engine"}


def test_ignored_weights_are_the_same_on_both_sides(repo):
    """Weights fetched by a script and git-ignored: no false positives, and the REV side sees them."""
    repo.ws.write(".gitignore", "models/m2/hf/\n")
    git(repo.top, "rm", "-r", "-q", "--cached", str(repo.ws.root / M2_ / "hf"))
    # The engine's plan reads the model's config (LoRA plugin dtype = the model's torch_dtype).
    repo.edit(f"{M2_}/BUILD.toml", "max_seq_len = 96", "max_seq_len = 96\nlora = { max_rank = 8 }")
    repo.commit("ignore m2 weights")
    assert "lora_plugin" in repo.load().plan(repo.load().target(f"{M2_}:engine")).params
    repo.edit(f"{M2_}/BUILD.toml", "[repository.serve]", "[repository.serve]\ndecoupled = true")
    report = repo.changed("HEAD")
    assert report.affected == [f"{M2_}:serve"]
    # Changing an ignored file is not a git change (documented).
    (repo.ws.root / M2_ / "hf" / "model.safetensors").write_bytes(b"not the weights")
    assert repo.affected("HEAD") == {f"{M2_}:serve"}


def test_sources_under_a_data_root_outside_the_repo(repo, tmp_path, tiny_models):
    data = tmp_path / "data"
    shutil.copytree(tiny_models[0], data / "hf0")
    repo.ws.write_pyproject(f'data_roots = ["{data}"]')
    repo.ws.write("models/ext/BUILD.toml", f"""\
        [checkpoint.checkpoint]
        source = "{data / 'hf0'}"
        {ENGINE.replace(chr(10) + '    ', chr(10))}""")
    repo.commit("external weights")
    assert repo.affected() == {"models/ext:checkpoint", "models/ext:engine"}
    # Outside git: never a change, even when it differs (the data root is shared).
    assert repo.affected("HEAD") == set()


def test_toolchain_changes(repo):
    repo.ws.write("toolchains/img/Dockerfile", "FROM python:3.11-slim\n")
    repo.ws.write("toolchains/img/BUILD.toml", """\
        [container.img]
        dockerfile = "Dockerfile"
        """)
    repo.ws.write_pyproject(build_roots=("models", "toolchains"))
    repo.edit(f"{M0}/BUILD.toml", 'source = "hf"', 'source = "hf"\ncontainer = "toolchains/img:img"')
    repo.commit("container")
    report = repo.changed()
    assert report.reasons["toolchains/img:img"] == "new target"
    # Where a step runs is not its identity: the image enters through the container's output.
    assert report.reasons[f"{M0}:checkpoint"] == "dependency changed: container (none -> toolchains/img:img)"
    assert report.reasons[f"{M0}:engine"] == f"depends on {M0}:checkpoint"
    # The Dockerfile, then another file of the build context.
    repo.ws.write("toolchains/img/Dockerfile", "FROM python:3.12-slim\n")
    report = repo.changed("HEAD")
    assert report.affected == ["toolchains/img:img", f"{M0}:checkpoint", f"{M0}:engine"]
    assert report.reasons["toolchains/img:img"] == "source changed: context, dockerfile"
    assert report.reasons[f"{M0}:checkpoint"] == "depends on toolchains/img:img"
    git(repo.top, "checkout", "--", ".")
    repo.ws.write("toolchains/img/requirements.txt", "torch\n")
    assert repo.affected("HEAD") == {"toolchains/img:img", f"{M0}:checkpoint", f"{M0}:engine"}


def test_trtllm_version_change_affects_every_tool_target(repo):
    repo.ws.write_pyproject('trtllm_version = "0.15.0"')
    report = repo.changed("HEAD")
    everything = {str(t.address) for t in repo.load().order}
    assert set(report.affected) == everything
    assert report.reasons[f"{M0}:checkpoint"] == "toolchain changed: trtllm_version"


def test_llmbuild_code_in_the_same_repository_affects_everything(repo, monkeypatch):
    """Keys hold digests of llmbuild's own code (stand-ins, generators); REV's code cannot be run,
    so when llmbuild lives in the compared repository, any change to it affects every target."""
    from llmbuild.introspect import changed

    package = repo.top / "tools" / "llmbuild"
    package.mkdir(parents=True)
    (package / "stand_in.py").write_text("VERSION = 1\n")
    repo.commit("vendored llmbuild")
    monkeypatch.setattr(changed, "_PACKAGE", package)
    assert repo.affected("HEAD") == set()
    (package / "stand_in.py").write_text("VERSION = 2\n")
    report = repo.changed("HEAD")
    assert len(report.affected) == 7
    assert report.reasons[f"{M0}:checkpoint"] == "llmbuild's code changed (tools/llmbuild/stand_in.py)"


def test_workspace_new_since_rev(repo):
    """At a revision before the workspace existed, everything is new."""
    git(repo.top, "checkout", "-q", "--orphan", "other")
    git(repo.top, "rm", "-r", "-q", "--cached", ".")
    git(repo.top, "commit", "-q", "--allow-empty", "-m", "empty")
    git(repo.top, "add", "-A")
    report = repo.changed("HEAD")
    assert set(report.reasons.values()) == {"new target"} and len(report.affected) == 7


def test_errors_are_one_clear_line(repo, tmp_path):
    with pytest.raises(LLMBuildError, match=r"unknown git revision 'no-such-rev'"):
        repo.changed("no-such-rev")
    with pytest.raises(LLMBuildError, match=r"not a git revision"):
        repo.changed("--output=/tmp/x")
    # BUILD.toml invalid at REV
    repo.edit(f"{M0}/BUILD.toml", "max_seq_len = 96", "max_seq_len = 96\nmax_bach_size = 3")
    repo.commit("broken")
    repo.edit(f"{M0}/BUILD.toml", "\nmax_bach_size = 3", "")
    with pytest.raises(LLMBuildError) as err:
        repo.changed("HEAD")
    message = str(err.value)
    assert message.startswith("at HEAD: ") and "max_bach_size" in message and "\n" not in message
    assert "llmbuild-changed-" not in message  # no temp paths
    # Not a git repository
    plain = DiskWorkspace(tmp_path / "plain", tmp_path / "cache2")
    with pytest.raises(LLMBuildError, match="not in a git repository"):
        changed_targets(load_workspace(plain.root, plain.env()), "HEAD", environ=plain.env())


def test_nothing_is_left_behind(repo):
    before = set(os.listdir(tempfile.gettempdir()))
    repo.edit(f"{M0}/BUILD.toml", "max_seq_len = 96", "max_seq_len = 80")
    repo.changed("HEAD")
    after = set(os.listdir(tempfile.gettempdir()))
    assert not {n for n in after - before if n.startswith("llmbuild-changed-")}
    assert git(repo.top, "worktree", "list").count("\n") == 1
    assert not (repo.ws.root / "cache").exists() and not (repo.ws.root / "dist").exists()


def test_speed(repo):
    repo.edit(f"{M0}/BUILD.toml", "max_seq_len = 96", "max_seq_len = 80")
    ws = repo.load()
    start = time.monotonic()
    changed_targets(ws, "HEAD", environ=repo.ws.env())
    assert time.monotonic() - start < 10


def test_stat_only_changes_in_the_working_tree_change_nothing(repo):
    for path in (repo.ws.root / M0 / "hf").iterdir():
        os.utime(path, (12345, 12345))
    (repo.ws.root / M2_ / "BUILD.toml").write_text((repo.ws.root / M2_ / "BUILD.toml").read_text())
    assert repo.affected("HEAD") == set()


def test_sources_through_symlinks(repo, tmp_path, tiny_models):
    """A symlinked weights file inside the repository, and a relative symlink to a data root."""
    shared = repo.ws.root / "shared"
    shutil.copytree(tiny_models[1], shared / "hf")
    weights = repo.ws.root / "models/m4/hf/model.safetensors"
    repo.ws.add_model("m4", tiny_models[1])
    weights.unlink()
    weights.symlink_to(os.path.relpath(shared / "hf" / "model.safetensors", weights.parent))
    data = tmp_path / "data"
    shutil.copytree(tiny_models[2], data / "hf2")
    repo.ws.write_pyproject(f'data_roots = ["{data}"]')
    repo.ws.add_model("m5", tiny_models[2])
    shutil.rmtree(repo.ws.root / "models/m5/hf")
    (repo.ws.root / "models/m5/hf").symlink_to(os.path.relpath(data / "hf2", repo.ws.root / "models/m5"))
    repo.commit("symlinks")
    ws = repo.load()
    assert ws.target("models/m5:checkpoint").sources["source"] == data / "hf2"
    assert repo.affected("HEAD") == set()
    data_file = data / "hf2" / "model.safetensors"
    flip_last_byte(data_file)  # outside git: not a change
    flip_last_byte(shared / "hf" / "model.safetensors")
    assert repo.affected("HEAD") == {"models/m4:checkpoint", "models/m4:engine"}


# -- the CI command: llmbuild changed --since REV --build [-- DOIT_ARG...] ------------------------

def ci_build(repo: Repo, *doit_args: str) -> subprocess.CompletedProcess:
    return repo.ws.llmbuild("changed", "--since", "HEAD", "--build", *(["--", *doit_args] if doit_args else []),
                            check=False)


def test_ci_build_with_nothing_changed_runs_nothing(repo):
    """`doit $(llmbuild changed -q ...)` with nothing affected is a plain `doit`: it builds everything."""
    repo.edit("models/family/BUILD.toml", "# defaults", "# the defaults")  # a change that affects no key
    proc = ci_build(repo, "-n", "2")
    assert (proc.returncode, proc.stdout) == (0, "nothing changed since HEAD; nothing to build\n"), proc.stderr
    assert not (repo.ws.root / "dist").exists()  # doit did not run: it writes dist/run.json


def test_ci_build_passes_doit_its_arguments_and_exit_status(repo):
    repo.edit(f"{M1_}/BUILD.toml", "max_batch_size = 4", "max_batch_size = 2")
    proc = ci_build(repo, "--no-such-doit-option")
    assert proc.stdout.splitlines() == [f"{M1_}:engine  (params changed: max_batch_size)",
                                        f"llmbuild: doit run --no-such-doit-option {M1_}:engine"]
    assert proc.returncode == 3 and "no-such-doit-option" in proc.stderr  # doit's own refusal
    assert not (repo.ws.root / "dist" / "run.json").exists()


def test_ci_build_arguments_need_build(repo):
    proc = repo.ws.llmbuild("changed", "--since", "HEAD", "--", "-n", "2", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("llmbuild: error: '-n 2': arguments for doit need --build "
                           "(llmbuild changed --since REV --build -- DOIT_ARG...)\n")


@pytest.mark.slow
def test_ci_build_builds_exactly_the_affected_targets(repo):
    repo.edit(f"{M1_}/BUILD.toml", "max_batch_size = 4", "max_batch_size = 2")
    proc = ci_build(repo, "-n", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[:2] == [f"{M1_}:engine  (params changed: max_batch_size)",
                                            f"llmbuild: doit run -n 2 {M1_}:engine"]
    run = json.loads((repo.ws.root / "dist" / "run.json").read_text())
    # The engine and what it needs (its checkpoint was never built here); m0 and m2 untouched.
    assert {r["address"]: r["outcome"] for r in run["targets"]} == {
        f"{M1_}:checkpoint": "built", f"{M1_}:engine": "built"}
