"""Per-version facts about the engine-free TensorRT-LLM (>= 1.3.0rc21), and checks over them.

From 1.3.0rc21 on there is no TensorRT engine: model.yaml (Triton ``llmapi`` model),
``trtllm-serve --config`` and Dynamo's ``--extra-engine-args`` are all ``TorchLlmArgs``
documents, which reject unknown keys, and whose key names move between release
candidates. The tables (``data/<version>.json``, written by
``tools/extract_llmapi_tables.py``; each names its sources) let llmbuild check such a
document, and name the right key, before anything runs.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from packaging.version import InvalidVersion, Version

from ...core.errors import LLMBuildError

__all__ = ["FIRST_ENGINE_FREE", "SUPPORTED", "FieldSpec", "ServeOption", "VersionTable",
           "is_engine_free", "table_for"]

FIRST_ENGINE_FREE = "1.3.0rc21"
_TOP = "TorchLlmArgs"


@functools.cache
def _files() -> dict[str, str]:
    """version -> data file name, for every table shipped."""
    data = resources.files(__package__).joinpath("data")
    return {p.name[:-len(".json")]: p.name for p in data.iterdir() if p.name.endswith(".json")}


SUPPORTED: tuple[str, ...] = tuple(sorted(_files(), key=Version))


def _version(version: str) -> Version | None:
    try:
        return Version(str(version).strip().lstrip("vV"))
    except InvalidVersion:
        return None


def is_engine_free(version: str) -> bool:
    """True from 1.3.0rc21 on (no trtllm-build, no BuildConfig). Named versions that are not
    PEP 440 (the engine lane's ``1.3.0.dev-main-2026-07``, aliases such as ``seed``) are not."""
    v = _version(version)
    return v is not None and v >= Version(FIRST_ENGINE_FREE)


def table_for(version: str) -> VersionTable:
    """The newest table whose version is <= `version` within the same release (1.3.0, 1.4.0):
    1.3.0rc25 uses the 1.3.0rc21 table. No table for that line is one clear error."""
    v = _version(version)
    if v is None or not is_engine_free(version):
        raise LLMBuildError(f"TensorRT-LLM {version} is not an engine-free version (those start at "
                            f"{FIRST_ENGINE_FREE}); LLM-API tables exist for {', '.join(SUPPORTED)}")
    same_line = [s for s in SUPPORTED if Version(s).release == v.release and Version(s) <= v]
    if not same_line:
        raise LLMBuildError(f"no LLM-API table for TensorRT-LLM {version}: tables exist for "
                            f"{', '.join(SUPPORTED)} (a table serves later release candidates of its "
                            f"own release)")
    return _load(same_line[-1])


@functools.cache
def _load(version: str) -> VersionTable:
    text = resources.files(__package__).joinpath("data", _files()[version]).read_text(encoding="utf-8")
    return VersionTable(version, json.loads(text))


# ------------------------------------------------------------------ field types

@dataclass(frozen=True)
class FieldSpec:
    """One key of TorchLlmArgs or of a nested config class."""
    name: str
    type: str                    # "int" | "float" | "bool" | "str" | "dict" | "any" | "list[T]"
                                 # | "literal" | "config:<Name>" | alternatives joined by "|"
    default: Any
    nullable: bool
    choices: tuple | None        # for "literal"
    status: str | None           # stable | beta | prototype | deprecated; None where no source says
    description: str

    @classmethod
    def from_json(cls, name: str, d: dict) -> FieldSpec:
        return cls(name=name, type=d["type"], default=d.get("default"), nullable=d.get("nullable", False),
                   choices=tuple(d["choices"]) if d.get("choices") is not None else None,
                   status=d.get("status"), description=d.get("description", ""))


def _type_ok(value: Any, type_: str, choices: tuple | None) -> bool:
    """Whether a YAML value fits one alternative of a table type (pydantic's lax mode for
    int -> float; config classes and mappings are YAML mappings)."""
    if type_ == "any":
        return True
    if type_ == "bool":
        return isinstance(value, bool)
    if type_ == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_ == "str":
        return isinstance(value, str)
    if type_ == "literal":
        return choices is not None and value in choices
    if type_ == "dict" or type_.startswith("config:"):
        return isinstance(value, dict)
    if type_ == "list":
        return isinstance(value, list)
    if type_.startswith("list[") and type_.endswith("]"):
        inner = type_[5:-1]
        return isinstance(value, list) and all(_type_ok(v, inner, choices) for v in value)
    raise ValueError(f"unknown type {type_!r} in an LLM-API table")


def _describe(spec: FieldSpec) -> str:
    parts = []
    for t in spec.type.split("|"):
        if t in ("literal", "list[literal]"):
            prefix = "one of " if t == "literal" else "a list of "
            parts.append(prefix + ", ".join(repr(c) for c in spec.choices or ()))
        elif t.startswith("config:"):
            parts.append(f"a mapping ({t[len('config:'):]})")
        else:
            parts.append(t)
    if spec.nullable:
        parts.append("null")
    return " or ".join(parts)


@dataclass(frozen=True)
class ServeOption:
    """One `trtllm-serve serve` option: `flags` are every spelling, primary first."""
    name: str
    flags: tuple[str, ...]
    type: str                    # int | float | str | bool | path | choice
    default: Any
    status: str
    is_flag: bool
    multiple: bool
    choices: tuple | None


# ------------------------------------------------------------------ the table

class VersionTable:
    """The facts for one TensorRT-LLM version (see the module docstring)."""

    def __init__(self, version: str, data: dict):
        self.version = version
        self.sources: list[str] = data["sources"]
        self.llm_args: dict[str, FieldSpec] = {
            k: FieldSpec.from_json(k, v) for k, v in data["llm_args"].items()}
        self.configs: dict[str, dict[str, FieldSpec]] = {
            name: {k: FieldSpec.from_json(k, v) for k, v in fields.items()}
            for name, fields in data["configs"].items()}
        self.open_configs: frozenset[str] = frozenset(data.get("open_configs", ()))
        self.moved: dict[str, dict] = data["moved"]
        self.engine_only: dict[str, dict] = data["engine_only"]
        self.serve_options: tuple[ServeOption, ...] = tuple(
            ServeOption(name=o["name"], flags=tuple(o["flags"]), type=o["type"], default=o.get("default"),
                        status=o.get("status", "stable"), is_flag=o.get("is_flag", False),
                        multiple=o.get("multiple", False),
                        choices=tuple(o["choices"]) if o.get("choices") else None)
            for o in data["trtllm_serve"]["options"])
        model = data["llmapi_model"]
        self.llmapi_backend: str = model["backend"]
        self.llmapi_inputs: tuple[dict, ...] = tuple(model["inputs"])
        self.llmapi_outputs: tuple[dict, ...] = tuple(model["outputs"])
        self.llmapi_triton_config: dict[str, dict] = model["triton_config"]
        self.llmapi_default_model_yaml: dict = model["default_model_yaml"]
        self.dynamo: dict = data["dynamo"]

    def __repr__(self) -> str:
        return f"VersionTable({self.version!r})"

    # ------------------------------------------------------------ trtllm-serve

    def serve_option(self, name: str) -> ServeOption:
        """The option named `name` (its dest, e.g. ``max_batch_size``, or any flag spelling,
        e.g. ``--tp_size``); an unknown name is an error with a did-you-mean."""
        key = name.strip()
        for opt in self.serve_options:
            if key == opt.name or key in opt.flags or f"--{key}" in opt.flags:
                return opt
        known = [o.name for o in self.serve_options] + [f for o in self.serve_options for f in o.flags]
        raise LLMBuildError(f"`trtllm-serve serve` in TensorRT-LLM {self.version} has no option "
                            f"{name!r}{_did_you_mean(key, known)}")

    # ------------------------------------------------------------ engine fields

    def engine_field_problem(self, field: str) -> str | None:
        """Why an engine (trtllm-build) field means nothing in this version, or None if it is not
        one of those."""
        entry = self.engine_only.get(field)
        if entry is None:
            return None
        since = entry.get("gone_since", FIRST_ENGINE_FREE)
        now = entry.get("now")
        head = (f"`{field}` is a TensorRT engine setting, gone since TensorRT-LLM {since} with the "
                f"TensorRT backend (this is {self.version})")
        tail = f"; use `{now}`" if now else "; no replacement"
        note = f" ({entry['note']})" if entry.get("note") else ""
        return head + tail + note

    # ------------------------------------------------------------ TorchLlmArgs documents

    def validate_llm_args(self, doc: dict, *, where: str = "") -> list[str]:
        """Every problem in a TorchLlmArgs document (model.yaml minus `triton_config`, a
        trtllm-serve --config file, a Dynamo engine-args file), one message each, naming the
        dotted key; [] when it is valid. `where` (a file name) prefixes each message."""
        prefix = f"{where}: " if where else ""
        if not isinstance(doc, dict):
            return [f"{prefix}a TorchLlmArgs document is a mapping, not {type(doc).__name__}"]
        return [prefix + m for m in self._check_mapping(doc, self.llm_args, _TOP, "")]

    def validate_model_yaml(self, doc: dict, *, where: str = "model.yaml") -> list[str]:
        """Every problem in the llmapi Triton model's model.yaml: `triton_config` is model.py's own
        (max_batch_size and decoupled are required), every other key goes to LLM(**kwargs) and is
        checked as TorchLlmArgs."""
        prefix = f"{where}: " if where else ""
        if not isinstance(doc, dict):
            return [f"{prefix}model.yaml is a mapping, not {type(doc).__name__}"]
        triton = doc.get("triton_config")
        fields = {k: FieldSpec.from_json(k, v) for k, v in self.llmapi_triton_config.items()}
        problems = []
        if not isinstance(triton, dict):
            problems.append(f"{prefix}`triton_config` must be a mapping with "
                            f"{', '.join(k for k, v in self.llmapi_triton_config.items() if v.get('required'))}"
                            f", not {triton!r}")
        else:
            problems += [f"{prefix}`triton_config.{k}` is missing: model.py reads it" for k, v in
                         self.llmapi_triton_config.items() if v.get("required") and k not in triton]
            for key, value in triton.items():
                if key not in fields:
                    problems.append(f"{prefix}`triton_config.{key}` is not a key model.py reads in TensorRT-LLM "
                                    f"{self.version}{_did_you_mean(key, fields)}")
                else:
                    problems.extend(prefix + m for m in self._check_value(value, fields[key],
                                                                          f"triton_config.{key}"))
        rest = {k: v for k, v in doc.items() if k != "triton_config"}
        return problems + self.validate_llm_args(rest, where=where)

    def _check_mapping(self, doc: dict, fields: dict[str, FieldSpec], cls: str, path: str) -> list[str]:
        problems = []
        for key, value in doc.items():
            dotted = f"{path}{key}"
            spec = fields.get(key)
            if spec is None:
                problems.extend(self._unknown(dotted, key, value, fields, cls))
                continue
            problems.extend(self._check_value(value, spec, dotted))
        return problems

    def _check_value(self, value: Any, spec: FieldSpec, dotted: str) -> list[str]:
        if value is None and spec.nullable:
            return []
        alternatives = spec.type.split("|")
        if not any(_type_ok(value, t, spec.choices) for t in alternatives):
            return [f"`{dotted}` must be {_describe(spec)} in TensorRT-LLM {self.version}, "
                    f"not {value!r}"]
        configs = [t[len("config:"):] for t in alternatives if t.startswith("config:")]
        if isinstance(value, dict) and configs and configs[0] in self.configs:
            return self._check_mapping(value, self.configs[configs[0]], configs[0], f"{dotted}.")
        return []

    def _unknown(self, dotted: str, key: str, value: Any, fields: dict[str, FieldSpec],
                 cls: str) -> list[str]:
        moved = self.moved.get(dotted)
        if moved is not None:
            return self._moved_problems(dotted, value, moved, cls)
        if not dotted.count(".") and key in self.engine_only:
            return [self.engine_field_problem(key)]
        hint = _did_you_mean(key, fields)
        if cls in self.open_configs and not hint:
            return []   # the table lists only part of this class: only a likely typo is reported
        return [f"`{dotted}` is not a {cls} key in TensorRT-LLM {self.version}{hint}"]

    def _moved_problems(self, dotted: str, value: Any, moved: dict, cls: str) -> list[str]:
        since = f" (moved by {moved['since']})" if moved.get("since") else ""
        note = f"; {moved['note']}" if moved.get("note") else ""
        if moved.get("flattened"):
            # Its keys now live at the top level: say where each one belongs now.
            inner = value if isinstance(value, dict) else {}
            head = f"`{dotted}` is not a {cls} key in TensorRT-LLM {self.version}{since}"
            problems = []
            for k, v in inner.items():
                if k in self.llm_args:
                    problems.append(f"{head}: use top-level `{k}` for `{dotted}.{k}`{note}")
                else:
                    problems.extend(f"{head}, and its keys go to the top level: {m}"
                                    for m in self._unknown(k, k, v, self.llm_args, _TOP))
            return problems or [f"{head}: put its keys at the top level{note}"]
        now = moved.get("now")
        use = f": use `{now}`" if now else ": it has no replacement"
        return [f"`{dotted}` is not a {cls} key in TensorRT-LLM {self.version}{since}{use}{note}"]


def _did_you_mean(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f"; did you mean `{close[0]}`?" if close else ""
