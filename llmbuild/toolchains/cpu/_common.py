"""Plumbing shared by the CPU-lane stand-ins (private to this package).

Argument parsing comes from the shared TensorRT-LLM flag tables
(:mod:`llmbuild.toolchains.trtllm.flags`); the version emulated is
``$LLMBUILD_TRTLLM_VERSION`` (default ``flags.DEFAULT_VERSION``).  Everything
written here is byte-reproducible: JSON with sorted keys, safetensors files
written by our own writer with sorted tensor names and sorted metadata (the
``safetensors`` library orders ``__metadata__`` differently from run to run).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from argparse import Namespace
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..trtllm.build_config import at_least  # noqa: F401 - the stand-ins' version test

LANE = "cpu"
VERSION_ENV = "LLMBUILD_TRTLLM_VERSION"
#: Tests only: seconds the trtllm-build stand-in waits, so a build takes a known time (the Ray
#: tests count build waves with it). Handed to steps wherever they run, never in a key.
TEST_BUILD_SECONDS = "LLMBUILD_TEST_BUILD_SECONDS"
NOTE = ("llmbuild CPU-lane stand-in output: not produced by TensorRT-LLM and not a "
        "TensorRT engine; runs on CPU with llmbuild.toolchains.cpu.runtime")


class ToolError(Exception):
    """A run-time rule of the real tool was broken, or an input is unusable (exit 1)."""

    exit_code = 1


class UsageError(ToolError):
    """The command line is not accepted (exit 2)."""

    exit_code = 2


class Unsupported(UsageError):
    """An option the real tool honours but the CPU lane cannot honour faithfully (exit 2)."""

    def __init__(self, what: str):
        super().__init__(f"{what} is not supported on the CPU lane (llmbuild stand-in); "
                         f"build on the GPU lane")


# ------------------------------------------------------------------ versions / argv

def _flags():
    from ..trtllm import flags
    return flags


def emulated_version() -> str:
    """The TensorRT-LLM version this run stands in for (canonical name)."""
    flags = _flags()
    name = os.environ.get(VERSION_ENV) or flags.DEFAULT_VERSION
    try:
        return flags.resolve_version(name)
    except flags.FlagError as err:
        raise UsageError(f"${VERSION_ENV}: {err}") from None


def parse(tool: str, argv: list[str]) -> tuple[str, Namespace]:
    """(emulated version, namespace) for `argv` parsed exactly as that version's `tool` would."""
    flags = _flags()
    version = emulated_version()
    try:
        return version, flags.parse_argv(tool, version, argv)
    except flags.FlagError as err:
        raise UsageError(str(err)) from None


# ------------------------------------------------------------------ running

def run(prog: str, main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> int:
    """Run `main`; a user error becomes one line on stderr and a non-zero exit, no traceback."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        return int(main(list(argv)) or 0)
    except ToolError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # e.g. an output directory that cannot be written
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def progress(prog: str, message: str) -> None:
    print(f"[{prog} cpu-lane] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ reproducible files

def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=4, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(Path(path), json_bytes(obj))


_ST_DTYPES = {
    "torch.float64": "F64", "torch.float32": "F32", "torch.float16": "F16",
    "torch.bfloat16": "BF16", "torch.int64": "I64", "torch.int32": "I32",
    "torch.int16": "I16", "torch.int8": "I8", "torch.uint8": "U8", "torch.bool": "BOOL",
}


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors file with tensors in name order and sorted metadata: same input, same bytes."""
    import torch

    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: not a tensor")
        t = t.detach().cpu().contiguous()
        dtype = _ST_DTYPES.get(str(t.dtype))
        if dtype is None:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        blob = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def write_safetensors(path: Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    _atomic_write(Path(path), safetensors_bytes(tensors, metadata))


def read_json(path: Path, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ToolError(f"{what}: {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise ToolError(f"{what}: cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ToolError(f"{what}: {path} is not a JSON object")
    return data


def load_safetensors(path: Path, what: str) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file, with a one-line error if unreadable."""
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
        return tensors, metadata
    except FileNotFoundError:
        raise ToolError(f"{what}: {path} does not exist") from None
    except Exception as err:  # safetensors raises its own error types
        raise ToolError(f"{what}: cannot read {path}: {err}") from None


def stale_rank_files(directory: Path, suffix: str, world_size: int) -> list[str]:
    """rank{N}{suffix} files in `directory` with N >= world_size (left over from another run)."""
    extra = []
    for p in sorted(directory.glob(f"rank*{suffix}")):
        stem = p.name[len("rank"):-len(suffix)]
        if stem.isdigit() and int(stem) >= world_size:
            extra.append(p.name)
    return extra
