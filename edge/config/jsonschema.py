"""JSON Schema (draft 2020-12) of the config, generated from the loader's spec tables.

Because the loader and this schema read the same tables, they cannot drift; the committed
``docs/config.schema.json`` is checked against ``schema_text()`` by the tests. Regenerate it with
``edgesteer check --print-schema > docs/config.schema.json``.
Rules between keys (references, ``failover_ttl <= ttl``, ...) are beyond JSON Schema and are
checked by the loader only.
"""

from __future__ import annotations

import json
from typing import Any

from edge.config.spec import AnyOf, Field, ListOf, MapOf, Scalar, Section, Spec
from edge.config.tables import ROOT

DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "edgesteer check --print-schema > docs/config.schema.json"


def config_json_schema() -> dict[str, Any]:
    return {"$schema": DIALECT, "title": "edgesteer configuration",
            "$comment": f"Generated from edge/config/tables.py; regenerate: {REGENERATE}",
            **_section(ROOT), "description": ROOT.description}


def schema_text() -> str:
    """The schema as committed: indented, keys sorted, trailing newline."""
    return json.dumps(config_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _spec(spec: Spec) -> dict[str, Any]:
    if isinstance(spec, Scalar):
        return _scalar(spec)
    if isinstance(spec, ListOf):
        out: dict[str, Any] = {"type": "array", "items": _spec(spec.item)}
        if spec.min_items:
            out["minItems"] = spec.min_items
        if spec.max_items is not None:
            out["maxItems"] = spec.max_items
        return out
    if isinstance(spec, MapOf):
        return {"type": "object", "propertyNames": _scalar(spec.key),
                "additionalProperties": _spec(spec.value)}
    if isinstance(spec, AnyOf):
        return {"anyOf": [_spec(option) for option in spec.options]}
    return _section(spec)


def _scalar(spec: Scalar) -> dict[str, Any]:
    out: dict[str, Any] = {"type": spec.type}
    if spec.enum is not None:
        if len(spec.enum) == 1:
            out["const"] = spec.enum[0]
        else:
            out["enum"] = list(spec.enum)
    for key, value in (("minimum", spec.minimum), ("maximum", spec.maximum),
                       ("exclusiveMinimum", spec.exclusive_minimum),
                       ("exclusiveMaximum", spec.exclusive_maximum)):
        if value is not None:
            out[key] = value
    if spec.pattern is not None:
        out["pattern"] = f"^(?:{spec.pattern})$"
    out.update(spec.schema)
    return out


def _field(f: Field) -> dict[str, Any]:
    out = _spec(f.spec)
    if f.nullable:
        out["type"] = [out["type"], "null"]
    out["description"] = _describe(f)
    if f.has_default:
        out["default"] = _jsonable(f.default)
    return out


def _describe(f: Field) -> str:
    """The field's description; for a section also the section's own (when it adds words)."""
    if not isinstance(f.spec, Section):
        return f.description
    own = f.spec.description
    if f.description.rstrip(".").lower() in own.lower():
        return own
    return f"{f.description}. {own}"


def _section(spec: Section) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "description": spec.description,
        "additionalProperties": False,
        "properties": {key: _field(f) for key, f in spec.fields.items()},
    }
    required = [key for key, f in spec.fields.items() if f.required]
    if required:
        out["required"] = required
    rules = _discriminated(spec)
    if rules:
        out["allOf"] = rules
    return out


def _discriminated(spec: Section) -> list[dict[str, Any]]:
    """Per discriminator value: forbid keys of other kinds, require keys of this one."""
    disc = spec.discriminator
    if disc is None:
        return []
    kinds = spec.fields[disc].spec
    assert isinstance(kinds, Scalar) and kinds.enum is not None
    rules: list[dict[str, Any]] = []
    for kind in kinds.enum:
        then: dict[str, Any] = {}
        forbidden = {key: False for key, f in spec.fields.items()
                     if f.kinds is not None and kind not in f.kinds}
        if forbidden:
            then["properties"] = forbidden
        required = [key for key, f in spec.fields.items() if kind in f.required_kinds]
        if required:
            then["required"] = required
        if then:
            rules.append({"if": {"properties": {disc: {"const": kind}}, "required": [disc]},
                          "then": then})
    return rules


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
