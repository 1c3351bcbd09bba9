"""Field types are strict, and the loader accepts exactly what the JSON Schema accepts.

Every field of every kind (nested tables and request lists too) is fed a value of every TOML
type; the loader (parse + validation of BUILD.toml) must reject it exactly when
`llmbuild schema` does, naming file, target and key. No Docker, no doit: a second or two.
"""

from __future__ import annotations

import textwrap
import tomllib
import typing

import jsonschema
import pytest

from llmbuild.core import buildfiles
from llmbuild.core.errors import LLMBuildError
from llmbuild.core.settings import load_settings
from llmbuild.core.target import FieldGroup
from llmbuild.plugins import DefaultPlugins, load_kinds
from llmbuild.toolchains.subsystem import ToolchainSettings
from llmbuild.introspect.schema import buildfile_schema

#: The smallest valid table of each kind, and of each nested table with required keys.
MINIMAL = {
    "checkpoint": {"source": '"hf"'},
    "engine": {"checkpoint": '":c"'},
    "repository": {"engine": '":e"'},
    "smoke": {"repository": '":r"', "prompt": '"hi"'},
    "container": {"image": '"nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3"'},
    "Quantization": {"qformat": '"fp8"'},
    "Request": {"prompt": '"hi"'},
}

#: A value of every TOML type, as TOML source; strings and ints a lax parser would coerce.
VALUES = ['"1"', '"yes"', "1", "-1", "0.5", "2.0", "true", "[]", '["x"]', "[1]",
          "{}", '{ x = "1" }', "1979-05-27T07:32:00Z"]

FILE = "models/m/BUILD.toml"


def _schema_validator():
    """Draft 2020-12 with TOML's integer type: JSON has one number type, so the JSON Schema
    spec lets 2.0 be an "integer"; TOML tells 2 from 2.0 and the loader rejects 2.0 where
    an integer belongs. Everything else is the standard validator."""
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=checker)(buildfile_schema())


def _group(annotation) -> tuple[type[FieldGroup] | None, bool]:
    """(nested table model, whether the field is a list of them) of a field's annotation."""
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, FieldGroup):
            return arg, False
        if typing.get_origin(arg) is list:
            (item,) = typing.get_args(arg)
            if isinstance(item, type) and issubclass(item, FieldGroup):
                return item, True
    return None, False


def _inline(fields: dict[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {v}" for k, v in fields.items()) + " }"


def _cases(model, minimal: dict[str, str]):
    """(dotted key, target table as {key: TOML source}) for every field and value."""
    for name, info in model.model_fields.items():
        for value in VALUES:
            yield name, {**minimal, name: value}
        group, is_list = _group(info.annotation)
        if group is None:
            continue
        for key, table in _cases(group, MINIMAL.get(group.__name__, {})):
            wrapped = f"[{_inline(table)}]" if is_list else _inline(table)
            yield f"{name}.{'0.' if is_list else ''}{key}", {**minimal, name: wrapped}


def _load(root, text: str) -> LLMBuildError | None:
    path = root / FILE
    path.unlink(missing_ok=True)  # a new file: rewriting one in place waits for the disk
    path.write_text(text)
    try:
        kinds = load_kinds()
        buildfiles.build_targets([buildfiles.parse(path.resolve(), root, kinds)], kinds)
    except LLMBuildError as err:
        return err
    return None


@pytest.mark.parametrize("kind", sorted(load_kinds()))
def test_loader_and_schema_agree_on_every_type(kind, tmp_path):
    (tmp_path / "models/m").mkdir(parents=True)
    validator = _schema_validator()
    assert kind in MINIMAL, f"add the smallest valid [{kind}.<name>] table to MINIMAL"
    minimal = f"[{kind}.t]\n" + "".join(f"{k} = {v}\n" for k, v in MINIMAL[kind].items())
    assert _load(tmp_path, minimal) is None and not list(validator.iter_errors(tomllib.loads(minimal)))
    disagreements = []
    for key, table in _cases(load_kinds()[kind].Fields, MINIMAL[kind]):
        text = f"[{kind}.t]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
        schema_errors = list(validator.iter_errors(tomllib.loads(text)))
        error = _load(tmp_path, text)
        # Rejected for this key: a cross-field rule (e.g. image xor dockerfile) names the table.
        rejected = error is not None and error.key is not None and \
            (error.key == key or error.key.startswith(key + "."))
        if bool(schema_errors) != rejected:
            disagreements.append(f"{key} = {table[key.split('.')[0]]}: schema "
                                 f"{'rejects' if schema_errors else 'accepts'}, loader "
                                 f"{'rejects' if rejected else 'accepts'}"
                                 + (f" ({error})" if error else ""))
        if rejected:
            assert str(error).startswith(f"{FILE}: [{kind}.t]: {error.key}: "), str(error)
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.parametrize("line, key, expected", [
    ('max_batch_size = "8"', "max_batch_size", "valid integer"),
    ("max_batch_size = 8.0", "max_batch_size", "valid integer"),
    ('use_paged_context_fmha = "yes"', "use_paged_context_fmha", "valid boolean"),
    ("use_paged_context_fmha = 1", "use_paged_context_fmha", "valid boolean"),
    ('gpus = ["0"]', "gpus.0", "valid integer"),
    ('lora = { max_rank = "8" }', "lora.max_rank", "valid integer"),
])
def test_strings_and_numbers_are_not_coerced(line, key, expected, tmp_path):
    (tmp_path / "models/m").mkdir(parents=True)
    error = _load(tmp_path, f'[engine.e]\ncheckpoint = ":c"\n{line}\n')
    assert error is not None, f"{line} was accepted"
    assert str(error).startswith(f"{FILE}: [engine.e]: {key}: "), str(error)
    assert expected in str(error)


def test_checkpoint_and_repository_fields_are_strict(tmp_path):
    (tmp_path / "models/m").mkdir(parents=True)
    error = _load(tmp_path, '[checkpoint.c]\nsource = "hf"\ntp_size = "1"\n')
    assert str(error).startswith(f"{FILE}: [checkpoint.c]: tp_size: Input should be a valid integer")
    error = _load(tmp_path, '[repository.r]\nengine = ":e"\ndecoupled = 1\n')
    assert str(error).startswith(f"{FILE}: [repository.r]: decoupled: Input should be a valid boolean")
    # A float field takes an integer, as JSON Schema's "number" does.
    assert _load(tmp_path, '[repository.r]\nengine = ":e"\nkv_cache_free_gpu_mem_fraction = 1\n') is None


def test_settings_are_strict(tmp_path):
    def settings_error(extra: str) -> str:
        (tmp_path / "pyproject.toml").write_text(textwrap.dedent("[tool.llmbuild]\n" + extra))
        with pytest.raises(LLMBuildError) as caught:
            load_settings(tmp_path, environ={}, subsystems=DefaultPlugins.subsystems)
        return str(caught.value)

    assert settings_error('gpus = "2"\n').startswith(
        "pyproject.toml: [tool.llmbuild]: gpus: Input should be a valid integer")
    assert settings_error("[tool.llmbuild.host]\ngpus = 2\n") == (
        "pyproject.toml: [tool.llmbuild]: host.gpus: moved: write gpus = 2 in [tool.llmbuild] "
        "(the host's pool of GPUs, on both lanes)")
    assert settings_error("cache = 1\n").startswith(
        "pyproject.toml: [tool.llmbuild]: cache: Input should be a valid string")
    (tmp_path / "pyproject.toml").write_text("[tool.llmbuild.host]\ngpu_memory_gib = 80\n")
    settings = load_settings(tmp_path, environ={}, subsystems=DefaultPlugins.subsystems)
    assert settings.option(ToolchainSettings).host.gpu_memory_gib == 80.0
