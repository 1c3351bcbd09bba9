"""Toolchains: which programs a step runs, and what identifies them.

`cpu/` is the CPU lane (llmbuild's stand-ins and a PyTorch runtime behind a real Triton);
`trtllm/` the real TensorRT-LLM of a declared version (its flag tables as data). Where a
program runs is an executor's business (`llmbuild.executors`).
"""
