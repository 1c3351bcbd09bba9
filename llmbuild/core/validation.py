"""Turn pydantic errors into one line naming the key, with a suggestion."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ValidationError

from .errors import odd_character, shown, unknown


def _types(annotation) -> list:
    """The types an annotation stands for, through `X | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _types(arg)]
    return [annotation]


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model that holds `loc`'s last element; an int in `loc`
    is an index into a list (`requests.0.max_tokns`)."""
    current: list = [model]
    for part in loc[:-1]:
        inner = []
        for option in current:
            if isinstance(part, int) and typing.get_origin(option) is list:
                inner.extend(_types(typing.get_args(option)[0]))
            elif isinstance(option, type) and issubclass(option, BaseModel) and part in option.model_fields:
                inner.extend(_types(option.model_fields[part].annotation))
        current = inner
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return list(models[0].model_fields) if models else []


def describe_validation_error(err: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(dotted key, message) for the first error."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(table)"
    if first["type"] == "extra_forbidden":
        return key, unknown("key", str(loc[-1]), _fields_at(model, loc))
    if first["type"] == "missing":
        return key, "required key is missing"
    message = first["msg"]
    if "input" in first and first["type"] not in ("model_type", "dict_type"):
        given = first["input"]
        message = f"{message} (got {shown(given)}{odd_character(given) if isinstance(given, str) else ''})"
    return key, message
