"""The real TensorRT-LLM tools (trtllm-build, convert_checkpoint.py, quantize.py).

`flags` holds their command-line flags per TensorRT-LLM version, as data
(`data/*.json`), with the checks llmbuild runs before generating an argv.
"""

from .flags import (DEFAULT_VERSION, TOOLS, UNSET, VERSIONS, FlagError, FlagSpec, argument_parser,
                    check_flag, default, flag_table, has_tool, lora_target_modules, parse_argv,
                    resolve_version, script_path, versions_with_flag)

__all__ = [
    "DEFAULT_VERSION", "TOOLS", "UNSET", "VERSIONS", "FlagError", "FlagSpec", "argument_parser",
    "check_flag", "default", "flag_table", "has_tool", "lora_target_modules", "parse_argv",
    "resolve_version", "script_path", "versions_with_flag",
]
