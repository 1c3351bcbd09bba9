"""The TensorRT-LLM backend's request/response contract, per backend version, as data.

``backend/behaviour-v<version>.json`` holds, for the five models of the
``inflight_batcher_llm`` repository, every input (dtype, dims, optionality,
default, effect, what the CPU lane does with it), every output (response
shape and when it is returned), the errors with their exact text, and the
rules for limits, clipping, batching, streaming, stop and cancellation --
each fact naming its source. The contract tests are driven by it and the
GPU lane's configs are checked against it; a new backend version is a new
file.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Behaviour", "BehaviourError", "ErrorSpec", "InputSpec", "ModelContract", "OutputSpec", "load", "versions"]

DATA_DIR = Path(__file__).resolve().parent / "backend"
_FILE = re.compile(r"^behaviour-v(?P<version>\d+\.\d+\.\d+)\.json$")
#: What the CPU lane does with an input.
CPU_LANE = ("honoured", "no-op", "refused")
#: When an output is in a response (beyond "always" / "never": "if <input>" or one of these).
_CONDITIONS = ("if batch > 1", "if num_return_sequences > 1")


class BehaviourError(ValueError):
    """A behaviour table that contradicts itself (one line: file and key)."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool
    cpu_lane: str
    behaviour: str
    source: str
    default: Any = None
    reshape: bool = False
    ragged: bool = False
    error: str | None = None
    maps_to: str | None = None


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]
    shape: tuple[str, ...]
    returned: str
    behaviour: str
    source: str

    @property
    def condition_input(self) -> str | None:
        """The boolean input that switches this output on ("if return_log_probs"), if any."""
        if self.returned.startswith("if ") and self.returned not in _CONDITIONS:
            return self.returned[3:]
        return None


@dataclass(frozen=True)
class ErrorSpec:
    key: str
    message: str
    wrap: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class ModelContract:
    name: str
    backend: str
    decoupled: Any
    source: str
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    errors: dict[str, ErrorSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class Behaviour:
    version: str
    path: Path
    sources: dict[str, str]
    models: dict[str, ModelContract]
    rules: dict[str, Any]

    def error(self, ref: str) -> ErrorSpec:
        """The error ``"<model>.<id>"``."""
        model, _, key = ref.partition(".")
        try:
            return self.models[model].errors[key]
        except KeyError:
            raise BehaviourError(f"{self.path.name}: no error '{ref}'") from None

    def error_text(self, ref: str, **fields: Any) -> str:
        """The error's text as the CPU lane writes it: the message inside its wrapping forms.

        ``fields`` fill the placeholders (``prompt``, ``request_id``, ``instance`` ...).
        """
        spec = self.error(ref)
        text = spec.message.format(**fields)
        forms = self.rules["error_forms"]["forms"]
        for form in reversed(spec.wrap):
            text = forms[form]["template"].format(message=text, **fields)
        return text

    def clipping_warning(self, **fields: Any) -> str:
        return self.rules["limits"]["clipping"]["warning"].format(**fields)


def versions() -> list[str]:
    """Backend versions with a behaviour table, oldest first."""
    found = [m["version"] for p in DATA_DIR.iterdir() if (m := _FILE.match(p.name))]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


@functools.lru_cache(maxsize=None)
def load(version: str) -> Behaviour:
    """The behaviour table of tensorrtllm_backend ``version``, checked for consistency."""
    path = DATA_DIR / f"behaviour-v{version}.json"
    if not path.is_file():
        raise BehaviourError(f"no behaviour table for tensorrtllm_backend {version} "
                             f"(have: {', '.join(versions()) or 'none'})")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("backend_version") != version:
        raise BehaviourError(f"{path.name}: backend_version is {data.get('backend_version')!r}, not {version!r}")
    sources = data["sources"]
    models: dict[str, ModelContract] = {}
    for name, model in data["models"].items():
        where = f"{path.name}: models.{name}"
        inputs = {}
        for row in model["inputs"]:
            spec = InputSpec(
                name=row["name"], dtype=row["dtype"], dims=tuple(row["dims"]), optional=row["optional"],
                cpu_lane=row["cpu_lane"], behaviour=row["behaviour"], source=row["source"],
                default=row.get("default"), reshape="reshape" in row, ragged=bool(row.get("ragged")),
                error=row.get("error"), maps_to=row.get("maps_to"))
            if spec.cpu_lane not in CPU_LANE:
                raise BehaviourError(f"{where}.inputs.{spec.name}: cpu_lane {spec.cpu_lane!r} is not one of {CPU_LANE}")
            if spec.cpu_lane == "refused" and not spec.error:
                raise BehaviourError(f"{where}.inputs.{spec.name}: refused without an error")
            inputs[spec.name] = spec
        outputs = {}
        for row in model["outputs"]:
            spec = OutputSpec(name=row["name"], dtype=row["dtype"], dims=tuple(row["dims"]),
                              shape=tuple(row["shape"]), returned=row["returned"], behaviour=row["behaviour"],
                              source=row["source"])
            if spec.returned not in ("always", "never") and not spec.returned.startswith("if "):
                raise BehaviourError(f"{where}.outputs.{spec.name}: returned {spec.returned!r} is not "
                                     f"'always', 'never' or 'if <condition>'")
            if spec.condition_input and spec.condition_input not in inputs:
                raise BehaviourError(f"{where}.outputs.{spec.name}: returned {spec.returned!r} names no input")
            outputs[spec.name] = spec
        errors = {key: ErrorSpec(key=key, message=row["message"], wrap=tuple(row["wrap"]), source=row["source"])
                  for key, row in model.get("errors", {}).items()}
        models[name] = ModelContract(name=name, backend=model["backend"], decoupled=model["decoupled"],
                                     source=model["source"], inputs=inputs, outputs=outputs, errors=errors)
    behaviour = Behaviour(version=version, path=path, sources=sources, models=models, rules=data["rules"])
    _check_references(behaviour)
    return behaviour


def _check_references(b: Behaviour) -> None:
    """Every error, wrapping form, mapped input and source key a row names exists."""
    forms = b.rules["error_forms"]["forms"]

    def source_keys(value: str) -> list[str]:
        return [s.strip() for s in value.split(",")]

    for model in b.models.values():
        for kind, rows in (("inputs", model.inputs), ("outputs", model.outputs), ("errors", model.errors)):
            for row in rows.values():
                where = f"{b.path.name}: models.{model.name}.{kind}.{getattr(row, 'name', getattr(row, 'key', ''))}"
                for key in source_keys(row.source):
                    if key not in b.sources:
                        raise BehaviourError(f"{where}: source '{key}' is not in sources")
                if kind == "inputs":
                    if row.error:
                        b.error(row.error)
                    if row.maps_to:
                        step, _, inner = row.maps_to.partition(".")
                        if inner not in b.models[step].inputs:
                            raise BehaviourError(f"{where}: maps_to '{row.maps_to}' is not an input")
                if kind == "errors":
                    for form in row.wrap:
                        if form not in forms:
                            raise BehaviourError(f"{where}: wrap form '{form}' is not in rules.error_forms")
