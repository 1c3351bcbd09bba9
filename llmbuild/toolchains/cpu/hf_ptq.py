"""CPU-lane stand-in for ModelOpt's ``examples/llm_ptq/hf_ptq.py`` (the engine-free lane's
quantization step), taking its flags (NVIDIA/Model-Optimizer@003e0fb, parse_args).

    python -m llmbuild.toolchains.cpu.hf_ptq --pyt_ckpt_path HF_DIR --export_path OUT \\
        --qformat full_prec --kv_cache_qformat none [--calib_size N ...]

Only full precision is done for real: a qformat hf_ptq.py does not know quantizes nothing and
exports the model as it is, so the output is the unified Hugging Face checkpoint layout (config,
safetensors, tokenizer, hf_quant_config.json with no quant_algo). Every real format (fp8, nvfp4,
int4_awq, ...) and a quantized KV cache need ModelOpt's calibration on a GPU: they exit 2 with
"... is not supported on the CPU lane". Calibration settings are accepted and ignored.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from . import _common
from ._common import ToolError, Unsupported, progress

PROG = "hf_ptq.py"
#: What the stand-in writes for full precision: ModelOpt's export of an unquantized model.
FULL_PRECISION = ("full_prec",)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("--pyt_ckpt_path", "--model", required=True)
    parser.add_argument("--export_path", default="exported_model")
    parser.add_argument("--qformat", default="fp8")
    parser.add_argument("--kv_cache_qformat", default="fp8_cast")
    parser.add_argument("--calib_size", default="512")
    parser.add_argument("--calib_seq", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=0)
    parser.add_argument("--dataset")
    parser.add_argument("--awq_block_size", type=int, default=0)
    parser.add_argument("--inference_tensor_parallel", type=int, default=1)
    parser.add_argument("--inference_pipeline_parallel", type=int, default=1)
    parser.add_argument("--trust_remote_code", action="store_true")
    try:
        return parser.parse_args(argv)
    except SystemExit:
        raise _common.UsageError("bad arguments (see above)") from None


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.qformat not in FULL_PRECISION:
        raise Unsupported(f"--qformat {args.qformat}")
    if args.kv_cache_qformat != "none":
        raise Unsupported(f"--kv_cache_qformat {args.kv_cache_qformat}")
    source, out = Path(args.pyt_ckpt_path), Path(args.export_path)
    if not (source / "config.json").is_file():
        raise ToolError(f"{source} is not a Hugging Face model directory (no config.json)")
    progress(PROG, f"full precision: exporting {source} unquantized -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            shutil.copyfile(path, out / path.name)
    _common.write_json(out / "hf_quant_config.json", {
        "producer": {"name": "modelopt", "version": "llmbuild CPU-lane stand-in"},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None}})
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(PROG, main))
