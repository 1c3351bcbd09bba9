"""CPU-lane stand-in for TensorRT-LLM's ``examples/quantization/quantize.py``.

    python -m llmbuild.toolchains.cpu.quantize --model_dir HF_DIR \\
        --output_dir CKPT_DIR --qformat full_prec [--dtype ...] [--tp_size N] [--pp_size N]

The argv is parsed by the shared flag table of the emulated TensorRT-LLM
version (``$LLMBUILD_TRTLLM_VERSION``).  Only ``--qformat full_prec`` without
``--kv_cache_dtype`` is done for real: it writes the same unquantized
TensorRT-LLM checkpoint layout as the CPU-lane ``convert_checkpoint`` (config.json
+ rank{N}.safetensors, real TP/PP split; MoE layers tensor-parallel).  Every
real quantization format (fp8, int8_sq, int4_awq, w4a8_awq, int8_wo, int4_wo,
nvfp4, ...), a quantized KV cache, auto-quantization, Medusa heads and NeMo
checkpoints need NVIDIA ModelOpt's calibration/export on a GPU to be
reproduced faithfully: they exit 2 with "... is not supported on the CPU lane".
Calibration, device and batch settings are accepted and ignored.

Approximate: the real full_prec export goes through ModelOpt, whose
config.json carries a few extra keys (e.g. its producer); this stand-in writes
the Llama converter's config.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from . import _common
from ._common import ToolError, Unsupported, progress
from .convert_checkpoint import (check_parallel_rules, checkpoint_config, resolve_dtype, resolve_mapping,
                                 write_checkpoint)
from ._weights import read_hf_config

PROG = "quantize.py"
TOOL = "quantize.py"


def check_unsupported(args: Namespace) -> None:
    if args.qformat != "full_prec":
        raise Unsupported(f"--qformat {args.qformat}")
    if args.kv_cache_dtype is not None:
        raise Unsupported(f"--kv_cache_dtype {args.kv_cache_dtype}")
    for name in ("autoq_format", "auto_quantize_bits", "medusa_model_dir"):
        if getattr(args, name, None) is not None:
            raise Unsupported(f"--{name}")
    if getattr(args, "quant_medusa_head", False):
        raise Unsupported("--quant_medusa_head")
    if args.nemo_ckpt_path is not None:
        raise Unsupported("--nemo_ckpt_path (NeMo checkpoints)")
    if getattr(args, "cp_size", 1) != 1:
        raise Unsupported("--cp_size > 1 (context parallelism)")
    if args.model_dir is None:
        raise ToolError("--model_dir or --nemo_ckpt_path is required")


def main(argv: list[str]) -> int:
    version, args = _common.parse(TOOL, argv)
    check_unsupported(args)
    hf_cfg = read_hf_config(Path(args.model_dir))
    dtype = resolve_dtype(args.dtype, hf_cfg)
    if dtype not in ("float16", "bfloat16", "float32"):
        raise ToolError(f"--dtype {args.dtype}: expected auto, float16, bfloat16 or float32")
    mapping = resolve_mapping(args.tp_size, args.pp_size, getattr(args, "cp_size", 1), -1, -1, version)
    cfg = checkpoint_config(hf_cfg, dtype=dtype, mapping=mapping, version=version)
    check_parallel_rules(cfg, version)
    progress(PROG, f"emulating TensorRT-LLM {version}: qformat full_prec, {cfg['architecture']} {dtype} "
                   f"tp={mapping['tp_size']} pp={mapping['pp_size']} -> {args.output_dir}")
    write_checkpoint(PROG, version, Path(args.model_dir), Path(args.output_dir), cfg)
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(PROG, main))
