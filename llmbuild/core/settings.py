"""`[tool.llmbuild]` in a workspace's pyproject.toml: the core's keys, and each subsystem's
keys validated by the subsystem that owns them (Pants' subsystems)."""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from .errors import LLMBuildError, did_you_mean
from .protocols import Subsystem, iter_subsystem_keys
from .validation import describe_validation_error

M = TypeVar("M", bound=BaseModel)

PYPROJECT = "pyproject.toml"

#: Environment overrides of the core's own keys (subsystems declare theirs).
ENV_OVERRIDES = {
    "LLMBUILD_CACHE_DIR": "cache",
    "LLMBUILD_DIST_DIR": "dist",
    "LLMBUILD_VERIFY_ON_RESTORE": "verify_on_restore",
}


class Settings(BaseModel):
    """The core's keys of `[tool.llmbuild]`; every other key belongs to a subsystem."""

    model_config = ConfigDict(extra="forbid", strict=True)  # as targets: "2" is not 2

    build_roots: list[str] = Field(
        default_factory=lambda: ["."],
        description="Directories (relative to the workspace root) searched for BUILD.toml files.")
    ignore: list[str] = Field(
        default_factory=list,
        description="Directories never searched for BUILD.toml files, relative to the workspace "
        "root; glob patterns allowed (e.g. 'models/old', 'models/*/scratch'). Added to the ones "
        "always skipped: .git, .venv, node_modules, __pycache__ and hidden directories anywhere, "
        "the cache and dist directories.")
    cache: str = Field("cache", description="Action cache directory (may be shared between workspaces).")
    dist: str = Field("dist", description="Where stable links to outputs and run.json are written.")
    data_roots: list[str] = Field(
        default_factory=list,
        description="Absolute directories outside the workspace that source paths may point into.")
    verify_on_restore: Literal["stat", "digest"] = Field(
        "stat", description="How a local cache entry is checked before it is linked into dist: stat "
        "(size and mtime of every file against its manifest: catches any later write, one stat per "
        "file) or digest (also re-reads and hashes every file). An entry that fails is quarantined "
        "and rebuilt. Remote entries are always checked by digest.")
    _options: dict[type, Any] = PrivateAttr(default_factory=dict)  # each subsystem's, by model

    def fingerprint(self) -> dict[str, Any]:
        """Every setting, the core's and each subsystem's, as plain JSON values."""
        return {"core": self.model_dump(mode="json"),
                **{model.__name__: value.model_dump(mode="json") for model, value in self._options.items()}}

    def option(self, model: type[M]) -> M:
        """The validated settings of the subsystem whose model is `model` (its defaults when
        the workspace was loaded without that subsystem)."""
        if model not in self._options:
            self._options[model] = model()
        return self._options[model]


def find_workspace_root(start: Path) -> Path:
    """The nearest directory at or above `start` with `[tool.llmbuild]`."""
    for directory in [start, *start.parents]:
        candidate = directory / PYPROJECT
        if candidate.is_file() and "[tool.llmbuild" in candidate.read_text(errors="replace"):
            return directory
    raise LLMBuildError(
        f"no llmbuild workspace at or above {start}: expected a {PYPROJECT} with [tool.llmbuild]")


def load_settings(root: Path, environ: Mapping[str, str] | None = None,
                  subsystems: tuple[Subsystem, ...] | None = None) -> Settings:
    """The core keys, and each subsystem's keys validated by its own model. Without
    `subsystems` other keys are not checked (reading only where the cache and dist are)."""
    environ = os.environ if environ is None else environ
    path = root / PYPROJECT
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LLMBuildError(f"{path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise LLMBuildError(f"invalid TOML: {err}", file=PYPROJECT) from None
    table = dict(data.get("tool", {}).get("llmbuild", {}))
    overrides = dict(ENV_OVERRIDES)
    for subsystem in subsystems or ():
        overrides.update(subsystem.env)
    owners = dict(iter_subsystem_keys(subsystems or ()))
    for variable, key in overrides.items():
        if environ.get(variable):
            model = owners[key].model if key in owners else Settings
            table[key] = _from_environment(variable, environ[variable], model.model_fields[key].annotation)
    core = {k: v for k, v in table.items() if k in Settings.model_fields}
    unknown = [k for k in table if k not in core and k not in owners]
    if subsystems is not None and unknown:
        known = list(Settings.model_fields) + list(owners)
        raise LLMBuildError(f"unknown key{did_you_mean(unknown[0], known)}", file=PYPROJECT,
                            target="[tool.llmbuild]", key=unknown[0])
    settings = _validate(Settings, core)
    for subsystem in subsystems or ():
        mine = {k: v for k, v in table.items() if owners.get(k) is subsystem}
        settings._options[subsystem.model] = _validate(subsystem.model, mine)
    return settings


def _from_environment(variable: str, text: str, annotation: Any) -> Any:
    """An environment value for a key that takes an integer (and no string) is read as one."""
    types = typing.get_args(annotation) or (annotation,)  # `int | None` -> (int, None)
    if int not in types or str in types:
        return text
    try:
        return int(text)
    except ValueError:
        raise LLMBuildError(f"{variable}={text!r}: expected a whole number") from None


def _validate(model: type[M], values: dict[str, Any]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as err:
        key, message = describe_validation_error(err, model)
        raise LLMBuildError(message, file=PYPROJECT, target="[tool.llmbuild]", key=key) from None


def resolve_dir(root: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else root / path
