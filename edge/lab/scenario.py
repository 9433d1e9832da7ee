"""Lab scenarios: baseline link profiles and a timeline of impairments, from YAML.

Validated like the main config: every error names the file, line and key path, and all
errors are reported at once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from edge.config.loader import ConfigError, ConfigInvalid
from edge.lab.responders import Impairment

_TOP_KEYS = {"name", "duration", "links", "events", "bounds"}
_PROFILE_KEYS = {"delay_ms", "jitter_ms", "loss"}
_EVENT_KEYS = {"at", "link", "set", "restore", "note"}
_BOUND_KEYS = {"detect_s", "recover_s"}


@dataclass(frozen=True, slots=True)
class LabEvent:
    at: float
    link: str
    impairment: Impairment | None  # None: restore the baseline
    note: str

    @property
    def is_restore(self) -> bool:
        return self.impairment is None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    source: str
    duration_s: float
    baseline: dict[str, Impairment]
    events: tuple[LabEvent, ...]
    detect_bound_s: float
    recover_bound_s: float

    @property
    def onset(self) -> LabEvent | None:
        """The first event that impairs a link (what detection time is measured from)."""
        return next((e for e in self.events if not e.is_restore), None)

    @property
    def restoration(self) -> LabEvent | None:
        onset = self.onset
        if onset is None:
            return None
        return next((e for e in self.events
                     if e.is_restore and e.link == onset.link and e.at > onset.at), None)


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[ConfigError] = []

    def err(self, node: yaml.Node | None, path: str, message: str,
            fix: str | None = None) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.errors.append(ConfigError(self.source, line, path, message, fix))

    def mapping(self, node: yaml.Node, path: str, allowed: set[str]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.err(node, path, f"expected a mapping, found {_kind(node)}")
            return {}
        out: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            key = str(knode.value)
            sub = f"{path}.{key}" if path else key
            if key not in allowed:
                self.err(knode, sub, f"unknown key {key!r}",
                         f"use one of: {', '.join(sorted(allowed))}")
            elif key in out:
                self.err(knode, sub, f"duplicate key {key!r}")
            else:
                out[key] = vnode
        return out

    def number(self, node: yaml.Node, path: str, lo: float, hi: float) -> float | None:
        value = _scalar(node)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            self.err(node, path, f"expected a number, found {_kind(node)} {value!r}")
            return None
        if not lo <= value <= hi:
            self.err(node, path, f"expected a value in {lo:g}..{hi:g}, found {value:g}")
            return None
        return float(value)

    def profile(self, node: yaml.Node, path: str, base: Impairment) -> Impairment | None:
        fields = self.mapping(node, path, _PROFILE_KEYS)
        values: dict[str, float] = {"delay_ms": base.delay_ms, "jitter_ms": base.jitter_ms,
                                    "loss": base.loss}
        ok = True
        for key, vnode in fields.items():
            hi = 1.0 if key == "loss" else 60_000.0
            v = self.number(vnode, f"{path}.{key}", 0.0, hi)
            if v is None:
                ok = False
            else:
                values[key] = v
        return Impairment(**values) if ok else None


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return None
    return yaml.safe_load(yaml.serialize(node))


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return type(_scalar(node)).__name__


def parse_scenario(text: str, source: str, links: set[str]) -> Scenario:
    """Parse a scenario; ``links`` are the link names of the lab config it must refer to."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigInvalid([ConfigError(source, mark.line + 1 if mark else None, "",
                                         f"YAML syntax error: {exc}", None)]) from None
    c = _Checker(source)
    if root is None:
        raise ConfigInvalid([ConfigError(source, None, "", "the scenario file is empty", None)])
    top = c.mapping(root, "", _TOP_KEYS)
    name = str(_scalar(top["name"])) if "name" in top else os.path.basename(source)
    duration = c.number(top["duration"], "duration", 1.0, 86_400.0) if "duration" in top else 60.0

    baseline: dict[str, Impairment] = {link: Impairment() for link in links}
    if "links" in top:
        for knode, vnode in _pairs(c, top["links"], "links"):
            link = str(knode.value)
            if link not in links:
                c.err(knode, f"links.{link}", f"unknown link {link!r}",
                      f"the lab config has: {', '.join(sorted(links))}")
                continue
            prof = c.profile(vnode, f"links.{link}", Impairment())
            if prof is not None:
                baseline[link] = prof

    events: list[LabEvent] = []
    if "events" in top:
        enode = top["events"]
        if not isinstance(enode, yaml.SequenceNode):
            c.err(enode, "events", f"expected a list, found {_kind(enode)}")
        else:
            for i, item in enumerate(enode.value):
                ev = _event(c, item, f"events[{i}]", links, baseline, duration)
                if ev is not None:
                    events.append(ev)
    bounds = c.mapping(top["bounds"], "bounds", _BOUND_KEYS) if "bounds" in top else {}
    detect = c.number(bounds["detect_s"], "bounds.detect_s", 0.1, 3600.0) \
        if "detect_s" in bounds else 10.0
    recover = c.number(bounds["recover_s"], "bounds.recover_s", 0.1, 3600.0) \
        if "recover_s" in bounds else 30.0
    if c.errors:
        raise ConfigInvalid(c.errors)
    assert duration is not None and detect is not None and recover is not None
    return Scenario(name=name, source=source, duration_s=duration, baseline=baseline,
                    events=tuple(sorted(events, key=lambda e: e.at)),
                    detect_bound_s=detect, recover_bound_s=recover)


def _pairs(c: _Checker, node: yaml.Node, path: str) -> list[tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        c.err(node, path, f"expected a mapping of link name -> profile, found {_kind(node)}")
        return []
    return list(node.value)


def _event(c: _Checker, node: yaml.Node, path: str, links: set[str],
           baseline: dict[str, Impairment], duration: float | None) -> LabEvent | None:
    f = c.mapping(node, path, _EVENT_KEYS)
    if not f:
        return None
    ok = True
    at = c.number(f["at"], f"{path}.at", 0.0, duration or 86_400.0) if "at" in f else None
    if "at" not in f:
        c.err(node, f"{path}.at", "missing key 'at' (seconds from the start)")
    link = str(_scalar(f["link"])) if "link" in f else None
    if link is None:
        c.err(node, f"{path}.link", "missing key 'link'")
        ok = False
    elif link not in links:
        c.err(f["link"], f"{path}.link", f"unknown link {link!r}",
              f"the lab config has: {', '.join(sorted(links))}")
        ok = False
    restore = _scalar(f["restore"]) if "restore" in f else False
    if "set" in f and restore:
        c.err(node, path, "an event either sets a profile or restores, not both")
        return None
    if "set" not in f and restore is not True:
        c.err(node, path, "an event needs 'set: {delay_ms, jitter_ms, loss}' or 'restore: true'")
        return None
    imp: Impairment | None = None
    if "set" in f:
        base = baseline.get(link or "", Impairment())
        imp = c.profile(f["set"], f"{path}.set", base)
        ok = ok and imp is not None
    note = str(_scalar(f["note"])) if "note" in f else ""
    if not ok or at is None or link is None:
        return None
    return LabEvent(at=at, link=link, impairment=imp, note=note)


def load_scenario(path: str | None, links: set[str]) -> Scenario:
    """Load ``path``, or the default scenario shipped with the lab when ``path`` is None."""
    if path is None:
        text = resources.files("edge.lab").joinpath("scenario.yaml").read_text()
        return parse_scenario(text, "<builtin>/edge/lab/scenario.yaml", links)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigInvalid([ConfigError(path, None, "", f"cannot read scenario: "
                                         f"{exc.strerror}", None)]) from None
    return parse_scenario(text, path, links)
