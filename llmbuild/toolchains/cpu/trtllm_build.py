"""CPU-lane stand-in for ``trtllm-build``.

    python -m llmbuild.toolchains.cpu.trtllm_build --checkpoint_dir CKPT_DIR \\
        --output_dir ENGINE_DIR [--max_batch_size N] [--max_input_len N] \\
        [--max_seq_len N] [--gemm_plugin auto] [--lora_plugin auto] ...

The argv is parsed by the shared flag table of the emulated TensorRT-LLM
version (``$LLMBUILD_TRTLLM_VERSION``, default ``flags.DEFAULT_VERSION``).
The engine directory gets:

* ``config.json`` -- ``version``, ``pretrained_config`` (the checkpoint config),
  ``build_config`` derived from the flags the way trtllm-build derives it
  (:mod:`llmbuild.toolchains.trtllm.build_config`, the same model the
  ``engine`` kind publishes its build_config with), plus one extra top-level key
  ``"llmbuild_lane": "cpu"`` and a ``"llmbuild_note"`` saying this is
  llmbuild's CPU-lane stand-in, not a TensorRT engine.
* ``rank{N}.engine`` for every rank -- **not** a TensorRT plan: a safetensors
  file with that rank's checkpoint tensors (as ``runtime.CpuEngine`` needs
  them) and metadata ``llmbuild_lane = cpu``.

Everything is byte-reproducible.  ``--dry_run`` writes only config.json, like
the real tool.  Options whose effect the CPU runtime cannot reproduce
(speculative decoding, StreamingLLM, LoRA adapters via --lora_dir, custom model
classes, auto parallel, quantized checkpoints) exit 2 with "... is not
supported on the CPU lane".  Not written: the TensorRT timing cache
(``--output_timing_cache``) and ``--fast_build``'s managed-weights files.
"""

from __future__ import annotations

import os
import sys
import time
from argparse import Namespace
from pathlib import Path

from ..trtllm.build_config import NEWEST, BuildConfigError, build_config
from . import _common
from ._common import ToolError, Unsupported, UsageError, at_least, progress

PROG = "trtllm-build"
TOOL = "trtllm-build"
ARCHITECTURES = ("LlamaForCausalLM", "MixtralForCausalLM")


# ------------------------------------------------------------------ checkpoint

def read_checkpoint(ckpt_dir: Path) -> tuple[dict, list[dict]]:
    """(checkpoint config, [tensors of rank N]) after checking it is usable here."""
    cfg = _common.read_json(ckpt_dir / "config.json", "--checkpoint_dir")
    arch = cfg.get("architecture")
    if arch not in ARCHITECTURES:
        raise UsageError(f"architecture {arch!r} is not supported by the CPU-lane trtllm-build "
                         f"(llmbuild stand-in builds {', '.join(ARCHITECTURES)}); build on the GPU lane")
    quant = cfg.get("quantization") or {}
    for key in ("quant_algo", "kv_cache_quant_algo"):
        if quant.get(key):
            raise Unsupported(f"a quantized checkpoint ({key} {quant[key]})")
    mapping = cfg.get("mapping") or {}
    try:
        tp, pp = int(mapping["tp_size"]), int(mapping["pp_size"])
        cp = int(mapping.get("cp_size", 1))
        world = int(mapping["world_size"])
    except (KeyError, TypeError, ValueError):
        raise ToolError(f"{ckpt_dir / 'config.json'}: mapping lacks tp_size/pp_size/world_size") from None
    if world != tp * pp * cp:
        raise ToolError(f"world_size must equal to tp_size * pp_size * cp_size, but got "
                        f"{world} != {tp} * {pp} * {cp}")
    if cp != 1:
        raise Unsupported("a context-parallel checkpoint (cp_size > 1)")
    missing = [f"rank{r}.safetensors" for r in range(world) if not (ckpt_dir / f"rank{r}.safetensors").exists()]
    if missing:
        raise ToolError(f"--checkpoint_dir {ckpt_dir}: world size {world} needs rank0..rank{world - 1}"
                        f".safetensors; missing {', '.join(missing)}")
    extra = _common.stale_rank_files(ckpt_dir, ".safetensors", world)
    if extra:
        raise ToolError(f"--checkpoint_dir {ckpt_dir}: rank files beyond world size {world}: "
                        f"{', '.join(extra)} (left over from another conversion?)")
    ranks = [_common.load_safetensors(ckpt_dir / f"rank{r}.safetensors", "--checkpoint_dir")[0]
             for r in range(world)]
    # Every pipeline stage holds a block of layers; together they must be the model.
    total = 0
    for p in range(pp):
        tensors = ranks[p * tp]
        layers = {int(n.split(".")[2]) for n in tensors if n.startswith("transformer.layers.")}
        if layers != set(range(len(layers))):
            raise ToolError(f"rank{p * tp}.safetensors: layer indices {sorted(layers)} are not 0..n-1")
        total += len(layers)
        first, last = p == 0, p == pp - 1
        for name, needed in (("transformer.vocab_embedding.weight", first), ("lm_head.weight", last),
                             ("transformer.ln_f.weight", last)):
            if needed and name not in tensors:
                raise ToolError(f"rank{p * tp}.safetensors: no {name}")
    if total != cfg.get("num_hidden_layers"):
        raise ToolError(f"the rank files hold {total} layers, config.json says "
                        f"num_hidden_layers = {cfg.get('num_hidden_layers')}")
    return cfg, ranks


# ------------------------------------------------------------------ main

def check_unsupported(args: Namespace) -> None:
    if args.speculative_decoding_mode is not None:
        raise Unsupported(f"--speculative_decoding_mode {args.speculative_decoding_mode}")
    if args.lora_dir:
        raise Unsupported("--lora_dir (LoRA adapters)")
    if getattr(args, "streamingllm", "disable") == "enable":
        raise Unsupported("--streamingllm enable")
    if args.model_cls_file is not None or args.model_cls_name is not None:
        raise Unsupported("--model_cls_file/--model_cls_name (custom model classes)")
    if getattr(args, "auto_parallel", 1) != 1:
        raise Unsupported("--auto_parallel")
    if args.build_config is not None:
        raise Unsupported("--build_config (a BuildConfig JSON file)")


def main(argv: list[str]) -> int:
    version, args = _common.parse(TOOL, argv)
    if at_least(version, NEWEST):
        progress(PROG, "Option --gather_generation_logits is deprecated, a build flag is not required "
                       "anymore. Use --output_generation_logits at runtime instead.")
    check_unsupported(args)
    if args.checkpoint_dir is None:
        if args.model_config is not None:
            raise Unsupported("--model_config without --checkpoint_dir (an engine with random weights)")
        raise UsageError("either --checkpoint_dir or --model_config is required")
    ckpt_dir, out = Path(args.checkpoint_dir), Path(args.output_dir)
    pretrained, ranks = read_checkpoint(ckpt_dir)
    if args.logits_dtype is not None:
        pretrained["logits_dtype"] = args.logits_dtype
    if not at_least(version, NEWEST):
        pretrained["mapping"]["gpus_per_node"] = getattr(args, "gpus_per_node", 8)
    if getattr(args, "streamingllm", "disable") == "enable" and pretrained["architecture"] != "LlamaForCausalLM":
        raise ToolError("StreamingLLM is only supported in the llama model.")
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")  # the GPUs the build holds (simulated here)
    progress(PROG, f"emulating TensorRT-LLM {version}: {pretrained['architecture']} "
                   f"world_size={pretrained['mapping']['world_size']} -> {out}"
                   + (f" on CUDA_VISIBLE_DEVICES={devices}" if devices is not None else ""))
    time.sleep(float(os.environ.get(_common.TEST_BUILD_SECONDS) or 0))
    notes: list[str] = []
    try:
        bc = build_config(args, version, pretrained, notes, environ=os.environ)
    except BuildConfigError as err:
        raise ToolError(str(err)) from None
    finally:
        for note in notes:
            progress(PROG, note)
    config = {
        "version": version,
        "pretrained_config": pretrained,
        "build_config": bc,
        "llmbuild_lane": _common.LANE,
        "llmbuild_note": _common.NOTE,
    }
    out.mkdir(parents=True, exist_ok=True)
    world = pretrained["mapping"]["world_size"]
    if not args.dry_run:
        for rank, tensors in enumerate(ranks):
            metadata = {"llmbuild_lane": _common.LANE, "llmbuild_note": _common.NOTE,
                        "format": "llmbuild-cpu-engine", "rank": str(rank),
                        "trtllm_version_emulated": version}
            _common.write_safetensors(out / f"rank{rank}.engine", tensors, metadata)
            progress(PROG, f"wrote rank{rank}.engine ({len(tensors)} tensors; CPU-lane, not a TensorRT plan)")
    _common.write_json(out / "config.json", config)
    progress(PROG, f"wrote {out / 'config.json'} (max_batch_size={bc['max_batch_size']}, "
                   f"max_input_len={bc['max_input_len']}, max_seq_len={bc['max_seq_len']})")
    extra = _common.stale_rank_files(out, ".engine", world)
    if extra:
        progress(PROG, f"note: {out} also holds {', '.join(extra)} from an earlier build")
    return 0


if __name__ == "__main__":
    sys.exit(_common.run(PROG, main))
