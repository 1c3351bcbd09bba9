"""Turn pydantic errors into one line naming the key, with a suggestion."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from .errors import did_you_mean


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model that holds `loc`'s last element."""
    current: type | None = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        current = field.annotation if field else None
        # Optional[Model] / Model | None
        for arg in getattr(current, "__args__", ()) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def describe_validation_error(err: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(dotted key, message) for the first error."""
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not isinstance(p, int) or True)
    key = ".".join(str(p) for p in loc) or "(table)"
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(str(loc[-1]), _fields_at(model, loc))
        return key, f"unknown key{hint}"
    if first["type"] == "missing":
        return key, "required key is missing"
    message = first["msg"]
    if "input" in first and first["type"] not in ("model_type", "dict_type"):
        message = f"{message} (got {first['input']!r})"
    return key, message
