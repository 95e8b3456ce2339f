"""The API explains itself: every operation has a description, and every JSON body it takes or gives
has an example (in the operation or in the schema it names), so Swagger UI shows one for each."""

from __future__ import annotations

from typing import Any

from app.main import create_app
from app.settings import Settings


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _has_example(spec: dict[str, Any], content: dict[str, Any]) -> bool:
    if "example" in content or "examples" in content:
        return True
    schema = _resolve(spec, content.get("schema", {}))
    if "example" in schema or "examples" in schema:
        return True
    # A page or a list names its items' schema: their example shows the shape.
    items = schema.get("items") or schema.get("properties", {}).get("items", {}).get("items")
    if items:
        item = _resolve(spec, items)
        return "example" in item or "examples" in item
    # A union (e.g. JSON page or CSV): every JSON alternative needs one.
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    return bool(alternatives) and all(_has_example(spec, {"schema": a}) for a in alternatives)


def _json_parts(op: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    parts = []
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        parts.append(("request body", body))
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {}).get("application/json")
        if status.startswith("2") and content is not None and content.get("schema"):
            parts.append((f"{status} response", content))
    return parts


def test_every_operation_has_a_description_and_every_json_body_an_example() -> None:
    spec = create_app(Settings()).openapi()
    missing = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            name = f"{method.upper()} {path}"
            if len((op.get("description") or "").strip()) < 20:
                missing.append(f"{name}: no description")
            for part, content in _json_parts(op):
                if not _has_example(spec, content):
                    missing.append(f"{name}: {part} has no example")
    assert missing == []


def test_the_job_config_schema_is_train_config_with_bounds_and_descriptions() -> None:
    spec = create_app(Settings(max_epochs=300)).openapi()
    schemas = spec["components"]["schemas"]
    # Added on top of the problem documentation, not instead of it.
    assert {"401", "404", "422"} <= set(spec["paths"]["/v1/jobs"]["post"]["responses"])
    assert "Problem" in schemas
    config = schemas["JobCreate"]["properties"]["config"]
    assert config["allOf"] == [{"$ref": "#/components/schemas/TrainConfig"}]
    train = schemas["TrainConfig"]
    assert "at most 300 epochs" in train["description"]
    assert train["properties"]["t"]["allOf"] == [{"$ref": "#/components/schemas/TStageConfig"}]
    lr = train["properties"]["lr"]
    assert (lr["type"], lr["exclusiveMinimum"], lr["maximum"], lr["default"]) == ("number", 0, 1, 1e-3)
    assert train["properties"]["image_size"]["maximum"] == Settings().max_image_size
    tau = schemas["GStageConfig"]["properties"]["tau"]
    assert tau["description"].startswith("Clean set") and tau["default"] == 0.5
    assert schemas["TStageConfig"]["properties"]["correction"]["enum"] == ["hard", "soft", "none"]
