"""llmbuild's CPU lane: stand-ins for TensorRT-LLM's tools, and a PyTorch runtime.

Nothing here is TensorRT-LLM.  The stand-ins take the real tools' argv (parsed
by the shared flag tables of the emulated version, ``$LLMBUILD_TRTLLM_VERSION``)
and write the real on-disk layouts, labelled as CPU-lane output:

* ``python -m llmbuild.toolchains.cpu.convert_checkpoint`` -- Llama/Mixtral
  ``convert_checkpoint.py``: HF dir -> TensorRT-LLM checkpoint (config.json +
  rank{N}.safetensors, real TP/PP split).
* ``python -m llmbuild.toolchains.cpu.quantize`` -- ``quantize.py`` with
  ``--qformat full_prec`` (same checkpoint layout).
* ``python -m llmbuild.toolchains.cpu.trtllm_build`` -- ``trtllm-build``:
  checkpoint -> engine directory (config.json as trtllm-build derives it, plus
  ``"llmbuild_lane": "cpu"``; rank{N}.engine = safetensors with that rank's
  weights, not TensorRT engines).
* ``llmbuild.toolchains.cpu.runtime`` -- ``CpuEngine``: loads such an engine
  directory and generates greedily with PyTorch.  Self-contained (it is copied
  into Triton model repositories); imports no other llmbuild module.
* ``install`` and ``server`` -- the real Triton on CPU (from the nvidia-pytriton
  wheel) that serves the repositories on this lane: installed under the cache on
  first use, started and stopped with deadlines.

This package's ``__init__`` imports nothing heavy.
"""
