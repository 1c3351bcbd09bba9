"""Triton model repositories for TensorRT-LLM engines: the backend's tables, the serving options,
the five generated configs, their wiring checks, our model.py files and the repository layout."""
