"""TrainConfig's JSON Schema says what ``TrainConfig.from_dict`` accepts: every field described, its
default the dataclass default, and each bound the one ``check_config`` enforces (just inside it is
accepted, just outside refused). The presets are valid configs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gtcorrect.config import PRESETS, ConfigLimits, TrainConfig, preset_config, schedule_epochs
from gtcorrect.config_schema import config_schemas
from gtcorrect.errors import ConfigError

LIMITS = ConfigLimits()
SCHEMAS = config_schemas(LIMITS)


def _fields() -> list[tuple[str, dict[str, Any]]]:
    """(dotted path, schema) of every scalar field."""
    out = []
    for name, prop in SCHEMAS["TrainConfig"]["properties"].items():
        if "allOf" in prop:
            section = prop["allOf"][0]["$ref"].rsplit("/", 1)[-1]
            out += [(f"{name}.{k}", v) for k, v in SCHEMAS[section]["properties"].items()]
        else:
            out.append((name, prop))
    return out


def _config(path: str, value: Any) -> dict[str, Any]:
    head, _, tail = path.partition(".")
    return {head: {tail: value}} if tail else {head: value}


def _default(path: str) -> Any:
    value: Any = TrainConfig()
    for part in path.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


def test_every_field_is_described_with_its_default() -> None:
    fields = _fields()
    sections = [f for f in dataclasses.fields(TrainConfig) if dataclasses.is_dataclass(f.default_factory)]
    scalars = len(dataclasses.fields(TrainConfig)) - len(sections)
    assert len(fields) == scalars + sum(len(dataclasses.fields(f.default_factory)) for f in sections)
    for path, schema in fields:
        assert len(schema.get("description", "")) > 10, path
        assert schema["default"] == _default(path), path
    assert all(s["additionalProperties"] is False for s in SCHEMAS.values())


@pytest.mark.parametrize(("path", "schema"), [f for f in _fields() if {"minimum", "maximum"} & set(f[1])])
def test_bounds_are_the_ones_enforced(path: str, schema: dict[str, Any]) -> None:
    step = 1 if schema.get("type") == "integer" else 1e-6
    if "minimum" in schema and path != "image_size":
        TrainConfig.from_dict(_config(path, schema["minimum"]), LIMITS)
        with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
            TrainConfig.from_dict(_config(path, schema["minimum"] - step), LIMITS)
    if "maximum" in schema:
        # Judged alone: at its own maximum, rounds_max would take the schedule past max_epochs.
        operator = LIMITS if path in ("image_size", "batch_size", "num_workers") else None
        TrainConfig.from_dict(_config(path, schema["maximum"]), operator)
    if "maximum" in schema:
        with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
            TrainConfig.from_dict(_config(path, schema["maximum"] + step), LIMITS)


def test_enums_list_every_accepted_value() -> None:
    for path, schema in _fields():
        for value in schema.get("enum", []):
            TrainConfig.from_dict(_config(path, value))
        if "enum" in schema:
            with pytest.raises(ConfigError, match="must be one of"):
                TrainConfig.from_dict(_config(path, "not-a-choice"))


def test_presets_are_valid_and_a_job_config_applies_on_top() -> None:
    assert {"quick", "standard", "benchmark", "paper"} <= set(PRESETS)
    for preset in PRESETS.values():
        TrainConfig.from_dict(preset_config(preset.name), LIMITS)
    assert schedule_epochs(TrainConfig.from_dict(preset_config("benchmark"))) == 40
    merged = TrainConfig.from_dict(preset_config("quick", {"g": {"rounds_max": 1}, "seed": 3}))
    assert (merged.image_size, merged.g.warmup_epochs, merged.g.rounds_max, merged.seed) == (64, 6, 1, 3)
    assert dataclasses.replace(merged, seed=0) != TrainConfig()
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        preset_config("fast")
