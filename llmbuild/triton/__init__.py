"""Triton model repositories and the CPU Triton Inference Server."""
