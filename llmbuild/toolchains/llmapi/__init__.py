"""The engine-free TensorRT-LLM (>= 1.3.0rc21): per-version LLM-API tables and checks over them."""

from .tables import (FIRST_ENGINE_FREE, SUPPORTED, FieldSpec, ServeOption, VersionTable, is_engine_free,
                     table_for)

__all__ = ["FIRST_ENGINE_FREE", "SUPPORTED", "FieldSpec", "ServeOption", "VersionTable", "is_engine_free",
           "table_for"]
