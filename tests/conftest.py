"""Shared fixtures: tiny real models, throwaway workspaces, and a `doit` runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["docker_fixtures", "s3_fixtures"]

REPO = Path(__file__).resolve().parents[1]
#: One CPU Triton install shared by every test workspace (the first install takes ~40 s).
TOOLCHAINS = Path(os.environ.get("LLMBUILD_TEST_CACHE") or REPO / "cache") / "toolchains"
TINY_HF = REPO / "models" / "tiny-llama" / "hf"
MAKE_TINY = REPO / "models" / "tiny-llama" / "make_tiny_llama.py"


@pytest.fixture(scope="session")
def triton_env():
    """The CPU Triton install shared by every test (installed once, about 40 s)."""
    from llmbuild.toolchains.cpu.install import ensure_cpu_triton

    lines: list[str] = []
    started = time.monotonic()
    env = ensure_cpu_triton(TOOLCHAINS, progress=lines.append)
    took = time.monotonic() - started
    how = (
        "installed" if any(line.startswith("pip install ") for line in lines)
        else "waited for another process" if lines else "reused"
    )
    print(f"\nensure_cpu_triton: {took:.1f} s ({how}) -> {env.root}")
    return env


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> list[Path]:
    """Three tiny real Llamas with different weights: the committed, trained one, and two
    untrained ones of the same shape (seeds 1 and 2)."""
    root = tmp_path_factory.mktemp("hf")
    return [TINY_HF, *(_untrained_tiny(root, seed) for seed in (1, 2))]


@pytest.fixture(scope="session")
def untrained_tiny(tmp_path_factory) -> Path:
    """The committed model's shape and starting weights, untrained: its spread-out next-token
    distributions make every sampling knob (top-k, top-p, temperature, penalties, seeds) visible."""
    return _untrained_tiny(tmp_path_factory.mktemp("hf-untrained"), 0)


def _untrained_tiny(root: Path, seed: int) -> Path:
    out = root / f"seed{seed}"
    subprocess.run([sys.executable, str(MAKE_TINY), "--out", str(out), "--seed", str(seed), "--steps", "0"],
                   check=True, capture_output=True)
    return out


#: A tiny model's checkpoint and engine, the default of Workspace.add_model.
MODEL_TOML = """\
[checkpoint.checkpoint]
source = "hf"

[engine.engine]
checkpoint = ":checkpoint"
max_batch_size = 4
max_input_len = 64
max_seq_len = 96
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    outcomes: dict[str, str]
    keys: dict[str, str | None]
    records: list[dict]

    def built(self) -> set[str]:
        return {a for a, o in self.outcomes.items() if o == "built"}

    def with_outcome(self, outcome: str) -> set[str]:
        return {a for a, o in self.outcomes.items() if o == outcome}


class Workspace:
    """A throwaway llmbuild workspace on disk, driven through the real `doit` CLI."""

    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.cache = cache
        root.mkdir(parents=True, exist_ok=True)
        (root / "dodo.py").write_text((REPO / "dodo.py").read_text())
        self.write_pyproject()

    def write_pyproject(self, extra: str = "", build_roots: tuple[str, ...] = ("models",)) -> None:
        roots = ", ".join(f'"{r}"' for r in build_roots)
        (self.root / "pyproject.toml").write_text(textwrap.dedent(f"""\
            [tool.llmbuild]
            build_roots = [{roots}]
            cache = "{self.cache}"
            lane = "cpu"
            {extra}
            """))

    def copy(self, root: Path, cache: Path) -> Workspace:
        """This workspace and its cache, copied to new paths (dist links and pyproject follow):
        a test starts from built targets without sharing or changing this one's state."""
        shutil.copytree(self.cache, cache, symlinks=True)
        shutil.copytree(self.root, root, symlinks=True)
        for directory, dirnames, filenames in os.walk(root / "dist"):
            for name in dirnames + filenames:
                link = Path(directory) / name
                if link.is_symlink() and os.readlink(link).startswith(f"{self.cache}/"):
                    relinked = cache / Path(os.readlink(link)).relative_to(self.cache)
                    link.unlink()
                    link.symlink_to(relinked)
        settings = (self.root / "pyproject.toml").read_text()
        clone = Workspace(root, cache)
        (root / "pyproject.toml").write_text(settings.replace(f'cache = "{self.cache}"', f'cache = "{cache}"'))
        return clone

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def add_model(self, name: str, hf: Path, build_toml: str | None = None) -> Path:
        directory = self.root / "models" / name
        shutil.copytree(hf, directory / "hf", dirs_exist_ok=True)
        self.write(f"models/{name}/BUILD.toml", build_toml or MODEL_TOML)
        return directory

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBUILD_")}
        env["LLMBUILD_TOOLCHAINS_DIR"] = str(TOOLCHAINS)
        env.update(extra)
        return env

    def doit(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
             timeout: float = 600) -> Run:
        proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=self.root,
                              capture_output=True, text=True, env=env or self.env(), timeout=timeout)
        run_json = self.root / "dist" / "run.json"
        records = json.loads(run_json.read_text())["targets"] if run_json.exists() else []
        run = Run(proc.returncode, proc.stdout, proc.stderr,
                  {r["address"]: r["outcome"] for r in records},
                  {r["address"]: r["key"] for r in records}, records)
        if check and proc.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return run

    def llmbuild(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "llmbuild", *args], cwd=self.root,
                              capture_output=True, text=True, env=env or self.env(), timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"llmbuild {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc


@pytest.fixture
def make_workspace(tmp_path):
    """Factory: make_workspace(name="ws", cache=None) -> Workspace (cache shared if given)."""
    def make(name: str = "ws", cache: Path | None = None) -> Workspace:
        return Workspace(tmp_path / name, cache or tmp_path / "cache")
    return make
