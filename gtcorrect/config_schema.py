"""``TrainConfig`` as JSON Schema (OpenAPI 3.1): every field's type, default, bounds and description.

Built from the config dataclasses themselves, so it cannot drift from what ``TrainConfig.from_dict`` and
``check_config`` accept: types from the annotations, defaults from a default instance, bounds from the
same table ``check_config`` applies (and an operator's ``ConfigLimits`` where given), descriptions from the
comments next to each field in ``gtcorrect/config.py`` and the sections' docstrings.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from typing import Any, Literal

from gtcorrect import config as config_module
from gtcorrect.config import _RANGES, ConfigLimits, TrainConfig

REF = "#/components/schemas/"

# Rules of check_config that are not in its range table and hold for every method: (minimum, a
# ConfigLimits field as the maximum).
_RULES: dict[str, tuple[int | None, str | None]] = {
    "batch_size": (2, "max_batch_size"),
    "num_workers": (0, "max_num_workers"),
    "image_size": (None, "max_image_size"),
}


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description: the comment block right above it and the comment on its line."""
    docs: dict[str, str] = {}
    block: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("# "))
            continue
        match = re.match(r"^\s{4}(\w+): [^=]+?(?: = .*?)?(?:\s+#\s*(.*))?$", line)
        if match and not stripped.startswith(("def ", "@")):
            text = " ".join([*block, match.group(2) or ""]).strip()
            if text:
                docs[match.group(1)] = text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")
        block = []
    return docs


def _type_schema(hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return {"anyOf": [_type_schema(inner), {"type": "null"}]}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return {"$ref": REF + hint.__name__}
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": names[hint]}


def _bounds(path: str, limits: ConfigLimits | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if path in _RANGES:
        lo, hi, lo_open = _RANGES[path]
        if lo is not None:
            out["exclusiveMinimum" if lo_open else "minimum"] = lo
        if hi is not None:
            out["maximum"] = hi
    if path in _RULES:
        lo_rule, limit = _RULES[path]
        if lo_rule is not None:
            out["minimum"] = lo_rule
        if limit is not None and limits is not None:
            out["maximum"] = getattr(limits, limit)
    if path == "net.channels":
        out.update(minItems=2, items={"type": "integer", "minimum": 1})
        if limits is not None:
            out["maxItems"] = limits.max_levels
            out["items"]["maximum"] = limits.max_channels
    if path == "net.strides":
        out.update(minItems=1, items={"type": "integer", "minimum": 1, "maximum": 4})
    return out


def _default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def config_schemas(limits: ConfigLimits | None = None) -> dict[str, dict[str, Any]]:
    """JSON Schemas by name: ``TrainConfig`` and its sections (``NetConfig``, ``GStageConfig``, ...),
    which it references as ``#/components/schemas/<name>``. Every field is optional (it has a default)."""
    out: dict[str, dict[str, Any]] = {}
    _add(TrainConfig, "", limits, out)
    top = out["TrainConfig"]
    top["description"] += (
        " Omitted fields keep their defaults. The image size must be a multiple of the product of "
        "net.strides, and at least twice it."
    )
    if limits is not None:
        top["description"] += (
            f" This service trains at most {limits.max_epochs} epochs per job (G-T: warm-up + every "
            "feedback round + T stage; other methods: epochs)."
        )
    return out


def _add(cls: type, prefix: str, limits: ConfigLimits | None, out: dict[str, dict[str, Any]]) -> None:
    hints = typing.get_type_hints(cls, vars(config_module))
    docs = field_docs(cls)
    default = cls()
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        schema = _type_schema(hint)
        if "$ref" in schema:
            _add(hint, f"{prefix}{f.name}.", limits, out)
            schema = {"allOf": [schema], "description": (hint.__doc__ or "").strip().split("\n\n")[0]}
        else:
            schema.update(_bounds(f"{prefix}{f.name}", limits))
            schema["default"] = _default(getattr(default, f.name))
            if f.name in docs:
                schema["description"] = docs[f.name]
        properties[f.name] = schema
    description = " ".join((cls.__doc__ or "").split())
    out[cls.__name__] = {
        "type": "object",
        "title": cls.__name__,
        "description": description,
        "properties": properties,
        "additionalProperties": False,
    }
