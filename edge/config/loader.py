"""Load and validate the YAML configuration into ``edge.config.schema.Config``.

Three passes, all of which always run so that every problem is reported at once:

1. PyYAML composes the text into nodes that remember their line (syntax errors stop here);
2. ``edge.config.yamltree`` walks the nodes along the spec tables (``edge.config.tables``):
   types, ranges, unknown / duplicate / missing keys, kind-specific keys;
3. ``edge.config.build`` applies the defaults that depend on other values and checks the rules
   between keys (unique names, references, zones, TTLs).

Then either a ``Config`` is returned or ``ConfigInvalid`` lists every ``ConfigError`` in file
order. Endpoint defaults are resolved here: an endpoint with neither ``addresses`` nor ``cname``
gets its link's answers (v4 then v6), and without ``weight`` its link's weight.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from edge.config.build import Builder
from edge.config.errors import ConfigError, ConfigInvalid
from edge.config.schema import Config
from edge.config.tables import ROOT
from edge.config.yamltree import Walker, line_of

_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what YAML counts as a new line

__all__ = ["ConfigError", "ConfigInvalid", "load_config", "parse_config"]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the file at ``path``; raises ``ConfigInvalid``."""
    file = os.fspath(path)
    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        error = ConfigError(file, None, "", f"cannot read the config file: "
                            f"{exc.strerror or exc}", "check the path and its permissions")
        raise ConfigInvalid([error]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        error = ConfigError(file, line, "", f"expected UTF-8 text, found byte "
                            f"0x{data[exc.start]:02x}", "save the file as UTF-8")
        raise ConfigInvalid([error]) from None
    return parse_config(text, file)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate YAML ``text``; ``source`` names it in errors. Raises ``ConfigInvalid``."""
    errors: list[ConfigError] = []
    root = _compose(text, source, errors)
    if root is None:
        raise ConfigInvalid(errors)
    if not isinstance(root, yaml.MappingNode):
        walker = Walker(source, errors)
        raise ConfigInvalid([ConfigError(
            source, line_of(root), "", "expected a mapping at the top level (version: 1, "
            f"node:, sites:, links:, ...), found {walker.found(root)}",
            "see deploy/examples/hk-cluster.yaml")])
    obj = Walker(source, errors).section(root, ROOT, "")
    assert obj is not None
    config = Builder(source, errors).build(obj)
    if errors:
        raise ConfigInvalid(sorted(errors, key=lambda e: e.line or 0))
    return config


def _compose(text: str, source: str, errors: list[ConfigError]) -> yaml.Node | None:
    """The document's root node, or None with an error recorded."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        fix = "indent with spaces, not tabs" if "'\\t'" in problem else None
        errors.append(ConfigError(source, line, "", f"invalid YAML: {problem}{context}", fix))
        return None
    except yaml.reader.ReaderError as exc:
        line = len(_LINE_BREAK.findall(text[:exc.position])) + 1
        errors.append(ConfigError(source, line, "", f"invalid YAML: {exc.reason} "
                                  f"(character #x{exc.character:04x})",
                                  "remove the control character"))
        return None
    except yaml.YAMLError as exc:
        errors.append(ConfigError(source, None, "", f"invalid YAML: {exc}"))
        return None
    except RecursionError:
        errors.append(ConfigError(source, None, "", "invalid YAML: nested too deeply"))
        return None
    if root is None:
        errors.append(ConfigError(source, 1, "", "expected a mapping at the top level, "
                                  "found an empty document", "start with version: 1"))
        return None
    return root
