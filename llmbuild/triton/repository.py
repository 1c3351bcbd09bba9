"""Lay out a Triton model repository for a TensorRT-LLM engine.

::

    out_dir/
      preprocessing/config.pbtxt     1/model.py    1/tokenizer/<tokenizer files>
      tensorrt_llm/config.pbtxt      1/engine/<engine files (hard links)>
                                     1/model.py + 1/llmbuild_cpu_runtime.py   (CPU lane only)
      postprocessing/config.pbtxt    1/model.py
      ensemble/config.pbtxt          1/
      tensorrt_llm_bls/config.pbtxt  1/model.py

The model.py files are llmbuild's own (``llmbuild/triton/models/``). Paths in
parameters are relative to the repository root and resolved by those files,
so the directory can be moved or mounted anywhere (the GPU lane's C++
tensorrt_llm reads its engine at ``<serve_root>/tensorrt_llm/1/engine``).

The output is deterministic: same inputs, same bytes (files are written in
sorted order with fixed modes; the engine is hard-linked, or copied across
devices).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from ..toolchains.trtllm.build_config import engine_limits
from .backend import MODEL_NAMES
from .build import ENGINE_DIR, TOKENIZER_DIR, ModelConfig, to_pbtxt
from .wiring import RepositoryError, check_wiring

#: Our model.py sources, shipped as package data.
MODELS_SOURCE = Path(__file__).resolve().parent / "models"
#: model -> our source for ``<model>/1/model.py`` (tensorrt_llm only on the CPU lane).
MODEL_SOURCES = {
    "preprocessing": "preprocessing.py",
    "postprocessing": "postprocessing.py",
    "tensorrt_llm_bls": "tensorrt_llm_bls.py",
}
CPU_LLM_SOURCE = "tensorrt_llm_cpu.py"
#: The CPU runtime, copied next to the CPU tensorrt_llm model.py under a name that shadows no package.
CPU_RUNTIME_SOURCE = Path(__file__).resolve().parent.parent / "toolchains" / "cpu" / "runtime.py"
CPU_RUNTIME_NAME = "llmbuild_cpu_runtime.py"

#: Weights and other large artifacts that are never part of a tokenizer.
_NOT_TOKENIZER_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx",
                           ".engine", ".npz", ".npy")
_FILE_MODE = 0o644
_DIR_MODE = 0o755


def _tokenizer_files(tokenizer_dir: Path) -> list[Path]:
    """The top-level files of ``tokenizer_dir`` except weights, sorted (a HF model dir works as is).

    ``config.json`` is kept: AutoTokenizer reads it to choose the tokenizer class
    when ``tokenizer_config.json`` does not name one.
    """
    return [
        p for p in sorted(tokenizer_dir.iterdir())
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_NOT_TOKENIZER_SUFFIXES)
    ]


def checked_tokenizer_files(tokenizer_dir: Path) -> list[Path]:
    if not tokenizer_dir.is_dir():
        raise RepositoryError(f"model 'preprocessing': tokenizer directory {tokenizer_dir} does not exist")
    files = _tokenizer_files(tokenizer_dir)
    if not any(f.name.startswith("tokenizer") or f.name in ("vocab.json", "vocab.txt") for f in files):
        raise RepositoryError(
            f"model 'preprocessing': {tokenizer_dir} holds no tokenizer files (tokenizer.json, tokenizer_config.json, ...)")
    return files


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    os.chmod(path, _FILE_MODE)


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    os.chmod(dst, _FILE_MODE)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        _copy(src, dst)


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, _DIR_MODE)


def _place_tree(src: Path, dst: Path, *, link: bool) -> None:
    """Every file under ``src`` at the same relative path under ``dst`` (sorted, deterministic)."""
    _mkdir(dst)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        target = dst / rel
        if path.is_dir():
            _mkdir(target)
        elif path.is_file():
            _mkdir(target.parent)
            (_link_or_copy if link else _copy)(path, target)


def _check_engine_matches(configs: Mapping[str, ModelConfig], engine_dir: Path) -> None:
    """The configs must have been built for this engine (batch size, beam width)."""
    try:
        engine = engine_limits(json.loads((engine_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:  # unreadable, not JSON, or not an engine config (BuildConfigError)
        raise RepositoryError(f"model 'tensorrt_llm': cannot read {engine_dir / 'config.json'}: {e}") from None
    for name, cfg in configs.items():
        if cfg.max_batch_size > engine.max_batch_size:
            raise RepositoryError(
                f"model '{name}': max_batch_size {cfg.max_batch_size} is larger than the engine's; "
                f"the engine in {engine_dir} was built with max_batch_size={engine.max_batch_size}")
    beam = configs["tensorrt_llm"].parameters.get("max_beam_width")
    if beam is not None and beam.string_value != str(engine.max_beam_width):
        raise RepositoryError(
            f"model 'tensorrt_llm': parameter 'max_beam_width' is {beam.string_value} but the engine in "
            f"{engine_dir} was built with max_beam_width={engine.max_beam_width}")


def write_repository(
    out_dir: Path,
    configs: Mapping[str, ModelConfig],
    *,
    engine_dir: Path | None,
    tokenizer_dir: Path | None,
    lane: Literal["cpu", "gpu"],
) -> None:
    """Write the five models of ``configs`` (from :func:`~llmbuild.triton.build.build_configs`) to ``out_dir``.

    ``out_dir`` must not exist or be empty. The engine's files are hard-linked
    into ``tensorrt_llm/1/engine/`` (copied across devices); the tokenizer's
    files are copied into ``preprocessing/1/tokenizer/``. On the CPU lane the
    tensorrt_llm model is our Python model plus the CPU runtime. Without an
    engine and tokenizer (``llmbuild render``) only configs and code are written.
    """
    out_dir = Path(out_dir)
    if lane not in ("cpu", "gpu"):
        raise RepositoryError(f"lane must be 'cpu' or 'gpu', got {lane!r}")
    check_wiring(configs)
    llm = configs["tensorrt_llm"]
    want_backend = "python" if lane == "cpu" else "tensorrtllm"
    if llm.backend != want_backend:
        raise RepositoryError(
            f"model 'tensorrt_llm': backend is '{llm.backend}' but the {lane} lane needs '{want_backend}' "
            f"(build the configs with lane='{lane}')")
    if engine_dir is not None:
        if not (engine_dir / "config.json").is_file():
            raise RepositoryError(f"model 'tensorrt_llm': engine directory {engine_dir} has no config.json")
        _check_engine_matches(configs, engine_dir)
    tokenizer_files = [] if tokenizer_dir is None else checked_tokenizer_files(tokenizer_dir)
    if lane == "cpu" and not CPU_RUNTIME_SOURCE.is_file():
        raise RepositoryError(f"model 'tensorrt_llm': the CPU runtime {CPU_RUNTIME_SOURCE} is missing")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RepositoryError(f"repository directory {out_dir} is not empty")

    _mkdir(out_dir)
    for name in MODEL_NAMES:
        model_dir = out_dir / name
        _mkdir(model_dir / "1")
        _write_text(model_dir / "config.pbtxt", to_pbtxt(configs[name]))
        if name in MODEL_SOURCES:
            _copy(MODELS_SOURCE / MODEL_SOURCES[name], model_dir / "1" / "model.py")

    if engine_dir is not None:
        _place_tree(engine_dir, out_dir / ENGINE_DIR, link=True)
    if tokenizer_dir is not None:
        tok_out = out_dir / TOKENIZER_DIR
        _mkdir(tok_out)
        for path in tokenizer_files:
            _copy(path, tok_out / path.name)
    if lane == "cpu":
        _copy(MODELS_SOURCE / CPU_LLM_SOURCE, out_dir / "tensorrt_llm" / "1" / "model.py")
        _copy(CPU_RUNTIME_SOURCE, out_dir / "tensorrt_llm" / "1" / CPU_RUNTIME_NAME)
