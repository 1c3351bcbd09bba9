"""How much does a no-op cost with thousands of targets? llmbuild vs plain doit.

Makes a workspace of N tiny models (2 targets each: checkpoint, engine; every
model its own copy of the weights), brings it up to date once (identical models
share keys: two builds, the rest restored), then times no-op runs of

  * llmbuild: `doit` in the workspace (action keys over stat-cached digests);
  * plain doit: a dodo with the same 2N tasks, each with `file_dep` on the same
    source files (doit's md5 checker) and a `targets` file, the usual way to
    write this by hand.

Usage: python benchmarks/noop_scale.py [--models 500] [--repeat 3]
Prints one line per runner: median seconds of a no-op run, and per target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HF = REPO / "models" / "tiny-llama" / "hf"

PLAIN_DODO = '''
import glob, os
DOIT_CONFIG = {"backend": "sqlite3", "dep_file": ".plain-doit.sqlite3", "verbosity": 0}

def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()

def task_plain():
    for model in sorted(glob.glob("models/*")):
        sources = sorted(glob.glob(model + "/hf/*")) + [model + "/BUILD.toml"]
        yield {"name": model + ":checkpoint", "file_dep": sources,
               "targets": ["out/" + model + "/checkpoint.done"],
               "actions": [(_touch, ["out/" + model + "/checkpoint.done"])]}
        yield {"name": model + ":engine", "file_dep": ["out/" + model + "/checkpoint.done"],
               "targets": ["out/" + model + "/engine.done"],
               "actions": [(_touch, ["out/" + model + "/engine.done"])]}
'''


def make_workspace(root: Path, models: int) -> None:
    (root / "dodo.py").write_text((REPO / "dodo.py").read_text())
    (root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [tool.llmbuild]
        build_roots = ["models"]
        cache = "{root / 'cache'}"
        """))
    (root / "plain").mkdir()
    (root / "plain" / "dodo.py").write_text(PLAIN_DODO)
    for i in range(models):
        model = root / "models" / f"m{i:05d}"
        shutil.copytree(HF, model / "hf")
        (model / "BUILD.toml").write_text(textwrap.dedent("""\
            [checkpoint.checkpoint]
            source = "hf"

            [engine.engine]
            checkpoint = ":checkpoint"
            max_batch_size = 4
            """))
    # plain doit sees the same model directories
    os.symlink(root / "models", root / "plain" / "models", target_is_directory=True)


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    doit = [sys.executable, "-m", "doit"]
    with tempfile.TemporaryDirectory(prefix="llmbuild-bench-") as tmp:
        root = Path(tmp)
        make_workspace(root, args.models)
        targets = 2 * args.models
        first = timed(doit, root)
        plain_first = timed(doit, root / "plain")
        print(f"{targets} targets; first run: llmbuild {first:.1f}s (2 builds, the rest restored), "
              f"plain doit {plain_first:.1f}s")
        results = {}
        for name, cwd in (("llmbuild", root), ("plain doit", root / "plain")):
            runs = [timed(doit, cwd) for _ in range(args.repeat)]
            results[name] = statistics.median(runs)
        # A fresh clone: every mtime changes, contents do not.
        later = time.time() + 10
        for path in (root / "models").rglob("*"):
            os.utime(path, (later, later), follow_symlinks=False)
        after_touch = {"llmbuild": [timed(doit, root) for _ in range(2)],
                       "plain doit": [timed(doit, root / "plain") for _ in range(2)]}
        for name, seconds in results.items():
            touch = after_touch[name]
            print(f"{name:<11} no-op {seconds:6.2f}s  ({seconds / targets * 1000:.2f} ms/target); "
                  f"after touching every source: {touch[0]:.2f}s then {touch[1]:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
