"""Walk composed YAML nodes along the spec tables; keep line numbers; collect every problem.

PyYAML's composer gives nodes with marks (``yaml.compose``); we construct scalars ourselves so
that a value's line, its source text (``yes`` vs ``true``) and duplicate keys are all known.
The result is a tree of ``Val`` (a value with line and key path) and ``Obj`` (a checked
section). A bad value is reported and left out, so later checks do not trip over it.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from edge.config.errors import ConfigError
from edge.config.spec import AnyOf, Field, Invalid, ListOf, MapOf, Scalar, Section, Spec, describe

_TAG = "tag:yaml.org,2002:"
_MAX_MERGE_DEPTH = 8


@dataclass(slots=True)
class Val:
    """A checked value. ``complete`` is False for a list from which bad items were dropped."""

    value: Any
    line: int
    path: str
    complete: bool = True


@dataclass(slots=True)
class Obj:
    """A checked section: valid keys in ``fields``; given-but-invalid or missing ones in ``bad``."""

    spec: Section
    line: int
    path: str
    fields: dict[str, Val] = field(default_factory=dict)
    bad: set[str] = field(default_factory=set)

    def has(self, key: str) -> bool:
        return key in self.fields

    def ok(self, key: str) -> bool:
        """True when the key is valid or absent (so its default applies)."""
        return key not in self.bad

    def get(self, key: str, fallback: Any = None) -> Any:
        if key in self.fields:
            return self.fields[key].value
        spec_field = self.spec.fields[key]
        return spec_field.default if spec_field.has_default else fallback

    def complete(self, key: str) -> bool:
        """True when the key is absent or valid with every item (so name sets are whole)."""
        return key not in self.bad and (key not in self.fields or self.fields[key].complete)

    def vals(self, key: str) -> list[Val]:
        """The items of a list-valued key (empty when absent or invalid)."""
        value = self.fields[key].value if key in self.fields else []
        return list(value)

    def obj(self, key: str) -> Obj:
        """A sub-section; an empty one (all defaults) when absent or invalid."""
        if key in self.fields:
            sub: Obj = self.fields[key].value
            return sub
        spec = self.spec.fields[key].spec
        assert isinstance(spec, Section)
        return Obj(spec, self.line, self.path_of(key))

    def line_of(self, key: str) -> int:
        return self.fields[key].line if key in self.fields else self.line

    def path_of(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class Walker:
    """Checks nodes against specs, appending a ``ConfigError`` per problem to ``errors``."""

    def __init__(self, file: str, errors: list[ConfigError]) -> None:
        self.file = file
        self.errors = errors
        self._constructor = SafeConstructor()

    def error(self, line: int | None, path: str, message: str, fix: str | None = None) -> None:
        self.errors.append(ConfigError(self.file, line, path, message, fix))

    # dispatch --------------------------------------------------------------------------
    def check(self, node: yaml.Node, spec: Spec, path: str) -> Val | None:
        if isinstance(spec, Scalar):
            return self.scalar(node, spec, path)
        if isinstance(spec, ListOf):
            return self.sequence(node, spec, path)
        if isinstance(spec, MapOf):
            return self.mapping(node, spec, path)
        if isinstance(spec, Section):
            obj = self.section(node, spec, path)
            return None if obj is None else Val(obj, line_of(node), path)
        return self.any_of(node, spec, path)

    def any_of(self, node: yaml.Node, spec: AnyOf, path: str) -> Val | None:
        for option in spec.options:
            if isinstance(node, _NODE_FOR[type(option)]):
                return self.check(node, option, path)
        self.error(line_of(node), path, f"expected {spec.what}, found {self.found(node)}")
        return None

    # scalars ---------------------------------------------------------------------------
    def construct(self, node: yaml.ScalarNode) -> tuple[str, Any]:
        """(type name, value) of a scalar; the value is None for unsupported types."""
        tag = node.tag.removeprefix(_TAG)
        try:
            if tag == "null":
                return "null", None
            if tag == "bool":
                return "boolean", self._constructor.construct_yaml_bool(node)
            if tag == "int":
                return "integer", self._constructor.construct_yaml_int(node)
            if tag == "float":
                return "number", self._constructor.construct_yaml_float(node)
            if tag == "str":
                return "string", str(node.value)
        except (ValueError, TypeError, ArithmeticError, yaml.YAMLError):
            return f"malformed {tag}", None
        if tag == "timestamp":
            return "date", None
        return f"value tagged {node.tag.replace(_TAG, '!!')}", None

    def found(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        assert isinstance(node, yaml.ScalarNode)
        kind, value = self.construct(node)
        if kind == "null":
            return "null" if node.value else "nothing"
        if kind == "string":
            return f"string {json.dumps(value, ensure_ascii=False)}"
        return f"{kind} {node.value}"

    def scalar(self, node: yaml.Node, spec: Scalar, path: str) -> Val | None:
        line = line_of(node)
        if not isinstance(node, yaml.ScalarNode):
            self.error(line, path, f"expected {spec.noun}, found {self.found(node)}")
            return None
        _, value = self.construct(node)
        if not _type_ok(spec, value):
            bounds = spec.bounds_text() if spec.type in ("integer", "number") else ""
            expected = f"{spec.noun} {bounds}" if bounds else spec.noun
            self.error(line, path, f"expected {expected}, found {self.found(node)}",
                       _type_fix(spec, node, value))
            return None
        if spec.enum is not None and value not in spec.enum:
            self.error(line, path, f"expected {_one_of(spec.enum)}, found {self.found(node)}",
                       _suggest(str(value), [str(e) for e in spec.enum]))
            return None
        if spec.type in ("integer", "number") and not spec.in_bounds(value):
            bounds = spec.bounds_text()
            expected = f"{spec.noun} {bounds}" if bounds else f"a finite {spec.type}"
            self.error(line, path, f"expected {expected}, found {node.value}")
            return None
        if isinstance(value, str) and not spec.matches_pattern(value):
            self.error(line, path, f"expected {spec.noun}, found {self.found(node)}")
            return None
        if spec.convert is not None:
            try:
                value = spec.convert(value)
            except Invalid as exc:
                self.error(line, path, exc.message, exc.fix)
                return None
        return Val(value, line, path)

    # collections -----------------------------------------------------------------------
    def sequence(self, node: yaml.Node, spec: ListOf, path: str) -> Val | None:
        line = line_of(node)
        if not isinstance(node, yaml.SequenceNode):
            fix = None
            if isinstance(node, yaml.ScalarNode):
                fix = "write [] for an empty list" if self.construct(node)[0] == "null" \
                    else f"write [{node.value}]"
            self.error(line, path, f"expected {describe(spec)}, found {self.found(node)}", fix)
            return None
        count = len(node.value)
        if count < spec.min_items or (spec.max_items is not None and count > spec.max_items):
            self.error(line, path, f"expected {_count_text(spec)}, found "
                       + ("an empty list" if count == 0 else f"{count} items"))
            return None
        items = [self.check(item, spec.item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        kept = [v for v in items if v is not None]
        return Val(kept, line, path, complete=len(kept) == len(items))

    def mapping(self, node: yaml.Node, spec: MapOf, path: str) -> Val | None:
        line = line_of(node)
        if not isinstance(node, yaml.MappingNode):
            self.error(line, path, f"expected {spec.what}, found {self.found(node)}")
            return None
        result: dict[str, Val] = {}
        for key, knode, vnode in self.entries(node, path):
            kpath = f'{path}["{key}"]'
            kval = self.scalar(knode, spec.key, kpath)
            val = self.check(vnode, spec.value, kpath)
            if kval is not None and val is not None:
                result[str(kval.value)] = val
        return Val(result, line, path)

    def entries(self, node: yaml.MappingNode, path: str,
                depth: int = 0) -> list[tuple[str, yaml.ScalarNode, yaml.Node]]:
        """Key/value pairs with string keys; duplicates reported; ``<<`` merges resolved."""
        own: dict[str, tuple[yaml.ScalarNode, yaml.Node]] = {}
        merged: list[tuple[str, yaml.ScalarNode, yaml.Node]] = []
        for knode, vnode in node.value:
            if knode.tag == _TAG + "merge":
                merged.extend(self.merge_sources(vnode, path, depth))
                continue
            kind = self.construct(knode)[0] if isinstance(knode, yaml.ScalarNode) else ""
            if kind != "string":
                fix = f'quote it: "{knode.value}"' if isinstance(knode, yaml.ScalarNode) \
                    else None
                self.error(line_of(knode), path,
                           f"expected a key name, found {self.found(knode)}", fix)
                continue
            key = str(knode.value)
            if key in own:
                first = line_of(own[key][0])
                self.error(line_of(knode), _join(path, key),
                           f"duplicate key `{key}` (first at line {first})", "keep only one")
                continue
            own[key] = (knode, vnode)
        result = [(k, kn, vn) for k, (kn, vn) in own.items()]
        seen = set(own)
        for key, knode, vnode in merged:
            if key not in seen:
                seen.add(key)
                result.append((key, knode, vnode))
        return result

    def merge_sources(self, vnode: yaml.Node, path: str,
                      depth: int) -> list[tuple[str, yaml.ScalarNode, yaml.Node]]:
        items = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
        sources = [s for s in items if isinstance(s, yaml.MappingNode)]
        if depth >= _MAX_MERGE_DEPTH or len(sources) != len(items):
            self.error(line_of(vnode), path, "expected a mapping or a list of mappings to "
                       f"merge (at most {_MAX_MERGE_DEPTH} deep) after <<, found "
                       f"{self.found(vnode)}")
            return []
        out: list[tuple[str, yaml.ScalarNode, yaml.Node]] = []
        for source in sources:
            out.extend(self.entries(source, path, depth + 1))
        return out

    # sections --------------------------------------------------------------------------
    def section(self, node: yaml.Node, spec: Section, path: str) -> Obj | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(line_of(node), path, f"expected {spec.what} ({spec.noun}), "
                       f"found {self.found(node)}")
            return None
        obj = Obj(spec, line_of(node), path)
        given = {key: (knode, vnode) for key, knode, vnode in self.entries(node, path)}
        kind: Any = None
        disc = spec.discriminator
        if disc is not None and disc in given:
            self.field(obj, disc, spec.fields[disc], given[disc][1])
            kind = obj.get(disc)
        for key, (knode, vnode) in given.items():
            spec_field = spec.fields.get(key)
            if key == disc:
                continue
            if spec_field is None:
                self.error(line_of(knode), obj.path_of(key),
                           f"unknown key `{key}` in {spec.noun}", _suggest_key(key, spec))
            elif spec_field.kinds is not None and kind is not None \
                    and kind not in spec_field.kinds:
                self.error(line_of(knode), obj.path_of(key),
                           f"`{key}` is only valid with {disc}: {' or '.join(spec_field.kinds)}"
                           f", this {spec.noun} has {disc}: {kind}",
                           f"remove `{key}` or change {disc}")
                obj.bad.add(key)
            else:
                self.field(obj, key, spec_field, vnode)
        for key, spec_field in spec.fields.items():
            if key in given:
                continue
            if spec_field.required:
                self.error(obj.line, obj.path_of(key),
                           f"missing required key `{key}` in {spec.noun} "
                           f"({spec_field.description})", f"add `{key}:`")
                obj.bad.add(key)
            elif kind is not None and kind in spec_field.required_kinds:
                self.error(obj.line, obj.path_of(key),
                           f"missing key `{key}`, required with {disc}: {kind}",
                           f"add `{key}:`")
                obj.bad.add(key)
        return obj

    def field(self, obj: Obj, key: str, spec_field: Field, vnode: yaml.Node) -> None:
        path = obj.path_of(key)
        if spec_field.nullable and isinstance(vnode, yaml.ScalarNode) \
                and self.construct(vnode)[0] == "null":
            obj.fields[key] = Val(None, line_of(vnode), path)
            return
        val = self.check(vnode, spec_field.spec, path)
        if val is None:
            obj.bad.add(key)
        else:
            obj.fields[key] = val


_NODE_FOR: dict[type, type] = {Scalar: yaml.ScalarNode, ListOf: yaml.SequenceNode,
                               MapOf: yaml.MappingNode, Section: yaml.MappingNode,
                               AnyOf: yaml.Node}


def _count_text(spec: ListOf) -> str:
    what = describe(spec)
    lo, hi = spec.min_items, spec.max_items
    if lo == hi:
        return f"{what} of exactly {lo} items"
    if hi is None:
        return f"a non-empty {what.removeprefix('a ')}" if lo == 1 else \
            f"{what} of at least {lo} items"
    return f"{what} of {lo} to {hi} items"


def _type_ok(spec: Scalar, value: Any) -> bool:
    if spec.type == "boolean":
        return isinstance(value, bool)
    if spec.type == "string":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if spec.type == "integer":
        return isinstance(value, int)
    return isinstance(value, int | float)


def _type_fix(spec: Scalar, node: yaml.ScalarNode, value: Any) -> str | None:
    if spec.type == "string" and node.style is None and node.value:
        return f'quote it: "{node.value}"'
    if spec.type in ("integer", "number") and isinstance(value, str) and node.style \
            and _numeric(value):
        return "remove the quotes"
    if spec.type == "boolean" and isinstance(value, str):
        return "write true or false"
    return None


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _one_of(choices: tuple[Any, ...]) -> str:
    if len(choices) == 1:
        return str(choices[0])
    return "one of " + ", ".join(str(c) for c in choices)


def _suggest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]}?" if close else None


def _suggest_key(key: str, spec: Section) -> str:
    close = difflib.get_close_matches(key, list(spec.fields), n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    return "known keys: " + ", ".join(spec.fields)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
