"""The TensorRT-LLM flag tables and the checks llmbuild runs over them."""

from __future__ import annotations

import argparse
import copy
import pickle
import typing

import pytest

from llmbuild.core.target import FieldGroup, Flag
from llmbuild.plugins import load_kinds
from llmbuild.toolchains.trtllm import flags
from llmbuild.toolchains.trtllm.flags import UNSET, FlagError

BUILD, CONVERT, QUANT = "trtllm-build", "convert_checkpoint.py:llama", "quantize.py"
SEED, NEWEST, V2026 = "0.15.0.dev2024102900", "1.2.0.dev-main-2025-10", "1.3.0.dev-main-2026-07"
WITH_TOOLS = ["0.12.0", "0.13.0", "0.14.0", SEED, "0.15.0", "0.16.0", NEWEST]

# The seed's Mixtral 8x7B TP=2 commands (examples/mixtral/README.md plus the seed's engine options).
SEED_CONVERT = ["--model_dir", "X", "--output_dir", "Y", "--dtype", "float16", "--tp_size", "2",
                "--moe_tp_size", "2"]
SEED_BUILD = ["--checkpoint_dir", "X", "--output_dir", "Y", "--gemm_plugin", "float16",
              "--max_batch_size", "128", "--max_num_tokens", "13000", "--use_paged_context_fmha", "enable",
              "--lora_plugin", "float16", "--max_lora_rank", "32"]


def test_versions_in_order_with_default_and_aliases():
    assert flags.VERSIONS == (*WITH_TOOLS, V2026)
    assert flags.DEFAULT_VERSION == "0.16.0"
    assert flags.TOOLS == (BUILD, CONVERT, QUANT)
    assert flags.resolve_version("seed") == SEED
    assert flags.resolve_version("main-2025-10") == NEWEST
    assert flags.resolve_version("main-2026-07") == V2026
    assert flags.resolve_version("v0.16.0") == "0.16.0"
    assert flags.resolve_version(" 0.12.0 ") == "0.12.0"


def test_unknown_version_lists_the_known_ones():
    with pytest.raises(FlagError) as err:
        flags.resolve_version("0.17.0")
    message = str(err.value)
    assert "0.17.0" in message and "0.16.0" in message and "seed" in message
    assert "\n" not in message


# Counts line of facts/trtllm-cli.md (trtllm-build / convert / quantize); --help is not counted.
COUNTS = {"0.12.0": (64, 45, 25), "0.13.0": (66, 46, 25), "0.14.0": (65, 48, 27), SEED: (65, 48, 27),
          "0.15.0": (66, 50, 27), "0.16.0": (66, 50, 28), NEWEST: (67, 51, 30)}


@pytest.mark.parametrize("version", WITH_TOOLS)
def test_flag_counts_match_the_facts(version):
    assert tuple(len(flags.flag_table(t, version)) for t in flags.TOOLS) == COUNTS[version]
    # the parser has exactly those flags, plus -h/--help
    for tool in flags.TOOLS:
        parser = flags.argument_parser(tool, version)
        dests = {a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)}
        assert dests == set(flags.flag_table(tool, version))


@pytest.mark.parametrize("version", WITH_TOOLS)
def test_seed_mixtral_commands_parse_under_every_version(version):
    ns = flags.parse_argv(CONVERT, version, SEED_CONVERT)
    assert (ns.model_dir, ns.output_dir, ns.dtype, ns.tp_size, ns.moe_tp_size) == ("X", "Y", "float16", 2, 2)
    assert ns.moe_ep_size == -1
    ns = flags.parse_argv(BUILD, version, SEED_BUILD)
    assert ns.gemm_plugin == "float16" and ns.lora_plugin == "float16"
    assert (ns.max_batch_size, ns.max_num_tokens, ns.max_lora_rank) == (128, 13000, 32)
    assert ns.use_paged_context_fmha == "enable"


def test_plugin_flags_are_not_switches():
    with pytest.raises(FlagError, match=r"--use_paged_context_fmha: expected one argument"):
        flags.parse_argv(BUILD, "0.16.0", ["--use_paged_context_fmha"])
    with pytest.raises(FlagError, match="use_paged_context_fmha"):
        flags.parse_argv(BUILD, SEED, ["--use_paged_context_fmha", "--gemm_plugin", "auto"])
    with pytest.raises(FlagError, match=r"invalid choice: 'true'"):
        flags.parse_argv(BUILD, "0.16.0", ["--context_fmha", "true"])


def test_user_buffer_is_new_in_0_16():
    with pytest.raises(FlagError) as err:
        flags.parse_argv(BUILD, "0.15.0", ["--user_buffer", "enable"])
    assert str(err.value) == "trtllm-build in TensorRT-LLM 0.15.0 has no --user_buffer (it exists in 0.16.0 and later)"
    with pytest.raises(FlagError, match="0.16.0"):
        flags.check_flag(BUILD, "0.15.0", "user_buffer")
    assert flags.parse_argv(BUILD, "0.16.0", ["--user_buffer", "enable"]).user_buffer == "enable"
    assert flags.versions_with_flag(BUILD, "user_buffer") == ["0.16.0", NEWEST]
    assert flags.flag_table(BUILD, "0.16.0")["user_buffer"].since == "0.16.0"


def test_removed_flags_say_where_they_existed():
    with pytest.raises(FlagError, match=r"has no --enable_xqa \(it exists in 0.12.0 to 0.15.0\)"):
        flags.check_flag(BUILD, "0.16.0", "--enable_xqa")
    with pytest.raises(FlagError, match=r"--auto_parallel \(it exists in 0.12.0 to 0.16.0\)"):
        flags.parse_argv(BUILD, NEWEST, ["--auto_parallel", "2"])
    assert flags.versions_with_flag(BUILD, "builder_opt") == ["0.12.0", "0.13.0"]
    assert flags.versions_with_flag(QUANT, "weight_compression") == ["0.14.0"]
    assert flags.versions_with_flag(CONVERT, "use_embedding_sharing") == WITH_TOOLS[:5]


def test_kv_cache_type():
    with pytest.raises(FlagError, match=r"0\.12\.0 has no --kv_cache_type \(it exists in 0\.13\.0 and later\)"):
        flags.check_flag(BUILD, "0.12.0", "kv_cache_type")
    with pytest.raises(FlagError, match="0.13.0"):
        flags.parse_argv(BUILD, "0.12.0", ["--kv_cache_type", "paged"])
    for version in WITH_TOOLS[1:]:
        assert flags.parse_argv(BUILD, version, ["--kv_cache_type", "PAGED"]).kv_cache_type == "paged"
        assert flags.parse_argv(BUILD, version, ["--kv_cache_type", "Disabled"]).kv_cache_type == "disabled"
        # SUPPRESS: no attribute unless given
        assert not hasattr(flags.parse_argv(BUILD, version, []), "kv_cache_type")
        assert flags.default(BUILD, version, "kv_cache_type") is UNSET
    with pytest.raises(FlagError, match=r"--kv_cache_type: invalid choice: 'on'"):
        flags.parse_argv(BUILD, "0.16.0", ["--kv_cache_type", "on"])


def _defaults(tool, name):
    return {v: flags.default(tool, v, name) for v in WITH_TOOLS}


def _by_version(before, after, first_after):
    i = WITH_TOOLS.index(first_after)
    return {v: (before if n < i else after) for n, v in enumerate(WITH_TOOLS)}


def test_defaults_that_changed_across_versions():
    assert _defaults(BUILD, "max_batch_size") == _by_version(256, 2048, "0.14.0")
    assert _defaults(BUILD, "use_paged_context_fmha") == _by_version("disable", "enable", NEWEST)
    assert _defaults(BUILD, "use_fp8_context_fmha") == _by_version("disable", "enable", NEWEST)
    assert _defaults(BUILD, "tokens_per_block") == _by_version(64, 32, NEWEST)
    assert _defaults(BUILD, "gemm_plugin") == _by_version("disable", None, NEWEST)
    assert _defaults(BUILD, "use_fused_mlp") == _by_version(False, "enable", "0.13.0")
    assert _defaults(BUILD, "paged_kv_cache") == _by_version("enable", UNSET, "0.13.0")
    assert _defaults(BUILD, "visualize_network") == _by_version(False, None, NEWEST)
    assert _defaults(CONVERT, "dtype") == _by_version("float16", "auto", "0.15.0")
    assert _defaults(QUANT, "dtype") == _by_version("float16", "auto", "0.15.0")
    assert _defaults(BUILD, "max_num_tokens") == dict.fromkeys(WITH_TOOLS, 8192)
    assert _defaults(CONVERT, "moe_renorm_mode") == dict.fromkeys(WITH_TOOLS, 1)


def test_what_changed_shape():
    t12, t13 = flags.flag_table(BUILD, "0.12.0"), flags.flag_table(BUILD, "0.13.0")
    assert t12["use_fused_mlp"].type == "store_true" and t12["use_fused_mlp"].plugin is None
    assert t13["use_fused_mlp"].plugin == "feature" and t13["use_fused_mlp"].choices == ("enable", "disable")
    assert t12["paged_kv_cache"].plugin == "feature"
    assert t13["paged_kv_cache"].plugin is None and t13["paged_kv_cache"].choices is None
    assert flags.parse_argv(BUILD, "0.12.0", ["--use_fused_mlp"]).use_fused_mlp is True
    with pytest.raises(FlagError):
        flags.parse_argv(BUILD, "0.13.0", ["--use_fused_mlp"])
    assert flags.parse_argv(BUILD, "0.16.0", ["--visualize_network"]).visualize_network is True
    assert flags.parse_argv(BUILD, NEWEST, ["--visualize_network", "onnx"]).visualize_network == "onnx"
    assert "nvfp4" in flags.flag_table(BUILD, NEWEST)["gemm_plugin"].choices
    assert "nvfp4" not in flags.flag_table(BUILD, "0.16.0")["gemm_plugin"].choices
    assert "trace" in flags.flag_table(BUILD, NEWEST)["log_level"].choices
    assert flags.flag_table(BUILD, "0.12.0")["log_level"].choices is None
    assert "eagle" not in flags.flag_table(BUILD, "0.14.0")["speculative_decoding_mode"].choices
    assert "eagle" in flags.flag_table(BUILD, SEED)["speculative_decoding_mode"].choices
    assert flags.flag_table(CONVERT, "0.12.0")["weight_only_precision"].choices == ("int8", "int4", "int4_gptq")
    assert "int8_gptq" in flags.flag_table(CONVERT, SEED)["weight_only_precision"].choices
    assert flags.flag_table(QUANT, SEED)["dtype"].choices is None
    assert flags.flag_table(QUANT, "0.15.0")["dtype"].choices == ("auto", "float16", "bfloat16", "float32")


def test_aliases_and_abbreviations_parse_like_argparse():
    ns = flags.parse_argv(BUILD, "0.16.0", ["--max_decoder_seq_len", "4096", "--max_multimodal_len=8"])
    assert (ns.max_seq_len, ns.max_prompt_embedding_table_size) == (4096, 8)
    assert flags.parse_argv(CONVERT, "0.16.0", ["-sq", "0.5"]).smoothquant == 0.5
    flags.check_flag(CONVERT, "0.16.0", "-sq")
    flags.check_flag(BUILD, "0.12.0", "--max_decoder_seq_len")
    assert flags.parse_argv(BUILD, "0.16.0", ["--max_batch", "12"]).max_batch_size == 12
    with pytest.raises(FlagError, match="ambiguous option: --use_"):
        flags.parse_argv(BUILD, "0.16.0", ["--use_", "enable"])
    # nargs='?' with const, nargs='+', negative numbers as values
    assert flags.parse_argv(CONVERT, SEED, ["--weight_only_precision"]).weight_only_precision == "int8"
    assert flags.parse_argv(CONVERT, SEED, ["--moe_ep_size", "-1"]).moe_ep_size == -1
    assert flags.parse_argv(BUILD, SEED, ["--lora_dir", "a", "b"]).lora_dir == ["a", "b"]


def test_a_flag_from_another_version_is_not_taken_as_an_abbreviation():
    # argparse alone would read --use_fp8 as --use_fp8_rowwise in 0.12.0
    assert flags.argument_parser(CONVERT, "0.12.0").parse_args(["--use_fp8"]).use_fp8_rowwise is True
    with pytest.raises(FlagError, match=r"0\.12\.0 has no --use_fp8 \(it exists in 0\.13\.0 and later\)"):
        flags.parse_argv(CONVERT, "0.12.0", ["--use_fp8"])
    assert flags.parse_argv(CONVERT, "0.13.0", ["--use_fp8"]).use_fp8 is True


def test_parse_errors_are_flag_errors_naming_flag_and_version():
    cases = [
        (["--max_batch_size", "many"], "--max_batch_size: invalid int value"),
        (["--gemm_plugin", "nvfp4"], "--gemm_plugin: invalid choice: 'nvfp4'"),
        (["--no_such_flag", "1"], "has no --no_such_flag (no covered TensorRT-LLM version has it)"),
        (["--checkpoint_dir", "x", "stray"], "unrecognized arguments: stray"),
        (["--help"], "--help"),
    ]
    for argv, expected in cases:
        with pytest.raises(FlagError) as err:
            flags.parse_argv(BUILD, "0.16.0", argv)
        assert expected in str(err.value)
        assert "0.16.0" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FlagError, match="did you mean --use_paged_context_fmha"):
        flags.check_flag(BUILD, "0.16.0", "use_paged_context_fmh")


def test_argument_parser_behaves_like_the_real_one():
    parser = flags.argument_parser(BUILD, "0.16.0")
    assert isinstance(parser, argparse.ArgumentParser) and parser.prog == "trtllm-build"
    with pytest.raises(SystemExit):
        parser.parse_args(["--use_paged_context_fmha"])
    assert parser is not flags.argument_parser(BUILD, "0.16.0")  # fresh, safe to modify
    assert flags.argument_parser(QUANT, "0.16.0").prog == "quantize.py"


@pytest.mark.parametrize("version", WITH_TOOLS)
def test_defaults_in_the_tables_are_what_the_parser_yields(version):
    for tool in flags.TOOLS:
        ns = vars(flags.argument_parser(tool, version).parse_args([]))
        for name, spec in flags.flag_table(tool, version).items():
            if spec.default is UNSET:
                assert name not in ns
            else:
                assert ns[name] == spec.default == flags.default(tool, version, name)


@pytest.mark.parametrize("version", WITH_TOOLS)
def test_every_entry_says_where_it_came_from(version):
    for tool in flags.TOOLS:
        for name, spec in flags.flag_table(tool, version).items():
            assert spec.source.startswith("NVIDIA/TensorRT-LLM@")
            path = spec.source.split(":", 1)[1]
            if tool == BUILD:
                assert path in ("tensorrt_llm/commands/build.py", "tensorrt_llm/plugin/plugin.py")
                assert (path == "tensorrt_llm/plugin/plugin.py") == (spec.plugin is not None
                                                                     or name == "tokens_per_block")
            else:
                assert path == flags.script_path(tool, version)
            have = flags.versions_with_flag(tool, name)
            assert spec.since == (None if have[0] == "0.12.0" else have[0])
            if spec.plugin == "feature":
                assert spec.choices == ("enable", "disable") and spec.default in spec.choices
            if spec.plugin == "dtype":
                assert spec.choices[-1] == "disable"
                assert spec.default in spec.choices or (name == "gemm_plugin" and spec.default is None)
            assert spec.type in ("str", "int", "float", "store_true")


def test_seed_sources_cite_the_seed_commit():
    spec = flags.flag_table(BUILD, "seed")["max_batch_size"]
    assert spec.source == "NVIDIA/TensorRT-LLM@f6821ee393be:tensorrt_llm/commands/build.py"
    assert flags.flag_table(BUILD, NEWEST)["gemm_plugin"].source.startswith("NVIDIA/TensorRT-LLM@c20322f:")


def test_script_paths():
    for version in WITH_TOOLS:
        assert flags.script_path(BUILD, version) is None  # console script
        assert flags.script_path(QUANT, version) == "examples/quantization/quantize.py"
    assert flags.script_path(CONVERT, "0.16.0") == "examples/llama/convert_checkpoint.py"
    assert flags.script_path(CONVERT, "0.12.0") == "examples/llama/convert_checkpoint.py"
    assert flags.script_path(CONVERT, NEWEST) == "examples/models/core/llama/convert_checkpoint.py"


def test_lora_target_modules_per_version():
    for version in WITH_TOOLS[:-1]:
        modules = flags.lora_target_modules(version)
        assert len(modules) == 18 and "mlp_gate_up" not in modules and modules[-1] == "mlp_router"
    assert flags.lora_target_modules(NEWEST)[-1] == "mlp_gate_up"
    for version in WITH_TOOLS:
        assert flags.flag_table(BUILD, version)["lora_target_modules"].choices == flags.lora_target_modules(version)
    assert {"shared_expert_gate", "mamba_in_proj", "moe_latent_fc2"} <= set(flags.lora_target_modules(V2026))


def test_the_2026_version_has_no_engine_tools():
    for tool in flags.TOOLS:
        assert not flags.has_tool(tool, "main-2026-07")
        assert all(flags.has_tool(tool, v) for v in WITH_TOOLS)
        with pytest.raises(FlagError) as err:
            flags.check_flag(tool, V2026, "output_dir")
        assert str(err.value).startswith(
            f"TensorRT-LLM 1.3.0.dev-main-2026-07 has no {tool}: the TensorRT engine workflow was removed (")
        for call in (lambda: flags.flag_table(tool, V2026), lambda: flags.script_path(tool, V2026),
                     lambda: flags.parse_argv(tool, V2026, []), lambda: flags.argument_parser(tool, V2026)):
            with pytest.raises(FlagError, match="has no"):
                call()
        assert V2026 not in flags.versions_with_flag(tool, "output_dir")


def test_unknown_tool():
    with pytest.raises(FlagError, match="unknown TensorRT-LLM tool"):
        flags.has_tool("convert_checkpoint.py", "0.16.0")


def test_tables_are_safe_to_share():
    table = flags.flag_table(BUILD, "0.16.0")
    table.clear()
    assert flags.flag_table(BUILD, "0.16.0")
    spec = flags.flag_table(BUILD, "0.16.0")["kv_cache_type"]
    assert pickle.loads(pickle.dumps(spec)) == spec and pickle.loads(pickle.dumps(UNSET)) is UNSET
    assert copy.deepcopy(UNSET) is UNSET and repr(UNSET) == "UNSET"
    with pytest.raises(AttributeError):
        spec.default = "paged"


def _flag_markers(model: type, prefix: str = ""):
    """(dotted field, Flag) of a Fields model and its nested groups."""
    for name, info in model.model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, Flag):
                yield prefix + name, meta
        for group in typing.get_args(info.annotation):
            if isinstance(group, type) and issubclass(group, FieldGroup):
                yield from _flag_markers(group, f"{prefix}{name}.")


#: The TensorRT-LLM programs each kind runs.
KIND_TOOLS = {"engine": (BUILD,), "checkpoint": (CONVERT, QUANT)}


def test_every_flag_marker_names_a_flag_of_its_tools():
    """A misspelt or misplaced Flag would only fail once someone sets that field."""
    marked = {name: list(_flag_markers(kind.Fields)) for name, kind in load_kinds().items()}
    assert {name for name, found in marked.items() if found} == set(KIND_TOOLS)
    for kind, tools in KIND_TOOLS.items():
        for field, flag in marked[kind]:
            assert set(flag.tools) <= set(tools), (kind, field, flag)
            applies = [tool for tool in tools if flag.applies_to(tool)]
            missing = [tool for tool in applies if not flags.versions_with_flag(tool, flag.name)]
            assert applies and not missing, f"{kind}.{field}: --{flag.name} unknown to {missing or tools}"
