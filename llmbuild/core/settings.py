"""`[tool.llmbuild]` in a workspace's pyproject.toml: the core's keys, and each subsystem's
keys validated by the subsystem that owns them (Pants' subsystems)."""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from .errors import LLMBuildError, shown, unknown
from .protocols import Subsystem, iter_subsystem_keys
from .tomlfile import read_toml
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
    if not path.exists() and not path.is_symlink():
        raise LLMBuildError(f"{path} does not exist")
    tool = read_toml(path, PYPROJECT, root).get("tool", {})
    table = tool.get("llmbuild", {}) if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        raise LLMBuildError("must be a table", file=PYPROJECT, target="[tool.llmbuild]")
    table = dict(table)
    overrides = dict(ENV_OVERRIDES)
    for subsystem in subsystems or ():
        overrides.update(subsystem.env)
    owners = dict(iter_subsystem_keys(subsystems or ()))
    from_environment: dict[str, str] = {}  # key -> the variable that set it, for messages
    for variable, key in overrides.items():
        if environ.get(variable):
            model = owners[key].model if key in owners else Settings
            table[key] = _from_environment(variable, environ[variable], model.model_fields[key].annotation, key)
            from_environment[key] = variable
    core = {k: v for k, v in table.items() if k in Settings.model_fields}
    strays = [k for k in table if k not in core and k not in owners]
    if subsystems is not None and strays:
        known = list(Settings.model_fields) + list(owners)
        raise LLMBuildError(unknown("key", strays[0], known), file=PYPROJECT,
                            target="[tool.llmbuild]", key=strays[0])
    settings = _validate(Settings, core, from_environment)
    for subsystem in subsystems or ():
        mine = {k: v for k, v in table.items() if owners.get(k) is subsystem}
        settings._options[subsystem.model] = _validate(subsystem.model, mine, from_environment)
    return settings


def _from_environment(variable: str, text: str, annotation: Any, key: str) -> Any:
    """An environment value for a key that takes an integer (and no string) is read as one."""
    types = typing.get_args(annotation) or (annotation,)  # `int | None` -> (int, None)
    if int not in types or str in types:
        return text
    try:
        return int(text)
    except ValueError:
        raise LLMBuildError(f"expected a whole number (got {shown(text)})", file="environment",
                            target=variable, key=key) from None


def _validate(model: type[M], values: dict[str, Any], from_environment: Mapping[str, str]) -> M:
    """The model, or one line naming the key and where its value came from (pyproject.toml
    or the environment variable that overrides it)."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        key, message = describe_validation_error(err, model)
    except LLMBuildError as err:  # a validator's own message
        if err.key is None or err.key.split(".")[0] not in from_environment:
            raise
        key, message = err.key, err.message
    variable = from_environment.get(key.split(".")[0])
    if variable:
        raise LLMBuildError(message, file="environment", target=variable, key=key) from None
    raise LLMBuildError(message, file=PYPROJECT, target="[tool.llmbuild]", key=key) from None


def resolve_dir(root: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else root / path
