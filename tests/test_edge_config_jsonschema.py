"""The JSON Schema: committed file up to date, covers the example, agrees with the loader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import main
from edge.config import defaults as d
from edge.config.jsonschema import DIALECT, REGENERATE, config_json_schema, schema_text
from edge.config.loader import ConfigInvalid, parse_config

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "docs" / "config.schema.json"
EXAMPLE = ROOT / "deploy" / "examples" / "hk-cluster.yaml"


def test_committed_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        f"docs/config.schema.json is stale; regenerate it: {REGENERATE}")


def test_print_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--print-schema"]) == 0
    assert capsys.readouterr().out == schema_text()


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every object schema with properties, with a readable path."""
    out = []
    if "properties" in schema:
        out.append((path, schema))
        for key, sub in schema["properties"].items():
            if isinstance(sub, dict):
                out.extend(_objects(sub, f"{path}.{key}"))
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out.extend(_objects(schema[key], f"{path}[]"))
    for sub in schema.get("anyOf", []):
        out.extend(_objects(sub, path))
    return out


def test_schema_shape() -> None:
    schema = config_json_schema()
    assert schema["$schema"] == DIALECT
    objects = _objects(schema)
    assert len(objects) > 15
    for path, obj in objects:
        assert obj["additionalProperties"] is False, path
        for key, prop in obj["properties"].items():
            assert prop["description"], f"{path}.{key}"
    props = schema["properties"]
    assert set(schema["required"]) == {"version", "node", "sites", "links"}
    assert props["health"]["properties"]["window"]["default"] == d.HEALTH_WINDOW
    assert props["dns"]["properties"]["listen"]["default"] == list(d.DNS_LISTEN)
    link = props["links"]["items"]["properties"]
    assert link["priority"] == {"type": "integer", "minimum": 1, "maximum": 9,
                                "description": "operator tier 1..9, 1 = preferred"}


def _matches(value: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """The branch of ``schema`` (anyOf) whose type fits ``value``."""
    for branch in schema.get("anyOf", []):
        if (branch.get("type") == "array") == isinstance(value, list):
            return dict(branch)
    return schema


def _undescribed(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    schema = _matches(value, schema)
    missing: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if props is not None:
                if key not in props or not props[key].get("description"):
                    missing.append(f"{path}.{key}")
                    continue
                missing += _undescribed(sub, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                missing += _undescribed(sub, extra, f"{path}.{key}")
            else:
                missing.append(f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            missing += _undescribed(item, schema["items"], f"{path}[{i}]")
    return missing


def test_every_key_of_the_example_is_described() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert _undescribed(data, config_json_schema(), "") == []
    assert _undescribed({"links": [{"nonsense": 1}]}, config_json_schema(), "") == [
        ".links[0].nonsense"]


def _mapping_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(node, dict):
        out.append(path)
        for k, v in node.items():
            out += _mapping_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _mapping_paths(v, (*path, i))
    return out


def _key_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif out.endswith("ns_addresses"):
            out += f'["{part}"]'
        else:
            out += f".{part}" if out else part
    return out


def test_loader_rejects_unknown_keys_wherever_the_schema_does() -> None:
    """The schema says additionalProperties: false everywhere; so must the loader."""
    data = yaml.safe_load(EXAMPLE.read_text())
    seen_shapes: set[tuple[Any, ...]] = set()
    for path in _mapping_paths(data):
        shape = tuple(0 if isinstance(p, int) else p for p in path)
        if shape in seen_shapes or (path and path[-1] == "ns_addresses"):
            continue  # ns_addresses has free keys (name server names)
        seen_shapes.add(shape)
        doc = yaml.safe_load(EXAMPLE.read_text())
        # parsed from text, relative paths would be read from the working directory
        doc["geo"]["databases"] = [str(EXAMPLE.parent / db) for db in doc["geo"]["databases"]]
        target = doc
        for part in path:
            target = target[part]
        target["bogus_key"] = 1
        with pytest.raises(ConfigInvalid) as info:
            parse_config(yaml.safe_dump(doc, sort_keys=False))
        prefix = _key_path(path)
        expected = f"{prefix}.bogus_key" if prefix else "bogus_key"
        assert [e.key_path for e in info.value.errors] == [expected]
        assert info.value.errors[0].message.startswith("unknown key `bogus_key`")
    assert len(seen_shapes) > 20


def test_schema_is_valid_json_with_sorted_keys() -> None:
    text = SCHEMA_FILE.read_text()
    assert text.endswith("}\n")
    assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" \
        == text
