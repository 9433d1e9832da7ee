"""What survives a restart: link states and the last applied plan (the engine's file), and
operator overrides (the operator's file), both JSON in ``guard.state_dir``.

Two files so that the engine and the ``edgesteer override`` command never write the same
file: ``engine.json`` is written by the engine after every applied plan, ``overrides.json``
by the command; the engine re-reads the latter every cycle. Every write is atomic (a temp
file in the same directory, fsync, rename), so a crash leaves the old or the new file,
never half of one. A file that cannot be read is reported and treated as absent: the
engine then starts from the configured defaults (every link UNKNOWN, serving).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge.atomicfile import write_text
from edge.config.schema import Config
from edge.health.state import HealthSnapshot, HealthState
from edge.plan import Plan, plan_from_json
from edge.plancodec import decode, encode

log = logging.getLogger(__name__)

ENGINE_FILE = "engine.json"
OVERRIDES_FILE = "overrides.json"
FORMAT = 2  # 2: the plan in the grouped form (edge.plancodec); 1 is still read


class StateFileError(ValueError):
    """A state file exists but is not what it should be."""


def state_dir(config: Config) -> Path | None:
    """``guard.state_dir`` resolved against the config file's directory, or None."""
    raw = config.guard.state_dir
    if raw is None:
        return None
    p = Path(raw)
    return p if p.is_absolute() else Path(config.source).resolve().parent / p


def write_json_atomic(path: Path, body: Any) -> None:
    """Write ``body`` as JSON to ``path`` atomically (temp + fsync + rename), owner-only."""
    write_text(path, json.dumps(body, indent=1, sort_keys=True) + "\n", mode=0o600,
                          make_parents=True)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``; None when it does not exist; StateFileError when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"{path}: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StateFileError(f"{path}: not JSON: {exc}") from None


# --- the engine's file ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineState:
    saved_at: float
    links: Mapping[str, HealthState]
    plan: Plan | None
    # link -> region -> rtt ms (LinkHealth.toward): nearest routing ranks with it
    toward: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: MappingProxyType({}))
    # link -> the state a FALLING link fell from (the planner keeps it at the degraded
    # weight when that was DEGRADED, LinkHealth.falling_from)
    falling_from: Mapping[str, HealthState] = field(
        default_factory=lambda: MappingProxyType({}))


def save_engine_state(directory: Path, snapshot: HealthSnapshot, plan: Plan | None,
                      now: float) -> None:
    """Write link states and ``plan`` to the engine's file, atomically.

    The plan is kept in the grouped form (``edge.plancodec``) and its text is reused while
    the plan stays the same object, so a save for a link change that moved no answer
    writes the plan's text again without encoding it again.
    """
    links = {name: {"state": str(lh.state), "since": lh.since, "reason": lh.reason,
                    **({"toward": dict(lh.toward)} if lh.toward else {}),
                    **({"falling_from": str(lh.falling_from)} if lh.falling_from else {})}
             for name, lh in snapshot.links.items()}
    head = json.dumps({"format": FORMAT, "saved_at": now, "links": links}, sort_keys=True)
    text = head[:-1] + ', "plan": ' + _plan_text(plan) + "}\n"
    write_text(directory / ENGINE_FILE, text, mode=0o600, make_parents=True)


_encoded: tuple[Plan, str] | None = None  # the last plan written, and its text


def _plan_text(plan: Plan | None) -> str:
    global _encoded
    if plan is None:
        return "null"
    cached = _encoded  # read once: saves of two engines may run in two threads
    if cached is not None and cached[0] is plan:
        return cached[1]
    text = json.dumps(encode(plan), separators=(",", ":"))
    _encoded = (plan, text)
    return text


def plan_in(body: Mapping[str, Any], path: Path) -> Plan | None:
    """The plan in an engine file's parsed ``body`` (None: it has none yet); this format
    and the one before it (plans in full, ``Plan.to_json``). Raises StateFileError."""
    if not isinstance(body, dict) or body.get("format") not in (FORMAT, 1):
        raise StateFileError(f"{path}: not an edgesteer engine state (format {FORMAT})")
    raw = body.get("plan")
    if raw is None:
        return None
    try:
        return decode(raw) if body["format"] == FORMAT else plan_from_json(raw)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise StateFileError(f"{path}: plan unreadable: {exc!r}") from None


def load_engine_state(directory: Path) -> EngineState | None:
    """The persisted engine state; None when absent or unreadable (reported)."""
    path = directory / ENGINE_FILE
    try:
        body = read_json(path)
        if body is None:
            return None
        plan = plan_in(body, path)
        links = {str(k): HealthState(v["state"]) for k, v in body["links"].items()}
        toward = {str(k): MappingProxyType({str(r): float(ms) for r, ms in v["toward"].items()})
                  for k, v in body["links"].items() if v.get("toward")}
        falling = {str(k): HealthState(v["falling_from"]) for k, v in body["links"].items()
                   if v.get("falling_from")}
        return EngineState(float(body["saved_at"]), MappingProxyType(links), plan,
                           MappingProxyType(toward), MappingProxyType(falling))
    except StateFileError as exc:
        log.warning("ignoring the engine state, starting from defaults: %s", exc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("ignoring the engine state %s, starting from defaults: %r", path, exc)
    return None
