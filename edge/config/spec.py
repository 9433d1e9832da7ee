"""The building blocks of the config spec tables: what a key holds, its checks and its default.

One table per section (``edge.config.tables``) is the single source of three things: the keys a
section knows (anything else is an "unknown key" error), the per-value checks the YAML walker
applies (``edge.config.yamltree``), and the JSON Schema (``edge.config.jsonschema``).
Cross-references and rules between keys live in ``edge.config.loader``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

ScalarType = Literal["integer", "number", "string", "boolean"]


class Invalid(Exception):
    """Raised by a value converter: ``message`` says what was expected and what was found."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


_NO_SCHEMA: Mapping[str, Any] = MappingProxyType({})

_WHAT: Mapping[ScalarType, str] = MappingProxyType({
    "integer": "an integer", "number": "a number", "string": "a string",
    "boolean": "true or false"})


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar value. ``convert`` checks and normalizes further (raises ``Invalid``)."""

    type: ScalarType
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    pattern: str | None = None
    convert: Callable[[Any], Any] | None = None
    what: str | None = None  # noun for messages ("an IPv4 address"); default from type
    schema: Mapping[str, Any] = field(default_factory=lambda: _NO_SCHEMA)

    @property
    def noun(self) -> str:
        return self.what or _WHAT[self.type]

    def bounds_text(self) -> str:
        """``from 1 to 9``, ``>= 0``, ``> 0 and <= 1``, or '' when unbounded."""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"from {_num(lo)} to {_num(hi)}"
        parts = []
        if lo is not None:
            parts.append(f">= {_num(lo)}")
        if self.exclusive_minimum is not None:
            parts.append(f"> {_num(self.exclusive_minimum)}")
        if hi is not None:
            parts.append(f"<= {_num(hi)}")
        if self.exclusive_maximum is not None:
            parts.append(f"< {_num(self.exclusive_maximum)}")
        return " and ".join(parts)

    def in_bounds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return not (
            (self.minimum is not None and value < self.minimum)
            or (self.maximum is not None and value > self.maximum)
            or (self.exclusive_minimum is not None and value <= self.exclusive_minimum)
            or (self.exclusive_maximum is not None and value >= self.exclusive_maximum))

    def matches_pattern(self, value: str) -> bool:
        return self.pattern is None or re.fullmatch(self.pattern, value) is not None


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Spec
    min_items: int = 0
    max_items: int | None = None
    what: str = "a list"


@dataclass(frozen=True, slots=True)
class MapOf:
    """A mapping with free keys (checked by ``key``) and values of one spec."""

    key: Scalar
    value: Spec
    what: str = "a mapping"


@dataclass(frozen=True, slots=True)
class AnyOf:
    """One of several specs, chosen by the YAML node's shape (scalar, list or mapping)."""

    options: tuple[Spec, ...]
    what: str


_NO_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a section.

    ``kinds``: for a section with a ``discriminator``, the discriminator values this key is
    allowed with (None = all). ``required_kinds``: values with which the key is required.
    """

    spec: Spec
    description: str
    required: bool = False
    default: Any = _NO_DEFAULT
    nullable: bool = False
    kinds: tuple[str, ...] | None = None
    required_kinds: tuple[str, ...] = ()

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT


@dataclass(frozen=True, slots=True)
class Section:
    """A mapping with known keys. ``noun`` names it in messages ("link", "target")."""

    noun: str
    description: str
    fields: Mapping[str, Field]
    discriminator: str | None = None
    what: str = "a mapping"


Spec = Scalar | ListOf | MapOf | AnyOf | Section


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else str(x)


def describe(spec: Spec) -> str:
    """A noun phrase for ``spec`` used in "expected ..." messages."""
    if isinstance(spec, Scalar):
        return spec.noun
    return spec.what
